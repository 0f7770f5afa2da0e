//! The command envelope a device receives: `{CommandUUID, Command: {RequestType, ...}}`.

use super::{parse_dictionary, to_xml, ProtocolError};
use plist::{Dictionary, Value};

/// A command ready to queue: its UUID, RequestType and the exact plist bytes devices will receive.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEnvelope {
    pub uuid: String,
    pub request_type: String,
    pub raw: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RawCommandError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("Command has no RequestType")]
    NoRequestType,
    #[error("CommandUUID must be a non-empty string of at most 128 characters")]
    BadUuid,
}

impl CommandEnvelope {
    /// Wrap a `Command` dictionary (which must hold RequestType) in a fresh envelope.
    pub fn new(uuid: String, command: Dictionary) -> Result<Self, RawCommandError> {
        let request_type = request_type_of(&command)?;
        let mut env = Dictionary::new();
        env.insert("CommandUUID".into(), Value::String(uuid.clone()));
        env.insert("Command".into(), Value::Dictionary(command));
        Ok(Self {
            uuid,
            request_type,
            raw: to_xml(&env),
        })
    }

    /// The same command under another CommandUUID (a retry is a new command to the device).
    pub fn with_uuid(&self, uuid: &str) -> Result<Self, RawCommandError> {
        let dict = parse_dictionary(&self.raw)?;
        let command = match dict.get("Command") {
            Some(Value::Dictionary(c)) => c.clone(),
            _ => dict,
        };
        Self::new(uuid.to_string(), command)
    }

    /// Accept an admin's raw plist: either a whole envelope (its CommandUUID and bytes are kept exactly, as
    /// NanoMDM's enqueue does) or a bare `Command` dictionary, which gets `fresh_uuid`.
    pub fn from_raw(
        bytes: &[u8],
        fresh_uuid: impl FnOnce() -> String,
    ) -> Result<Self, RawCommandError> {
        let dict = parse_dictionary(bytes)?;
        match dict.get("Command") {
            Some(Value::Dictionary(command)) => {
                let request_type = request_type_of(command)?;
                match dict.get("CommandUUID") {
                    Some(Value::String(uuid)) => {
                        if uuid.is_empty() || uuid.len() > 128 {
                            return Err(RawCommandError::BadUuid);
                        }
                        Ok(Self {
                            uuid: uuid.clone(),
                            request_type,
                            raw: bytes.to_vec(),
                        })
                    }
                    None => Self::new(fresh_uuid(), command.clone()),
                    Some(_) => Err(RawCommandError::BadUuid),
                }
            }
            Some(_) => Err(ProtocolError::WrongType {
                key: "Command",
                expected: "dictionary",
            }
            .into()),
            None => Self::new(fresh_uuid(), dict),
        }
    }
}

fn request_type_of(command: &Dictionary) -> Result<String, RawCommandError> {
    command
        .get("RequestType")
        .and_then(Value::as_string)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(RawCommandError::NoRequestType)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_admin_bytes_and_uuid() {
        let raw = br#"<plist version="1.0"><dict><key>CommandUUID</key><string>X-1</string><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>"#;
        let env = CommandEnvelope::from_raw(raw, || unreachable!()).unwrap();
        assert_eq!(env.uuid, "X-1");
        assert_eq!(env.request_type, "ProfileList");
        assert_eq!(env.raw, raw.to_vec());
    }

    #[test]
    fn bare_command_gets_an_envelope() {
        let raw = br#"<plist version="1.0"><dict><key>RequestType</key><string>DeviceInformation</string></dict></plist>"#;
        let env = CommandEnvelope::from_raw(raw, || "U-2".into()).unwrap();
        assert_eq!(env.uuid, "U-2");
        let d = parse_dictionary(&env.raw).unwrap();
        assert_eq!(d.get("CommandUUID").and_then(Value::as_string), Some("U-2"));
        let cmd = d.get("Command").and_then(Value::as_dictionary).unwrap();
        assert_eq!(
            cmd.get("RequestType").and_then(Value::as_string),
            Some("DeviceInformation")
        );
    }

    #[test]
    fn with_uuid_renames_the_command() {
        let raw = br#"<plist version="1.0"><dict><key>CommandUUID</key><string>A</string><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>"#;
        let env = CommandEnvelope::from_raw(raw, || unreachable!()).unwrap();
        let copy = env.with_uuid("B").unwrap();
        assert_eq!(
            (copy.uuid.as_str(), copy.request_type.as_str()),
            ("B", "ProfileList")
        );
        let d = parse_dictionary(&copy.raw).unwrap();
        assert_eq!(d.get("CommandUUID").and_then(Value::as_string), Some("B"));
    }

    #[test]
    fn rejects_commands_without_request_type() {
        let raw = br#"<plist version="1.0"><dict><key>Command</key><dict/></dict></plist>"#;
        assert_eq!(
            CommandEnvelope::from_raw(raw, || "u".into()).unwrap_err(),
            RawCommandError::NoRequestType
        );
        assert!(CommandEnvelope::from_raw(b"junk", || "u".into()).is_err());
    }
}
