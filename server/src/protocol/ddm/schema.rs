//! Apple's declaration schemas, as generated into `schemas.json` by `tests/tests/suite/ddm_schemas.rs` from
//! `spec/apple-device-management/declarative/` (regenerate with
//! `MDM_REGENERATE_DDM_SCHEMAS=1 cargo test --workspace --test suite ddm_schemas::`), and the check of a value
//! against them.
//!
//! What a node holds: its type; for a dictionary member, whether it is required; for a string or integer,
//! the values allowed (Apple's `rangelist`) and for an integer its bounds (`range`); for a dictionary, its
//! declared keys, the schema of any other key (Apple's `ANY` key) or that it takes anything (`open`: no
//! keys declared); for an array, its items' schema; for a string, whether it names another declaration.

use super::declaration::DeclarationError;
use super::path::Path;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Schemas {
    /// Keys common to every declaration (Apple's `declarationtype: any`).
    pub(crate) base: Node,
    /// Each declaration Type's `Payload`.
    pub(crate) declarations: BTreeMap<String, Node>,
    /// Each status item's name and the type of its value.
    pub(crate) status_items: BTreeMap<String, Kind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Node {
    #[serde(rename = "type")]
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) required: bool,
    #[serde(default)]
    allowed: Vec<Value>,
    min: Option<i64>,
    max: Option<i64>,
    #[serde(default)]
    pub(crate) keys: BTreeMap<String, Node>,
    any: Option<Box<Node>>,
    #[serde(default)]
    open: bool,
    items: Option<Box<Node>>,
    /// A string naming another declaration by its Identifier (an asset reference, an activation's
    /// configurations).
    #[serde(default)]
    reference: bool,
}

/// A value's type, as Apple's schemas write it (`<string>`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    String,
    Integer,
    Real,
    Boolean,
    Dictionary,
    Array,
    Data,
    Date,
    Any,
}

impl Kind {
    /// How a message names what was expected.
    pub(crate) fn expected(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Integer => "integer",
            Kind::Real => "number",
            Kind::Boolean => "boolean",
            Kind::Dictionary => "dictionary",
            Kind::Array => "array",
            Kind::Data => "base64 string",
            Kind::Date => "RFC 3339 date string",
            Kind::Any => "any value",
        }
    }

    /// Whether `value` is of this type, at its top level only.
    pub(crate) fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (Kind::Any, _)
            | (Kind::Boolean, Value::Bool(_))
            | (Kind::Real, Value::Number(_))
            | (Kind::Array, Value::Array(_))
            | (Kind::Dictionary, Value::Object(_))
            | (Kind::String, Value::String(_)) => true,
            (Kind::Integer, Value::Number(n)) => integer(n).is_some(),
            (Kind::Data, Value::String(s)) => STANDARD.decode(s).is_ok(),
            (Kind::Date, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            _ => false,
        }
    }
}

static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    serde_json::from_str(include_str!("schemas.json")).expect(
        "schemas.json matches schema::Schemas (regenerate it, see tests/tests/suite/ddm_schemas.rs)",
    )
});

pub(crate) fn schemas() -> &'static Schemas {
    &SCHEMAS
}

/// Every declaration Type the server accepts, sorted.
pub fn declaration_types() -> impl Iterator<Item = &'static str> {
    schemas().declarations.keys().map(String::as_str)
}

/// Every status item name Apple documents, sorted.
pub fn status_item_names() -> impl Iterator<Item = &'static str> {
    schemas().status_items.keys().map(String::as_str)
}

/// Whether a documented status item's value is a single value (a string, number or boolean) rather than
/// an array or dictionary; None for an undocumented name.
pub fn status_item_is_scalar(name: &str) -> Option<bool> {
    let kind = *schemas().status_items.get(name)?;
    Some(matches!(
        kind,
        Kind::String | Kind::Integer | Kind::Real | Kind::Boolean
    ))
}

/// The payload schema of a declaration Type.
pub(crate) fn payload_schema(declaration_type: &str) -> Option<&'static Node> {
    schemas().declarations.get(declaration_type)
}

/// Every string in a payload of `declaration_type` that names another declaration (see
/// [`Node::reference`]), for `visit` to read or rewrite. A payload is checked before this is asked, so a
/// value of the wrong shape is simply not visited.
pub fn references_mut(
    declaration_type: &str,
    payload: &mut Value,
    visit: &mut impl FnMut(&mut String),
) {
    if let Some(node) = payload_schema(declaration_type) {
        walk_references(node, payload, visit);
    }
}

fn walk_references(node: &Node, value: &mut Value, visit: &mut impl FnMut(&mut String)) {
    match value {
        Value::String(s) if node.reference => visit(s),
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if let Some(n) = node.keys.get(key).or(node.any.as_deref()) {
                    walk_references(n, child, visit);
                }
            }
        }
        Value::Array(items) => {
            if let Some(n) = node.items.as_deref() {
                items.iter_mut().for_each(|v| walk_references(n, v, visit));
            }
        }
        _ => {}
    }
}

/// Check `value` against `node`; the first failure, in key order, names its path.
pub(crate) fn check(node: &Node, value: &Value, at: &Path<'_>) -> Result<(), DeclarationError> {
    if !node.kind.admits(value) {
        return Err(DeclarationError::WrongType {
            path: at.render(),
            expected: node.kind.expected(),
        });
    }
    match value {
        Value::Object(map) => check_dictionary(node, map, at),
        Value::Array(items) => check_items(node, items, at),
        Value::String(_) => check_allowed(node, value, at),
        Value::Number(n) if node.kind == Kind::Integer => {
            check_allowed(node, value, at)?;
            check_range(node, n, at)
        }
        _ => Ok(()),
    }
}

/// A dictionary member is checked by its declared key, else by the `ANY` schema, else refused; then every
/// required key must be there. An `open` dictionary (or a value of type any) takes anything.
fn check_dictionary(
    node: &Node,
    map: &Map<String, Value>,
    at: &Path<'_>,
) -> Result<(), DeclarationError> {
    if node.open || node.kind == Kind::Any {
        return Ok(());
    }
    for (key, child) in &node.keys {
        if child.required && !map.contains_key(key) {
            return Err(DeclarationError::MissingRequired {
                path: at.key(key).render(),
            });
        }
    }
    for (key, value) in map {
        let here = at.key(key);
        match node.keys.get(key).or(node.any.as_deref()) {
            Some(child) => check(child, value, &here)?,
            None => {
                return Err(DeclarationError::UnknownKey {
                    path: here.render(),
                })
            }
        }
    }
    Ok(())
}

fn check_items(node: &Node, items: &[Value], at: &Path<'_>) -> Result<(), DeclarationError> {
    let Some(item) = node.items.as_deref() else {
        return Ok(());
    };
    items
        .iter()
        .enumerate()
        .try_for_each(|(i, value)| check(item, value, &at.index(i)))
}

/// Apple's `rangelist`: the value must be one of those listed (strings or integers).
fn check_allowed(node: &Node, value: &Value, at: &Path<'_>) -> Result<(), DeclarationError> {
    if node.allowed.is_empty() || node.allowed.iter().any(|a| same_scalar(a, value)) {
        return Ok(());
    }
    let allowed = node
        .allowed
        .iter()
        .map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Err(DeclarationError::NotAllowed {
        path: at.render(),
        allowed,
    })
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => integer(x).is_some() && integer(x) == integer(y),
        _ => a == b,
    }
}

/// Apple's `range`: an integer within `min..=max` (either bound may be absent).
fn check_range(node: &Node, n: &Number, at: &Path<'_>) -> Result<(), DeclarationError> {
    let Some(v) = integer(n) else {
        return Ok(());
    };
    let above_min = node.min.is_none_or(|m| v >= i128::from(m));
    let below_max = node.max.is_none_or(|m| v <= i128::from(m));
    if above_min && below_max {
        return Ok(());
    }
    let bounds = match (node.min, node.max) {
        (Some(lo), Some(hi)) => format!("from {lo} to {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => unreachable!("a bound was crossed"),
    };
    Err(DeclarationError::OutOfRange {
        path: at.render(),
        bounds,
    })
}

/// An integral JSON number (serde_json keeps integers as i64 or u64; 5.0 is not one).
fn integer(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_payload(declaration_type: &str, payload: Value) -> Result<(), DeclarationError> {
        let node = payload_schema(declaration_type).expect("known type");
        check(node, &payload, &Path::root("Payload"))
    }

    #[test]
    fn the_embedded_schemas_load() {
        let s = schemas();
        assert!(s.declarations.len() >= 30, "{}", s.declarations.len());
        assert!(s.status_items.contains_key("passcode.is-compliant"));
        assert_eq!(s.status_items["management.declarations"], Kind::Dictionary);
        for key in ["Type", "Identifier", "ServerToken", "Payload"] {
            assert!(s.base.keys[key].required, "{key}");
        }
        assert!(s.base.keys["Payload"].open);
        assert!(declaration_types().any(|t| t == "com.apple.configuration.passcode.settings"));
        assert!(status_item_names().any(|n| n == "device.operating-system.version"));
    }

    // Every Type the server accepts can be served: its category is in its name.
    #[test]
    fn every_type_has_a_category() {
        for t in declaration_types() {
            assert!(super::super::Category::of_type(t).is_some(), "{t}");
        }
    }

    // Flattening a report stops at the first known name, so no known name may continue another.
    #[test]
    fn no_status_item_name_extends_another() {
        let names: Vec<_> = status_item_names().collect();
        for a in &names {
            for b in &names {
                assert!(!b.starts_with(&format!("{a}.")), "{b} extends {a}");
            }
        }
    }

    #[test]
    fn types_are_checked_with_their_paths() {
        let e = check_payload(
            "com.apple.configuration.passcode.settings",
            json!({"MinimumLength": "6"}),
        )
        .unwrap_err();
        assert_eq!(
            e,
            DeclarationError::WrongType {
                path: "Payload.MinimumLength".into(),
                expected: "integer"
            }
        );
        assert_eq!(
            e.to_string(),
            "Payload.MinimumLength has the wrong type (expected integer)"
        );
        // 6.0 is a number but not an integer.
        assert!(check_payload(
            "com.apple.configuration.passcode.settings",
            json!({"MinimumLength": 6.0})
        )
        .is_err());
        assert_eq!(
            check_payload(
                "com.apple.configuration.passcode.settings",
                json!({"RequirePasscode": "true"})
            )
            .unwrap_err(),
            DeclarationError::WrongType {
                path: "Payload.RequirePasscode".into(),
                expected: "boolean"
            }
        );
        assert_eq!(
            check_payload(
                "com.apple.activation.simple",
                json!({"StandardConfigurations": ["a", "b", 3]})
            )
            .unwrap_err(),
            DeclarationError::WrongType {
                path: "Payload.StandardConfigurations[2]".into(),
                expected: "string"
            }
        );
        assert_eq!(
            check_payload(
                "com.apple.activation.simple",
                json!({"StandardConfigurations": "a"})
            )
            .unwrap_err(),
            DeclarationError::WrongType {
                path: "Payload.StandardConfigurations".into(),
                expected: "array"
            }
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        assert_eq!(
            check_payload(
                "com.apple.configuration.passcode.settings",
                json!({"CustomRegex": {"Regex": "^.{8,}$", "Colour": "red"}})
            )
            .unwrap_err(),
            DeclarationError::UnknownKey {
                path: "Payload.CustomRegex.Colour".into()
            }
        );
        assert_eq!(
            check_payload(
                "com.apple.configuration.passcode.settings",
                json!({"CustomRegex": {"Description": {"en": "8 or more"}}})
            )
            .unwrap_err(),
            DeclarationError::MissingRequired {
                path: "Payload.CustomRegex.Regex".into()
            }
        );
        assert_eq!(
            check_payload("com.apple.activation.simple", json!({})).unwrap_err(),
            DeclarationError::MissingRequired {
                path: "Payload.StandardConfigurations".into()
            }
        );
        // Items of an array of dictionaries.
        assert_eq!(
            check_payload(
                "com.apple.configuration.account.ldap",
                json!({"HostName": "ldap.example.com",
                       "SearchSettings": [{"SearchBase": "ou=a", "Scope": "Base"},
                                          {"SearchBase": "ou=b", "Depth": 1}]})
            )
            .unwrap_err(),
            DeclarationError::UnknownKey {
                path: "Payload.SearchSettings[1].Depth".into()
            }
        );
    }

    // Apple's ANY key: any key, its value per ANY's schema.
    #[test]
    fn any_keys_take_their_schema() {
        let ok =
            json!({"CustomRegex": {"Regex": "x", "Description": {"default": "d", "en-US": "e"}}});
        assert!(check_payload("com.apple.configuration.passcode.settings", ok).is_ok());
        assert_eq!(
            check_payload(
                "com.apple.configuration.passcode.settings",
                json!({"CustomRegex": {"Regex": "x", "Description": {"en-US": 1}}})
            )
            .unwrap_err(),
            DeclarationError::WrongType {
                path: "Payload.CustomRegex.Description.en-US".into(),
                expected: "string"
            }
        );
        // A value of type any may be anything, nested as it likes.
        assert!(check_payload(
            "com.apple.management.properties",
            json!({"a": 1, "b": {"c": [null, 2.5, {"d": "e"}]}})
        )
        .is_ok());
        // The ANY value may be a dictionary with its own keys.
        assert_eq!(
            check_payload(
                "com.apple.configuration.safari.extensions.settings",
                json!({"ManagedExtensions": {"com.example.ext (ABCDE12345)": {"State": "Sometimes"}}})
            )
            .unwrap_err(),
            DeclarationError::NotAllowed {
                path: "Payload.ManagedExtensions.com.example.ext (ABCDE12345).State".into(),
                allowed: "Allowed, AlwaysOn, AlwaysOff".into()
            }
        );
    }

    #[test]
    fn rangelists_and_ranges() {
        let passcode = "com.apple.configuration.passcode.settings";
        assert!(check_payload(passcode, json!({"MinimumLength": 0})).is_ok());
        assert!(check_payload(passcode, json!({"MinimumLength": 16})).is_ok());
        let e = check_payload(passcode, json!({"MinimumLength": 17})).unwrap_err();
        assert_eq!(
            e,
            DeclarationError::OutOfRange {
                path: "Payload.MinimumLength".into(),
                bounds: "from 0 to 16".into()
            }
        );
        assert_eq!(e.to_string(), "Payload.MinimumLength must be from 0 to 16");
        assert!(check_payload(passcode, json!({"MinimumLength": -1})).is_err());
        assert!(check_payload(passcode, json!({"MinimumLength": u64::MAX})).is_err());

        let mail = |method: &str| {
            json!({"IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example.com", "AuthenticationMethod": method},
                   "OutgoingServer": {"HostName": "smtp.example.com", "AuthenticationMethod": "Password"}})
        };
        let mail_type = "com.apple.configuration.account.mail";
        assert_eq!(check_payload(mail_type, mail("Password")), Ok(()));
        assert_eq!(
            check_payload(mail_type, mail("password")).unwrap_err(),
            DeclarationError::NotAllowed {
                path: "Payload.IncomingServer.AuthenticationMethod".into(),
                allowed: "None, Password, CRAMMD5, NTLM, HTTPMD5".into()
            }
        );
    }

    #[test]
    fn scalar_kinds() {
        assert!(Kind::Data.admits(&json!("AAEC")));
        assert!(!Kind::Data.admits(&json!("not base64!")));
        assert!(!Kind::Data.admits(&json!(1)));
        assert!(Kind::Date.admits(&json!("2024-01-02T03:04:05Z")));
        assert!(!Kind::Date.admits(&json!("2024-01-02")));
        assert!(Kind::Real.admits(&json!(1)) && Kind::Real.admits(&json!(1.5)));
        assert!(!Kind::Real.admits(&json!("1.5")));
        assert!(Kind::Integer.admits(&json!(-3)) && Kind::Integer.admits(&json!(u64::MAX)));
        assert!(!Kind::Integer.admits(&json!(1.5)));
        assert!(Kind::Any.admits(&Value::Null));
        assert!(!Kind::String.admits(&Value::Null));
    }
}
