//! A device's status report: the `Data` of a DeclarativeManagement check-in whose Endpoint is `status`.
//!
//! Its `StatusItems` nest by the dotted parts of each item's name (`device.operating-system.version` is
//! `{"device":{"operating-system":{"version":..}}}`). The report is flattened back to names: the walk stops
//! at a name Apple documents (the item's value is kept whole) and otherwise goes down to the leaves, so
//! items newer than this build are kept too. `management.declarations` becomes [`DeclarationStatus`]es.
//! Devices add keys over time: unknown keys inside items are kept, inside a declaration's status ignored.

use super::path::Path;
use super::schema::schemas;
use super::Category;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Largest report accepted, in decoded bytes, checked before parsing.
pub const MAX_STATUS_REPORT_BYTES: usize = 1024 * 1024;
/// Deepest nesting of arrays and objects (the report itself is level 1). Apple's deepest item takes about 9.
pub const MAX_STATUS_DEPTH: usize = 32;
/// Most declaration statuses in one report.
pub const MAX_STATUS_DECLARATIONS: usize = 10_000;
/// Most status items (other than declarations) in one report.
pub const MAX_STATUS_ITEMS: usize = 10_000;
/// Most entries in one report's `Errors`.
pub const MAX_STATUS_ERRORS: usize = 10_000;

/// The status item the declarations' statuses are in.
const DECLARATIONS_ITEM: &str = "management.declarations";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub declarations: Vec<DeclarationStatus>,
    /// Every other status item by its dotted name, e.g. `device.operating-system.version` → `"17.5"`.
    pub items: BTreeMap<String, Value>,
    pub errors: Vec<StatusItemError>,
    /// The device says this report holds all of its status, not only what changed (`FullReport`).
    pub full: bool,
}

/// One declaration's state on the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclarationStatus {
    pub category: Category,
    pub identifier: String,
    pub active: bool,
    pub valid: Validity,
    pub server_token: String,
    /// Apple's status reasons (`{"code", "description"?, "details"?}`), as sent.
    pub reasons: Vec<Value>,
}

/// Whether the device found a declaration valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Validity {
    /// Apple's word for it, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Invalid => "invalid",
            Validity::Unknown => "unknown",
        }
    }

    fn parse(s: &str) -> Option<Validity> {
        match s {
            "valid" => Some(Validity::Valid),
            "invalid" => Some(Validity::Invalid),
            "unknown" => Some(Validity::Unknown),
            _ => None,
        }
    }
}

/// A status item the device could not report, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusItemError {
    pub status_item: String,
    pub reasons: Vec<Value>,
}

/// Why a report was refused. Every variant is the device's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("status report is larger than {MAX_STATUS_REPORT_BYTES} bytes")]
    TooLarge,
    #[error("status report nests deeper than {MAX_STATUS_DEPTH} levels")]
    TooDeep,
    #[error("status report has more than {max} {what}")]
    TooMany { what: &'static str, max: usize },
    #[error("status report is not valid JSON: {0}")]
    Json(String),
    #[error("status report is not a JSON object")]
    NotAnObject,
    #[error("status report lacks {path}")]
    MissingKey { path: String },
    #[error("status report's {path} has the wrong type (expected {expected})")]
    WrongType {
        path: String,
        expected: &'static str,
    },
}

impl StatusReport {
    /// Parse a report, refusing what is malformed where Apple fixes the shape: the report's own keys,
    /// declaration statuses, errors, and the type of each documented status item's value.
    pub fn parse(json: &[u8]) -> Result<StatusReport, StatusError> {
        if json.len() > MAX_STATUS_REPORT_BYTES {
            return Err(StatusError::TooLarge);
        }
        if nesting(json) > MAX_STATUS_DEPTH {
            return Err(StatusError::TooDeep);
        }
        let value: Value =
            serde_json::from_slice(json).map_err(|e| StatusError::Json(e.to_string()))?;
        let Value::Object(mut report) = value else {
            return Err(StatusError::NotAnObject);
        };
        let mut out = StatusReport {
            full: optional_bool(&report, "FullReport")?,
            ..StatusReport::default()
        };
        match report.remove("StatusItems") {
            Some(Value::Object(items)) => flatten(items, &Path::root("StatusItems"), "", &mut out)?,
            Some(_) => return Err(wrong_type(&Path::root("StatusItems"), "dictionary")),
            None => return Err(missing(&Path::root("StatusItems"))),
        }
        if let Some(errors) = report.remove("Errors") {
            out.errors = item_errors(errors)?;
        }
        Ok(out)
    }
}

/// Walk `StatusItems`, `at` being where `dict` is and `prefix` the item name so far.
fn flatten(
    dict: Map<String, Value>,
    at: &Path<'_>,
    prefix: &str,
    out: &mut StatusReport,
) -> Result<(), StatusError> {
    for (key, value) in dict {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let here = at.key(&key);
        if name == DECLARATIONS_ITEM {
            declarations(value, &here, &mut out.declarations)?;
        } else if let Some(kind) = schemas().status_items.get(&name) {
            if !kind.admits(&value) {
                return Err(wrong_type(&here, kind.expected()));
            }
            add_item(out, name, value)?;
        } else if let Value::Object(inner) = value {
            flatten(inner, &here, &name, out)?;
        } else {
            add_item(out, name, value)?;
        }
    }
    Ok(())
}

fn add_item(out: &mut StatusReport, name: String, value: Value) -> Result<(), StatusError> {
    if out.items.len() >= MAX_STATUS_ITEMS {
        return Err(StatusError::TooMany {
            what: "status items",
            max: MAX_STATUS_ITEMS,
        });
    }
    out.items.insert(name, value);
    Ok(())
}

/// `management.declarations`: a list per category. A category the device leaves out has nothing to report
/// (reports after the first carry what changed); a key that is not a category is ignored.
fn declarations(
    value: Value,
    at: &Path<'_>,
    out: &mut Vec<DeclarationStatus>,
) -> Result<(), StatusError> {
    let Value::Object(mut lists) = value else {
        return Err(wrong_type(at, "dictionary"));
    };
    for category in Category::ALL {
        let key = category.status_key();
        let here = at.key(key);
        let entries = match lists.remove(key) {
            None => continue,
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(wrong_type(&here, "array")),
        };
        if out.len().saturating_add(entries.len()) > MAX_STATUS_DECLARATIONS {
            return Err(StatusError::TooMany {
                what: "declaration statuses",
                max: MAX_STATUS_DECLARATIONS,
            });
        }
        for (i, entry) in entries.into_iter().enumerate() {
            out.push(declaration_status(category, entry, &here.index(i))?);
        }
    }
    Ok(())
}

fn declaration_status(
    category: Category,
    entry: Value,
    at: &Path<'_>,
) -> Result<DeclarationStatus, StatusError> {
    let Value::Object(mut entry) = entry else {
        return Err(wrong_type(at, "dictionary"));
    };
    let valid = take_string(&mut entry, "valid", at)?;
    Ok(DeclarationStatus {
        category,
        identifier: take_string(&mut entry, "identifier", at)?,
        server_token: take_string(&mut entry, "server-token", at)?,
        active: match entry.get("active") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(wrong_type(&at.key("active"), "boolean")),
            None => return Err(missing(&at.key("active"))),
        },
        valid: Validity::parse(&valid)
            .ok_or_else(|| wrong_type(&at.key("valid"), "\"valid\", \"invalid\" or \"unknown\""))?,
        reasons: reasons(entry.remove("reasons"), &at.key("reasons"))?,
    })
}

/// The report's `Errors`: `[{"StatusItem", "Reasons"?}]`.
fn item_errors(errors: Value) -> Result<Vec<StatusItemError>, StatusError> {
    let at = Path::root("Errors");
    let Value::Array(entries) = errors else {
        return Err(wrong_type(&at, "array"));
    };
    if entries.len() > MAX_STATUS_ERRORS {
        return Err(StatusError::TooMany {
            what: "errors",
            max: MAX_STATUS_ERRORS,
        });
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let here = at.index(i);
        let Value::Object(mut entry) = entry else {
            return Err(wrong_type(&here, "dictionary"));
        };
        out.push(StatusItemError {
            status_item: take_string(&mut entry, "StatusItem", &here)?,
            reasons: reasons(entry.remove("Reasons"), &here.key("Reasons"))?,
        });
    }
    Ok(out)
}

/// A list of status reasons, each a dictionary (kept as sent); absent is none.
fn reasons(value: Option<Value>, at: &Path<'_>) -> Result<Vec<Value>, StatusError> {
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong_type(at, "array")),
    };
    if let Some(i) = items.iter().position(|r| !r.is_object()) {
        return Err(wrong_type(&at.index(i), "dictionary"));
    }
    Ok(items)
}

fn take_string(
    entry: &mut Map<String, Value>,
    key: &str,
    at: &Path<'_>,
) -> Result<String, StatusError> {
    match entry.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(&at.key(key), "string")),
        None => Err(missing(&at.key(key))),
    }
}

fn optional_bool(report: &Map<String, Value>, key: &str) -> Result<bool, StatusError> {
    match report.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(wrong_type(&Path::root(key), "boolean")),
    }
}

fn wrong_type(at: &Path<'_>, expected: &'static str) -> StatusError {
    StatusError::WrongType {
        path: at.render(),
        expected,
    }
}

fn missing(at: &Path<'_>) -> StatusError {
    StatusError::MissingKey { path: at.render() }
}

/// How deeply `json`'s arrays and objects nest, counted without parsing (brackets inside strings skipped),
/// so a deep document is refused before anything of it is built. Exact for valid JSON; for invalid JSON
/// whatever it counts, the parser refuses it anyway.
fn nesting(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::peer_file;
    use serde_json::json;

    fn parse(v: Value) -> Result<StatusReport, StatusError> {
        StatusReport::parse(v.to_string().as_bytes())
    }

    fn declarations_report(entry: Value) -> Value {
        json!({"StatusItems": {"management": {"declarations": {"configurations": [entry]}}}, "Errors": []})
    }

    fn entry() -> Value {
        json!({"identifier": "c1", "server-token": "t1", "active": true, "valid": "valid"})
    }

    #[test]
    fn the_ios16_full_report() {
        let Some(bytes) = peer_file("kmfddm/ddm-status.full-report.iOS16-beta.json") else {
            return;
        };
        let r = StatusReport::parse(&bytes).unwrap();
        assert!(!r.full, "the report has no FullReport key");
        assert_eq!(r.declarations.len(), 5);
        let by_id = |id: &str| r.declarations.iter().find(|d| d.identifier == id).unwrap();
        let invalid = by_id("0FCD2F56-D5BC-48EA-B98D-E0CCC0C6F9E0");
        assert_eq!(invalid.category, Category::Configuration);
        assert_eq!(invalid.valid, Validity::Invalid);
        assert!(invalid.active);
        assert_eq!(invalid.server_token, "2c8e5ce2-f7ba-5381-bce0-7d9c60f8c092");
        assert_eq!(invalid.reasons.len(), 1);
        assert_eq!(
            invalid.reasons[0]["code"],
            "Error.ConfigurationCannotBeApplied"
        );
        assert_eq!(
            invalid.reasons[0]["details"]["Error"],
            "An internal error has occurred."
        );
        let activation = by_id("49F6F16A-70EB-4A89-B092-465FAEC5E550");
        assert_eq!(activation.category, Category::Activation);
        assert_eq!(activation.valid, Validity::Valid);
        assert!(activation.reasons.is_empty());
        let management = by_id("AF0E633E-7ADB-4B2A-A48C-1B20AA271D08");
        assert_eq!(management.category, Category::Management);
        assert!(!management.active);
        assert_eq!(
            r.declarations
                .iter()
                .filter(|d| d.valid == Validity::Invalid)
                .count(),
            2
        );

        assert_eq!(r.items["device.operating-system.version"], "16.0");
        assert_eq!(r.items["device.model.identifier"], "iPhone10,2");
        assert_eq!(r.items["device.model.marketing-name"], "iPhone 8 Plus");
        // A documented item is kept whole, its keys included.
        let capabilities = &r.items["management.client-capabilities"];
        assert_eq!(capabilities["supported-versions"], json!(["1.0.0"]));
        assert!(capabilities["supported-payloads"]["status-items"]
            .as_array()
            .unwrap()
            .contains(&json!("passcode.is-compliant")));
        // An undocumented one is kept at its leaf.
        assert!(r.items["management.push-token"].is_string());
        assert!(!r.items.contains_key("management.declarations"));
        assert!(!r
            .items
            .keys()
            .any(|k| k.starts_with("management.client-capabilities.")));
        assert_eq!(r.items.len(), 9, "{:?}", r.items.keys().collect::<Vec<_>>());
        assert!(r.errors.is_empty());
    }

    #[test]
    fn the_first_report_and_a_not_referenced_one() {
        let Some(first) = peer_file("kmfddm/ddm-status.first-report.json") else {
            return;
        };
        let r = StatusReport::parse(&first).unwrap();
        assert!(r.declarations.is_empty());
        assert_eq!(r.items["device.identifier.serial-number"], "ZRMXJQTTFX");
        assert_eq!(r.items["device.operating-system.version"], "13.3.1");
        assert_eq!(
            r.items["device.operating-system.supplemental.extra-version"],
            "(a)"
        );
        assert_eq!(r.items["device.model.family"], "Mac");

        let Some(unreferenced) = peer_file("kmfddm/ddm-status.not-referenced-error.json") else {
            return;
        };
        let r = StatusReport::parse(&unreferenced).unwrap();
        assert_eq!(r.declarations.len(), 1);
        let d = &r.declarations[0];
        assert_eq!(
            (d.category, d.identifier.as_str(), d.valid, d.active),
            (
                Category::Configuration,
                "com.example.test",
                Validity::Unknown,
                false
            )
        );
        assert_eq!(d.reasons[0]["code"], "Info.NotReferencedByActivation");
        assert!(r.items.is_empty());
    }

    #[test]
    fn passcode_items_and_full_reports() {
        for compliant in [true, false] {
            let r = parse(json!({
                "StatusItems": {"passcode": {"is-compliant": compliant, "is-present": true}},
                "Errors": [],
                "FullReport": true
            }))
            .unwrap();
            assert_eq!(r.items["passcode.is-compliant"], json!(compliant));
            assert_eq!(r.items["passcode.is-present"], json!(true));
            assert!(r.full);
        }
        // A documented item's value must have its type.
        assert_eq!(
            parse(json!({"StatusItems": {"passcode": {"is-compliant": "yes"}}})).unwrap_err(),
            StatusError::WrongType {
                path: "StatusItems.passcode.is-compliant".into(),
                expected: "boolean"
            }
        );
        assert_eq!(
            parse(json!({"StatusItems": {}, "FullReport": "true"})).unwrap_err(),
            StatusError::WrongType {
                path: "FullReport".into(),
                expected: "boolean"
            }
        );
    }

    #[test]
    fn unknown_items_flatten_to_leaves_and_extra_keys_stay() {
        let r = parse(json!({
            "StatusItems": {
                "vendor": {"thing": {"count": 3, "list": [1, {"a": 2}]}, "empty": {}},
                "device": {"operating-system": {"version": "17.5"}},
                "softwareupdate": {"pending-version": {"os-version": "17.6", "new-key": true}}
            },
            "Extra": "ignored"
        }))
        .unwrap();
        let names: Vec<&str> = r.items.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "device.operating-system.version",
                "softwareupdate.pending-version",
                "vendor.thing.count",
                "vendor.thing.list"
            ]
        );
        assert_eq!(r.items["vendor.thing.list"], json!([1, {"a": 2}]));
        assert_eq!(
            r.items["softwareupdate.pending-version"]["new-key"],
            json!(true)
        );
        assert!(r.errors.is_empty() && r.declarations.is_empty() && !r.full);
    }

    #[test]
    fn declaration_entries() {
        let mut e = entry();
        e["unknown-new-key"] = json!({"x": 1});
        e["reasons"] = json!([{"code": "Error.X"}]);
        let r = parse(declarations_report(e)).unwrap();
        assert_eq!(
            r.declarations,
            [DeclarationStatus {
                category: Category::Configuration,
                identifier: "c1".into(),
                active: true,
                valid: Validity::Valid,
                server_token: "t1".into(),
                reasons: vec![json!({"code": "Error.X"})],
            }]
        );
        // Every category, in one report; categories left out report nothing.
        let all = parse(json!({"StatusItems": {"management": {"declarations": {
            "activations": [entry()], "assets": [entry()], "configurations": [], "management": [entry()],
            "future-kind": [1]
        }}}}))
        .unwrap();
        let categories: Vec<Category> = all.declarations.iter().map(|d| d.category).collect();
        assert_eq!(
            categories,
            [Category::Activation, Category::Asset, Category::Management]
        );
    }

    #[test]
    fn malformed_declaration_entries_are_refused() {
        let at = "StatusItems.management.declarations.configurations[0]";
        let with = |key: &str, value: Value| {
            let mut e = entry();
            e[key] = value;
            parse(declarations_report(e)).unwrap_err()
        };
        assert_eq!(
            with("valid", json!(true)),
            StatusError::WrongType {
                path: format!("{at}.valid"),
                expected: "string"
            }
        );
        assert_eq!(
            with("valid", json!("sort-of")),
            StatusError::WrongType {
                path: format!("{at}.valid"),
                expected: "\"valid\", \"invalid\" or \"unknown\""
            }
        );
        assert_eq!(
            with("active", json!("true")),
            StatusError::WrongType {
                path: format!("{at}.active"),
                expected: "boolean"
            }
        );
        assert_eq!(
            with("server-token", json!(1)),
            StatusError::WrongType {
                path: format!("{at}.server-token"),
                expected: "string"
            }
        );
        assert_eq!(
            with("reasons", json!({"code": "x"})),
            StatusError::WrongType {
                path: format!("{at}.reasons"),
                expected: "array"
            }
        );
        assert_eq!(
            with("reasons", json!([{"code": "x"}, "y"])),
            StatusError::WrongType {
                path: format!("{at}.reasons[1]"),
                expected: "dictionary"
            }
        );
        let mut e = entry();
        e.as_object_mut().unwrap().remove("identifier");
        assert_eq!(
            parse(declarations_report(e)).unwrap_err(),
            StatusError::MissingKey {
                path: format!("{at}.identifier")
            }
        );
        assert_eq!(
            parse(declarations_report(json!("c1"))).unwrap_err(),
            StatusError::WrongType {
                path: at.into(),
                expected: "dictionary"
            }
        );
        assert_eq!(
            parse(json!({"StatusItems": {"management": {"declarations": {"assets": {}}}}}))
                .unwrap_err(),
            StatusError::WrongType {
                path: "StatusItems.management.declarations.assets".into(),
                expected: "array"
            }
        );
        assert_eq!(
            parse(json!({"StatusItems": {"management": {"declarations": []}}})).unwrap_err(),
            StatusError::WrongType {
                path: "StatusItems.management.declarations".into(),
                expected: "dictionary"
            }
        );
    }

    #[test]
    fn errors_list() {
        let r = parse(json!({"StatusItems": {}, "Errors": [
            {"StatusItem": "test.error-value", "Reasons": [{"Code": "Error.X", "Description": "d"}]},
            {"StatusItem": "device.model.number", "Extra": 1}
        ]}))
        .unwrap();
        assert_eq!(
            r.errors,
            [
                StatusItemError {
                    status_item: "test.error-value".into(),
                    reasons: vec![json!({"Code": "Error.X", "Description": "d"})]
                },
                StatusItemError {
                    status_item: "device.model.number".into(),
                    reasons: vec![]
                }
            ]
        );
        assert_eq!(
            parse(json!({"StatusItems": {}, "Errors": [{"Reasons": []}]})).unwrap_err(),
            StatusError::MissingKey {
                path: "Errors[0].StatusItem".into()
            }
        );
        assert_eq!(
            parse(json!({"StatusItems": {}, "Errors": {}})).unwrap_err(),
            StatusError::WrongType {
                path: "Errors".into(),
                expected: "array"
            }
        );
    }

    #[test]
    fn malformed_reports_are_refused() {
        assert!(matches!(
            StatusReport::parse(b"not json"),
            Err(StatusError::Json(_))
        ));
        assert_eq!(
            StatusReport::parse(b"[]").unwrap_err(),
            StatusError::NotAnObject
        );
        assert_eq!(
            parse(json!({"Errors": []})).unwrap_err(),
            StatusError::MissingKey {
                path: "StatusItems".into()
            }
        );
        assert_eq!(
            parse(json!({"StatusItems": []})).unwrap_err(),
            StatusError::WrongType {
                path: "StatusItems".into(),
                expected: "dictionary"
            }
        );
    }

    #[test]
    fn size_is_bounded_before_parsing() {
        let mut body = br#"{"StatusItems":{}}"#.to_vec();
        body.resize(MAX_STATUS_REPORT_BYTES, b' ');
        assert!(StatusReport::parse(&body).is_ok());
        body.push(b' ');
        assert_eq!(
            StatusReport::parse(&body).unwrap_err(),
            StatusError::TooLarge
        );
    }

    #[test]
    fn depth_is_bounded() {
        let nested = |depth: usize| {
            // The report, StatusItems and "x" take three levels; arrays make up the rest.
            let arrays = depth - 3;
            format!(
                r#"{{"StatusItems":{{"x":{{"y":{}{}}}}}}}"#,
                "[".repeat(arrays),
                "]".repeat(arrays)
            )
        };
        let ok = StatusReport::parse(nested(MAX_STATUS_DEPTH).as_bytes()).unwrap();
        assert!(ok.items["x.y"].is_array());
        assert_eq!(
            StatusReport::parse(nested(MAX_STATUS_DEPTH + 1).as_bytes()).unwrap_err(),
            StatusError::TooDeep
        );
        // Far past serde_json's own limit, and within it.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            StatusReport::parse(deep.as_bytes()).unwrap_err(),
            StatusError::TooDeep
        );
        // Brackets inside strings (escaped quotes too) do not count.
        let quoted = format!(
            r#"{{"StatusItems":{{"s":"{}\"{}"}}}}"#,
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(StatusReport::parse(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn counts_are_bounded() {
        let items: Map<String, Value> = (0..=MAX_STATUS_ITEMS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        assert_eq!(
            parse(json!({"StatusItems": {"vendor": items}})).unwrap_err(),
            StatusError::TooMany {
                what: "status items",
                max: MAX_STATUS_ITEMS
            }
        );
        let at_most: Map<String, Value> = (0..MAX_STATUS_ITEMS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        assert_eq!(
            parse(json!({"StatusItems": {"vendor": at_most}}))
                .unwrap()
                .items
                .len(),
            MAX_STATUS_ITEMS
        );

        let many = vec![entry(); MAX_STATUS_DECLARATIONS / 2 + 1];
        assert_eq!(
            parse(json!({"StatusItems": {"management": {"declarations": {
                "activations": many.clone(), "configurations": many
            }}}}))
            .unwrap_err(),
            StatusError::TooMany {
                what: "declaration statuses",
                max: MAX_STATUS_DECLARATIONS
            }
        );
        let errors = vec![json!({"StatusItem": "x"}); MAX_STATUS_ERRORS + 1];
        assert_eq!(
            parse(json!({"StatusItems": {}, "Errors": errors})).unwrap_err(),
            StatusError::TooMany {
                what: "errors",
                max: MAX_STATUS_ERRORS
            }
        );
    }

    #[test]
    fn nesting_counts_only_structure() {
        assert_eq!(nesting(b"1"), 0);
        assert_eq!(nesting(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting(br#"{"a":"[[[\\"}"#), 1);
        assert_eq!(nesting(br#"["\"[[["]"#), 1);
    }
}
