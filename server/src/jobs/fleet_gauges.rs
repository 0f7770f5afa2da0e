//! The fleet gauges (pending commands, devices by last seen), read from storage on a timer by every
//! replica: each exposes the same figures, so a scrape of any one of them is whole.

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::storage::{fleet, Storage};
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(storage: Storage, clock: SharedClock, metrics: Arc<Metrics>, period: Duration) {
    super::every("fleet_gauges", period, None, move || {
        let (storage, metrics) = (storage.clone(), metrics.clone());
        let now = clock.now_ms();
        async move {
            match fleet::figures(&storage.read(), now).await {
                Ok(f) => metrics.fleet(&f),
                Err(e) => tracing::warn!(error = %e, "reading the fleet gauges failed"),
            }
        }
    });
}
