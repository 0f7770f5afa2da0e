//! A declaration: what an admin uploads, what is stored, and what a device fetches at
//! `declaration/<category>/<identifier>`.

use super::canonical;
use super::path::Path;
use super::schema::{self, schemas};
use super::tokens::server_token;
use super::Category;
use serde_json::{Map, Value};

/// Largest upload accepted, checked before parsing. Apple's largest declarations (accounts, credentials)
/// take a few kilobytes; 256 KiB leaves room for large `management.properties` and `<any>` values.
pub const MAX_DECLARATION_BYTES: usize = 256 * 1024;

/// Longest Identifier, in bytes: Apple's limit for Identifier and ServerToken is 64 octets.
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// What an Identifier may be, as admins are told. It is a segment of the path a device fetches
/// (`declaration/<category>/<identifier>`), so no `/`, no spaces, no control characters, and it starts with
/// a letter or digit (never `.` or `..`); UUIDs and reverse-DNS names pass.
pub const IDENTIFIER_RULE: &str =
    "must be 1 to 64 characters of A-Z a-z 0-9 . _ - : @, starting with a letter or digit";

/// The key the server fills: an upload may leave it out (see [`Declaration::parse`]).
const SERVER_TOKEN: &str = "ServerToken";

#[derive(Debug, Clone, PartialEq)]
pub struct Declaration {
    pub identifier: String,
    pub declaration_type: String,
    pub category: Category,
    pub payload: Map<String, Value>,
    /// SHA-256 (lower-case hex, 64 characters) of the canonical JSON of Type, Identifier and Payload.
    pub server_token: String,
}

/// Why an upload was refused. Messages are meant for the admin who sent it: they name the key path
/// (`Payload.CustomRegex.Regex`) and never repeat more than a shortened key of what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarationError {
    #[error("declaration is larger than {MAX_DECLARATION_BYTES} bytes")]
    TooLarge,
    #[error("declaration is not valid JSON: {0}")]
    Json(String),
    #[error("declaration is not a JSON object")]
    NotAnObject,
    /// One of the declaration's own keys (Type, Identifier, Payload) is missing.
    #[error("missing required key {0}")]
    MissingKey(&'static str),
    /// A key the Type's schema requires is missing from the payload.
    #[error("missing required key {path}")]
    MissingRequired { path: String },
    #[error("{path} has the wrong type (expected {expected})")]
    WrongType {
        path: String,
        expected: &'static str,
    },
    #[error("unknown declaration Type {0:?}")]
    UnknownType(String),
    #[error("unknown key {path}")]
    UnknownKey { path: String },
    /// A value outside Apple's list for its key (`rangelist`).
    #[error("{path} must be one of: {allowed}")]
    NotAllowed { path: String, allowed: String },
    /// An integer outside Apple's bounds for its key (`range`).
    #[error("{path} must be {bounds}")]
    OutOfRange { path: String, bounds: String },
    /// See `canonical::first_inexact_number`.
    #[error("{path} cannot be stored exactly: use at most 15 significant digits")]
    InexactNumber { path: String },
    #[error("Identifier {0}")]
    BadIdentifier(&'static str),
    #[error("ServerToken does not match the declaration's content (leave it out: the server computes it)")]
    ServerTokenMismatch,
}

impl Declaration {
    /// Parse an admin's upload: a JSON object of `Type`, `Identifier`, `Payload` and optionally
    /// `ServerToken`, and nothing else. The Type must be one of Apple's, the payload must follow its schema,
    /// the Identifier [`IDENTIFIER_RULE`]. The ServerToken is computed; one sent along (a declaration
    /// downloaded and uploaded again) is accepted only if it is the computed one, so a stale copy is not
    /// mistaken for the current content.
    pub fn parse(body: &[u8]) -> Result<Declaration, DeclarationError> {
        if body.len() > MAX_DECLARATION_BYTES {
            return Err(DeclarationError::TooLarge);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| DeclarationError::Json(e.to_string()))?;
        let Value::Object(mut object) = value else {
            return Err(DeclarationError::NotAnObject);
        };
        check_envelope(&object)?;
        let declaration_type = take_string(&mut object, "Type")?;
        let (node, category) = schema::payload_schema(&declaration_type)
            .zip(Category::of_type(&declaration_type))
            .ok_or_else(|| unknown_type(&declaration_type))?;
        let identifier = take_string(&mut object, "Identifier")?;
        check_identifier(&identifier)?;
        let payload = object
            .remove("Payload")
            .ok_or(DeclarationError::MissingKey("Payload"))?;
        let at = Path::root("Payload");
        schema::check(node, &payload, &at)?;
        if let Some(path) = canonical::first_inexact_number(&payload, &at) {
            return Err(DeclarationError::InexactNumber { path });
        }
        let Value::Object(payload) = payload else {
            return Err(DeclarationError::WrongType {
                path: at.render(),
                expected: "dictionary",
            });
        };
        let server_token = server_token(&declaration_type, &identifier, &payload);
        if let Some(given) = object.get(SERVER_TOKEN) {
            if given.as_str() != Some(server_token.as_str()) {
                return Err(DeclarationError::ServerTokenMismatch);
            }
        }
        Ok(Declaration {
            identifier,
            declaration_type,
            category,
            payload,
            server_token,
        })
    }

    /// What a device fetches at `declaration/<category>/<identifier>`: `Type`, `Identifier`, `Payload` and
    /// `ServerToken`, in canonical form.
    pub fn to_device_json(&self) -> Vec<u8> {
        canonical::declaration(
            &self.declaration_type,
            &self.identifier,
            &self.payload,
            Some(&self.server_token),
        )
    }

    /// This declaration under another identifier, with another payload (a policy's copy of it, see
    /// `policies::materialize`); its ServerToken is computed afresh.
    pub fn renamed(&self, identifier: String, payload: Map<String, Value>) -> Declaration {
        let server_token = server_token(&self.declaration_type, &identifier, &payload);
        Declaration {
            identifier,
            declaration_type: self.declaration_type.clone(),
            category: self.category,
            payload,
            server_token,
        }
    }

    /// A declaration read back from storage, as it was stored: nothing is checked against the schemas (a
    /// Type this build no longer lists is still served) and the ServerToken is kept, not recomputed. The
    /// category still comes from the Type, and the payload must be a JSON object.
    pub fn from_stored(
        identifier: impl Into<String>,
        declaration_type: impl Into<String>,
        payload_json: &str,
        server_token: impl Into<String>,
    ) -> Result<Declaration, DeclarationError> {
        let declaration_type = declaration_type.into();
        let category =
            Category::of_type(&declaration_type).ok_or_else(|| unknown_type(&declaration_type))?;
        let payload = match serde_json::from_str(payload_json) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(DeclarationError::NotAnObject),
            Err(e) => return Err(DeclarationError::Json(e.to_string())),
        };
        Ok(Declaration {
            identifier: identifier.into(),
            declaration_type,
            category,
            payload,
            server_token: server_token.into(),
        })
    }

    /// The payload in canonical form (keys sorted, no whitespace): what is stored.
    pub fn payload_json(&self) -> String {
        canonical::map_to_string(&self.payload)
    }
}

/// Whether `identifier` follows [`IDENTIFIER_RULE`] (for an identifier that arrives in a URL, too).
pub fn check_identifier(identifier: &str) -> Result<(), DeclarationError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b".-_:@".contains(&b);
    let ok = (1..=MAX_IDENTIFIER_LEN).contains(&identifier.len())
        && identifier.as_bytes()[0].is_ascii_alphanumeric()
        && identifier.bytes().all(allowed);
    if ok {
        Ok(())
    } else {
        Err(DeclarationError::BadIdentifier(IDENTIFIER_RULE))
    }
}

/// The keys every declaration has (Apple's base schema): each of its type, none other, and all of those
/// required except ServerToken, which the server fills in.
fn check_envelope(object: &Map<String, Value>) -> Result<(), DeclarationError> {
    let base = &schemas().base;
    for (key, node) in &base.keys {
        if node.required && key != SERVER_TOKEN && !object.contains_key(key) {
            return Err(DeclarationError::MissingKey(key.as_str()));
        }
    }
    for (key, value) in object {
        let at = Path::root(key);
        match base.keys.get(key) {
            Some(node) => schema::check(node, value, &at)?,
            None => return Err(DeclarationError::UnknownKey { path: at.render() }),
        }
    }
    Ok(())
}

fn take_string(
    object: &mut Map<String, Value>,
    key: &'static str,
) -> Result<String, DeclarationError> {
    match object.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DeclarationError::WrongType {
            path: key.into(),
            expected: "string",
        }),
        None => Err(DeclarationError::MissingKey(key)),
    }
}

/// The Type as the message shows it: shortened and without control characters, like a path's keys.
fn unknown_type(declaration_type: &str) -> DeclarationError {
    DeclarationError::UnknownType(Path::root(declaration_type).render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASSCODE: &str = "com.apple.configuration.passcode.settings";

    fn upload(v: Value) -> Result<Declaration, DeclarationError> {
        Declaration::parse(v.to_string().as_bytes())
    }

    fn passcode(payload: Value) -> Value {
        json!({"Type": PASSCODE, "Identifier": "com.example.passcode", "Payload": payload})
    }

    #[test]
    fn passcode_settings_pass() {
        let d = upload(passcode(json!({
            "RequirePasscode": true,
            "RequireAlphanumericPasscode": true,
            "MinimumLength": 8,
            "MaximumFailedAttempts": 6,
            "MaximumGracePeriodInMinutes": 5,
            "PasscodeReuseLimit": 3,
            "CustomRegex": {"Regex": "^[^0-9]*$", "Description": {"default": "No digits"}}
        })))
        .unwrap();
        assert_eq!(d.category, Category::Configuration);
        assert_eq!(d.declaration_type, PASSCODE);
        assert_eq!(d.identifier, "com.example.passcode");
        assert_eq!(d.payload["MinimumLength"], json!(8));
        assert_eq!(d.server_token.len(), 64);
        assert!(d
            .server_token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // An empty payload is a valid passcode configuration: no key is required.
        assert!(upload(passcode(json!({}))).is_ok());
    }

    #[test]
    fn a_specific_software_update_passes() {
        let d = upload(json!({
            "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
            "Identifier": "6B2F2C5E-0D3A-4C52-9E7B-2A1C1C2D3E4F",
            "Payload": {
                "TargetOSVersion": "17.5",
                "TargetBuildVersion": "21F79",
                "TargetLocalDateTime": "2024-06-01T18:00:00",
                "DetailsURL": "https://example.com/update"
            }
        }))
        .unwrap();
        assert_eq!(d.category, Category::Configuration);
        let e = upload(json!({
            "Type": "com.apple.configuration.softwareupdate.enforcement.specific",
            "Identifier": "u1",
            "Payload": {"TargetOSVersion": "17.5"}
        }))
        .unwrap_err();
        assert_eq!(
            e,
            DeclarationError::MissingRequired {
                path: "Payload.TargetLocalDateTime".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "missing required key Payload.TargetLocalDateTime"
        );
    }

    #[test]
    fn errors_name_their_paths() {
        let e = upload(passcode(json!({"MinimumLength": "8"}))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Payload.MinimumLength has the wrong type (expected integer)"
        );
        let e = upload(passcode(json!({"Foo": {"Bar": 1}}))).unwrap_err();
        assert_eq!(
            e,
            DeclarationError::UnknownKey {
                path: "Payload.Foo".into()
            }
        );
        assert_eq!(e.to_string(), "unknown key Payload.Foo");
        let e = upload(json!({
            "Type": "com.apple.activation.simple", "Identifier": "a",
            "Payload": {"StandardConfigurations": ["x", {"y": 1}]}
        }))
        .unwrap_err();
        assert_eq!(
            e,
            DeclarationError::WrongType {
                path: "Payload.StandardConfigurations[1]".into(),
                expected: "string"
            }
        );
    }

    #[test]
    fn the_envelope_is_checked() {
        let base = passcode(json!({}));
        let without = |key: &str| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().remove(key);
            upload(v).unwrap_err()
        };
        assert_eq!(without("Type"), DeclarationError::MissingKey("Type"));
        assert_eq!(
            without("Identifier"),
            DeclarationError::MissingKey("Identifier")
        );
        assert_eq!(without("Payload"), DeclarationError::MissingKey("Payload"));

        let with = |key: &str, value: Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().insert(key.into(), value);
            upload(v).unwrap_err()
        };
        assert_eq!(
            with("Extra", json!(1)),
            DeclarationError::UnknownKey {
                path: "Extra".into()
            }
        );
        assert_eq!(
            with("Payload", json!([])),
            DeclarationError::WrongType {
                path: "Payload".into(),
                expected: "dictionary"
            }
        );
        assert_eq!(
            with("Identifier", json!(7)),
            DeclarationError::WrongType {
                path: "Identifier".into(),
                expected: "string"
            }
        );
        assert_eq!(
            with("ServerToken", json!(7)),
            DeclarationError::WrongType {
                path: "ServerToken".into(),
                expected: "string"
            }
        );
        assert_eq!(
            with("Type", json!("com.apple.configuration.nope")),
            DeclarationError::UnknownType("com.apple.configuration.nope".into())
        );
        assert_eq!(
            with("Type", json!(format!("x\n{}", "y".repeat(500)))).to_string(),
            format!("unknown declaration Type \"x?{}…\"", "y".repeat(62))
        );
        assert_eq!(
            Declaration::parse(b"[1]").unwrap_err(),
            DeclarationError::NotAnObject
        );
        assert!(matches!(
            Declaration::parse(b"{\"Type\":").unwrap_err(),
            DeclarationError::Json(_)
        ));
    }

    #[test]
    fn size_is_bounded_before_parsing() {
        let mut body = passcode(json!({})).to_string().into_bytes();
        body.resize(MAX_DECLARATION_BYTES, b' ');
        assert!(Declaration::parse(&body).is_ok());
        body.push(b' ');
        assert_eq!(
            Declaration::parse(&body).unwrap_err(),
            DeclarationError::TooLarge
        );
    }

    #[test]
    fn identifiers() {
        for ok in [
            "6B2F2C5E-0D3A-4C52-9E7B-2A1C1C2D3E4F",
            "com.example.passcode",
            "a",
            "user@example.com",
            "urn:x_1",
            &"a".repeat(64),
        ] {
            assert_eq!(check_identifier(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            &"a".repeat(65),
            "a/b",
            "..",
            ".hidden",
            "-x",
            "a b",
            "a\u{0}",
            "é",
            "a%2Fb",
            "a?b",
        ] {
            assert_eq!(
                check_identifier(bad),
                Err(DeclarationError::BadIdentifier(IDENTIFIER_RULE)),
                "{bad:?}"
            );
        }
        let mut v = passcode(json!({}));
        v["Identifier"] = json!("a/b");
        assert_eq!(
            upload(v).unwrap_err().to_string(),
            format!("Identifier {IDENTIFIER_RULE}")
        );
    }

    #[test]
    fn same_content_same_token() {
        let a = Declaration::parse(
            br#"{"Type":"com.apple.configuration.passcode.settings","Identifier":"p",
                 "Payload":{"MinimumLength":8,"CustomRegex":{"Regex":"x","Description":{"b":"2","a":"1"}}}}"#,
        )
        .unwrap();
        let b = Declaration::parse(
            br#"{ "Payload" : { "CustomRegex" : { "Description" : { "a" : "1" , "b" : "2" } , "Regex" : "x" } ,
                   "MinimumLength" : 8 } ,
                 "Identifier" : "p" ,
                 "Type" : "com.apple.configuration.passcode.settings" }"#,
        )
        .unwrap();
        assert_eq!(a.server_token, b.server_token);
        assert_eq!(a, b);
        assert_eq!(a.payload_json(), b.payload_json());
        assert_eq!(
            a.payload_json(),
            r#"{"CustomRegex":{"Description":{"a":"1","b":"2"},"Regex":"x"},"MinimumLength":8}"#
        );
    }

    #[test]
    fn any_change_changes_the_token() {
        let base = upload(passcode(json!({"MinimumLength": 8}))).unwrap();
        let changed = [
            passcode(json!({"MinimumLength": 9})),
            passcode(json!({"MinimumLength": 8, "RequirePasscode": false})),
            passcode(json!({})),
            json!({"Type": PASSCODE, "Identifier": "com.example.other", "Payload": {"MinimumLength": 8}}),
        ];
        for v in changed {
            let d = upload(v.clone()).unwrap();
            assert_ne!(d.server_token, base.server_token, "{v}");
        }
        // The Type is covered too (management.properties takes any key).
        let props = |t: &str| json!({"Type": t, "Identifier": "x", "Payload": {}});
        assert_ne!(
            upload(props("com.apple.management.properties"))
                .unwrap()
                .server_token,
            upload(props(PASSCODE)).unwrap().server_token
        );
    }

    #[test]
    fn a_given_server_token_must_be_the_computed_one() {
        let d = upload(passcode(json!({"MinimumLength": 8}))).unwrap();
        let mut again = passcode(json!({"MinimumLength": 8}));
        again["ServerToken"] = json!(d.server_token);
        assert_eq!(upload(again.clone()).unwrap(), d);

        again["ServerToken"] = json!("0".repeat(64));
        let e = upload(again).unwrap_err();
        assert_eq!(e, DeclarationError::ServerTokenMismatch);
        // The message names neither token.
        assert!(!e.to_string().contains(&d.server_token));
        assert!(!e.to_string().contains("0000"));
    }

    #[test]
    fn what_the_device_gets_uploads_again_unchanged() {
        let d = upload(passcode(
            json!({"MinimumLength": 8, "RequirePasscode": true}),
        ))
        .unwrap();
        let served = d.to_device_json();
        let v: Value = serde_json::from_slice(&served).unwrap();
        assert_eq!(
            v,
            json!({"Type": PASSCODE, "Identifier": "com.example.passcode",
                   "Payload": {"MinimumLength": 8, "RequirePasscode": true},
                   "ServerToken": d.server_token})
        );
        assert_eq!(Declaration::parse(&served).unwrap(), d);
    }

    #[test]
    fn stored_parts_rebuild_the_declaration() {
        let d = upload(passcode(json!({"MinimumLength": 8}))).unwrap();
        let back = Declaration::from_stored(
            d.identifier.as_str(),
            d.declaration_type.clone(),
            &d.payload_json(),
            d.server_token.as_str(),
        )
        .unwrap();
        assert_eq!(back, d);
        // Not revalidated, and the stored token is kept as it is.
        let old = Declaration::from_stored(
            "x",
            "com.apple.configuration.retired.thing",
            r#"{"Anything":[1]}"#,
            "t",
        )
        .unwrap();
        assert_eq!(old.category, Category::Configuration);
        assert_eq!(old.server_token, "t");
        assert_eq!(
            Declaration::from_stored("x", "not-apple", "{}", "t").unwrap_err(),
            DeclarationError::UnknownType("not-apple".into())
        );
        assert_eq!(
            Declaration::from_stored("x", PASSCODE, "[]", "t").unwrap_err(),
            DeclarationError::NotAnObject
        );
        assert!(matches!(
            Declaration::from_stored("x", PASSCODE, "{", "t").unwrap_err(),
            DeclarationError::Json(_)
        ));
    }

    #[test]
    fn numbers_that_would_drift_are_refused() {
        let props = |n: &str| {
            format!(
                r#"{{"Type":"com.apple.management.properties","Identifier":"p","Payload":{{"a":{{"b":[{n}]}}}}}}"#
            )
        };
        assert!(Declaration::parse(props("1.5").as_bytes()).is_ok());
        assert_eq!(
            Declaration::parse(props("4.2825226372290537e-32").as_bytes()).unwrap_err(),
            DeclarationError::InexactNumber {
                path: "Payload.a.b[0]".into()
            }
        );
    }
}
