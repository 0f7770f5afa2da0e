//! The [`Plugin`] trait and its adapter to the generated `hooks` export.

use std::marker::PhantomData;

use crate::bindings::exports::mdm::plugin::hooks::Guest;
use crate::error::PluginResult;
use crate::types::{
    Action, CheckinEvent, CommandResultEvent, DdmStatusEvent, Decision, EnrollmentRequest,
    ScheduleEvent, TokenRequest,
};

/// The largest token the server hands out from [`Plugin::provide_token`]; a larger one counts as none.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// A plugin: implement the hooks you subscribe to in `plugin.json`, then [`export_plugin!`] the type.
///
/// Every hook has a default that does nothing, so implement only what you need. The server calls
/// each hook in a fresh instance: keep no state in statics between calls (use [`kv`](crate::kv)).
///
/// [`export_plugin!`]: crate::export_plugin
pub trait Plugin {
    /// At Authenticate, before anything is stored. Any `Deny` from any plugin refuses the
    /// enrollment. Default: [`Decision::Abstain`].
    fn decide_enrollment(request: EnrollmentRequest) -> PluginResult<Decision> {
        let _ = request;
        Ok(Decision::Abstain)
    }

    /// After each check-in message is accepted. Default: no actions.
    fn on_checkin(event: CheckinEvent) -> PluginResult<Vec<Action>> {
        let _ = event;
        Ok(Vec::new())
    }

    /// After each command result (Acknowledged, Error, CommandFormatError, NotNow). Default: no
    /// actions.
    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        let _ = event;
        Ok(Vec::new())
    }

    /// On each tick of a schedule named in the manifest. Default: no actions.
    fn on_schedule(event: ScheduleEvent) -> PluginResult<Vec<Action>> {
        let _ = event;
        Ok(Vec::new())
    }

    /// After a device's declarative management status report changed a declaration's state or a
    /// status item's value; the event holds only what changed (see
    /// [`DdmStatusEvent::item_turned`]). Default: no actions.
    fn on_ddm_status(event: DdmStatusEvent) -> PluginResult<Vec<Action>> {
        let _ = event;
        Ok(Vec::new())
    }

    /// At a GetToken check-in: the token for `request.token_service_type`, or `None` when it is not
    /// this plugin's to give. Plugins are asked in order and the first token wins; an empty one, one
    /// larger than [`MAX_TOKEN_BYTES`](crate::MAX_TOKEN_BYTES), or an error counts as `None`.
    /// Default: `None` ("not mine").
    fn provide_token(request: TokenRequest) -> PluginResult<Option<Vec<u8>>> {
        let _ = request;
        Ok(None)
    }

    /// Checks an admin's configuration (JSON text) before it is saved; an error refuses it, and
    /// its message is shown to the admin. Default: accept anything.
    fn validate_config(config: &str) -> PluginResult<()> {
        let _ = config;
        Ok(())
    }
}

/// Adapts a [`Plugin`] to the generated `Guest` trait; used by [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
pub struct Exports<P>(PhantomData<P>);

impl<P: Plugin> Guest for Exports<P> {
    fn decide_enrollment(request: EnrollmentRequest) -> Result<Decision, String> {
        P::decide_enrollment(request).map_err(String::from)
    }

    fn on_checkin(event: CheckinEvent) -> Result<Vec<Action>, String> {
        P::on_checkin(event).map_err(String::from)
    }

    fn on_command_result(event: CommandResultEvent) -> Result<Vec<Action>, String> {
        P::on_command_result(event).map_err(String::from)
    }

    fn on_schedule(event: ScheduleEvent) -> Result<Vec<Action>, String> {
        P::on_schedule(event).map_err(String::from)
    }

    fn on_ddm_status(event: DdmStatusEvent) -> Result<Vec<Action>, String> {
        P::on_ddm_status(event).map_err(String::from)
    }

    fn provide_token(request: TokenRequest) -> Result<Option<Vec<u8>>, String> {
        P::provide_token(request).map_err(String::from)
    }

    fn validate_config(config: String) -> Result<(), String> {
        P::validate_config(&config).map_err(String::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ScheduleEvent;

    struct Defaults;
    impl Plugin for Defaults {}

    struct Failing;
    impl Plugin for Failing {
        fn validate_config(config: &str) -> PluginResult<()> {
            Err(format!("bad config: {config}").into())
        }
    }

    #[test]
    fn defaults_are_no_ops() {
        use crate::mock::fixtures;
        let tick = ScheduleEvent {
            event_id: "e1".into(),
            name: "nightly".into(),
        };
        assert_eq!(
            <Exports<Defaults> as Guest>::on_schedule(tick),
            Ok(Vec::new())
        );
        let status = fixtures::ddm_status(
            fixtures::device_enrollment("U1"),
            vec![fixtures::item_turned(
                "passcode.is-compliant",
                Some(serde_json::json!(true)),
                serde_json::json!(false),
            )],
        );
        assert_eq!(
            <Exports<Defaults> as Guest>::on_ddm_status(status),
            Ok(Vec::new())
        );
        let asked = fixtures::token_request(fixtures::device_enrollment("U1"), "com.apple.maid");
        assert_eq!(<Exports<Defaults> as Guest>::provide_token(asked), Ok(None));
        assert_eq!(
            <Exports<Defaults> as Guest>::validate_config("{}".into()),
            Ok(())
        );
    }

    #[test]
    fn errors_become_strings_at_the_boundary() {
        assert_eq!(
            <Exports<Failing> as Guest>::validate_config("[]".into()),
            Err("bad config: []".to_owned())
        );
    }
}
