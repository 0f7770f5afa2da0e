//! Conveniences on the generated event types.

use crate::plist::{Plist, PlistError};
use crate::types::{
    ChannelKind, CheckinEvent, CheckinKind, CommandResultEvent, CommandStatus, Enrollment,
};

impl ChannelKind {
    /// Whether this is a device's own channel: `Device` or `UserEnrollmentDevice` (the channels
    /// that send Authenticate, and that device-wide commands go to).
    pub fn is_device_channel(self) -> bool {
        matches!(
            self,
            ChannelKind::Device | ChannelKind::UserEnrollmentDevice
        )
    }

    /// Whether this channel belongs to a User Enrollment (`UserEnrollmentDevice`,
    /// `UserEnrollmentUser`).
    pub fn is_user_enrollment(self) -> bool {
        matches!(
            self,
            ChannelKind::UserEnrollmentDevice | ChannelKind::UserEnrollmentUser
        )
    }
}

impl Enrollment {
    /// Whether this is a device's own channel (see [`ChannelKind::is_device_channel`]).
    pub fn is_device_channel(&self) -> bool {
        self.kind.is_device_channel()
    }
}

impl CheckinKind {
    /// Apple's `MessageType` for this check-in: `Authenticate`, `TokenUpdate`, `CheckOut`, ...
    pub fn apple_name(self) -> &'static str {
        match self {
            CheckinKind::Authenticate => "Authenticate",
            CheckinKind::TokenUpdate => "TokenUpdate",
            CheckinKind::CheckOut => "CheckOut",
            CheckinKind::UserAuthenticate => "UserAuthenticate",
            CheckinKind::SetBootstrapToken => "SetBootstrapToken",
            CheckinKind::GetBootstrapToken => "GetBootstrapToken",
            CheckinKind::DeclarativeManagement => "DeclarativeManagement",
            CheckinKind::GetToken => "GetToken",
        }
    }
}

impl CommandStatus {
    /// Apple's `Status` for this result: `Acknowledged`, `Error`, `CommandFormatError`, `NotNow`.
    pub fn apple_name(self) -> &'static str {
        match self {
            CommandStatus::Acknowledged => "Acknowledged",
            CommandStatus::Error => "Error",
            CommandStatus::CommandFormatError => "CommandFormatError",
            CommandStatus::NotNow => "NotNow",
        }
    }
}

impl CheckinEvent {
    /// Whether this is a channel's first TokenUpdate (count 1; a TokenUpdate without a count is
    /// taken as first).
    pub fn is_first_token_update(&self) -> bool {
        self.kind == CheckinKind::TokenUpdate && self.token_update_count.unwrap_or(1) == 1
    }
}

impl CommandResultEvent {
    /// The device's report rebuilt as a [`Plist`] (a dictionary with `Status`, `CommandUUID`, and
    /// the command's data such as `QueryResponses` or `SecurityInfo`).
    pub fn report(&self) -> Result<Plist, PlistError> {
        Plist::from_tree(&self.report)
    }

    /// Whether the device acknowledged the command.
    pub fn is_acknowledged(&self) -> bool {
        self.status == CommandStatus::Acknowledged
    }

    /// The CommandUUID of the command as first queued: [`retry_of`](Self::retry_of) for a copy
    /// queued by a `retry` action after an Error, else this command's own. The same for every
    /// attempt of a command, so it is the key to count attempts by.
    pub fn original_command_uuid(&self) -> &str {
        self.retry_of.as_deref().unwrap_or(&self.command_uuid)
    }

    /// Whether this command is a copy queued by a `retry` action (see
    /// [`original_command_uuid`](Self::original_command_uuid)).
    pub fn is_retry(&self) -> bool {
        self.retry_of.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::fixtures;
    use serde_json::json;

    #[test]
    fn channel_kinds() {
        assert!(ChannelKind::Device.is_device_channel());
        assert!(ChannelKind::UserEnrollmentDevice.is_device_channel());
        assert!(!ChannelKind::User.is_device_channel());
        assert!(!ChannelKind::SharedIpadUser.is_device_channel());
        assert!(ChannelKind::UserEnrollmentUser.is_user_enrollment());
        assert!(!fixtures::user_enrollment("U", "501").is_device_channel());
    }

    #[test]
    fn names_and_serialization() {
        assert_eq!(CheckinKind::CheckOut.apple_name(), "CheckOut");
        assert_eq!(CommandStatus::NotNow.apple_name(), "NotNow");
        assert_eq!(
            serde_json::to_value(CommandStatus::NotNow).unwrap(),
            json!("not-now")
        );
        assert_eq!(
            serde_json::to_value(fixtures::device_enrollment("U1")).unwrap(),
            json!({"id": "U1", "device_id": "U1", "kind": "device",
                   "user_id": null, "user_short_name": null})
        );
    }

    #[test]
    fn first_token_update_and_report() {
        let mut event =
            fixtures::checkin(CheckinKind::TokenUpdate, fixtures::device_enrollment("U1"));
        assert!(event.is_first_token_update());
        event.token_update_count = Some(2);
        assert!(!event.is_first_token_update());
        event.token_update_count = None;
        assert!(event.is_first_token_update());
        event.kind = CheckinKind::Authenticate;
        assert!(!event.is_first_token_update());

        let report = Plist::from_json(&json!({"Status": "Acknowledged"})).unwrap();
        let result = fixtures::command_result(
            fixtures::device_enrollment("U1"),
            "SecurityInfo",
            CommandStatus::Acknowledged,
            &report,
        );
        assert!(result.is_acknowledged());
        assert_eq!(result.report().unwrap(), report);
    }

    #[test]
    fn original_command_uuid_follows_retry_of() {
        let mut original = fixtures::command_result(
            fixtures::device_enrollment("U1"),
            "DeviceLock",
            CommandStatus::Error,
            &Plist::from_json(&json!({})).unwrap(),
        );
        original.command_uuid = "C1".into();
        assert!(!original.is_retry());
        assert_eq!(original.original_command_uuid(), "C1");

        let copy = fixtures::retried(&original, "C2");
        assert_eq!(copy.command_uuid, "C2");
        assert_eq!(copy.retry_of.as_deref(), Some("C1"));
        assert!(copy.is_retry());
        assert_eq!(copy.original_command_uuid(), "C1");
        assert_ne!(copy.event_id, original.event_id);
        // A copy of a copy keeps the root.
        let again = fixtures::retried(&copy, "C3");
        assert_eq!(again.retry_of.as_deref(), Some("C1"));
        assert_eq!(again.original_command_uuid(), "C1");
    }
}
