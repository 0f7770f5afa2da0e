//! Canonical JSON: object keys sorted (by their UTF-8 bytes) at every level, no whitespace, serde_json's
//! escaping and number forms. Equal content gives equal bytes however it was written, which is what the
//! ServerToken is computed over.
//!
//! Keys are sorted here, not left to serde_json's map: its `preserve_order` feature, if anything in the
//! build turned it on, would keep the sender's order.

use super::path::Path;
use serde_json::{Map, Value};

/// A declaration in canonical form: `Identifier`, `Payload`, `ServerToken` (when given) and `Type`, the
/// keys in their sorted order.
pub(crate) fn declaration(
    declaration_type: &str,
    identifier: &str,
    payload: &Map<String, Value>,
    server_token: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"Identifier\":");
    scalar_to(identifier, &mut out);
    out.extend_from_slice(b",\"Payload\":");
    write_map(payload, &mut out);
    if let Some(token) = server_token {
        out.extend_from_slice(b",\"ServerToken\":");
        scalar_to(token, &mut out);
    }
    out.extend_from_slice(b",\"Type\":");
    scalar_to(declaration_type, &mut out);
    out.push(b'}');
    out
}

/// A JSON object in canonical form.
pub(crate) fn map_to_string(map: &Map<String, Value>) -> String {
    let mut out = Vec::new();
    write_map(map, &mut out);
    // serde_json writes UTF-8, and the punctuation added here is ASCII.
    String::from_utf8(out).expect("JSON is UTF-8")
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_map(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => scalar_to(scalar, out),
    }
}

fn write_map(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        scalar_to(key, out);
        out.push(b':');
        write(value, out);
    }
    out.push(b'}');
}

/// A string, number, boolean or null as serde_json writes it.
fn scalar_to<T: serde::Serialize + ?Sized>(scalar: &T, out: &mut Vec<u8>) {
    // Writing a scalar into memory cannot fail (no I/O, no map keys to reject).
    serde_json::to_writer(out, scalar).expect("serialize a JSON scalar to memory");
}

/// The first number in `value` that serde_json does not read back as itself, with its place below `at`.
///
/// serde_json (without its `float_roundtrip` feature, which this build does not turn on) reads a decimal
/// with more than about 15 significant digits, or a large exponent, to a neighbour of the nearest double,
/// so such a number would change between the admin's upload, what is stored and what the device is served,
/// and a re-uploaded declaration would no longer match its own ServerToken. Integers and everyday decimals
/// (up to 15 significant digits, exponents within ±22) read back exactly.
pub(crate) fn first_inexact_number(value: &Value, at: &Path<'_>) -> Option<String> {
    match value {
        Value::Number(n) if n.is_f64() => {
            let text = serde_json::to_string(n).expect("serialize a number to memory");
            let again: Option<Value> = serde_json::from_str(&text).ok();
            (again.as_ref() != Some(value)).then(|| at.render())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_inexact_number(item, &at.index(i))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| first_inexact_number(v, &at.key(k))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: Value) -> String {
        match v {
            Value::Object(map) => map_to_string(&map),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn keys_sorted_at_every_level_without_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [ {"z": 1, "a": null} , 2.5, "x\"\n" ], "a": {"d": true, "c": {}} , "B": []}"#,
        )
        .unwrap();
        assert_eq!(
            text(v),
            r#"{"B":[],"a":{"c":{},"d":true},"b":[{"a":null,"z":1},2.5,"x\"\n"]}"#
        );
        // Sorted by bytes: upper case before lower case, and a prefix first.
        assert_eq!(
            text(json!({"ab": 1, "a": 2, "Z": 3, "é": 4})),
            r#"{"Z":3,"a":2,"ab":1,"é":4}"#
        );
    }

    #[test]
    fn a_declaration_in_canonical_form() {
        let payload = json!({"y": 1, "x": [true]});
        let payload = payload.as_object().unwrap();
        let with = declaration("com.apple.t", "id\"1", payload, Some("abc"));
        assert_eq!(
            String::from_utf8(with).unwrap(),
            r#"{"Identifier":"id\"1","Payload":{"x":[true],"y":1},"ServerToken":"abc","Type":"com.apple.t"}"#
        );
        let without = declaration("com.apple.t", "i", payload, None);
        assert_eq!(
            String::from_utf8(without).unwrap(),
            r#"{"Identifier":"i","Payload":{"x":[true],"y":1},"Type":"com.apple.t"}"#
        );
    }

    #[test]
    fn numbers_that_do_not_read_back_are_found() {
        let at = Path::root("Payload");
        let exact: Value = serde_json::from_str(
            r#"{"a": [1, -2, 1.5, 0.1, 3.14159, 123456789012345.6, 1e300, 18446744073709551615]}"#,
        )
        .unwrap();
        assert_eq!(first_inexact_number(&exact, &at), None);
        // Read, this is a double whose shortest form serde_json reads to a neighbour. Should this fail,
        // serde_json now reads numbers exactly (its `float_roundtrip` feature): the check can go.
        let drifting: Value =
            serde_json::from_str(r#"{"a": {"b": [1, 4.2825226372290537e-32]}}"#).unwrap();
        assert_eq!(
            first_inexact_number(&drifting, &at).as_deref(),
            Some("Payload.a.b[1]")
        );
    }
}
