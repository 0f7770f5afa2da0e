//! The [`Plugin`] trait and its adapter to the generated `hooks` export.

use std::marker::PhantomData;

use crate::bindings::exports::mdm::plugin::hooks::Guest;
use crate::error::PluginResult;
use crate::rollout::{PromotionDecision, PromotionRequest, RolloutEvent};
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

    /// Before the server's round promotes a policy rollout whose soak is over and whose gates hold
    /// (never before an admin's own promote): [`PromotionDecision::Hold`] keeps it in its stage, with
    /// the reason shown in the rollout; the next round asks again. Decide on
    /// `request.now_unix_ms`, the server's time. An error holds too, unless the manifest makes this
    /// hook `fail-open`. Default: [`PromotionDecision::Abstain`].
    fn decide_promotion(request: PromotionRequest) -> PluginResult<PromotionDecision> {
        let _ = request;
        Ok(PromotionDecision::Abstain)
    }

    /// After each step a policy rollout took has committed: activated, promoted, completed, held,
    /// paused, resumed, rolled back, or halted by a failed digest check (`event.action`). Default: no
    /// actions.
    fn on_rollout(event: RolloutEvent) -> PluginResult<Vec<Action>> {
        let _ = event;
        Ok(Vec::new())
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

    fn decide_promotion(request: PromotionRequest) -> Result<PromotionDecision, String> {
        P::decide_promotion(request).map_err(String::from)
    }

    fn on_rollout(event: RolloutEvent) -> Result<Vec<Action>, String> {
        P::on_rollout(event).map_err(String::from)
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
        let canary = fixtures::rollout(1, "2026.05", crate::rollout::Stage::Canary);
        let promotion = fixtures::promotion(canary.clone(), 0);
        assert_eq!(promotion.next_stage, Some(crate::rollout::Stage::Full));
        assert_eq!(promotion.stages.len(), 2);
        assert_eq!(
            <Exports<Defaults> as Guest>::decide_promotion(promotion),
            Ok(PromotionDecision::Abstain)
        );
        let step = fixtures::rollout_step("policy.rollout_promoted", canary);
        assert_eq!(
            <Exports<Defaults> as Guest>::on_rollout(step),
            Ok(Vec::new())
        );
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
