//! Policy rollouts looked at every `policies.rollout_interval_secs`: each running one is promoted when its
//! soak is over and its gates hold, and halted (its version taken back) when a gate breaks.
//!
//! Not under a replica lock: each step is written only if the rollout is still where the round read it
//! (`storage::rollouts::move_on`), so two replicas' rounds never take the same step twice.

use crate::clock::SharedClock;
use crate::policies::rollout::Rollouts;
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(rollouts: Arc<Rollouts>, clock: SharedClock, period: Duration) {
    super::every("rollouts", period, None, move || {
        let rollouts = rollouts.clone();
        let now = clock.now_ms();
        async move {
            match rollouts.round(now).await {
                Ok(steps) => {
                    for (policy_id, step) in steps {
                        tracing::info!(
                            policy_id,
                            action = step.action,
                            stage = step.stage.as_str(),
                            synced = step.synced,
                            "rollout step"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "rollout round failed"),
            }
        }
    });
}
