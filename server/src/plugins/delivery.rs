//! Delivering plugin events from the outbox to the sinks the admin configured: POST of the JSON payload,
//! retried with exponential backoff until the sink answers 2xx. At-least-once: a sink may see an event
//! twice (after a crash between delivery and recording it), so each carries its id in `X-MDM-Event-Id`.

use crate::clock::SharedClock;
use crate::config::SinkConfig;
use crate::metrics::{Metrics, SinkLabels};
use crate::storage::{outbox, Storage, StorageError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker holds a leased event before another may try it.
const LEASE_MS: i64 = 60_000;
const BATCH: u64 = 50;
const MAX_BACKOFF_MS: i64 = 3_600_000;

pub struct Delivery {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    sinks: BTreeMap<String, SinkConfig>,
    http: reqwest::Client,
}

pub fn backoff_ms(attempts: i32) -> i64 {
    let exp = attempts.clamp(0, 20) as u32;
    (1000i64 << exp).min(MAX_BACKOFF_MS)
}

impl Delivery {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        sinks: BTreeMap<String, SinkConfig>,
    ) -> Self {
        Self {
            storage,
            clock,
            metrics,
            sinks,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// Deliver what is due; returns (delivered, failed).
    pub async fn run_once(&self) -> Result<(usize, usize), StorageError> {
        let now = self.clock.now_ms();
        let db = self.storage.db();
        let (mut ok, mut failed) = (0, 0);
        for e in outbox::lease_due(db, now, LEASE_MS, BATCH).await? {
            let result = match self.sinks.get(&e.sink) {
                None => Err(format!("sink {:?} is no longer configured", e.sink)),
                Some(sink) => self.post(sink, &e).await,
            };
            let label = |outcome: &str| SinkLabels {
                sink: e.sink.clone(),
                outcome: outcome.to_string(),
            };
            match result {
                Ok(()) => {
                    outbox::mark_delivered(db, e.id, self.clock.now_ms()).await?;
                    self.metrics
                        .events_delivered
                        .get_or_create(&label("ok"))
                        .inc();
                    ok += 1;
                }
                Err(err) => {
                    let next = self.clock.now_ms() + backoff_ms(e.attempts);
                    tracing::warn!(sink = %e.sink, event = e.id, attempts = e.attempts + 1, error = %err, "event delivery failed; will retry");
                    outbox::mark_failed(db, e.id, next, &err).await?;
                    self.metrics
                        .events_delivered
                        .get_or_create(&label("retry"))
                        .inc();
                    failed += 1;
                }
            }
        }
        Ok((ok, failed))
    }

    async fn post(&self, sink: &SinkConfig, e: &outbox::OutboxEvent) -> Result<(), String> {
        let mut req = self
            .http
            .post(&sink.url)
            .timeout(Duration::from_secs(sink.timeout_secs.max(1)))
            .header("Content-Type", "application/json")
            .header("X-MDM-Topic", &e.topic)
            .header("X-MDM-Event-Id", e.id.to_string())
            .header("X-MDM-Plugin", &e.plugin_id)
            .body(e.payload.clone());
        for (k, v) in &sink.headers {
            req = req.header(k, v);
        }
        let res = req.send().await.map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("sink answered {}", res.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(super::backoff_ms(0), 1000);
        assert_eq!(super::backoff_ms(3), 8000);
        assert_eq!(super::backoff_ms(40), super::MAX_BACKOFF_MS);
    }
}
