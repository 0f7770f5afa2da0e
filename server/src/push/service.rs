//! Pushing: the worker that sends owed pushes (after an enqueue commits, and again with backoff while
//! commands stay pending), explicit pushes, and push certificates (uploaded, sealed at rest, installed in
//! the sender).

use super::apns::{PushOutcome, PushTarget, Pusher};
use super::cert::PushCertificate;
use super::seal::KeySealer;
use crate::clock::SharedClock;
use crate::config::PushConfig;
use crate::metrics::Metrics;
use crate::storage::enrollments::{self, Enrollment};
use crate::storage::push::{self as repo, PushCert};
use crate::storage::{Storage, StorageError};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Notify;
use tracing::Instrument;

/// Where certificates go once uploaded or loaded (the APNs sender); a test pusher needs none.
pub trait CertificateSink: Send + Sync {
    fn install(&self, cert: &PushCertificate) -> Result<(), String>;
}

#[derive(Debug, thiserror::Error)]
pub enum PushServiceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("push certificate: {0}")]
    Certificate(String),
}

/// What an explicit push did for one id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    Sent,
    /// APNs refused the token; no pushes until the device's next TokenUpdate.
    DeadToken,
    /// APNs asked us to try later (429, 5xx, network): the worker will.
    Retry,
    Failed,
    Unknown,
    Disabled,
    /// No token yet, or the token was reported dead earlier.
    NoToken,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PushResult {
    pub status: PushStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CertInfo {
    pub topic: String,
    pub not_before: String,
    pub not_after: String,
    pub days_left: i64,
}

pub struct PushService {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    pusher: Arc<dyn Pusher>,
    sink: Option<Arc<dyn CertificateSink>>,
    sealer: KeySealer,
    cfg: PushConfig,
    wake: Arc<Notify>,
    /// The enqueues that woke the worker: its next round's span links to them.
    causes: crate::traces::Causes,
}

impl PushService {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        pusher: Arc<dyn Pusher>,
        sink: Option<Arc<dyn CertificateSink>>,
        sealer: KeySealer,
        cfg: PushConfig,
    ) -> Self {
        Self {
            storage,
            clock,
            metrics,
            pusher,
            sink,
            sealer,
            cfg,
            wake: Arc::new(Notify::new()),
            causes: Default::default(),
        }
    }

    /// Ask the worker to look for owed pushes now (after an enqueue commits).
    pub fn wake(&self) {
        self.causes.note_current();
        self.wake.notify_one();
    }

    /// What [`PushService::wake`] notifies: the push worker (`jobs`) runs a round when it fires.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Install every stored certificate in the sender (at start).
    pub async fn load_certificates(&self) -> Result<usize, PushServiceError> {
        let mut n = 0;
        for row in repo::certs(&self.storage.read()).await? {
            match self.unseal(&row) {
                Ok(cert) => {
                    self.install(&cert)?;
                    n += 1;
                }
                Err(e) => {
                    tracing::error!(topic = %row.topic, error = %e, "push certificate unusable")
                }
            }
        }
        Ok(n)
    }

    fn unseal(&self, row: &PushCert) -> Result<PushCertificate, PushServiceError> {
        let key = self.sealer.open(&row.key_sealed).map_err(|e| {
            PushServiceError::Certificate(format!(
                "cannot unseal the key of {} ({e}); was push.key_secret changed?",
                row.topic
            ))
        })?;
        // Load without the expiry check: an expired certificate stays listed (and fails at APNs) until replaced.
        PushCertificate::from_pem(
            row.cert_pem.as_bytes(),
            &key,
            None,
            row.not_before.max(0) / 1000 + 1,
        )
        .map_err(|e| PushServiceError::Certificate(e.to_string()))
    }

    fn install(&self, cert: &PushCertificate) -> Result<(), PushServiceError> {
        if let Some(sink) = &self.sink {
            sink.install(cert).map_err(PushServiceError::Certificate)?;
        }
        (self.metrics).certificate("push", &cert.topic, cert.not_after_unix);
        Ok(())
    }

    /// Store a validated certificate (its key sealed) and start using it. Replaces the same topic's.
    pub async fn store(&self, cert: PushCertificate) -> Result<CertInfo, PushServiceError> {
        let now = self.clock.now_ms();
        repo::upsert_cert(
            &self.storage,
            PushCert {
                topic: cert.topic.clone(),
                cert_pem: String::from_utf8_lossy(&cert.cert_pem).into_owned(),
                key_sealed: self.sealer.seal(&cert.key_pem),
                not_before: cert.not_before_unix * 1000,
                not_after: cert.not_after_unix * 1000,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        self.install(&cert)?;
        tracing::info!(topic = %cert.topic, days_left = cert.days_left(now / 1000), "push certificate stored");
        Ok(self.info(
            cert.topic,
            cert.not_before_unix * 1000,
            cert.not_after_unix * 1000,
        ))
    }

    fn info(&self, topic: String, not_before: i64, not_after: i64) -> CertInfo {
        CertInfo {
            topic,
            not_before: crate::clock::to_rfc3339(not_before),
            not_after: crate::clock::to_rfc3339(not_after),
            days_left: (not_after - self.clock.now_ms()).div_euclid(86_400_000),
        }
    }

    pub async fn certificates(&self) -> Result<Vec<CertInfo>, PushServiceError> {
        Ok(repo::certs(&self.storage.read())
            .await?
            .into_iter()
            .map(|c| self.info(c.topic, c.not_before, c.not_after))
            .collect())
    }

    /// Certificates expired or expiring within `days`, for /readyz.
    pub async fn expiring(&self, days: i64) -> Result<Vec<String>, PushServiceError> {
        Ok(self
            .certificates()
            .await?
            .into_iter()
            .filter(|c| c.days_left < days)
            .map(|c| {
                if c.days_left < 0 {
                    format!("push certificate {} expired on {}", c.topic, c.not_after)
                } else {
                    format!(
                        "push certificate {} expires in {} days ({})",
                        c.topic, c.days_left, c.not_after
                    )
                }
            })
            .collect())
    }

    /// Push these channels now, whatever their queue holds.
    pub async fn push_now(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, PushResult>, PushServiceError> {
        let mut out = BTreeMap::new();
        let found: HashMap<String, Enrollment> = enrollments::find_many(&self.storage.read(), ids)
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let mut ready = Vec::new();
        for id in ids {
            let status = match found.get(id) {
                None => PushStatus::Unknown,
                Some(e) if !e.enabled => PushStatus::Disabled,
                Some(e) if target(e).is_none() => PushStatus::NoToken,
                Some(e) => {
                    ready.push(e.clone());
                    continue;
                }
            };
            out.insert(
                id.clone(),
                PushResult {
                    status,
                    detail: None,
                },
            );
        }
        for (id, outcome) in self.send(&ready).await? {
            out.insert(id, result(&outcome));
        }
        Ok(out)
    }

    /// One round of the worker: claim what is owed (up to the rate limit), push it, record what APNs said.
    pub async fn run_once(&self) -> Result<usize, PushServiceError> {
        self.causes.link_to(&tracing::Span::current());
        let now = self.clock.now_ms();
        let budget =
            u64::from(self.cfg.max_per_second) * self.cfg.worker_interval_ms.max(1000) / 1000;
        let claimed = repo::claim_owed(&self.storage, now, budget, |a| self.backoff_ms(a)).await?;
        let n = claimed.len();
        self.send(&claimed).await?;
        Ok(n)
    }

    /// The wait after the `attempt`th push: the re-push interval, doubling, capped.
    fn backoff_ms(&self, attempt: i32) -> i64 {
        let base = self.cfg.repush_interval_secs as i64 * 1000;
        let cap = self.cfg.max_backoff_secs as i64 * 1000;
        let exp = attempt.clamp(1, 30) as u32 - 1;
        base.saturating_mul(1i64 << exp.min(20)).min(cap)
    }

    /// Push, grouped by topic, and record dead tokens. Returns each id's outcome.
    async fn send(
        &self,
        channels: &[Enrollment],
    ) -> Result<Vec<(String, PushOutcome)>, PushServiceError> {
        let mut by_topic: BTreeMap<String, Vec<(String, PushTarget)>> = BTreeMap::new();
        for e in channels {
            if let Some((topic, t)) = target(e) {
                by_topic.entry(topic).or_default().push((e.id.clone(), t));
            }
        }
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (topic, items) in by_topic {
            let targets: Vec<PushTarget> = items.iter().map(|(_, t)| t.clone()).collect();
            let span = tracing::debug_span!("push.send", targets = targets.len());
            let outcomes = self.pusher.push(&topic, &targets).instrument(span).await;
            for ((id, _), outcome) in items.into_iter().zip(outcomes) {
                let label = match &outcome {
                    PushOutcome::Sent { .. } => "sent",
                    PushOutcome::DeadToken(_) => "dead_token",
                    PushOutcome::Retry(_) => "retry",
                    PushOutcome::Failed(_) => "failed",
                };
                self.metrics
                    .pushes
                    .get_or_create(&crate::metrics::StatusLabels {
                        status: label.to_string(),
                    })
                    .inc();
                match &outcome {
                    PushOutcome::DeadToken(why) => {
                        tracing::warn!(enrollment = %id, reason = %why, "push token is dead; no more pushes until TokenUpdate");
                        repo::token_dead(&self.storage, &id, now).await?;
                    }
                    PushOutcome::Retry(why) | PushOutcome::Failed(why) => {
                        tracing::warn!(enrollment = %id, outcome = label, reason = %why, "push not delivered");
                    }
                    PushOutcome::Sent { .. } => {}
                }
                out.push((id, outcome));
            }
        }
        Ok(out)
    }
}

/// A channel's push target, if it can be pushed (token, PushMagic and topic known; token not dead).
fn target(e: &Enrollment) -> Option<(String, PushTarget)> {
    if e.token_dead_at.is_some() {
        return None;
    }
    Some((
        e.topic.clone()?,
        PushTarget {
            id: e.id.clone(),
            token: e.token.clone()?,
            push_magic: e.push_magic.clone()?,
        },
    ))
}

fn result(o: &PushOutcome) -> PushResult {
    match o {
        PushOutcome::Sent { .. } => PushResult {
            status: PushStatus::Sent,
            detail: None,
        },
        PushOutcome::DeadToken(d) => PushResult {
            status: PushStatus::DeadToken,
            detail: Some(d.clone()),
        },
        PushOutcome::Retry(d) => PushResult {
            status: PushStatus::Retry,
            detail: Some(d.clone()),
        },
        PushOutcome::Failed(d) => PushResult {
            status: PushStatus::Failed,
            detail: Some(d.clone()),
        },
    }
}
