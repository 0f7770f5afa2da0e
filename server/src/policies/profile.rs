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
    /// The platforms every one of its payloads installs on, by Apple's schemas (iOS, which covers
    /// iPadOS, macOS, tvOS, visionOS, watchOS): devices of other platforms are not sent it.
    pub platforms: Vec<String>,
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
    #[error("no platform installs every payload of the profile ({0})")]
    NoPlatform(String),
}

/// Apple's platform names, as its schemas' `supportedOS` spell them.
const PLATFORMS: [&str; 5] = ["iOS", "macOS", "tvOS", "visionOS", "watchOS"];

/// Each payload type's platforms, generated from Apple's schemas by `tests/tests/suite/profile_platforms.rs`.
fn platform_table() -> &'static std::collections::BTreeMap<String, Vec<String>> {
    static TABLE: std::sync::OnceLock<std::collections::BTreeMap<String, Vec<String>>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("profile_platforms.json"))
            .expect("profile_platforms.json is a map of payload type to platforms")
    })
}

/// The platforms every one of `payload_types` installs on; a type Apple's schemas do not list (a
/// vendor's own payload, say) constrains nothing. An error names each type's platforms when none is left.
pub fn platforms_of(payload_types: &[String]) -> Result<Vec<String>, ProfileError> {
    let table = platform_table();
    let mut left: Vec<String> = PLATFORMS.iter().map(|p| p.to_string()).collect();
    for t in payload_types {
        if let Some(theirs) = table.get(t) {
            left.retain(|p| theirs.contains(p));
        }
    }
    if left.is_empty() {
        let each: Vec<String> = payload_types
            .iter()
            .filter_map(|t| table.get(t).map(|p| format!("{t}: {}", p.join(", "))))
            .collect();
        return Err(ProfileError::NoPlatform(each.join("; ")));
    }
    Ok(left)
}

/// Whether a profile for `platforms` is for a device of `device_platform` (the server's names: iPadOS
/// is Apple's iOS in the schemas). A device whose platform is not known yet gets it.
pub fn applies_to(platforms: &[String], device_platform: Option<&str>) -> bool {
    match device_platform {
        None => true,
        Some("iPadOS") => platforms.iter().any(|p| p == "iOS"),
        Some(d) => platforms.iter().any(|p| p == d),
    }
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
    let platforms = platforms_of(&payload_types)?;
    Ok(Profile {
        path: path.to_string(),
        identifier,
        uuid,
        sha256: sha256_hex(bytes),
        signed,
        payload_types,
        platforms,
    })
}

/// A profile as devices are sent it, and the `PayloadUUID` a device that installed it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub payload_uuid: String,
    pub content: Vec<u8>,
}

/// What devices are sent of a profile read by [`read`]. A plain profile's `PayloadUUID` is replaced by one
/// derived from its content, so that seeing it in a device's ProfileList proves these exact bytes were
/// installed (two versions of a profile that differ always list differently). A signed profile cannot be
/// changed without breaking its signature: it is sent as uploaded and known by its own `PayloadUUID`, so
/// its authors must give each changed content a new one.
pub fn delivered(bytes: &[u8], p: &Profile) -> Result<Delivered, ProfileError> {
    if p.signed {
        return Ok(Delivered {
            payload_uuid: p.uuid.clone(),
            content: bytes.to_vec(),
        });
    }
    let mut value =
        crate::protocol::parse_value(bytes).map_err(|e| ProfileError::NotAPlist(e.to_string()))?;
    let top = value
        .as_dictionary_mut()
        .ok_or(ProfileError::NotConfiguration)?;
    let payload_uuid = content_uuid(bytes);
    top.insert("PayloadUUID".into(), Value::String(payload_uuid.clone()));
    let mut content = Vec::with_capacity(bytes.len() + 64);
    value
        .to_writer_xml(&mut content)
        .map_err(|e| ProfileError::NotAPlist(e.to_string()))?;
    Ok(Delivered {
        payload_uuid,
        content,
    })
}

/// A UUID (version 8, uppercase) made of the first 16 bytes of SHA-256 over the profile as uploaded.
fn content_uuid(bytes: &[u8]) -> String {
    let mut h = openssl::sha::Sha256::new();
    h.update(b"mdm-profile-uuid/1\n");
    h.update(bytes);
    let digest = h.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(first)
        .into_uuid()
        .to_string()
        .to_uppercase()
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
    fn a_plain_profile_is_sent_with_a_payload_uuid_of_its_content() {
        let bytes = wifi("com.example.wifi");
        let p = read("p", &bytes).unwrap();
        let d = delivered(&bytes, &p).unwrap();
        let again = read("p", &d.content).unwrap();
        assert_eq!(
            again.uuid, d.payload_uuid,
            "the device lists what it was sent"
        );
        assert_eq!(again.identifier, p.identifier);
        assert_ne!(d.payload_uuid, p.uuid);
        assert_eq!(
            delivered(&bytes, &p).unwrap(),
            d,
            "the same bytes, the same UUID"
        );
        let changed = String::from_utf8(bytes)
            .unwrap()
            .replace("Example", "Other")
            .into_bytes();
        let other = delivered(&changed, &read("p", &changed).unwrap()).unwrap();
        assert_ne!(
            other.payload_uuid, d.payload_uuid,
            "other content, another UUID"
        );
        // A signed profile is sent untouched.
        let signed = sign(&wifi("com.example.signed"));
        let s = read("s", &signed).unwrap();
        let sd = delivered(&signed, &s).unwrap();
        assert_eq!(
            (sd.payload_uuid.as_str(), sd.content.as_slice()),
            (s.uuid.as_str(), signed.as_slice())
        );
    }

    #[test]
    fn a_profile_is_for_the_platforms_all_its_payloads_install_on() {
        let types = |t: &[&str]| t.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let wifi = platforms_of(&types(&["com.apple.wifi.managed"])).unwrap();
        assert!(wifi.contains(&"iOS".to_string()) && wifi.contains(&"macOS".to_string()));
        let mac_only = platforms_of(&types(&[
            "com.apple.wifi.managed",
            "com.apple.systempolicy.control",
        ]))
        .unwrap();
        assert_eq!(mac_only, ["macOS"]);
        assert_eq!(
            platforms_of(&types(&["com.example.vendor"])).unwrap(),
            PLATFORMS,
            "unknown types constrain nothing"
        );
        let e = platforms_of(&types(&[
            "com.apple.systempolicy.control",
            "com.apple.app.lock",
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("com.apple.app.lock: iOS"), "{e}");
        assert!(applies_to(&mac_only, None), "an unknown platform gets it");
        assert!(applies_to(&mac_only, Some("macOS")));
        assert!(!applies_to(&mac_only, Some("iPadOS")));
        assert!(
            applies_to(&wifi, Some("iPadOS")),
            "iPadOS is iOS in Apple's schemas"
        );
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
