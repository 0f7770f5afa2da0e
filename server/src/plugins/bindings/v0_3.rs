//! `mdm:plugin@0.3` (current, `wit/v0.3/`): the generated bindings, the rollout events converted to their
//! WIT form and the promotion decision converted back. Its `types` interface is 0.2's, so the generated
//! code uses 0.2's types (`with`) and every event 0.2 has converts with 0.2's functions.

wasmtime::component::bindgen!({
    path: "../wit/v0.3",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq],
    with: {
        "mdm:plugin/types@0.3.0": crate::plugins::bindings::v0_2::mdm::plugin::types,
    },
});

use super::v0_2 as same;
use crate::plugins::event as host;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Hook;
use crate::plugins::runtime::{HookInput, HookOutput};
use mdm::plugin::rollout as wit;
use wasmtime::component::Linker;
use wasmtime::Store;

/// The hooks a 0.3 component exports: all of them.
pub const HOOKS: &[Hook] = &Hook::ALL;

/// The imports every component of this version may use whatever its grants: the type-only `types` and
/// `rollout` interfaces. Each capability registers its own interface.
pub fn add_types_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.instance("mdm:plugin/types@0.3.0")?;
    linker.instance("mdm:plugin/rollout@0.3.0")?;
    Ok(())
}

/// Instantiate and call the hook `input` names. `raw`: whether the plugin may see exact payloads.
pub async fn call(
    pre: &PluginPre<HostState>,
    store: &mut Store<HostState>,
    input: &HookInput,
    raw: bool,
) -> wasmtime::Result<Result<HookOutput, String>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let hooks = instance.mdm_plugin_hooks();
    Ok(match input {
        HookInput::Enrollment(e) => hooks
            .call_decide_enrollment(&mut *store, &same::enrollment_request(e, raw))
            .await?
            .map(|d| HookOutput::Decision(d.into())),
        HookInput::Checkin(e) => hooks
            .call_on_checkin(&mut *store, &same::checkin_event(e, raw))
            .await?
            .map(same::actions),
        HookInput::CommandResult(e) => hooks
            .call_on_command_result(&mut *store, &same::command_result_event(e, raw))
            .await?
            .map(same::actions),
        HookInput::Schedule(e) => hooks
            .call_on_schedule(&mut *store, &same::schedule_event(e))
            .await?
            .map(same::actions),
        HookInput::ValidateConfig(c) => hooks
            .call_validate_config(&mut *store, c)
            .await?
            .map(|()| HookOutput::Valid),
        HookInput::DdmStatus(e) => hooks
            .call_on_ddm_status(&mut *store, &same::ddm_status_event(e))
            .await?
            .map(same::actions),
        HookInput::Token(r) => hooks
            .call_provide_token(&mut *store, &same::token_request(r))
            .await?
            .map(HookOutput::Token),
        HookInput::Promotion(r) => hooks
            .call_decide_promotion(&mut *store, &promotion_request(r))
            .await?
            .map(|d| HookOutput::Promotion(d.into())),
        HookInput::Rollout(e) => hooks
            .call_on_rollout(&mut *store, &rollout_event(e))
            .await?
            .map(same::actions),
    })
}

pub fn promotion_request(r: &host::PromotionRequest) -> wit::PromotionRequest {
    wit::PromotionRequest {
        event_id: r.event_id.clone(),
        rollout: rollout_info(&r.rollout),
        next_stage: r.next_stage.map(stage),
        stages: r.stages.iter().map(stage_counts).collect(),
        gates: wit::GateValues {
            failure_ratio: r.gates.failure_ratio,
            max_failure_ratio: r.gates.max_failure_ratio,
            reported_ratio: r.gates.reported_ratio,
            min_reported_ratio: r.gates.min_reported_ratio,
        },
        now_unix_ms: r.now_unix_ms,
    }
}

pub fn rollout_event(e: &host::RolloutEvent) -> wit::RolloutEvent {
    wit::RolloutEvent {
        event_id: e.event_id.clone(),
        action: e.action.clone(),
        rollout: rollout_info(&e.rollout),
        reason: e.reason.clone(),
        actor: e.actor.clone(),
        at_unix_ms: e.at_unix_ms,
    }
}

fn rollout_info(r: &host::RolloutInfo) -> wit::RolloutInfo {
    wit::RolloutInfo {
        policy_id: r.policy_id,
        policy_name: r.policy_name.clone(),
        version: r.version.clone(),
        previous: r.previous.clone(),
        stage: stage(r.stage),
        state: r.state.clone(),
        started_by: r.started_by.clone(),
        started_unix_ms: r.started_unix_ms,
        stage_started_unix_ms: r.stage_started_unix_ms,
    }
}

fn stage(s: host::Stage) -> wit::Stage {
    match s {
        host::Stage::Pilot => wit::Stage::Pilot,
        host::Stage::Canary => wit::Stage::Canary,
        host::Stage::Full => wit::Stage::Full,
    }
}

fn stage_counts(c: &host::StageCounts) -> wit::StageCounts {
    wit::StageCounts {
        stage: stage(c.stage),
        devices: c.devices,
        succeeded: c.succeeded,
        failed: c.failed,
        pending: c.pending,
    }
}

impl From<wit::PromotionDecision> for host::PromotionDecision {
    fn from(d: wit::PromotionDecision) -> Self {
        match d {
            wit::PromotionDecision::Allow => Self::Allow,
            wit::PromotionDecision::Hold(why) => Self::Hold(why),
            wit::PromotionDecision::Abstain => Self::Abstain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> (host::RolloutInfo, wit::RolloutInfo) {
        (
            host::RolloutInfo {
                policy_id: 7,
                policy_name: "baseline".into(),
                version: "2026.05".into(),
                previous: Some("2026.04".into()),
                stage: host::Stage::Canary,
                state: "running".into(),
                started_by: "ci".into(),
                started_unix_ms: 1,
                stage_started_unix_ms: 2,
            },
            wit::RolloutInfo {
                policy_id: 7,
                policy_name: "baseline".into(),
                version: "2026.05".into(),
                previous: Some("2026.04".into()),
                stage: wit::Stage::Canary,
                state: "running".into(),
                started_by: "ci".into(),
                started_unix_ms: 1,
                stage_started_unix_ms: 2,
            },
        )
    }

    #[test]
    fn a_promotion_request_converts_whole() {
        let (hi, wi) = info();
        let r = host::PromotionRequest {
            event_id: "E".into(),
            rollout: hi,
            next_stage: Some(host::Stage::Full),
            stages: vec![
                host::StageCounts {
                    stage: host::Stage::Pilot,
                    devices: 20,
                    succeeded: 19,
                    failed: 0,
                    pending: 1,
                },
                host::StageCounts {
                    stage: host::Stage::Canary,
                    devices: 30,
                    succeeded: 28,
                    failed: 1,
                    pending: 1,
                },
            ],
            gates: host::GateValues {
                failure_ratio: 0.02,
                max_failure_ratio: 0.05,
                reported_ratio: 0.96,
                min_reported_ratio: 0.9,
            },
            now_unix_ms: 99,
        };
        assert_eq!(
            promotion_request(&r),
            wit::PromotionRequest {
                event_id: "E".into(),
                rollout: wi,
                next_stage: Some(wit::Stage::Full),
                stages: vec![
                    wit::StageCounts {
                        stage: wit::Stage::Pilot,
                        devices: 20,
                        succeeded: 19,
                        failed: 0,
                        pending: 1,
                    },
                    wit::StageCounts {
                        stage: wit::Stage::Canary,
                        devices: 30,
                        succeeded: 28,
                        failed: 1,
                        pending: 1,
                    },
                ],
                gates: wit::GateValues {
                    failure_ratio: 0.02,
                    max_failure_ratio: 0.05,
                    reported_ratio: 0.96,
                    min_reported_ratio: 0.9,
                },
                now_unix_ms: 99,
            }
        );
        let completing = host::PromotionRequest {
            next_stage: None,
            ..r
        };
        assert_eq!(promotion_request(&completing).next_stage, None);
    }

    #[test]
    fn a_rollout_event_and_every_decision_convert_whole() {
        let (hi, wi) = info();
        let e = host::RolloutEvent {
            event_id: "E".into(),
            action: "policy.rollout_rolled_back".into(),
            rollout: hi,
            reason: Some("failure ratio".into()),
            actor: "rollout".into(),
            at_unix_ms: 5,
        };
        assert_eq!(
            rollout_event(&e),
            wit::RolloutEvent {
                event_id: "E".into(),
                action: "policy.rollout_rolled_back".into(),
                rollout: wi,
                reason: Some("failure ratio".into()),
                actor: "rollout".into(),
                at_unix_ms: 5,
            }
        );
        for (w, h) in [
            (
                wit::PromotionDecision::Allow,
                host::PromotionDecision::Allow,
            ),
            (
                wit::PromotionDecision::Hold("freeze".into()),
                host::PromotionDecision::Hold("freeze".into()),
            ),
            (
                wit::PromotionDecision::Abstain,
                host::PromotionDecision::Abstain,
            ),
        ] {
            assert_eq!(host::PromotionDecision::from(w), h);
        }
        for (h, w) in [
            (host::Stage::Pilot, wit::Stage::Pilot),
            (host::Stage::Canary, wit::Stage::Canary),
            (host::Stage::Full, wit::Stage::Full),
        ] {
            assert_eq!(stage(h), w);
        }
    }
}
