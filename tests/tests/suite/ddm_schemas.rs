//! Apple's declarative-management schemas, generated into the server's `protocol/ddm/schemas.json`, and the
//! server's declaration checks run against every Type in it.
//!
//! The generator reads `../shared/spec/apple-device-management/declarative/` (skipped when absent) and
//! fails when the committed file differs from what it makes. To regenerate after the spec changes:
//!
//! ```sh
//! MDM_REGENERATE_DDM_SCHEMAS=1 cargo test --workspace --test suite ddm_schemas::
//! ```
//!
//! What is kept of each schema node is only what the server checks: its type, whether a dictionary member
//! is required, a string's or integer's `rangelist` (when it lists values of the node's type), an integer's
//! `range`, a dictionary's keys (Apple's `ANY` key becomes `any`; no keys at all is `open`) and an array's
//! item schema (its one subkey).

use mdm_server::protocol::ddm::{Declaration, DeclarationError};
use mdm_tests::shared::{check_generated, shared_path, yaml_files};
use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SPEC: &str = "spec/apple-device-management/declarative";
const REGENERATE: &str = "MDM_REGENERATE_DDM_SCHEMAS";

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/protocol/ddm/schemas.json")
}

fn committed() -> Value {
    let path = committed_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_committed_schemas_are_generated_from_the_spec() {
    let Some(spec) = shared_path(SPEC) else {
        return;
    };
    let how = "cargo test --workspace --test suite ddm_schemas::";
    check_generated(&committed_path(), &generate(&spec), REGENERATE, how);
}

/// The file's text: `base` (Apple's `declarationtype: any`), `declarations` (each Type's Payload) and
/// `status_items` (each status item's value type), pretty-printed with sorted keys.
fn generate(spec: &Path) -> String {
    let mut base = None;
    let mut declarations = BTreeMap::new();
    for file in yaml_files(&spec.join("declarations")) {
        let doc = read_yaml(&file);
        let Some(declaration_type) = doc["payload"]["declarationtype"].as_str() else {
            // Credential formats (assets/credentials/) describe an asset's downloaded content, not a
            // declaration; anything else without a Type is new and must be looked at.
            assert!(
                doc["payload"]["credentialtype"].is_string(),
                "{}: neither a declarationtype nor a credentialtype",
                file.display()
            );
            continue;
        };
        let node = dictionary(&doc["payloadkeys"], &file, "Payload");
        if declaration_type == "any" {
            base = Some(node);
        } else {
            let previous = declarations.insert(declaration_type.to_string(), node);
            assert!(previous.is_none(), "{declaration_type} defined twice");
        }
    }
    let mut status_items = BTreeMap::new();
    for file in yaml_files(&spec.join("status")) {
        let doc = read_yaml(&file);
        // statusreason.yaml describes the reasons inside items, not an item.
        let Some(name) = doc["payload"]["statusitemtype"].as_str() else {
            continue;
        };
        let key = keys(&doc["payloadkeys"], &file)
            .iter()
            .find(|k| k["key"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{}: no key {name}", file.display()));
        status_items.insert(name.to_string(), json!(kind(key, &file, name)));
    }
    let out = json!({
        "base": base.expect("declarationbase.yaml (declarationtype: any)"),
        "declarations": declarations,
        "status_items": status_items,
    });
    serde_json::to_string_pretty(&out).unwrap() + "\n"
}

fn read_yaml(file: &Path) -> Yaml {
    serde_yaml::from_slice(&std::fs::read(file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

fn keys<'a>(list: &'a Yaml, file: &Path) -> &'a [Yaml] {
    match list {
        Yaml::Null => &[],
        Yaml::Sequence(s) => s,
        other => panic!("{}: keys are not a list: {other:?}", file.display()),
    }
}

/// A dictionary node from a list of keys: `ANY` becomes the schema of undeclared keys, the rest its keys.
fn dictionary(list: &Yaml, file: &Path, at: &str) -> Value {
    let mut node = Map::new();
    node.insert("type".into(), json!("dictionary"));
    let mut members = BTreeMap::new();
    for key in keys(list, file) {
        let name = key["key"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {at}: a key without a name", file.display()));
        let here = format!("{at}.{name}");
        if name == "ANY" {
            node.insert("any".into(), schema(key, file, &here, false));
        } else {
            members.insert(name.to_string(), schema(key, file, &here, true));
        }
    }
    if !members.is_empty() {
        node.insert("keys".into(), json!(members));
    }
    Value::Object(node)
}

/// One key's node; `member` is whether it is a dictionary member (only those are required or not).
fn schema(key: &Yaml, file: &Path, at: &str, member: bool) -> Value {
    let ty = kind(key, file, at);
    let mut node = match ty {
        "dictionary" if keys(&key["subkeys"], file).is_empty() => {
            json!({"type": "dictionary", "open": true})
        }
        "dictionary" => dictionary(&key["subkeys"], file, at),
        _ => json!({"type": ty}),
    };
    let obj = node.as_object_mut().unwrap();
    if member && key["presence"].as_str() == Some("required") {
        obj.insert("required".into(), json!(true));
    }
    if let Some(allowed) = rangelist(key, ty) {
        obj.insert("allowed".into(), allowed);
    }
    if ty == "integer" {
        for bound in ["min", "max"] {
            if let Some(v) = key["range"][bound].as_i64() {
                obj.insert(bound.into(), json!(v));
            }
        }
    }
    let refers = refers_to_declarations(key);
    if refers && ty == "string" {
        obj.insert("reference".into(), json!(true));
    }
    if ty == "array" {
        match keys(&key["subkeys"], file) {
            [] => {}
            [item] => {
                let mut items = schema(item, file, &format!("{at}[]"), false);
                if refers {
                    items
                        .as_object_mut()
                        .unwrap()
                        .insert("reference".into(), json!(true));
                }
                obj.insert("items".into(), items);
            }
            more => panic!(
                "{}: {at}: an array with {} item schemas",
                file.display(),
                more.len()
            ),
        }
    }
    node
}

/// Whether a key's strings are identifiers of other declarations: an asset reference (Apple marks those
/// with the asset types they take) or an activation's configurations.
fn refers_to_declarations(key: &Yaml) -> bool {
    key["assettypes"].is_sequence() || key["key"].as_str() == Some("StandardConfigurations")
}

/// A rangelist the server can check: values all of the node's own type (strings or integers).
fn rangelist(key: &Yaml, kind: &str) -> Option<Value> {
    let list = key["rangelist"].as_sequence()?;
    let values: Option<Vec<Value>> = list
        .iter()
        .map(|v| match (kind, v) {
            ("string", Yaml::String(s)) => Some(json!(s)),
            ("integer", Yaml::Number(n)) => n.as_i64().map(|n| json!(n)),
            _ => None,
        })
        .collect();
    values.map(Value::from)
}

fn kind(key: &Yaml, file: &Path, at: &str) -> &'static str {
    match key["type"].as_str() {
        Some("<string>") => "string",
        Some("<integer>") => "integer",
        Some("<real>") => "real",
        Some("<boolean>") => "boolean",
        Some("<dictionary>") => "dictionary",
        Some("<array>") => "array",
        Some("<data>") => "data",
        Some("<date>") => "date",
        Some("<any>") => "any",
        other => panic!(
            "{}: {at}: type {other:?} is new: teach this generator and schema::Kind",
            file.display()
        ),
    }
}

// ---- The server's checks, for every Type in the committed file (no ../shared needed). ----

/// A value the node accepts. `full` includes the optional keys (and one undeclared key where `ANY` allows
/// it), otherwise only the required ones.
fn sample(node: &Value, full: bool) -> Value {
    if let Some(first) = node["allowed"].as_array().and_then(|a| a.first()) {
        return first.clone();
    }
    match node["type"].as_str().unwrap() {
        "string" | "any" => json!("x"),
        "integer" => {
            let v = node["min"].as_i64().unwrap_or(0);
            json!(node["max"].as_i64().map_or(v, |max| v.min(max)))
        }
        "real" => json!(1.5),
        "boolean" => json!(true),
        "data" => json!("AAEC"),
        "date" => json!("2024-01-02T03:04:05Z"),
        "array" => match node.get("items") {
            Some(item) => json!([sample(item, full)]),
            None => json!([]),
        },
        "dictionary" => {
            let mut out = Map::new();
            for (key, child) in members(node) {
                if full || child["required"] == json!(true) {
                    out.insert(key.clone(), sample(child, full));
                }
            }
            if let (true, Some(any)) = (full, node.get("any")) {
                out.insert("AnyKey".into(), sample(any, full));
            }
            Value::Object(out)
        }
        other => panic!("unknown type {other}"),
    }
}

fn members(node: &Value) -> impl Iterator<Item = (&String, &Value)> {
    node.get("keys")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// A place in a payload a test changes: how to reach it, its path as the server writes it, and its node.
struct Place {
    steps: Vec<Step>,
    path: String,
    node: Value,
}

/// Every place in `value` (which `node` describes), the top one included.
fn places(node: &Value, value: &Value, steps: Vec<Step>, path: String, out: &mut Vec<Place>) {
    let children: Vec<(Step, &Value, &Value, String)> = match value {
        Value::Object(map) => map
            .iter()
            .filter_map(|(key, child)| {
                let child_node = node["keys"].get(key).or(node.get("any"))?;
                Some((
                    Step::Key(key.clone()),
                    child_node,
                    child,
                    format!("{path}.{key}"),
                ))
            })
            .collect(),
        Value::Array(items) => node
            .get("items")
            .map(|item_node| {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| (Step::Index(i), item_node, item, format!("{path}[{i}]")))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for (step, child_node, child, child_path) in children {
        let mut s = steps.clone();
        s.push(step);
        places(child_node, child, s, child_path, out);
    }
    out.push(Place {
        steps,
        path,
        node: node.clone(),
    });
}

fn at<'a>(payload: &'a mut Value, steps: &[Step]) -> &'a mut Value {
    steps.iter().fold(payload, |v, step| match step {
        Step::Key(key) => &mut v[key.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

fn upload(declaration_type: &str, payload: &Value) -> Result<Declaration, DeclarationError> {
    let body =
        json!({"Type": declaration_type, "Identifier": "com.example.test", "Payload": payload});
    Declaration::parse(body.to_string().as_bytes())
}

/// A value of another type than the node's (none for `any`).
fn wrong_value(node: &Value) -> Option<Value> {
    match node["type"].as_str().unwrap() {
        "any" => None,
        "string" | "data" | "date" => Some(json!(7)),
        _ => Some(json!("wrong")),
    }
}

#[test]
fn every_type_takes_its_minimal_and_full_payloads() {
    let schemas = committed();
    let types = schemas["declarations"].as_object().unwrap();
    assert!(types.len() >= 30, "{}", types.len());
    for (declaration_type, node) in types {
        for full in [false, true] {
            let payload = sample(node, full);
            let d = upload(declaration_type, &payload)
                .unwrap_or_else(|e| panic!("{declaration_type} (full: {full}): {e}"));
            assert_eq!(Value::Object(d.payload), payload);
        }
    }
}

#[test]
fn every_type_refuses_missing_unknown_and_mistyped_keys_by_path() {
    let schemas = committed();
    let mut checked = [0usize; 3];
    for (declaration_type, node) in schemas["declarations"].as_object().unwrap() {
        let payload = sample(node, true);
        let mut all = Vec::new();
        places(node, &payload, Vec::new(), "Payload".into(), &mut all);
        for place in all {
            let node = &place.node;
            let refused = |changed: Value| {
                upload(declaration_type, &changed).expect_err(&format!(
                    "{declaration_type}: {} changed and still accepted",
                    place.path
                ))
            };
            // Each required key, removed.
            for (key, child) in members(node) {
                if child["required"] != json!(true) {
                    continue;
                }
                let mut changed = payload.clone();
                at(&mut changed, &place.steps)
                    .as_object_mut()
                    .unwrap()
                    .remove(key);
                assert_eq!(
                    refused(changed),
                    DeclarationError::MissingRequired {
                        path: format!("{}.{key}", place.path)
                    }
                );
                checked[0] += 1;
            }
            // A key Apple does not define, where the dictionary does not take any key.
            if node["type"] == "dictionary"
                && node.get("open").is_none()
                && node.get("any").is_none()
            {
                let mut changed = payload.clone();
                at(&mut changed, &place.steps)
                    .as_object_mut()
                    .unwrap()
                    .insert("NotAnAppleKey".into(), json!(1));
                assert_eq!(
                    refused(changed),
                    DeclarationError::UnknownKey {
                        path: format!("{}.NotAnAppleKey", place.path)
                    }
                );
                checked[1] += 1;
            }
            // A value of the wrong type.
            if let (false, Some(wrong)) = (place.steps.is_empty(), wrong_value(node)) {
                let mut changed = payload.clone();
                *at(&mut changed, &place.steps) = wrong;
                match refused(changed) {
                    DeclarationError::WrongType { path, .. } => assert_eq!(path, place.path),
                    other => panic!("{declaration_type}: {}: {other}", place.path),
                }
                checked[2] += 1;
            }
        }
    }
    let [missing, unknown, mistyped] = checked;
    assert!(
        missing >= 60 && unknown >= 70 && mistyped >= 250,
        "too few checks: {checked:?}"
    );
}

#[test]
fn the_server_lists_the_committed_types_and_status_items() {
    let schemas = committed();
    let types: Vec<&str> = mdm_server::protocol::ddm::declaration_types().collect();
    let committed_types: Vec<&str> = schemas["declarations"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(types, committed_types);
    let items: Vec<&str> = mdm_server::protocol::ddm::status_item_names().collect();
    assert!(items.contains(&"passcode.is-compliant"));
    assert_eq!(
        items.len(),
        schemas["status_items"].as_object().unwrap().len()
    );
}
