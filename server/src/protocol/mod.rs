//! Pure Apple MDM protocol types: check-in messages, command reports, command envelopes.
//! Nothing here does I/O; everything decodes tolerantly (unknown keys ignored, raw bytes kept).

pub mod checkin;
pub mod command;
pub mod commands;
pub mod enrollment;
pub mod facts;
mod fields;
pub mod platform;
pub mod plist_json;
pub mod report;
mod shape;

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
    #[error("property list nests deeper than {MAX_PLIST_DEPTH} levels")]
    TooDeep,
    #[error("property list reuses containers and expands beyond its size")]
    TooLarge,
}

/// Deepest nesting accepted. Apple's messages nest a handful of levels; values are dropped, cloned and
/// converted recursively, so an unbounded depth would overflow the stack.
pub const MAX_PLIST_DEPTH: usize = 128;

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

    /// A binary plist of `objects` (each already encoded), the last one the root; 4-byte offsets and refs.
    fn bplist(objects: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for o in objects {
            offsets.push(u32::try_from(out.len()).unwrap());
            out.extend_from_slice(o);
        }
        let table = out.len() as u64;
        for o in offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&[4, 4]);
        out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
        out.extend_from_slice(&(objects.len() as u64 - 1).to_be_bytes());
        out.extend_from_slice(&table.to_be_bytes());
        out
    }

    /// An array of up to 14 references.
    fn array(refs: &[u32]) -> Vec<u8> {
        let mut o = vec![0xA0 | refs.len() as u8];
        for r in refs {
            o.extend_from_slice(&r.to_be_bytes());
        }
        o
    }

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
}
