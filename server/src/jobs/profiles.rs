//! The profile reconciler's round, every `policies.rollout_interval_secs`: devices whose profiles are due
//! (never listed, past their backoff, or silent on a ProfileList for an hour) are asked for a list again,
//! and their answers do the rest (`policies::reconciler`).
//!
//! Not under a replica lock: two replicas' rounds at once each queue a ProfileList, and the later one
//! replaces the earlier while it waits, so a device still gets one.

use crate::clock::SharedClock;
use crate::policies::reconciler;
use crate::storage::Storage;
use std::time::Duration;

pub fn spawn(storage: Storage, clock: SharedClock, period: Duration) {
    super::every("profiles", period, None, move || {
        let storage = storage.clone();
        let now = clock.now_ms();
        async move {
            match reconciler::retry_due(&storage, now).await {
                Ok(0) => {}
                Ok(devices) => tracing::info!(devices, "profile lists queued for devices due"),
                Err(e) => tracing::error!(error = %e, "profile reconciler round failed"),
            }
        }
    });
}
