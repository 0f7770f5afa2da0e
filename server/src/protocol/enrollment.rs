//! Which enrollment (command channel) a message belongs to.
//!
//! Device channel: the UDID, or the EnrollmentID of a User Enrollment. User channel (macOS and Shared iPad):
//! `UDID:UserID`, with Shared iPad's all-F UserID replaced by the UserShortName; a User Enrollment user is
//! `EnrollmentID:EnrollmentUserID`.
//!
//! Every identifier is checked before it forms an id: the parts never contain the `:` that joins them (a
//! device whose UDID was `V:U` spoke for user U of device V), and their length and characters are bounded
//! (they key every table and appear in logs and URLs). The rules admit every real value in Apple's
//! documentation and the peers' captures.

use super::fields::opt_nonempty_str;
use super::ProtocolError;
use plist::Dictionary;
use serde::Serialize;

/// What an identifier may be: 1 to `max` characters from `allowed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRule {
    /// The key (or, for admin input, the parameter) it is read from, which an error names.
    pub key: &'static str,
    pub max: usize,
    pub allowed: Allowed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// ASCII letters, digits and `-`: UDIDs (40 hex digits on old devices, `00008030-001A2C3E0E38802E` on
    /// newer ones, a UUID on Macs) and UserIDs (a UUID).
    Hex,
    /// Printable ASCII but `:` (joins a channel id), `/` and `\` (paths), `,` (separates ids in NanoMDM's
    /// `/v1/enqueue/{id,id}`): Apple's opaque EnrollmentID and EnrollmentUserID, short names (`jappleseed`,
    /// `first.last`) and Shared iPad's Managed Apple Accounts (`user@example.com`). No space, no control
    /// character.
    Opaque,
}

impl Allowed {
    fn admits(self, c: char) -> bool {
        match self {
            Allowed::Hex => c.is_ascii_alphanumeric() || c == '-',
            Allowed::Opaque => c.is_ascii_graphic() && !matches!(c, ':' | '/' | '\\' | ','),
        }
    }

    /// For the error message.
    pub fn describe(self) -> &'static str {
        match self {
            Allowed::Hex => "ASCII letters, digits and '-'",
            Allowed::Opaque => "printable ASCII without spaces, ':', '/', '\\' or ','",
        }
    }
}

impl IdRule {
    /// Check `value` against the rule; the error names the key, never the value (which may be huge).
    pub fn check(self, value: &str) -> Result<(), ProtocolError> {
        if value.is_empty()
            || value.len() > self.max
            || !value.chars().all(|c| self.allowed.admits(c))
        {
            return Err(ProtocolError::BadIdentifier {
                key: self.key,
                max: self.max,
                allowed: self.allowed.describe(),
            });
        }
        Ok(())
    }
}

pub const UDID: IdRule = IdRule {
    key: "UDID",
    max: 64,
    allowed: Allowed::Hex,
};
pub const USER_ID: IdRule = IdRule {
    key: "UserID",
    max: 64,
    allowed: Allowed::Hex,
};
pub const ENROLLMENT_ID: IdRule = IdRule {
    key: "EnrollmentID",
    max: 128,
    allowed: Allowed::Opaque,
};
pub const ENROLLMENT_USER_ID: IdRule = IdRule {
    key: "EnrollmentUserID",
    max: 128,
    allowed: Allowed::Opaque,
};
/// A Managed Apple Account is an email address (at most 254 characters).
pub const USER_SHORT_NAME: IdRule = IdRule {
    key: "UserShortName",
    max: 255,
    allowed: Allowed::Opaque,
};

/// A device id from outside (admin input): a UDID or an EnrollmentID, so the looser of the two.
pub const DEVICE_ID: IdRule = IdRule {
    key: "id",
    ..ENROLLMENT_ID
};
/// The user part of a channel id from outside: a UserID, short name or EnrollmentUserID.
const CHANNEL_USER: IdRule = IdRule {
    key: "id",
    ..USER_SHORT_NAME
};

/// The id of a user channel: the device's id and the user's, joined by `:`, which neither may contain (both
/// have passed their [`IdRule`]), so one id names one channel. The only place a channel id is built.
pub fn channel_id(device_id: &str, user: &str) -> String {
    debug_assert!(!device_id.contains(':') && !user.contains(':'));
    format!("{device_id}:{user}")
}

/// Check a channel id from outside (an admin naming an enrollment): `device` or `device:user`, each part by
/// the loosest rule it may take. A refused id names nothing that could exist.
pub fn check_channel_id(id: &str) -> Result<(), ProtocolError> {
    match id.split_once(':') {
        None => DEVICE_ID.check(id),
        Some((device, user)) => {
            DEVICE_ID.check(device)?;
            CHANNEL_USER.check(user)
        }
    }
}

/// An identifier read from a message, checked by `rule` (absent and empty stay absent).
fn checked(d: &Dictionary, rule: IdRule) -> Result<Option<String>, ProtocolError> {
    let value = opt_nonempty_str(d, rule.key)?;
    if let Some(v) = &value {
        rule.check(v)?;
    }
    Ok(value)
}

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
        let udid = checked(d, UDID)?;
        let enrollment_id = checked(d, ENROLLMENT_ID)?;
        let user_id = checked(d, USER_ID)?;
        let enrollment_user_id = checked(d, ENROLLMENT_USER_ID)?;
        let user_short_name = checked(d, USER_SHORT_NAME)?;
        let user_long_name = opt_nonempty_str(d, "UserLongName")?;

        let (device_id, device_kind) = match (udid, enrollment_id) {
            (Some(udid), _) => (udid, EnrollmentKind::Device),
            (None, Some(eid)) => (eid, EnrollmentKind::UserEnrollmentDevice),
            (None, None) => return Err(ProtocolError::NoEnrollmentId),
        };

        let (id, kind, user_id) = if device_kind == EnrollmentKind::UserEnrollmentDevice {
            match enrollment_user_id {
                Some(euid) => (
                    channel_id(&device_id, &euid),
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
                        channel_id(&device_id, &short),
                        EnrollmentKind::SharedIpadUser,
                        Some(uid),
                    )
                }
                Some(uid) => (
                    channel_id(&device_id, &uid),
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

    fn bad(key: &'static str) -> ProtocolError {
        let rule = [
            UDID,
            USER_ID,
            ENROLLMENT_ID,
            ENROLLMENT_USER_ID,
            USER_SHORT_NAME,
        ]
        .into_iter()
        .find(|r| r.key == key)
        .unwrap();
        ProtocolError::BadIdentifier {
            key,
            max: rule.max,
            allowed: rule.allowed.describe(),
        }
    }

    // A device whose UDID was `V:U` had the channel id of user U on device V.
    #[test]
    fn no_identifier_may_hold_a_colon() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("UDID", "V:U")], "UDID"),
            (&[("UDID", "V"), ("UserID", "U:X")], "UserID"),
            (&[("EnrollmentID", "E:1")], "EnrollmentID"),
            (
                &[("EnrollmentID", "E"), ("EnrollmentUserID", "U:1")],
                "EnrollmentUserID",
            ),
            (
                &[
                    ("UDID", "V"),
                    ("UserID", SHARED_IPAD_USER_ID),
                    ("UserShortName", "a:b"),
                ],
                "UserShortName",
            ),
        ];
        for (pairs, key) in cases {
            assert_eq!(
                EnrollmentRef::from_dict(&dict(pairs)),
                Err(bad(key)),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn control_characters_whitespace_and_separators_are_refused() {
        for v in [
            "a\0b",
            "a\nb",
            "a\rb",
            "a\tb",
            "a b",
            "a/b",
            "a\\b",
            "a,b",
            "é",
            "a\u{202e}b",
        ] {
            for key in [
                "UDID",
                "UserID",
                "EnrollmentID",
                "EnrollmentUserID",
                "UserShortName",
            ] {
                let mut pairs = vec![("UDID", "V"), ("UserID", "U")];
                if key.starts_with("Enrollment") {
                    pairs = vec![("EnrollmentID", "E"), ("EnrollmentUserID", "EU")];
                }
                if key == "UserShortName" {
                    pairs[1] = ("UserID", SHARED_IPAD_USER_ID);
                }
                pairs.retain(|(k, _)| *k != key);
                pairs.push((key, v));
                assert_eq!(
                    EnrollmentRef::from_dict(&dict(&pairs)),
                    Err(bad(key)),
                    "{key} = {v:?}"
                );
            }
        }
        // UDIDs and UserIDs are letters, digits and dashes only.
        assert_eq!(
            EnrollmentRef::from_dict(&dict(&[("UDID", "a.b")])),
            Err(bad("UDID"))
        );
    }

    #[test]
    fn identifiers_are_bounded_and_the_error_does_not_echo_them() {
        let at = |n: usize| "A".repeat(n);
        assert!(EnrollmentRef::from_dict(&dict(&[("UDID", &at(64))])).is_ok());
        assert_eq!(
            EnrollmentRef::from_dict(&dict(&[("UDID", &at(65))])),
            Err(bad("UDID"))
        );
        assert!(EnrollmentRef::from_dict(&dict(&[("EnrollmentID", &at(128))])).is_ok());
        assert_eq!(
            EnrollmentRef::from_dict(&dict(&[("EnrollmentID", &at(129))])),
            Err(bad("EnrollmentID"))
        );
        let long = at(10 * 1024);
        let err = EnrollmentRef::from_dict(&dict(&[("UDID", &long)])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("UDID") && text.len() < 200, "{text}");
        let short = at(256);
        assert_eq!(
            EnrollmentRef::from_dict(&dict(&[
                ("UDID", "V"),
                ("UserID", SHARED_IPAD_USER_ID),
                ("UserShortName", &short),
            ])),
            Err(bad("UserShortName"))
        );
    }

    // Values from Apple's documentation and the peers' captures (../shared/testdata/peers).
    #[test]
    fn real_identifiers_are_accepted() {
        for udid in [
            "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69",
            "66ADE930-5FDF-5EC4-8429-15640684C489",
            "00008030-001A2C3E0E38802E",
            "AAABBBCCC111222333",
        ] {
            let r = EnrollmentRef::from_dict(&dict(&[
                ("UDID", udid),
                ("UserID", "A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD"),
            ]))
            .unwrap();
            assert_eq!(r.id, format!("{udid}:A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD"));
        }
        for short in [
            "jappleseed",
            "first.last",
            "_mbsetupuser",
            "user@example.com",
            "a-b_c+d",
        ] {
            let r = EnrollmentRef::from_dict(&dict(&[
                ("UDID", "V"),
                ("UserID", SHARED_IPAD_USER_ID),
                ("UserShortName", short),
            ]))
            .unwrap();
            assert_eq!(r.id, format!("V:{short}"));
        }
        let r = EnrollmentRef::from_dict(&dict(&[
            ("EnrollmentID", "FB833D84-50C0-41DD-99DE-F748E44FFEF5"),
            ("EnrollmentUserID", "8DB29EAB-A5BB-4B60-8DDA-F75517766FAC"),
        ]))
        .unwrap();
        assert_eq!(r.kind, EnrollmentKind::UserEnrollmentUser);
        // A macOS user's short name with a space is not an id part (it is not used in the id: UserID is).
        assert!(EnrollmentRef::from_dict(&dict(&[
            ("UDID", "V"),
            ("UserID", "U"),
            ("UserLongName", "Jane Appleseed")
        ]))
        .is_ok());
    }

    #[test]
    fn channel_ids_from_outside() {
        for ok in [
            "66ADE930-5FDF-5EC4-8429-15640684C489",
            "66ADE930-5FDF-5EC4-8429-15640684C489:A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD",
            "V:user@example.com",
            "E1:EU1",
        ] {
            assert_eq!(check_channel_id(ok), Ok(()), "{ok}");
        }
        let refused = |key| ProtocolError::BadIdentifier {
            key,
            max: if key == "id" { 128 } else { 0 },
            allowed: Allowed::Opaque.describe(),
        };
        for bad in [
            "",
            ":",
            "V:",
            ":U",
            "V:U:W",
            "a b",
            "a\n",
            "a/b",
            "a,b",
            &"A".repeat(129),
        ] {
            let err = check_channel_id(bad).unwrap_err();
            assert!(
                matches!(err, ProtocolError::BadIdentifier { key: "id", .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(DEVICE_ID.check(&"A".repeat(129)), Err(refused("id")));
        assert!(check_channel_id(&format!("V:{}", "a".repeat(255))).is_ok());
        assert!(check_channel_id(&format!("V:{}", "a".repeat(256))).is_err());
        assert_eq!(channel_id("V", "U"), "V:U");
    }
}
