//! A policy version's configuration profiles (`.mobileconfig`, signed or not), read and checked when the
//! version is uploaded, so a version whose profile no device could install is refused then, not found
//! out on devices: a plist dictionary (within the bounds every plist from outside gets) whose
//! `PayloadType` is `Configuration`, with a `PayloadIdentifier` and a `PayloadUUID`, each payload of
//! `PayloadContent` a dictionary with its own `PayloadType` and `PayloadIdentifier`. A signed profile is a
//! CMS SignedData whose signature must verify with its signer's key (whom devices trust is theirs to
//! decide); its content is checked the same way.
//!
//! Pure.

use super::bundle::sha256_hex;
use plist::{Dictionary, Value};
use serde::Serialize;

/// A profile as a version holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Profile {
    /// Its path in the bundle.
    pub path: String,
    /// `PayloadIdentifier`: what a device knows it by (ProfileList, RemoveProfile).
    pub identifier: String,
    /// `PayloadUUID`.
    pub uuid: String,
    /// SHA-256 of the file as uploaded, lowercase hex.
    pub sha256: String,
    /// Whether it is a signed profile (CMS SignedData).
    pub signed: bool,
    /// The `PayloadType` of each of its payloads, in order.
    pub payload_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("not a plist: {0}")]
    NotAPlist(String),
    #[error("a signed profile whose signature does not verify: {0}")]
    BadSignature(String),
    #[error("the profile is not a dictionary with PayloadType Configuration")]
    NotConfiguration,
    #[error("{0} is missing, empty, or not a string of at most 255 characters")]
    BadKey(String),
    #[error("PayloadContent must be an array of payload dictionaries")]
    BadContent,
}

/// The longest identifier or type accepted.
const MAX_KEY: usize = 255;

/// Read and check one profile file.
pub fn read(path: &str, bytes: &[u8]) -> Result<Profile, ProfileError> {
    let signed = !looks_like_plist(bytes);
    let content = if signed {
        signed_content(bytes)?
    } else {
        bytes.to_vec()
    };
    let value = crate::protocol::parse_value(&content)
        .map_err(|e| ProfileError::NotAPlist(e.to_string()))?;
    let top = value
        .as_dictionary()
        .ok_or(ProfileError::NotConfiguration)?;
    if top.get("PayloadType").and_then(Value::as_string) != Some("Configuration") {
        return Err(ProfileError::NotConfiguration);
    }
    let identifier = key(top, "PayloadIdentifier", "PayloadIdentifier")?;
    let uuid = key(top, "PayloadUUID", "PayloadUUID")?;
    let payload_types = match top.get("PayloadContent") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let d = item.as_dictionary().ok_or(ProfileError::BadContent)?;
                key(
                    d,
                    "PayloadIdentifier",
                    &format!("PayloadContent[{i}].PayloadIdentifier"),
                )?;
                key(
                    d,
                    "PayloadType",
                    &format!("PayloadContent[{i}].PayloadType"),
                )
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ProfileError::BadContent),
    };
    Ok(Profile {
        path: path.to_string(),
        identifier,
        uuid,
        sha256: sha256_hex(bytes),
        signed,
        payload_types,
    })
}

/// An XML or binary plist (after an optional byte-order mark and whitespace), rather than DER.
fn looks_like_plist(bytes: &[u8]) -> bool {
    let b = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let b = match b.iter().position(|c| !c.is_ascii_whitespace()) {
        Some(i) => &b[i..],
        None => b,
    };
    b.starts_with(b"<") || b.starts_with(b"bplist")
}

fn signed_content(der: &[u8]) -> Result<Vec<u8>, ProfileError> {
    let p7 = openssl::pkcs7::Pkcs7::from_der(der)
        .map_err(|_| ProfileError::NotAPlist("neither a plist nor a signed profile".into()))?;
    crate::pki::signed_content(&p7, None).map_err(|e| ProfileError::BadSignature(e.to_string()))
}

fn key(d: &Dictionary, name: &str, at: &str) -> Result<String, ProfileError> {
    match d.get(name).and_then(Value::as_string) {
        Some(s) if !s.is_empty() && s.len() <= MAX_KEY && !s.chars().any(char::is_control) => {
            Ok(s.to_string())
        }
        _ => Err(ProfileError::BadKey(at.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal Wi-Fi profile.
    pub(crate) fn wifi(identifier: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>PayloadType</key><string>Configuration</string>
<key>PayloadIdentifier</key><string>{identifier}</string>
<key>PayloadUUID</key><string>4B1F7E2C-9D47-4C57-8F8B-1D1B2E2F3A4B</string>
<key>PayloadVersion</key><integer>1</integer>
<key>PayloadDisplayName</key><string>Wi-Fi</string>
<key>PayloadContent</key><array><dict>
  <key>PayloadType</key><string>com.apple.wifi.managed</string>
  <key>PayloadIdentifier</key><string>{identifier}.wifi</string>
  <key>PayloadUUID</key><string>0C2B6A61-3F0E-4B8A-9E0C-6B1E5C8D7F21</string>
  <key>PayloadVersion</key><integer>1</integer>
  <key>SSID_STR</key><string>Example</string>
</dict></array>
</dict></plist>"#
        )
        .into_bytes()
    }

    fn sign(content: &[u8]) -> Vec<u8> {
        use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
        let (cert, key) = crate::identity::test_support::self_signed("profile signer");
        let certs = openssl::stack::Stack::new().unwrap();
        Pkcs7::sign(&cert, &key, &certs, content, Pkcs7Flags::BINARY)
            .unwrap()
            .to_der()
            .unwrap()
    }

    #[test]
    fn a_plain_profile_is_read_with_its_identifier_and_payloads() {
        let bytes = wifi("com.example.wifi");
        let p = read("profiles/wifi.mobileconfig", &bytes).unwrap();
        assert_eq!(p.identifier, "com.example.wifi");
        assert_eq!(p.payload_types, ["com.apple.wifi.managed"]);
        assert!(!p.signed);
        assert_eq!(p.sha256, sha256_hex(&bytes));
    }

    #[test]
    fn a_signed_profile_is_read_through_its_signature() {
        let signed = sign(&wifi("com.example.signed"));
        let p = read("p.mobileconfig", &signed).unwrap();
        assert!(p.signed);
        assert_eq!(p.identifier, "com.example.signed");
        // One byte of the signed content changed: the signature no longer verifies.
        let inner = wifi("com.example.signed");
        let at = signed
            .windows(inner.len())
            .position(|w| w == inner.as_slice())
            .expect("the content is embedded");
        let mut tampered = signed.clone();
        tampered[at + inner.len() / 2] ^= 1;
        assert!(matches!(
            read("p.mobileconfig", &tampered),
            Err(ProfileError::BadSignature(_) | ProfileError::NotAPlist(_))
        ));
    }

    #[test]
    fn what_no_device_could_install_is_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"<plist/>".to_vec(), "not a plist"),
            (
                b"<plist version=\"1.0\"><array/></plist>".to_vec(),
                "dictionary",
            ),
            (b"\x01\x02garbage".to_vec(), "neither"),
            (
                String::from_utf8(wifi("x"))
                    .unwrap()
                    .replace("Configuration", "Other")
                    .into_bytes(),
                "Configuration",
            ),
            (
                String::from_utf8(wifi("")).unwrap().into_bytes(),
                "PayloadIdentifier",
            ),
            (
                String::from_utf8(wifi("x"))
                    .unwrap()
                    .replace(
                        "<key>PayloadType</key><string>com.apple.wifi.managed</string>",
                        "",
                    )
                    .into_bytes(),
                "PayloadContent[0].PayloadType",
            ),
        ];
        for (bytes, says) in cases {
            let e = read("p", &bytes).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
