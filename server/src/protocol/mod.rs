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
}

/// Parse bytes (XML or binary plist) into a top-level dictionary.
pub fn parse_dictionary(body: &[u8]) -> Result<plist::Dictionary, ProtocolError> {
    let value = plist::Value::from_reader(std::io::Cursor::new(body))
        .map_err(|e| ProtocolError::NotAPlist(e.to_string()))?;
    value.into_dictionary().ok_or(ProtocolError::NotADictionary)
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
