//! Pure Apple MDM protocol types: check-in messages, command reports, command envelopes.
//! Nothing here does I/O; everything decodes tolerantly (unknown keys ignored, raw bytes kept).

pub mod checkin;
pub mod command;
pub mod commands;
pub mod ddm;
pub mod enrollment;
pub mod facts;
mod fields;
pub mod platform;
pub mod plist_json;
pub mod profile_list;
pub mod report;
mod shape;

#[cfg(test)]
pub(crate) mod bombs;

pub use checkin::{CheckinMessage, CheckinPayload};
pub use command::{CommandEnvelope, RawCommandError};
pub use enrollment::{EnrollmentKind, EnrollmentRef};
pub use facts::DeviceFacts;
pub use report::{CommandReport, ErrorChainItem, ReportStatus};

/// Content type Apple devices use for check-in messages (also how a ServerURL-only device is told apart).
pub const CHECKIN_CONTENT_TYPE: &str = "application/x-apple-aspen-mdm-checkin";

/// Why a device message could not be understood. Every variant is the device's fault (a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("body is not a property list: {0}")]
    NotAPlist(String),
    #[error("property list is not a dictionary")]
    NotADictionary,
    #[error("missing required key {0}")]
    MissingKey(&'static str),
    #[error("key {key} has the wrong type (expected {expected})")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("unknown MessageType {0:?}")]
    UnknownMessageType(String),
    #[error("unknown Status {0:?}")]
    UnknownStatus(String),
    #[error("message names no enrollment (no UDID or EnrollmentID)")]
    NoEnrollmentId,
    /// An identifier (UDID, UserID, ...) breaks its rule (`enrollment::IdRule`). The value is not repeated:
    /// it may be kilobytes long or hold control characters.
    #[error("{key} must be 1 to {max} characters: {allowed}")]
    BadIdentifier {
        key: &'static str,
        max: usize,
        allowed: &'static str,
    },
    #[error("property list nests deeper than {MAX_PLIST_DEPTH} levels")]
    TooDeep,
    #[error("property list reuses objects and expands far beyond its size")]
    TooLarge,
    /// A data value over the size its content may have (a DeclarativeManagement status report).
    #[error("{key} is larger than {max} bytes")]
    DataTooLarge { key: &'static str, max: usize },
}

/// Deepest nesting accepted. Apple's messages nest a handful of levels; values are dropped, cloned and
/// converted recursively, so an unbounded depth would overflow the stack.
pub const MAX_PLIST_DEPTH: usize = 128;

/// Bytes of strings, data and keys a plist of `len` bytes may decode to, counting a shared object once per
/// reference: [`EXPANSION_FACTOR`] × `len` + [`EXPANSION_SLACK`].
pub fn decoded_budget(len: usize) -> usize {
    len.saturating_mul(EXPANSION_FACTOR)
        .saturating_add(EXPANSION_SLACK)
}

/// Decoded bytes allowed per byte of input. Without shared objects a plist decodes to at most 1.5× its
/// size: XML text only shrinks (entities, base64), and a binary UTF-16 string takes 2 bytes per character
/// that UTF-8 takes up to 3 for. Writers share equal objects (a key repeated in every dictionary of a list
/// is one object, each further use a 1–2 byte reference), which takes a real list of dictionaries to about
/// 2× (`binary_lists_of_dictionaries_fit`). 4× leaves twice that, and caps a 512 KiB body at 2 MiB of
/// strings where unbounded it reached gigabytes; devices send XML, which never exceeds 1×.
pub const EXPANSION_FACTOR: usize = 4;

/// Added to the budget whatever the size, so that no small message is refused for sharing its strings.
pub const EXPANSION_SLACK: usize = 64 * 1024;

/// Parse bytes (XML or binary plist) into a top-level dictionary.
pub fn parse_dictionary(body: &[u8]) -> Result<plist::Dictionary, ProtocolError> {
    parse_value(body)?
        .into_dictionary()
        .ok_or(ProtocolError::NotADictionary)
}

/// Parse bytes (XML or binary plist) from outside into a value, refusing shapes that would exhaust the
/// stack or memory (see `shape`).
pub fn parse_value(body: &[u8]) -> Result<plist::Value, ProtocolError> {
    shape::check(body)?;
    plist::Value::from_reader(std::io::Cursor::new(body))
        .map_err(|e| ProtocolError::NotAPlist(e.to_string()))
}

/// Serialize a dictionary as an XML plist, the form devices are sent.
pub fn to_xml(dict: &plist::Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing a plist Value into a Vec cannot fail.
    plist::Value::Dictionary(dict.clone())
        .to_writer_xml(&mut out)
        .expect("serialize plist to memory");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::bombs::{array, bplist, expansion_bombs};
    use std::time::{Duration, Instant};

    // Found writing the fuzz targets (the `checkin` target times out on it): under a kilobyte that
    // expands to 2^64 values, exhausting time and memory before the body is known to be a dictionary.
    #[test]
    fn shared_containers_do_not_expand() {
        let mut objects = vec![array(&[])];
        for i in 0..64 {
            objects.push(array(&[i, i]));
        }
        let body = bplist(&objects);
        assert!(body.len() < 1024);
        assert_eq!(
            parse_dictionary(&body).unwrap_err(),
            ProtocolError::TooLarge
        );
        assert_eq!(
            CheckinMessage::decode(&body).unwrap_err(),
            ProtocolError::TooLarge
        );
    }

    // Deep nesting overflowed the stack when the value was dropped, which aborts the whole server (the
    // `report` target: AddressSanitizer stack-overflow in drop_in_place::<plist::Value>).
    #[test]
    fn deep_nesting_is_refused() {
        let mut objects = vec![array(&[])];
        for i in 0..200_000 {
            objects.push(array(&[i]));
        }
        let body = bplist(&objects);
        assert_eq!(
            CommandReport::decode(&body).unwrap_err(),
            ProtocolError::TooDeep
        );

        let depth = 200_000;
        let xml = format!(
            "<plist version=\"1.0\">{}{}</plist>",
            "<array>".repeat(depth),
            "</array>".repeat(depth)
        );
        assert_eq!(
            parse_dictionary(xml.as_bytes()).unwrap_err(),
            ProtocolError::TooDeep
        );

        // The limit itself is accepted.
        let ok = format!(
            "<plist version=\"1.0\"><dict><key>k</key>{}{}</dict></plist>",
            "<array>".repeat(MAX_PLIST_DEPTH - 1),
            "</array>".repeat(MAX_PLIST_DEPTH - 1)
        );
        assert!(parse_dictionary(ok.as_bytes()).is_ok());
    }

    #[test]
    fn shared_strings_are_fine() {
        // Writers share equal strings: a dictionary whose every value is one string object.
        let mut objects = vec![vec![0x51, b'v']];
        let mut dict = vec![0xDE];
        for k in 0..14u8 {
            objects.push(vec![0x52, b'k', b'a' + k]);
        }
        for k in 1..=14u32 {
            dict.extend_from_slice(&k.to_be_bytes());
        }
        for _ in 0..14 {
            dict.extend_from_slice(&0u32.to_be_bytes());
        }
        objects.push(dict);
        let d = parse_dictionary(&bplist(&objects)).unwrap();
        assert_eq!(d.len(), 14);
        assert_eq!(d.get("ka").and_then(plist::Value::as_string), Some("v"));
    }

    // The attack: each shape references one 4 KiB object 32768 times, about 160 KiB of input that
    // decoded to 128 MiB (the same shapes at 64 KiB reached gigabytes). Refused as TooLarge, by every
    // decoder of outside input, before anything of that size is built.
    #[test]
    fn shared_strings_and_data_do_not_expand() {
        for (name, body) in expansion_bombs(32 * 1024, 4096) {
            assert!(body.len() < 300 * 1024, "{name}: {} bytes", body.len());
            let started = Instant::now();
            assert_eq!(
                parse_value(&body).unwrap_err(),
                ProtocolError::TooLarge,
                "{name}"
            );
            assert_eq!(
                CheckinMessage::decode(&body).unwrap_err(),
                ProtocolError::TooLarge,
                "{name}"
            );
            assert_eq!(
                CommandReport::decode(&body).unwrap_err(),
                ProtocolError::TooLarge,
                "{name}"
            );
            assert_eq!(
                CommandEnvelope::from_raw(&body, || "U".into()).unwrap_err(),
                RawCommandError::Protocol(ProtocolError::TooLarge),
                "{name}"
            );
            // The walk stops at the budget (a few hundred KiB here), not after copying the 128 MiB.
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{name}: {:?}",
                started.elapsed()
            );
        }
    }

    // The budget: 4 decoded bytes per byte of input plus 64 KiB. A string shared by 100 references plus the
    // key is accepted at the largest length the budget holds, refused one byte longer.
    #[test]
    fn the_byte_budget_is_exact() {
        let body = |len: usize| {
            bplist(&[
                ascii_of(len),
                array(&[0; 100]),
                super::bombs::dict(&[(0, 1)]),
            ])
        };
        // The key once and the string 100 times.
        let decoded = |len: usize| 101 * len;
        let fits = |len: usize| decoded(len) <= 4 * body(len).len() + 64 * 1024;
        let largest = (1..10_000).take_while(|&l| fits(l)).last().unwrap();
        assert!(largest > 600, "{largest}");
        assert!(parse_value(&body(largest)).is_ok());
        assert_eq!(
            parse_value(&body(largest + 1)).unwrap_err(),
            ProtocolError::TooLarge
        );
        assert_eq!(decoded_budget(usize::MAX), usize::MAX);
    }

    fn ascii_of(len: usize) -> Vec<u8> {
        super::bombs::ascii(&vec![b'a'; len])
    }

    // Every plist in the peers' test data, as sent and re-encoded as a binary plist (whose writer shares
    // equal strings and keys), stays within the budget.
    #[test]
    fn real_messages_fit_the_byte_budget() {
        let Some(peers) = crate::identity::test_support::peers_dir() else {
            println!("skipping: ../shared/testdata/peers not found");
            return;
        };
        let mut files = vec![peers];
        let mut checked = 0;
        let mut worst = (0.0f64, String::new());
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            // Only what the plist reader takes at all (the folder also holds JSON, PEM, DER, signed profiles).
            let Ok(value) = plist::Value::from_reader(std::io::Cursor::new(&bytes)) else {
                continue;
            };
            let mut binary = Vec::new();
            value.to_writer_binary(&mut binary).unwrap();
            for (form, body) in [("as sent", &bytes), ("binary", &binary)] {
                let parsed = parse_value(body)
                    .unwrap_or_else(|e| panic!("{} ({form}): {e}", path.display()));
                assert_eq!(parsed, value);
                let ratio = decoded_bytes(&value) as f64 / body.len() as f64;
                if ratio > worst.0 {
                    worst = (ratio, format!("{} ({form})", path.display()));
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "only {checked} plists found");
        println!(
            "{checked} plists; most decoded bytes per input byte: {:.2} ({})",
            worst.0, worst.1
        );
    }

    // The sharing a binary writer does in a real list: an InstalledApplicationList result of 2000 apps, the
    // same 14 keys in every dictionary and most values equal (versions, flags), written by plist's binary
    // writer, which shares equal strings as Apple's does: about 2 decoded bytes per input byte, half the budget.
    #[test]
    fn binary_lists_of_dictionaries_fit() {
        let app = |i: usize| -> plist::Value {
            let mut d = plist::Dictionary::new();
            d.insert("Identifier".into(), format!("com.example.app{i}").into());
            d.insert("Name".into(), format!("App {i}").into());
            d.insert("Version".into(), "1".into());
            d.insert("ShortVersion".into(), "1.0".into());
            d.insert("ExternalVersionIdentifier".into(), 0.into());
            d.insert("BundleSize".into(), 4096.into());
            d.insert("DynamicSize".into(), 4096.into());
            for flag in [
                "IsValidated",
                "AdHocCodeSigned",
                "AppStoreVendable",
                "BetaApp",
                "DeviceBasedVPP",
                "HasUpdateAvailable",
                "Installing",
            ] {
                d.insert(flag.into(), false.into());
            }
            d.into()
        };
        let mut report = plist::Dictionary::new();
        report.insert("Status".into(), "Acknowledged".into());
        report.insert("UDID".into(), "00008030-001A2C3E0E38802E".into());
        report.insert(
            "CommandUUID".into(),
            "6A2E1C3B-0000-4000-8000-000000000001".into(),
        );
        report.insert(
            "InstalledApplicationList".into(),
            plist::Value::Array((0..2000).map(app).collect()),
        );
        let value = plist::Value::Dictionary(report);
        let mut body = Vec::new();
        value.to_writer_binary(&mut body).unwrap();
        let ratio = decoded_bytes(&value) as f64 / body.len() as f64;
        assert!((1.5..2.5).contains(&ratio), "{ratio:.2}");
        assert_eq!(parse_value(&body).unwrap(), value);
        assert!(CommandReport::decode(&body).is_ok());
    }

    /// What the walk counts: string and data bytes and keys, each time they occur.
    fn decoded_bytes(v: &plist::Value) -> usize {
        match v {
            plist::Value::String(s) => s.len(),
            plist::Value::Data(d) => d.len(),
            plist::Value::Date(_) => 20,
            plist::Value::Array(a) => a.iter().map(decoded_bytes).sum(),
            plist::Value::Dictionary(d) => d.iter().map(|(k, v)| k.len() + decoded_bytes(v)).sum(),
            _ => 0,
        }
    }
}
