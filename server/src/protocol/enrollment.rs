//! Which enrollment (command channel) a message belongs to.
//!
//! Device channel: the UDID, or the EnrollmentID of a User Enrollment. User channel (macOS and Shared iPad):
//! `UDID:UserID`, with Shared iPad's all-F UserID replaced by the UserShortName; a User Enrollment user is
//! `EnrollmentID:EnrollmentUserID`.

use super::fields::opt_nonempty_str;
use super::ProtocolError;
use plist::Dictionary;
use serde::Serialize;

/// Shared iPad reports this UserID for every user; the short name tells them apart.
const SHARED_IPAD_USER_ID: &str = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentKind {
    /// The device channel of a device enrolled by UDID.
    Device,
    /// The device channel of a User Enrollment (identified by EnrollmentID).
    UserEnrollmentDevice,
    /// A macOS user channel.
    User,
    /// A Shared iPad user channel.
    SharedIpadUser,
    /// The user channel of a User Enrollment.
    UserEnrollmentUser,
}

impl EnrollmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::UserEnrollmentDevice => "user_enrollment_device",
            Self::User => "user",
            Self::SharedIpadUser => "shared_ipad_user",
            Self::UserEnrollmentUser => "user_enrollment_user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Device,
            Self::UserEnrollmentDevice,
            Self::User,
            Self::SharedIpadUser,
            Self::UserEnrollmentUser,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    pub fn is_user_channel(self) -> bool {
        matches!(
            self,
            Self::User | Self::SharedIpadUser | Self::UserEnrollmentUser
        )
    }
}

/// The channel a message speaks for, resolved from its identifying keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRef {
    /// The queue id: what commands are enqueued to.
    pub id: String,
    /// The device this channel belongs to (its UDID or EnrollmentID).
    pub device_id: String,
    pub kind: EnrollmentKind,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
}

impl EnrollmentRef {
    pub fn from_dict(d: &Dictionary) -> Result<Self, ProtocolError> {
        let udid = opt_nonempty_str(d, "UDID")?;
        let enrollment_id = opt_nonempty_str(d, "EnrollmentID")?;
        let user_id = opt_nonempty_str(d, "UserID")?;
        let enrollment_user_id = opt_nonempty_str(d, "EnrollmentUserID")?;
        let user_short_name = opt_nonempty_str(d, "UserShortName")?;
        let user_long_name = opt_nonempty_str(d, "UserLongName")?;

        let (device_id, device_kind) = match (udid, enrollment_id) {
            (Some(udid), _) => (udid, EnrollmentKind::Device),
            (None, Some(eid)) => (eid, EnrollmentKind::UserEnrollmentDevice),
            (None, None) => return Err(ProtocolError::NoEnrollmentId),
        };

        let (id, kind, user_id) = if device_kind == EnrollmentKind::UserEnrollmentDevice {
            match enrollment_user_id {
                Some(euid) => (
                    format!("{device_id}:{euid}"),
                    EnrollmentKind::UserEnrollmentUser,
                    Some(euid),
                ),
                None => (device_id.clone(), device_kind, None),
            }
        } else {
            match user_id {
                Some(uid) if uid.eq_ignore_ascii_case(SHARED_IPAD_USER_ID) => {
                    let short = user_short_name
                        .clone()
                        .ok_or(ProtocolError::MissingKey("UserShortName"))?;
                    (
                        format!("{device_id}:{short}"),
                        EnrollmentKind::SharedIpadUser,
                        Some(uid),
                    )
                }
                Some(uid) => (
                    format!("{device_id}:{uid}"),
                    EnrollmentKind::User,
                    Some(uid),
                ),
                None => (device_id.clone(), device_kind, None),
            }
        };
        Ok(Self {
            id,
            device_id,
            kind,
            user_id,
            user_short_name,
            user_long_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plist::Value;

    fn dict(pairs: &[(&str, &str)]) -> Dictionary {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn device_channel_uses_udid() {
        let r = EnrollmentRef::from_dict(&dict(&[("UDID", "ABC")])).unwrap();
        assert_eq!((r.id.as_str(), r.kind), ("ABC", EnrollmentKind::Device));
    }

    #[test]
    fn macos_user_channel() {
        let r = EnrollmentRef::from_dict(&dict(&[("UDID", "ABC"), ("UserID", "U1")])).unwrap();
        assert_eq!(r.id, "ABC:U1");
        assert_eq!(r.device_id, "ABC");
        assert_eq!(r.kind, EnrollmentKind::User);
    }

    #[test]
    fn shared_ipad_user_uses_short_name() {
        let r = EnrollmentRef::from_dict(&dict(&[
            ("UDID", "ABC"),
            ("UserID", SHARED_IPAD_USER_ID),
            ("UserShortName", "jappleseed"),
        ]))
        .unwrap();
        assert_eq!(r.id, "ABC:jappleseed");
        assert_eq!(r.kind, EnrollmentKind::SharedIpadUser);
        let missing =
            EnrollmentRef::from_dict(&dict(&[("UDID", "ABC"), ("UserID", SHARED_IPAD_USER_ID)]));
        assert_eq!(missing, Err(ProtocolError::MissingKey("UserShortName")));
    }

    #[test]
    fn user_enrollment_channels() {
        let dev = EnrollmentRef::from_dict(&dict(&[("EnrollmentID", "E1")])).unwrap();
        assert_eq!(
            (dev.id.as_str(), dev.kind),
            ("E1", EnrollmentKind::UserEnrollmentDevice)
        );
        let user = EnrollmentRef::from_dict(&dict(&[
            ("EnrollmentID", "E1"),
            ("EnrollmentUserID", "EU1"),
        ]))
        .unwrap();
        assert_eq!(
            (user.id.as_str(), user.kind),
            ("E1:EU1", EnrollmentKind::UserEnrollmentUser)
        );
        assert_eq!(user.device_id, "E1");
    }

    #[test]
    fn no_id_is_an_error() {
        assert_eq!(
            EnrollmentRef::from_dict(&dict(&[("UDID", "")])),
            Err(ProtocolError::NoEnrollmentId)
        );
    }

    #[test]
    fn kind_round_trips() {
        for k in [
            EnrollmentKind::Device,
            EnrollmentKind::UserEnrollmentDevice,
            EnrollmentKind::User,
            EnrollmentKind::SharedIpadUser,
            EnrollmentKind::UserEnrollmentUser,
        ] {
            assert_eq!(EnrollmentKind::parse(k.as_str()), Some(k));
        }
    }
}
