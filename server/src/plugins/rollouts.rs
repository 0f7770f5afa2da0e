//! The rollout hooks: `decide-promotion`, asked before a round promotes a policy rollout, and
//! `on-rollout`, told of each step a rollout took once it committed.

use super::event::{PromotionDecision, PromotionRequest, RolloutEvent};
use super::manifest::Hook;
use super::runtime::{HookInput, HookOutput};
use super::{EventScope, HookRun, PluginHost, Verdict, Words};
use crate::storage::StorageError;
use std::sync::Arc;

impl PluginHost {
    /// Ask every plugin subscribed to `decide-promotion` whether a rollout may enter its next stage. Any
    /// hold keeps it where it is; abstentions do not count; a failing plugin holds when its policy is
    /// fail-closed (the default for this hook). Dry-run plugins are asked and audited but not obeyed.
    /// Returns the hold's reason, none to promote. The calls' audit rows are written before it returns.
    pub async fn decide_promotion(
        self: &Arc<Self>,
        request: PromotionRequest,
    ) -> Result<Option<String>, StorageError> {
        if self.subscribed(Hook::DecidePromotion).is_empty() {
            return Ok(None);
        }
        let event_id = request.event_id.clone();
        let words = Words {
            refuse: "hold",
            refused_by: "held by plugin",
        };
        let input = HookInput::Promotion(request);
        let run = self
            .decide(
                Hook::DecidePromotion,
                &input,
                scope(&event_id),
                words,
                |out| match out {
                    HookOutput::Promotion(PromotionDecision::Allow) => Verdict::Allow,
                    HookOutput::Promotion(PromotionDecision::Hold(r)) => Verdict::Refuse(r),
                    _ => Verdict::Abstain,
                },
            )
            .await;
        let held = run.refused.clone();
        self.commit(run, Hook::DecidePromotion, &event_id).await?;
        Ok(held)
    }

    /// Tell every plugin subscribed to `on-rollout` of a step a rollout took, and apply what they ask
    /// in a transaction of its own. Called after the step committed: the step stands whatever the
    /// plugins do, and a failing plugin only leaves its audit row.
    pub async fn on_rollout(self: &Arc<Self>, event: RolloutEvent) -> Result<(), StorageError> {
        let plugins = self.subscribed(Hook::OnRollout);
        if plugins.is_empty() {
            return Ok(());
        }
        let event_id = event.event_id.clone();
        let run = self
            .run_on(
                &plugins,
                Hook::OnRollout,
                HookInput::Rollout(event),
                scope(&event_id),
            )
            .await;
        self.commit(run, Hook::OnRollout, &event_id).await
    }

    /// Apply a run that belongs to no device's transaction in one of its own, then hand its events on.
    pub(super) async fn commit(
        self: &Arc<Self>,
        run: HookRun,
        hook: Hook,
        event_id: &str,
    ) -> Result<(), StorageError> {
        let host = self.clone();
        let event_id = event_id.to_string();
        let now = self.clock.now_ms();
        let events = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    host.apply(txn, run, hook.as_str(), scope(&event_id), now)
                        .await
                })
            })
            .await?;
        self.events_committed(events);
        Ok(())
    }
}

fn scope(event_id: &str) -> EventScope<'_> {
    EventScope {
        event_id,
        device_id: None,
        enrollment_id: None,
    }
}
