//! Expiry and retention on a timer, by one replica at a time (see [`crate::storage::housekeeping`]).

use crate::clock::SharedClock;
use crate::storage::housekeeping::{self, HousekeepingRound};
use crate::storage::Storage;
use std::time::Duration;

pub fn spawn(storage: Storage, clock: SharedClock, retention_days: u32, period: Duration) {
    super::every("housekeeping", period, None, move || {
        let storage = storage.clone();
        let now = clock.now_ms();
        async move {
            match housekeeping::run(&storage, now, retention_days).await {
                Ok(Some(h)) if h != HousekeepingRound::default() => {
                    tracing::info!(?h, "housekeeping")
                }
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!("housekeeping: another replica is running it"),
                Err(e) => tracing::error!(error = %e, "housekeeping failed"),
            }
        }
    });
}
