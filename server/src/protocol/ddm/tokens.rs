//! The synchronization a device does before fetching declarations: the `tokens` endpoint (and the same JSON
//! in the DeclarativeManagement command), the `declaration-items` manifest, and the tokens in both.

use super::{canonical, Category};
use chrono::{DateTime, Utc};
use openssl::sha::Sha256;
use serde_json::{json, Map, Value};

/// A declaration's ServerToken: SHA-256, lower-case hex, over the canonical JSON of its Type, Identifier and
/// Payload. Any change to the content changes it; the same content, however written, keeps it. 64
/// characters, Apple's limit.
pub fn server_token(
    declaration_type: &str,
    identifier: &str,
    payload: &Map<String, Value>,
) -> String {
    let json = canonical::declaration(declaration_type, identifier, payload, None);
    hex::encode(openssl::sha::sha256(&json))
}

/// An enrollment's DeclarationsToken: SHA-256, lower-case hex, over its declarations' (identifier,
/// server_token) pairs sorted, so that it changes when any declaration is added, removed or changed, and
/// not with the order they were read in. Each string is framed by its length, so no two sets of pairs hash
/// the same bytes.
pub fn declarations_token<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = items.into_iter().collect();
    pairs.sort_unstable();
    let mut hash = Sha256::new();
    for (identifier, server_token) in pairs {
        for s in [identifier, server_token] {
            hash.update(&(s.len() as u64).to_be_bytes());
            hash.update(s.as_bytes());
        }
    }
    hex::encode(hash.finish())
}

/// One declaration in the `declaration-items` manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclarationItem {
    pub category: Category,
    pub identifier: String,
    pub server_token: String,
}

/// The `tokens` endpoint's body: `{"SyncTokens":{"DeclarationsToken":..,"Timestamp":..}}`, the timestamp
/// in RFC 3339 UTC to the second (`2024-01-02T03:04:05Z`).
pub fn tokens_response(declarations_token: &str, timestamp_ms: i64) -> Vec<u8> {
    let body = json!({
        "SyncTokens": {
            "DeclarationsToken": declarations_token,
            "Timestamp": timestamp(timestamp_ms),
        }
    });
    serde_json::to_vec(&body).expect("serialize JSON to memory")
}

/// The `Data` of a DeclarativeManagement command: Apple's TokensResponse, the same JSON as the `tokens`
/// endpoint (the caller puts these bytes in the command's plist as `<data>`).
pub fn sync_tokens_data(declarations_token: &str, timestamp_ms: i64) -> Vec<u8> {
    tokens_response(declarations_token, timestamp_ms)
}

/// The `declaration-items` endpoint's body: every category's list (always all four, empty or not), each
/// sorted by identifier, of `{"Identifier","ServerToken"}`, and the DeclarationsToken.
pub fn declaration_items_response(items: &[DeclarationItem], declarations_token: &str) -> Vec<u8> {
    let mut declarations = Map::new();
    for category in Category::ALL {
        let mut listed: Vec<&DeclarationItem> =
            items.iter().filter(|i| i.category == category).collect();
        listed.sort_by(|a, b| {
            (&a.identifier, &a.server_token).cmp(&(&b.identifier, &b.server_token))
        });
        let list = listed
            .into_iter()
            .map(|i| json!({"Identifier": i.identifier, "ServerToken": i.server_token}))
            .collect();
        declarations.insert(category.items_key().into(), Value::Array(list));
    }
    let body = json!({
        "Declarations": declarations,
        "DeclarationsToken": declarations_token,
    });
    serde_json::to_vec(&body).expect("serialize JSON to memory")
}

/// Earliest and latest instants written: years 0000 to 9999, the range RFC 3339's four-digit year holds.
const MIN_TIMESTAMP_MS: i64 = -62_167_219_200_000;
const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// `timestamp_ms` as RFC 3339 UTC to the second; a clock outside years 0000–9999 is clamped into them.
fn timestamp(timestamp_ms: i64) -> String {
    let ms = timestamp_ms.clamp(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS);
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("clamped into chrono's range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn tokens_response_shape() {
        // 2024-01-02T03:04:05.678Z
        let ms = 1_704_164_645_678;
        let body = tokens_response("abc", ms);
        assert_eq!(
            parsed(&body),
            json!({"SyncTokens": {"DeclarationsToken": "abc", "Timestamp": "2024-01-02T03:04:05Z"}})
        );
        assert_eq!(sync_tokens_data("abc", ms), body);
        assert_eq!(
            parsed(&tokens_response("t", 0))["SyncTokens"]["Timestamp"],
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            parsed(&tokens_response("t", i64::MAX))["SyncTokens"]["Timestamp"],
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            parsed(&tokens_response("t", i64::MIN))["SyncTokens"]["Timestamp"],
            "0000-01-01T00:00:00Z"
        );
    }

    #[test]
    fn declaration_items_shape() {
        let item = |category, identifier: &str, token: &str| DeclarationItem {
            category,
            identifier: identifier.into(),
            server_token: token.into(),
        };
        let items = [
            item(Category::Configuration, "b", "t2"),
            item(Category::Activation, "act", "t0"),
            item(Category::Configuration, "a", "t1"),
            item(Category::Management, "m", "t3"),
        ];
        let body = declaration_items_response(&items, "DT");
        assert_eq!(
            parsed(&body),
            json!({
                "Declarations": {
                    "Activations": [{"Identifier": "act", "ServerToken": "t0"}],
                    "Assets": [],
                    "Configurations": [
                        {"Identifier": "a", "ServerToken": "t1"},
                        {"Identifier": "b", "ServerToken": "t2"}
                    ],
                    "Management": [{"Identifier": "m", "ServerToken": "t3"}]
                },
                "DeclarationsToken": "DT"
            })
        );
        assert_eq!(
            parsed(&declaration_items_response(&[], "E")),
            json!({"Declarations": {"Activations": [], "Assets": [], "Configurations": [], "Management": []},
                   "DeclarationsToken": "E"})
        );
    }

    #[test]
    fn declarations_token_ignores_order_and_follows_every_pair() {
        let a = declarations_token([("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(a, declarations_token([("c", "3"), ("a", "1"), ("b", "2")]));
        assert_eq!(a.len(), 64);
        for changed in [
            vec![("a", "1"), ("b", "2"), ("c", "4")],
            vec![("a", "1"), ("b", "2"), ("d", "3")],
            vec![("a", "1"), ("b", "2")],
            vec![("a", "1"), ("b", "2"), ("c", "3"), ("e", "5")],
        ] {
            assert_ne!(declarations_token(changed.clone()), a, "{changed:?}");
        }
        // Framing: moving characters between identifier and token changes the token.
        assert_ne!(
            declarations_token([("ab", "c")]),
            declarations_token([("a", "bc")])
        );
        assert_ne!(
            declarations_token([("a", "b"), ("c", "d")]),
            declarations_token([("a", "bc"), ("", "d")])
        );
        // No declarations is a token too, and a fixed one.
        assert_eq!(declarations_token([]), declarations_token(Vec::new()));
        assert_ne!(declarations_token([]), a);
    }

    #[test]
    fn server_token_is_sha256_of_the_canonical_declaration() {
        let payload = json!({"b": 1, "a": [true]});
        let token = server_token("com.apple.x", "id", payload.as_object().unwrap());
        let expected = hex::encode(openssl::sha::sha256(
            br#"{"Identifier":"id","Payload":{"a":[true],"b":1},"Type":"com.apple.x"}"#,
        ));
        assert_eq!(token, expected);
    }
}
