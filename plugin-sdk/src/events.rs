//! Conveniences on the generated event types.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{PluginError, PluginResult};
use crate::plist::{Plist, PlistError};
use crate::types::{
    ChannelKind, CheckinEvent, CheckinKind, CommandResultEvent, CommandStatus, DdmStatusEvent,
    DeclarationChange, DeclarationState, Enrollment, StatusItemChange,
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

fn parse<T: DeserializeOwned>(json: &str, what: &str) -> PluginResult<T> {
    serde_json::from_str(json).map_err(|e| PluginError::from(e).context(what))
}

impl StatusItemChange {
    /// The value reported before (`None` on the first report of this item).
    pub fn old_value(&self) -> PluginResult<Option<Value>> {
        self.old_as()
    }

    /// The value now.
    pub fn new_value(&self) -> PluginResult<Value> {
        self.new_as()
    }

    /// The value reported before as `T` (`None` on the first report): an error when it is not a `T`.
    pub fn old_as<T: DeserializeOwned>(&self) -> PluginResult<Option<T>> {
        self.old_json
            .as_deref()
            .map(|j| parse(j, &format!("status item {} (old)", self.name)))
            .transpose()
    }

    /// The value now as `T`: an error when it is not a `T`.
    pub fn new_as<T: DeserializeOwned>(&self) -> PluginResult<T> {
        parse(&self.new_json, &format!("status item {}", self.name))
    }
}

impl DdmStatusEvent {
    /// The change to the status item `name` (`passcode.is-compliant`, ...), if this report changed
    /// it.
    pub fn item(&self, name: &str) -> Option<&StatusItemChange> {
        self.items.iter().find(|i| i.name == name)
    }

    /// The status item `name`'s value before and now, if this report changed it; before is `None`
    /// on its first report.
    ///
    /// ```
    /// # use mdm_plugin_sdk::{mock::fixtures, serde_json::json, PluginResult};
    /// # fn main() -> PluginResult<()> {
    /// let event = fixtures::ddm_status(
    ///     fixtures::device_enrollment("UDID-1"),
    ///     vec![fixtures::item_turned("passcode.is-compliant", Some(json!(true)), json!(false))],
    /// );
    /// assert_eq!(
    ///     event.item_turned("passcode.is-compliant")?,
    ///     Some((Some(json!(true)), json!(false)))
    /// );
    /// assert_eq!(event.item_turned("device.operating-system.version")?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn item_turned(&self, name: &str) -> PluginResult<Option<(Option<Value>, Value)>> {
        self.item_turned_as(name)
    }

    /// [`item_turned`](Self::item_turned) as `T`, e.g. `bool` for `passcode.is-compliant`: an error
    /// when a value is not a `T`.
    pub fn item_turned_as<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> PluginResult<Option<(Option<T>, T)>> {
        let Some(item) = self.item(name) else {
            return Ok(None);
        };
        Ok(Some((item.old_as()?, item.new_as()?)))
    }

    /// The change to the declaration `identifier`, if this report changed its state.
    pub fn declaration(&self, identifier: &str) -> Option<&DeclarationChange> {
        self.declarations
            .iter()
            .find(|d| d.identifier == identifier)
    }

    /// The declarations this report changed, in the order reported.
    pub fn declaration_changes(&self) -> impl Iterator<Item = &DeclarationChange> {
        self.declarations.iter()
    }
}

impl DeclarationState {
    /// Whether the device reported it `valid`.
    pub fn is_valid(&self) -> bool {
        self.valid == "valid"
    }

    /// Whether the device reported it `invalid` (its `reasons` say why).
    pub fn is_invalid(&self) -> bool {
        self.valid == "invalid"
    }

    /// Apple's `reasons`: an array of `{"code", "description", "details"}` objects (empty when none).
    pub fn reasons(&self) -> PluginResult<Vec<Value>> {
        parse(&self.reasons_json, "declaration reasons")
    }
}

impl DeclarationChange {
    /// Whether this report made it invalid (it was not reported invalid before).
    pub fn turned_invalid(&self) -> bool {
        self.new.is_invalid() && !self.old.as_ref().is_some_and(DeclarationState::is_invalid)
    }

    /// Whether this report made it valid (it was not reported valid before).
    pub fn turned_valid(&self) -> bool {
        self.new.is_valid() && !self.old.as_ref().is_some_and(DeclarationState::is_valid)
    }

    /// Whether this report changed whether it is active (a first report counts as a change).
    pub fn activation_changed(&self) -> bool {
        self.old
            .as_ref()
            .is_none_or(|o| o.active != self.new.active)
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

        let result = fixtures::command_result(
            fixtures::device_enrollment("U1"),
            "SecurityInfo",
            CommandStatus::Acknowledged,
            &json!({"Status": "Acknowledged"}),
        );
        let report = Plist::from_json(&json!({"Status": "Acknowledged"})).unwrap();
        assert!(result.is_acknowledged());
        assert_eq!(result.report().unwrap(), report);
    }

    #[test]
    fn original_command_uuid_follows_retry_of() {
        let mut original = fixtures::command_result(
            fixtures::device_enrollment("U1"),
            "DeviceLock",
            CommandStatus::Error,
            &json!({}),
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

    #[test]
    fn status_items_turn_with_their_json_values() {
        let event = fixtures::ddm_status(
            fixtures::device_enrollment("U1"),
            vec![
                fixtures::item_turned("passcode.is-compliant", Some(json!(true)), json!(false)),
                fixtures::item_turned("device.operating-system.version", None, json!("17.5")),
            ],
        );
        assert_eq!(
            event
                .item_turned_as::<bool>("passcode.is-compliant")
                .unwrap(),
            Some((Some(true), false))
        );
        assert_eq!(
            event
                .item_turned_as::<String>("device.operating-system.version")
                .unwrap(),
            Some((None, "17.5".to_owned()))
        );
        assert_eq!(
            event
                .item_turned("device.operating-system.version")
                .unwrap(),
            Some((None, json!("17.5")))
        );
        assert_eq!(event.item_turned("passcode.is-present").unwrap(), None);
        // A value of another type is an error naming the item, not a silent None.
        let err = event
            .item_turned_as::<bool>("device.operating-system.version")
            .unwrap_err()
            .to_string();
        assert!(err.contains("device.operating-system.version"), "{err}");
        let mut broken = fixtures::item_turned("x", None, json!(1));
        broken.new_json = "{".into();
        assert!(broken.new_value().is_err());
    }

    #[test]
    fn declarations_turn_valid_invalid_and_active() {
        let valid = fixtures::declaration_state(true, "valid");
        let invalid = fixtures::declaration_state(false, "invalid");
        let broke =
            fixtures::declaration_turned("com.example.p", Some(valid.clone()), invalid.clone());
        assert!(broke.turned_invalid() && !broke.turned_valid() && broke.activation_changed());
        let fixed =
            fixtures::declaration_turned("com.example.p", Some(invalid.clone()), valid.clone());
        assert!(fixed.turned_valid() && !fixed.turned_invalid());
        let first = fixtures::declaration_turned("com.example.q", None, invalid.clone());
        assert!(first.turned_invalid() && first.activation_changed());
        let token_only = fixtures::declaration_turned(
            "com.example.p",
            Some(valid.clone()),
            DeclarationState {
                server_token: "t2".into(),
                ..valid.clone()
            },
        );
        assert!(!token_only.turned_valid() && !token_only.activation_changed());

        let mut event = fixtures::ddm_status(fixtures::device_enrollment("U1"), Vec::new());
        event.declarations = vec![broke.clone(), first];
        assert_eq!(event.declaration("com.example.p"), Some(&broke));
        assert_eq!(event.declaration("com.example.r"), None);
        let ids: Vec<&str> = event
            .declaration_changes()
            .filter(|d| d.turned_invalid())
            .map(|d| d.identifier.as_str())
            .collect();
        assert_eq!(ids, ["com.example.p", "com.example.q"]);

        let mut reasons = invalid;
        reasons.reasons_json = r#"[{"code": "Error.MissingPayload"}]"#.into();
        assert_eq!(
            reasons.reasons().unwrap(),
            vec![json!({"code": "Error.MissingPayload"})]
        );
        assert_eq!(valid.reasons().unwrap(), Vec::<Value>::new());
    }
}
