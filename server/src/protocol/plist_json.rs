//! Conversions between plist values and JSON, for storing results as JSON and for typed JSON commands.
//! Data becomes base64 text and dates RFC 3339 text, since JSON has neither.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use plist::Value;
use serde_json::Value as Json;

pub fn plist_to_json(v: &Value) -> Json {
    match v {
        Value::Array(a) => Json::Array(a.iter().map(plist_to_json).collect()),
        Value::Dictionary(d) => Json::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), plist_to_json(v)))
                .collect(),
        ),
        Value::Boolean(b) => Json::Bool(*b),
        Value::Data(b) => Json::String(B64.encode(b)),
        Value::Date(d) => Json::String(d.to_xml_format()),
        Value::Real(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Value::Integer(i) => i
            .as_signed()
            .map(Json::from)
            .or_else(|| i.as_unsigned().map(Json::from))
            .unwrap_or(Json::Null),
        Value::String(s) => Json::String(s.clone()),
        Value::Uid(u) => Json::from(u.get()),
        _ => Json::Null,
    }
}

/// A JSON `null`, which has no plist form, at `path` (e.g. `x[1]`, or `the top level`).
#[derive(Debug, thiserror::Error)]
#[error("null is not allowed at {path}")]
pub struct NullInJson {
    pub path: String,
}

/// JSON to plist. `null` has no plist form and is refused with the path where it was found.
pub fn json_to_plist(v: &Json) -> Result<Value, NullInJson> {
    fn go(v: &Json, path: &mut String) -> Result<Value, NullInJson> {
        Ok(match v {
            Json::Null => {
                return Err(NullInJson {
                    path: display(path).to_owned(),
                })
            }
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Integer(i.into())
                } else if let Some(u) = n.as_u64() {
                    Value::Integer(u.into())
                } else {
                    Value::Real(n.as_f64().unwrap_or_default())
                }
            }
            Json::String(s) => Value::String(s.clone()),
            Json::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, item) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    out.push(go(item, path)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Json::Object(o) => {
                let mut out = plist::Dictionary::new();
                for (k, item) in o {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    out.insert(k.clone(), go(item, path)?);
                    path.truncate(len);
                }
                Value::Dictionary(out)
            }
        })
    }
    fn display(path: &str) -> &str {
        if path.is_empty() {
            "the top level"
        } else {
            path.trim_start_matches('.')
        }
    }
    go(v, &mut String::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_json_shapes() {
        let j = json!({"a": [1, -2, 2.5, true, "s"], "b": {"c": "d"}});
        let p = json_to_plist(&j).unwrap();
        assert_eq!(plist_to_json(&p), j);
    }

    #[test]
    fn data_becomes_base64_and_null_is_refused() {
        assert_eq!(plist_to_json(&Value::Data(vec![0, 1, 2])), json!("AAEC"));
        let err = json_to_plist(&json!({"x": [1, null]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x[1]"), "{err}");
    }
}
