//! Tolerant typed access to plist dictionary keys.

use super::ProtocolError;
use plist::{Dictionary, Value};

pub(crate) fn opt_str(d: &Dictionary, key: &'static str) -> Result<Option<String>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ProtocolError::WrongType {
            key,
            expected: "string",
        }),
    }
}

/// A string that is present and not empty; empty strings count as absent (devices send "" for unset values).
pub(crate) fn opt_nonempty_str(
    d: &Dictionary,
    key: &'static str,
) -> Result<Option<String>, ProtocolError> {
    Ok(opt_str(d, key)?.filter(|s| !s.is_empty()))
}

pub(crate) fn req_str(d: &Dictionary, key: &'static str) -> Result<String, ProtocolError> {
    opt_nonempty_str(d, key)?.ok_or(ProtocolError::MissingKey(key))
}

pub(crate) fn opt_data(
    d: &Dictionary,
    key: &'static str,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(Value::Data(b)) => Ok(Some(b.clone())),
        Some(_) => Err(ProtocolError::WrongType {
            key,
            expected: "data",
        }),
    }
}

pub(crate) fn opt_bool(d: &Dictionary, key: &'static str) -> Result<Option<bool>, ProtocolError> {
    match d.get(key) {
        None => Ok(None),
        Some(Value::Boolean(b)) => Ok(Some(*b)),
        Some(_) => Err(ProtocolError::WrongType {
            key,
            expected: "boolean",
        }),
    }
}
