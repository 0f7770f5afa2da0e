//! Check-in messages (`PUT` to the CheckInURL with content type `application/x-apple-aspen-mdm-checkin`).

use super::fields::{opt_bool, opt_data, opt_nonempty_str, opt_str, req_str};
use super::{parse_dictionary, DeviceFacts, EnrollmentRef, ProtocolError};
use plist::Dictionary;

/// A decoded check-in: the typed payload, the channel it speaks for, and the exact bytes received.
#[derive(Debug, Clone)]
pub struct CheckinMessage {
    pub enrollment: EnrollmentRef,
    pub payload: CheckinPayload,
    pub raw: Vec<u8>,
    pub dict: Dictionary,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckinPayload {
    Authenticate(Authenticate),
    TokenUpdate(TokenUpdate),
    CheckOut,
    UserAuthenticate { digest_response: Option<String> },
    SetBootstrapToken { bootstrap_token: Option<Vec<u8>> },
    GetBootstrapToken,
    DeclarativeManagement { endpoint: Option<String> },
    GetToken { token_service_type: Option<String> },
}

impl CheckinPayload {
    /// Apple's MessageType name, used in logs and metrics labels.
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Authenticate(_) => "Authenticate",
            Self::TokenUpdate(_) => "TokenUpdate",
            Self::CheckOut => "CheckOut",
            Self::UserAuthenticate { .. } => "UserAuthenticate",
            Self::SetBootstrapToken { .. } => "SetBootstrapToken",
            Self::GetBootstrapToken => "GetBootstrapToken",
            Self::DeclarativeManagement { .. } => "DeclarativeManagement",
            Self::GetToken { .. } => "GetToken",
        }
    }
}

/// Authenticate: the push topic and the device's facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authenticate {
    pub topic: Option<String>,
    pub facts: DeviceFacts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenUpdate {
    pub topic: String,
    /// The APNs device token (32 bytes on real devices).
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Option<Vec<u8>>,
    pub awaiting_configuration: Option<bool>,
}

impl CheckinMessage {
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let dict = parse_dictionary(body)?;
        let message_type = req_str(&dict, "MessageType")?;
        let payload = match message_type.as_str() {
            "Authenticate" => CheckinPayload::Authenticate(Authenticate {
                topic: opt_nonempty_str(&dict, "Topic")?,
                facts: DeviceFacts::from_dict(&dict)?,
            }),
            "TokenUpdate" => CheckinPayload::TokenUpdate(TokenUpdate {
                topic: req_str(&dict, "Topic")?,
                token: opt_data(&dict, "Token")?
                    .filter(|t| !t.is_empty())
                    .ok_or(ProtocolError::MissingKey("Token"))?,
                push_magic: req_str(&dict, "PushMagic")?,
                unlock_token: opt_data(&dict, "UnlockToken")?,
                awaiting_configuration: opt_bool(&dict, "AwaitingConfiguration")?,
            }),
            "CheckOut" => CheckinPayload::CheckOut,
            "UserAuthenticate" => CheckinPayload::UserAuthenticate {
                // An empty DigestResponse is meaningful only as "absent": the first round asks for the challenge.
                digest_response: opt_str(&dict, "DigestResponse")?,
            },
            "SetBootstrapToken" => CheckinPayload::SetBootstrapToken {
                bootstrap_token: opt_data(&dict, "BootstrapToken")?.filter(|t| !t.is_empty()),
            },
            "GetBootstrapToken" => CheckinPayload::GetBootstrapToken,
            "DeclarativeManagement" => CheckinPayload::DeclarativeManagement {
                endpoint: opt_nonempty_str(&dict, "Endpoint")?,
            },
            "GetToken" => CheckinPayload::GetToken {
                token_service_type: opt_nonempty_str(&dict, "TokenServiceType")?,
            },
            other => return Err(ProtocolError::UnknownMessageType(other.to_string())),
        };
        let enrollment = EnrollmentRef::from_dict(&dict)?;
        Ok(Self {
            enrollment,
            payload,
            raw: body.to_vec(),
            dict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EnrollmentKind;

    fn xml(pairs: &str) -> Vec<u8> {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>{pairs}</dict></plist>"#
        )
        .into_bytes()
    }

    #[test]
    fn decodes_token_update_for_user_channel() {
        let body = xml(
            "<key>MessageType</key><string>TokenUpdate</string><key>UDID</key><string>D1</string>\
             <key>UserID</key><string>U1</string><key>Topic</key><string>com.apple.mgmt.x</string>\
             <key>Token</key><data>AAEC</data><key>PushMagic</key><string>PM</string>\
             <key>SomethingNew</key><string>ignored</string>",
        );
        let m = CheckinMessage::decode(&body).unwrap();
        assert_eq!(m.enrollment.id, "D1:U1");
        assert_eq!(m.enrollment.kind, EnrollmentKind::User);
        match m.payload {
            CheckinPayload::TokenUpdate(t) => {
                assert_eq!(t.token, vec![0, 1, 2]);
                assert_eq!(t.push_magic, "PM");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(m.raw, body);
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        assert!(matches!(
            CheckinMessage::decode(b"not a plist"),
            Err(ProtocolError::NotAPlist(_))
        ));
        assert_eq!(
            CheckinMessage::decode(&xml("<key>UDID</key><string>D1</string>")).unwrap_err(),
            ProtocolError::MissingKey("MessageType")
        );
        assert_eq!(
            CheckinMessage::decode(&xml(
                "<key>MessageType</key><string>Bogus</string><key>UDID</key><string>D1</string>"
            ))
            .unwrap_err(),
            ProtocolError::UnknownMessageType("Bogus".into())
        );
        assert_eq!(
            CheckinMessage::decode(&xml(
                "<key>MessageType</key><string>TokenUpdate</string><key>UDID</key><string>D1</string>\
                 <key>Topic</key><string>t</string><key>PushMagic</key><string>p</string>"
            ))
            .unwrap_err(),
            ProtocolError::MissingKey("Token")
        );
        assert_eq!(
            CheckinMessage::decode(&xml(
                "<key>MessageType</key><string>Authenticate</string><key>UDID</key><integer>3</integer>"
            ))
            .unwrap_err(),
            ProtocolError::WrongType {
                key: "UDID",
                expected: "string"
            }
        );
        assert_eq!(
            CheckinMessage::decode(b"<plist version=\"1.0\"><array/></plist>").unwrap_err(),
            ProtocolError::NotADictionary
        );
    }
}
