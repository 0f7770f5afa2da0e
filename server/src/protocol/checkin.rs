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
    UserAuthenticate {
        digest_response: Option<String>,
    },
    SetBootstrapToken {
        bootstrap_token: Option<Vec<u8>>,
    },
    GetBootstrapToken,
    /// `data` is the status report when `endpoint` is `status` (JSON, see [`super::ddm::StatusReport`]).
    DeclarativeManagement {
        endpoint: Option<String>,
        data: Option<Vec<u8>>,
    },
    GetToken {
        token_service_type: Option<String>,
    },
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
                data: declarative_data(&dict)?,
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

/// A DeclarativeManagement's `Data`, at most the largest status report accepted (the body may be far larger:
/// the limit is the server's body limit); empty counts as absent.
fn declarative_data(dict: &Dictionary) -> Result<Option<Vec<u8>>, ProtocolError> {
    let max = super::ddm::MAX_STATUS_REPORT_BYTES;
    match opt_data(dict, "Data")? {
        Some(d) if d.len() > max => Err(ProtocolError::DataTooLarge { key: "Data", max }),
        data => Ok(data.filter(|d| !d.is_empty())),
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
    fn decodes_declarative_management_data() {
        let dm = |extra: &str| {
            CheckinMessage::decode(&xml(&format!(
                "<key>MessageType</key><string>DeclarativeManagement</string>\
                 <key>UDID</key><string>D1</string><key>Endpoint</key><string>status</string>{extra}"
            )))
        };
        let payload = |extra: &str| dm(extra).unwrap().payload;
        assert_eq!(
            payload("<key>Data</key><data>eyJTdGF0dXNJdGVtcyI6e319</data>"),
            CheckinPayload::DeclarativeManagement {
                endpoint: Some("status".into()),
                data: Some(br#"{"StatusItems":{}}"#.to_vec()),
            }
        );
        assert_eq!(
            payload(""),
            CheckinPayload::DeclarativeManagement {
                endpoint: Some("status".into()),
                data: None,
            }
        );
        assert_eq!(
            payload("<key>Data</key><data></data>"),
            CheckinPayload::DeclarativeManagement {
                endpoint: Some("status".into()),
                data: None,
            }
        );
        assert_eq!(
            dm("<key>Data</key><string>{}</string>").unwrap_err(),
            ProtocolError::WrongType {
                key: "Data",
                expected: "data"
            }
        );
    }

    #[test]
    fn declarative_management_data_is_bounded() {
        use base64::Engine as _;
        let max = crate::protocol::ddm::MAX_STATUS_REPORT_BYTES;
        let body = |len: usize| {
            let data = base64::engine::general_purpose::STANDARD.encode(vec![b' '; len]);
            xml(&format!(
                "<key>MessageType</key><string>DeclarativeManagement</string>\
                 <key>UDID</key><string>D1</string><key>Endpoint</key><string>status</string>\
                 <key>Data</key><data>{data}</data>"
            ))
        };
        let fits = CheckinMessage::decode(&body(max)).unwrap();
        assert!(matches!(
            fits.payload,
            CheckinPayload::DeclarativeManagement { data: Some(d), .. } if d.len() == max
        ));
        assert_eq!(
            CheckinMessage::decode(&body(max + 1)).unwrap_err(),
            ProtocolError::DataTooLarge { key: "Data", max }
        );
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
