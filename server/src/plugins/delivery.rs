//! Delivering plugin events from the outbox to the sinks the admin configured: POST of the JSON payload
//! (or, to a sink with `batch_max_events` above 1, of several events in one body), retried with
//! exponential backoff until the sink answers 2xx. At-least-once: a sink may see an event
//! twice (after a crash between delivery and recording it), so each carries its id in `X-MDM-Event-Id`.
//!
//! Events a check-in commits are handed straight to this process's delivery ([`Handoff`]): they were
//! written held for it, so nothing needs leasing or reading back, and each batch handed over is posted
//! concurrently and recorded delivered in one statement. Whatever that misses (a retry, an event whose
//! writer died before delivering it, one written by a replica that delivers nothing) is due in the outbox,
//! and the worker's round drains it on a timer: batches leased in one statement, posted, recorded.

use super::sinks::Sinks;
use crate::clock::SharedClock;
use crate::config::SinkConfig;
use crate::metrics::{Metrics, SinkLabels};
use crate::storage::{outbox, Storage, StorageError};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// The sending side of [`Delivery::deliver_handed`]: committed events, in commit order.
pub struct Handoff {
    tx: mpsc::Sender<outbox::OutboxEvent>,
    /// The spans that committed handed-over events: the delivery's span links to them.
    causes: Arc<crate::traces::Causes>,
}

impl Handoff {
    /// Hand over events a transaction committed. Never waits: when delivery is that far behind (or has
    /// stopped), the rest stay in the outbox, held until [`LEASE_MS`] after they were written.
    pub fn send(&self, events: Vec<outbox::OutboxEvent>) {
        if !events.is_empty() {
            self.causes.note_current();
        }
        for e in events {
            if let Err(err) = self.tx.try_send(e) {
                let e = err.into_inner();
                tracing::warn!(
                    event = e.id,
                    "event delivery is behind; the event waits in the outbox"
                );
                return;
            }
        }
    }
}

/// What orders an event among others: its sink and device.
type Key = (String, String);

/// Events of one device and sink whose delivery failed: later ones wait until the failed one is retried.
type Blocked = HashMap<Key, i64>;

/// How long a worker holds a leased event (or its writer, one handed over) before another may try it.
pub const LEASE_MS: i64 = 60_000;
/// Events handed over and not yet taken, at most: past that, events wait for their hold to end.
const HANDOFF_CAPACITY: usize = 10_000;
/// Events leased (and recorded) per statement.
const BATCH: u64 = 200;
/// POSTs in flight at once, across sinks.
const IN_FLIGHT: usize = 32;
const MAX_BACKOFF_MS: i64 = 3_600_000;

pub struct Delivery {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    sinks: Arc<Sinks>,
    http: reqwest::Client,
}

/// Why a POST to a sink did not deliver. Its text is logged and kept with the event.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("sink {0:?} is no longer configured")]
    Unconfigured(String),
    /// Held without the URL ([`reqwest::Error::without_url`]): reqwest's error quotes it whole, and a
    /// sink URL may carry credentials (`user:password@`, `?token=`).
    #[error("{0}")]
    Send(reqwest::Error),
    #[error("sink answered {0}")]
    Status(reqwest::StatusCode),
}

enum Outcome {
    Delivered,
    Failed {
        next: i64,
        error: String,
    },
    /// Not tried: an earlier event of the same device failed; due again with it.
    Held {
        until: i64,
    },
}

/// A leased batch (in id order) split into groups delivered one after another: the events of one device
/// for one sink, in id order; an event about no device is a group of its own.
fn in_order_groups(leased: Vec<outbox::OutboxEvent>) -> Vec<Vec<outbox::OutboxEvent>> {
    let mut groups: Vec<Vec<outbox::OutboxEvent>> = Vec::new();
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    for e in leased {
        let Some(key) = group_key(&e) else {
            groups.push(vec![e]);
            continue;
        };
        match by_key.entry(key) {
            Entry::Occupied(i) => groups[*i.get()].push(e),
            Entry::Vacant(v) => {
                v.insert(groups.len());
                groups.push(vec![e]);
            }
        }
    }
    groups
}

/// What orders an event among others; none for an event about no device.
fn group_key(e: &outbox::OutboxEvent) -> Option<Key> {
    e.ordering_key.clone().map(|k| (e.sink.clone(), k))
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
        sinks: Arc<Sinks>,
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

    /// Deliver everything due, batch after batch, until a lease comes back short; returns (delivered,
    /// failed). A failed event is due again only after its backoff, so it is tried once per round.
    pub async fn run_once(&self) -> Result<(usize, usize), StorageError> {
        let (mut ok, mut failed) = (0, 0);
        loop {
            let (n, o, f) = self.run_batch().await?;
            ok += o;
            failed += f;
            if n < BATCH as usize {
                return Ok((ok, failed));
            }
        }
    }

    /// One leased batch: returns (leased, delivered, failed).
    async fn run_batch(&self) -> Result<(usize, usize, usize), StorageError> {
        let leased = outbox::lease_due(&self.storage, self.clock.now_ms(), LEASE_MS, BATCH).await?;
        let n = leased.len();
        let (delivered, failed) = self.deliver(leased, &mut Blocked::new()).await?;
        Ok((n, delivered, failed))
    }

    /// A channel for [`PluginHost::deliver_here`](super::PluginHost::deliver_here), and the task that
    /// delivers what comes through it.
    pub fn handoff(self: Arc<Self>) -> Handoff {
        let (tx, rx) = mpsc::channel(HANDOFF_CAPACITY);
        let causes = Arc::new(crate::traces::Causes::default());
        tokio::spawn(self.deliver_handed(rx, causes.clone()));
        Handoff { tx, causes }
    }

    /// Deliver handed-over events as they come, everything waiting at once as one batch. A device whose
    /// event failed has its later events held until that one's retry, across batches.
    async fn deliver_handed(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<outbox::OutboxEvent>,
        causes: Arc<crate::traces::Causes>,
    ) {
        let mut blocked = Blocked::new();
        let mut batch = Vec::with_capacity(BATCH as usize);
        while rx.recv_many(&mut batch, BATCH as usize).await > 0 {
            let now = self.clock.now_ms();
            blocked.retain(|_, until| *until > now);
            // Commit order; ids give the order written where commits overlap (PostgreSQL).
            batch.sort_by_key(|e| e.id);
            // On a storage error the batch's events stay held; the round delivers them after the hold.
            let span = tracing::debug_span!("events.deliver", events = batch.len());
            causes.link_to(&span);
            let delivered = self.deliver(std::mem::take(&mut batch), &mut blocked);
            if let Err(e) = delivered.instrument(span).await {
                tracing::error!(error = %e, "recording event delivery failed");
            }
        }
    }

    /// Post `events` (in id order) and record the outcomes: returns (delivered, failed). Events of one
    /// device for one sink go one after another, in id order; different devices' go concurrently, and a
    /// sink that takes batches gets its events in batches one after another. After a failure the
    /// device's later events wait for the failed one's retry (those in `blocked` too), so a sink that is
    /// down does not see them overtake it (a retried event may still arrive after events written once it
    /// was back up).
    async fn deliver(
        &self,
        events: Vec<outbox::OutboxEvent>,
        blocked: &mut Blocked,
    ) -> Result<(usize, usize), StorageError> {
        let db = &self.storage;
        let n = events.len();
        let seen: &Blocked = blocked;
        let outcomes: Vec<_> = futures_util::stream::iter(self.units(events))
            .map(|unit| async move {
                match unit {
                    Unit::InOrder(group) => self.deliver_in_order(group, seen).await,
                    Unit::Batched(events) => self.deliver_batched(events, seen).await,
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let (mut delivered, mut failed) = (Vec::with_capacity(n), 0);
        for (key, id, outcome) in outcomes.into_iter().flatten() {
            match outcome {
                Outcome::Delivered => delivered.push(id),
                Outcome::Failed { next, error } => {
                    outbox::mark_failed(db, id, next, &error).await?;
                    if let Some(k) = key {
                        blocked.insert(k, next);
                    }
                    failed += 1;
                }
                Outcome::Held { until } => outbox::hold(db, id, until).await?,
            }
        }
        outbox::mark_delivered(db, &delivered, self.clock.now_ms()).await?;
        Ok((delivered.len(), failed))
    }

    /// `events` (in id order) as what is delivered concurrently: a device's events for a sink that takes
    /// one per POST, or all of a batching sink's.
    fn units(&self, events: Vec<outbox::OutboxEvent>) -> Vec<Unit> {
        let mut batched: BTreeMap<String, Vec<outbox::OutboxEvent>> = BTreeMap::new();
        let mut single = Vec::new();
        for e in events {
            match self.sinks.get(&e.sink) {
                Some(sink) if sink.batch_max_events > 1 => {
                    batched.entry(e.sink.clone()).or_default().push(e)
                }
                _ => single.push(e),
            }
        }
        let mut units: Vec<Unit> = in_order_groups(single)
            .into_iter()
            .map(Unit::InOrder)
            .collect();
        units.extend(batched.into_values().map(Unit::Batched));
        units
    }

    /// One group in order; held back whole while an earlier event of its device (in `blocked`) awaits
    /// its retry.
    async fn deliver_in_order(
        &self,
        group: Vec<outbox::OutboxEvent>,
        blocked: &Blocked,
    ) -> Vec<(Option<Key>, i64, Outcome)> {
        let key = group_key(&group[0]);
        let mut out = Vec::with_capacity(group.len());
        let mut retry_at = key.as_ref().and_then(|k| blocked.get(k).copied());
        for e in group {
            if let Some(until) = retry_at {
                out.push((key.clone(), e.id, Outcome::Held { until }));
                continue;
            }
            let result = match self.sinks.get(&e.sink) {
                None => Err(PostError::Unconfigured(e.sink.clone())),
                Some(sink) => self.post(&sink, &e).await,
            };
            self.count(&e.sink, result.is_ok(), 1);
            let outcome = match result {
                Ok(()) => Outcome::Delivered,
                Err(error) => {
                    let next = self.clock.now_ms() + backoff_ms(e.attempts);
                    tracing::warn!(sink = %e.sink, event = e.id, attempts = e.attempts + 1, %error, "event delivery failed; will retry");
                    retry_at = Some(next);
                    let error = error.to_string();
                    Outcome::Failed { next, error }
                }
            };
            out.push((key.clone(), e.id, outcome));
        }
        out
    }

    /// A batching sink's events (in id order), up to its `batch_max_events` per POST, one POST after
    /// another so a device's events arrive in order. A failed POST fails every event in it, and holds
    /// back its devices' later events as a failed single event does.
    async fn deliver_batched(
        &self,
        events: Vec<outbox::OutboxEvent>,
        blocked: &Blocked,
    ) -> Vec<(Option<Key>, i64, Outcome)> {
        let mut out = Vec::with_capacity(events.len());
        // Only sinks configured to batch are given here.
        let Some(sink) = events.first().and_then(|e| self.sinks.get(&e.sink)) else {
            return out;
        };
        let mut failed_here = Blocked::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let mut batch = Vec::with_capacity(sink.batch_max_events);
            while batch.len() < sink.batch_max_events {
                let Some(e) = events.next() else { break };
                let key = group_key(&e);
                let held = key
                    .as_ref()
                    .and_then(|k| blocked.get(k).or(failed_here.get(k)).copied());
                match held {
                    Some(until) => out.push((key, e.id, Outcome::Held { until })),
                    None => batch.push((key, e)),
                }
            }
            if batch.is_empty() {
                continue;
            }
            let result = (self.post_batch(&sink, batch.iter().map(|(_, e)| e)).await)
                .map_err(|e| e.to_string());
            self.count(&batch[0].1.sink, result.is_ok(), batch.len() as u64);
            let now = self.clock.now_ms();
            if let Err(error) = &result {
                tracing::warn!(sink = %batch[0].1.sink, events = batch.len(), %error, "batched event delivery failed; will retry");
            }
            for (key, e) in batch {
                let outcome = match &result {
                    Ok(()) => Outcome::Delivered,
                    Err(error) => {
                        let own = now + backoff_ms(e.attempts);
                        // A device's events in the POST retry together, when its first one does, so a
                        // later one with fewer attempts (a shorter backoff) cannot go first.
                        let next = match &key {
                            Some(k) => *failed_here.entry(k.clone()).or_insert(own),
                            None => own,
                        };
                        Outcome::Failed {
                            next,
                            error: error.clone(),
                        }
                    }
                };
                out.push((key, e.id, outcome));
            }
        }
        out
    }

    fn count(&self, sink: &str, ok: bool, events: u64) {
        self.metrics
            .events_delivered
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
                outcome: if ok { "ok" } else { "retry" }.to_string(),
            })
            .inc_by(events);
    }

    /// One event, its payload the body.
    #[tracing::instrument(name = "sink.post", level = "debug", skip_all, fields(events = 1))]
    async fn post(&self, sink: &SinkConfig, e: &outbox::OutboxEvent) -> Result<(), PostError> {
        let req = self
            .request(sink, e.payload.clone())
            .header("X-MDM-Topic", &e.topic)
            .header("X-MDM-Event-Id", e.public_id())
            .header("X-MDM-Plugin", &e.plugin_id);
        send(req).await
    }

    /// Several events in one body (see [`batch_body`]).
    #[tracing::instrument(name = "sink.post", level = "debug", skip_all, fields(events = events.len()))]
    async fn post_batch<'e>(
        &self,
        sink: &SinkConfig,
        events: impl ExactSizeIterator<Item = &'e outbox::OutboxEvent>,
    ) -> Result<(), PostError> {
        let n = events.len();
        let req = self
            .request(sink, batch_body(events))
            .header("X-MDM-Batch", n.to_string());
        send(req).await
    }

    fn request(&self, sink: &SinkConfig, body: String) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(sink.url.expose_secret())
            .timeout(Duration::from_secs(sink.timeout_secs.max(1)))
            .header("Content-Type", "application/json")
            // The receiver can join the trace of this delivery.
            .headers(crate::traces::outgoing_headers())
            .body(body);
        for (k, v) in &sink.headers {
            req = req.header(k, v.expose_secret());
        }
        req
    }
}

/// What is delivered concurrently with the rest of a batch.
enum Unit {
    /// One device's events (or one event about no device) for a sink that takes one event per POST.
    InOrder(Vec<outbox::OutboxEvent>),
    /// All of one batching sink's events.
    Batched(Vec<outbox::OutboxEvent>),
}

/// `{"events": [{"id", "topic", "plugin", "payload"}, ...]}`: what a single POST carries in its headers,
/// beside each payload. Payloads were checked as JSON when emitted, so they are put in as they are.
fn batch_body<'e>(events: impl Iterator<Item = &'e outbox::OutboxEvent>) -> String {
    let mut body = String::from(r#"{"events":["#);
    for (i, e) in events.enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id":{},"topic":{},"plugin":{},"payload":{}}}"#,
            serde_json::Value::from(e.public_id()),
            serde_json::Value::from(e.topic.as_str()),
            serde_json::Value::from(e.plugin_id.as_str()),
            e.payload
        ));
    }
    body.push_str("]}");
    body
}

async fn send(req: reqwest::RequestBuilder) -> Result<(), PostError> {
    let res = req
        .send()
        .await
        .map_err(|e| PostError::Send(e.without_url()))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(PostError::Status(res.status()))
    }
}

#[cfg(test)]
mod tests {
    /// A failed POST's error (logged, stored with the event) does not quote the sink URL's credentials.
    #[tokio::test]
    async fn a_delivery_error_does_not_quote_the_sink_url() {
        // Nothing listens on port 1: the connection is refused.
        let req = reqwest::Client::new().post("http://hook:urlpass1@127.0.0.1:1/in?token=urltok2");
        let err = super::send(req).await.unwrap_err().to_string();
        assert!(
            !err.contains("urlpass1") && !err.contains("urltok2"),
            "{err}"
        );
    }

    fn event(id: i64, sink: &str, key: Option<&str>) -> crate::storage::outbox::OutboxEvent {
        crate::storage::outbox::OutboxEvent {
            id,
            plugin_id: "p".into(),
            sink: sink.into(),
            topic: "t".into(),
            payload: "{}".into(),
            attempts: 0,
            next_attempt_at: 0,
            delivered_at: None,
            last_error: None,
            created_at: 0,
            ordering_key: key.map(str::to_string),
            event_id: None,
        }
    }

    #[test]
    fn a_device_s_events_for_a_sink_form_one_group_in_id_order() {
        let groups = super::in_order_groups(vec![
            event(1, "a", Some("D1")),
            event(2, "a", Some("D2")),
            event(3, "b", Some("D1")),
            event(4, "a", Some("D1")),
            event(5, "a", None),
            event(6, "a", None),
            event(7, "a", Some("D2")),
        ]);
        let ids: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| g.iter().map(|e| e.id).collect())
            .collect();
        assert_eq!(ids, [vec![1, 4], vec![2, 7], vec![3], vec![5], vec![6]]);
    }

    /// A batch body carries each event's id, topic and plugin beside its payload, in order, and stays
    /// JSON whatever the topic holds.
    #[test]
    fn a_batch_body_is_json_with_each_event_s_headers() {
        let mut a = event(7, "s", Some("D1"));
        a.payload = r#"{"n": [1, "x"]}"#.into();
        a.event_id = Some("5f0c7c1e-0000-4000-8000-000000000007".into());
        let mut b = event(9, "s", None);
        b.topic = "quote\"and\\slash".into();
        let body: serde_json::Value =
            serde_json::from_str(&super::batch_body([&a, &b].into_iter()))
                .expect("the body is JSON");
        assert_eq!(
            body,
            serde_json::json!({"events": [
                {"id": "5f0c7c1e-0000-4000-8000-000000000007", "topic": "t", "plugin": "p", "payload": {"n": [1, "x"]}},
                {"id": "9", "topic": "quote\"and\\slash", "plugin": "p", "payload": {}},
            ]})
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(super::backoff_ms(0), 1000);
        assert_eq!(super::backoff_ms(3), 8000);
        assert_eq!(super::backoff_ms(40), super::MAX_BACKOFF_MS);
    }
}
