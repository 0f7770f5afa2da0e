//! Dynamic groups re-evaluated over every device each round: rules on times (`last_seen_at within 1 day`)
//! change with nothing reported, and an evaluation a crash interrupted is finished. Facts that do change
//! by report are followed in their own transactions (see [`crate::groups`]); this is the backstop.
//!
//! Not under a replica lock: a round is pages of short transactions, each idempotent, so two replicas
//! running one at once only repeat work.

use crate::clock::SharedClock;
use crate::storage::Storage;
use std::time::Duration;

pub fn spawn(storage: Storage, clock: SharedClock, period: Duration) {
    super::every("groups", period, None, move || {
        let storage = storage.clone();
        let now = clock.now_ms();
        async move {
            match crate::groups::evaluate(&storage, None, now).await {
                Ok(changes) if !changes.is_empty() => {
                    let joined = changes.iter().filter(|c| c.joined).count();
                    let left = changes.len() - joined;
                    tracing::info!(joined, left, "dynamic groups re-evaluated")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "dynamic group evaluation failed"),
            }
        }
    });
}
