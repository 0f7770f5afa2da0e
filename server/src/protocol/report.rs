//! Command reports: what a device PUTs to the ServerURL (Idle, or the result of a command).

use super::fields::{opt_nonempty_str, req_str};
use super::{parse_dictionary, EnrollmentRef, ProtocolError};
use plist::{Dictionary, Value};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum ReportStatus {
    Idle,
    Acknowledged,
    Error,
    CommandFormatError,
    NotNow,
}

impl ReportStatus {
    pub fn parse(s: &str) -> Result<Self, ProtocolError> {
        Ok(match s {
            "Idle" => Self::Idle,
            "Acknowledged" => Self::Acknowledged,
            "Error" => Self::Error,
            "CommandFormatError" => Self::CommandFormatError,
            "NotNow" => Self::NotNow,
            other => return Err(ProtocolError::UnknownStatus(other.to_string())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Acknowledged => "Acknowledged",
            Self::Error => "Error",
            Self::CommandFormatError => "CommandFormatError",
            Self::NotNow => "NotNow",
        }
    }

    /// Acknowledged, Error and CommandFormatError end a command; NotNow and Idle do not.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Acknowledged | Self::Error | Self::CommandFormatError
        )
    }
}

/// One entry of an ErrorChain, as devices report it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorChainItem {
    pub error_code: Option<i64>,
    pub error_domain: Option<String>,
    pub localized_description: Option<String>,
    pub us_english_description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CommandReport {
    pub enrollment: EnrollmentRef,
    pub status: ReportStatus,
    /// Absent only on Idle.
    pub command_uuid: Option<String>,
    pub error_chain: Vec<ErrorChainItem>,
    pub raw: Vec<u8>,
    pub dict: Dictionary,
}

impl CommandReport {
    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let dict = parse_dictionary(body)?;
        let status = ReportStatus::parse(&req_str(&dict, "Status")?)?;
        let command_uuid = opt_nonempty_str(&dict, "CommandUUID")?;
        if status != ReportStatus::Idle && command_uuid.is_none() {
            return Err(ProtocolError::MissingKey("CommandUUID"));
        }
        let error_chain = match dict.get("ErrorChain") {
            None => Vec::new(),
            Some(Value::Array(items)) => items.iter().filter_map(error_item).collect(),
            Some(_) => {
                return Err(ProtocolError::WrongType {
                    key: "ErrorChain",
                    expected: "array",
                })
            }
        };
        let enrollment = EnrollmentRef::from_dict(&dict)?;
        Ok(Self {
            enrollment,
            status,
            command_uuid,
            error_chain,
            raw: body.to_vec(),
            dict,
        })
    }
}

fn error_item(v: &Value) -> Option<ErrorChainItem> {
    let d = v.as_dictionary()?;
    let s = |k: &str| d.get(k).and_then(Value::as_string).map(str::to_string);
    Some(ErrorChainItem {
        error_code: d.get("ErrorCode").and_then(|v| {
            v.as_signed_integer()
                .or_else(|| v.as_unsigned_integer().map(|u| u as i64))
        }),
        error_domain: s("ErrorDomain"),
        localized_description: s("LocalizedDescription"),
        us_english_description: s("USEnglishDescription"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_needs_no_uuid_but_results_do() {
        let idle = br#"<plist version="1.0"><dict><key>Status</key><string>Idle</string><key>UDID</key><string>D</string></dict></plist>"#;
        let r = CommandReport::decode(idle).unwrap();
        assert_eq!(r.status, ReportStatus::Idle);
        let ack = br#"<plist version="1.0"><dict><key>Status</key><string>Acknowledged</string><key>UDID</key><string>D</string></dict></plist>"#;
        assert_eq!(
            CommandReport::decode(ack).unwrap_err(),
            ProtocolError::MissingKey("CommandUUID")
        );
        let bad = br#"<plist version="1.0"><dict><key>Status</key><string>Maybe</string><key>UDID</key><string>D</string></dict></plist>"#;
        assert_eq!(
            CommandReport::decode(bad).unwrap_err(),
            ProtocolError::UnknownStatus("Maybe".into())
        );
    }

    #[test]
    fn error_chain_is_decoded() {
        let body = br#"<plist version="1.0"><dict><key>Status</key><string>Error</string><key>UDID</key><string>D</string>
            <key>CommandUUID</key><string>C</string><key>ErrorChain</key><array><dict><key>ErrorCode</key><integer>-909</integer>
            <key>ErrorDomain</key><string>NSOSStatusErrorDomain</string></dict></array></dict></plist>"#;
        let r = CommandReport::decode(body).unwrap();
        assert_eq!(r.error_chain.len(), 1);
        assert_eq!(r.error_chain[0].error_code, Some(-909));
        assert!(r.status.is_final());
    }
}
