//! Waking devices through APNs: the [`Pusher`] trait, its a2 implementation ([`ApnsPusher`]) and a
//! recording fake for tests ([`RecordingPusher`]).
//!
//! An MDM push is `POST /3/device/<hex token>` over HTTP/2 with the push certificate as the TLS client
//! certificate (token auth is not allowed for MDM), body exactly `{"mdm":"<PushMagic>"}` (no `aps`),
//! `apns-push-type: mdm`, `apns-priority: 10`, `apns-topic: <certificate UID>` and an `apns-expiration`.
//! A push only wakes the device; the command waits in the queue.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use a2::request::payload::PayloadLike;
use a2::{ClientConfig, Endpoint, ErrorReason, NotificationOptions, Priority, PushType};
use serde::Serialize;
use tokio::task::JoinSet;

use super::cert::PushCertificate;
use super::PushError;

/// One device (or user channel) to wake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// Enrollment id (for logs).
    pub id: String,
    /// APNs device token from TokenUpdate (32 bytes today).
    pub token: Vec<u8>,
    /// `PushMagic` from TokenUpdate.
    pub push_magic: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    Sent {
        apns_id: Option<String>,
    },
    /// BadDeviceToken, Unregistered, DeviceTokenNotForTopic (or any HTTP 410): stop pushing this token
    /// until the next TokenUpdate.
    DeadToken(String),
    /// 429, 5xx, connection problems: try again later.
    Retry(String),
    /// anything else (e.g. 400 with another reason, 403 certificate problems)
    Failed(String),
}

#[async_trait::async_trait]
pub trait Pusher: Send + Sync + 'static {
    /// Push every target under `topic`; one outcome per target, in order.
    async fn push(&self, topic: &str, targets: &[PushTarget]) -> Vec<PushOutcome>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// api.push.apple.com: what real MDM push certificates use.
    Production,
    /// api.development.push.apple.com
    Sandbox,
}

impl ApnsEnvironment {
    fn endpoint(self) -> Endpoint {
        match self {
            Self::Production => Endpoint::Production,
            Self::Sandbox => Endpoint::Sandbox,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The request (pure).

/// The MDM notification as a2 sends it: the JSON body is only `{"mdm": ...}`; the token and the options
/// (headers) are not serialized. a2's own `Payload` always writes an `aps` object, hence this type.
#[derive(Debug, Serialize)]
struct MdmPayload<'a> {
    #[serde(skip)]
    device_token: String,
    #[serde(skip)]
    options: NotificationOptions<'a>,
    mdm: &'a str,
}

impl PayloadLike for MdmPayload<'_> {
    fn get_device_token(&self) -> &str {
        &self.device_token
    }

    fn get_options(&self) -> &NotificationOptions<'_> {
        &self.options
    }
}

/// The request for one target: a2 turns it into `POST /3/device/<device_token>` with the body
/// `to_json_string()` and headers `apns-push-type`, `apns-priority`, `apns-topic`, `apns-expiration`.
fn mdm_request<'a>(target: &'a PushTarget, topic: &'a str, expiration_unix: u64) -> MdmPayload<'a> {
    MdmPayload {
        device_token: hex::encode(&target.token),
        options: NotificationOptions {
            apns_id: None,
            apns_push_type: Some(PushType::Mdm),
            apns_expiration: Some(expiration_unix),
            apns_priority: Some(Priority::High),
            apns_topic: Some(topic),
            apns_collapse_id: None,
        },
        mdm: &target.push_magic,
    }
}

/// Targets that cannot be pushed at all, answered without touching the network.
fn precheck(target: &PushTarget) -> Option<PushOutcome> {
    if target.token.is_empty() {
        return Some(PushOutcome::Failed(format!(
            "{}: no push token (no TokenUpdate yet)",
            target.id
        )));
    }
    if target.push_magic.is_empty() {
        return Some(PushOutcome::Failed(format!("{}: no PushMagic", target.id)));
    }
    None
}

// ---------------------------------------------------------------------------------------------------
// Outcome mapping (pure).

/// An APNs answer (status and, when a2 could parse it, the reason) as an outcome.
fn outcome_from_response(response: &a2::Response) -> PushOutcome {
    let reason = response.error.as_ref().map(|e| &e.reason);
    if response.code == 200 {
        return PushOutcome::Sent {
            apns_id: response.apns_id.clone(),
        };
    }
    let mut what = format!("APNs HTTP {}", response.code);
    match &response.error {
        Some(body) => {
            what.push_str(&format!(" {:?}", body.reason));
            if let Some(ts) = body.timestamp {
                what.push_str(&format!(" (token invalid since {ts} ms)"));
            }
        }
        // a2 0.10 has no catch-all ErrorReason: newer reasons (ExpiredToken, InvalidPushType, ...) and
        // empty bodies both end up here.
        None => what.push_str(" (no reason a2 recognises)"),
    }
    if let Some(id) = &response.apns_id {
        what.push_str(&format!(", apns-id {id}"));
    }
    use ErrorReason as R;
    match (response.code, reason) {
        (_, Some(R::Unregistered | R::BadDeviceToken | R::DeviceTokenNotForTopic)) | (410, _) => {
            PushOutcome::DeadToken(what)
        }
        (
            _,
            Some(
                R::TooManyRequests
                | R::InternalServerError
                | R::ServiceUnavailable
                | R::Shutdown
                | R::IdleTimeout,
            ),
        )
        | (429, _)
        | (500..=599, _) => PushOutcome::Retry(what),
        _ => PushOutcome::Failed(what),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = e.source();
    }
    out
}

/// An a2 error as an outcome: an APNs answer per [`outcome_from_response`]; a failure to connect, a
/// broken connection or a timeout is `Retry`; a request that could not be built is `Failed`.
fn outcome_from_error(err: a2::Error) -> PushOutcome {
    match err {
        a2::Error::ResponseError(response) => outcome_from_response(&response),
        e @ (a2::Error::ConnectionError(_)
        | a2::Error::ClientError(_)
        | a2::Error::RequestTimeout(_)
        | a2::Error::ReadError(_)) => PushOutcome::Retry(error_chain(&e)),
        e => PushOutcome::Failed(error_chain(&e)),
    }
}

// ---------------------------------------------------------------------------------------------------
// Batches.

fn store(
    joined: Option<Result<(usize, PushOutcome), tokio::task::JoinError>>,
    results: &mut [Option<PushOutcome>],
) {
    match joined {
        Some(Ok((i, outcome))) => {
            if let Some(slot) = results.get_mut(i) {
                *slot = Some(outcome);
            }
        }
        Some(Err(e)) => tracing::error!(error = %e, "APNs push task failed"),
        None => {}
    }
}

/// Run `send` for every target with at most `max_concurrent` in flight; outcomes in input order.
async fn run_batch<F, Fut>(
    targets: &[PushTarget],
    max_concurrent: usize,
    send: F,
) -> Vec<PushOutcome>
where
    F: Fn(PushTarget) -> Fut,
    Fut: Future<Output = PushOutcome> + Send + 'static,
{
    let max_concurrent = max_concurrent.max(1);
    let mut results: Vec<Option<PushOutcome>> = targets.iter().map(precheck).collect();
    let mut in_flight = JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        if results.get(i).is_some_and(Option::is_some) {
            continue;
        }
        while in_flight.len() >= max_concurrent {
            let joined = in_flight.join_next().await;
            store(joined, &mut results);
        }
        let fut = send(target.clone());
        in_flight.spawn(async move { (i, fut.await) });
    }
    while let Some(joined) = in_flight.join_next().await {
        store(Some(joined), &mut results);
    }
    results
        .into_iter()
        .map(|o| o.unwrap_or_else(|| PushOutcome::Failed("push task did not complete".into())))
        .collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------------
// The a2 implementation.

#[derive(Clone)]
struct TopicClient {
    client: a2::Client,
    not_after_unix: i64,
}

/// Pushes through APNs with one a2 client (one HTTP/2 connection pool, TLS-authenticated with that
/// topic's certificate) per topic, so several tenants' certificates work side by side.
pub struct ApnsPusher {
    env: ApnsEnvironment,
    expiration_secs: u64,
    max_concurrent: usize,
    clients: RwLock<HashMap<String, TopicClient>>,
}

impl std::fmt::Debug for ApnsPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsPusher")
            .field("env", &self.env)
            .field("expiration_secs", &self.expiration_secs)
            .field("max_concurrent", &self.max_concurrent)
            .field("topics", &self.topics())
            .finish()
    }
}

impl ApnsPusher {
    /// `expiration_secs`: how long APNs keeps trying to deliver (`apns-expiration` = now + this).
    /// `max_concurrent`: requests in flight at once within one `push` call (0 counts as 1).
    pub fn new(env: ApnsEnvironment, expiration_secs: u64, max_concurrent: usize) -> Self {
        Self {
            env,
            expiration_secs,
            max_concurrent: max_concurrent.max(1),
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// Install or replace the client for a certificate's topic (after upload or renewal). Pushes already
    /// under way finish on the old client.
    pub fn set_certificate(&self, cert: &PushCertificate) -> Result<(), PushError> {
        let config = ClientConfig::new(self.env.endpoint());
        let client = a2::Client::certificate_parts(&cert.cert_pem, &cert.key_pem, config)
            .map_err(|e| PushError::Client(error_chain(&e)))?;
        let entry = TopicClient {
            client,
            not_after_unix: cert.not_after_unix,
        };
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cert.topic.clone(), entry);
        tracing::info!(topic = %cert.topic, env = ?self.env, "APNs push certificate installed");
        Ok(())
    }

    pub fn remove_topic(&self, topic: &str) {
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
    }

    /// Topics with a certificate installed, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        topics.sort();
        topics
    }

    fn client_for(&self, topic: &str) -> Option<TopicClient> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
    }
}

#[async_trait::async_trait]
impl Pusher for ApnsPusher {
    async fn push(&self, topic: &str, targets: &[PushTarget]) -> Vec<PushOutcome> {
        let Some(entry) = self.client_for(topic) else {
            let msg = format!("no push certificate for topic {topic}");
            return vec![PushOutcome::Failed(msg); targets.len()];
        };
        let now = unix_now();
        if now > entry.not_after_unix {
            let msg = format!("the push certificate for topic {topic} has expired; renew it");
            return vec![PushOutcome::Failed(msg); targets.len()];
        }
        let expiration = u64::try_from(now)
            .unwrap_or(0)
            .saturating_add(self.expiration_secs);
        let topic: Arc<str> = Arc::from(topic);
        let outcomes = run_batch(targets, self.max_concurrent, |target| {
            let client = entry.client.clone();
            let topic = Arc::clone(&topic);
            async move {
                let request = mdm_request(&target, &topic, expiration);
                let outcome = match client.send(request).await {
                    Ok(response) => PushOutcome::Sent {
                        apns_id: response.apns_id,
                    },
                    Err(e) => outcome_from_error(e),
                };
                match &outcome {
                    PushOutcome::Sent { apns_id } => {
                        tracing::debug!(enrollment = %target.id, topic = %topic, apns_id = %apns_id.as_deref().unwrap_or("-"), "push sent")
                    }
                    other => {
                        tracing::warn!(enrollment = %target.id, topic = %topic, outcome = ?other, "push not sent")
                    }
                }
                outcome
            }
        })
        .await;
        outcomes
    }
}

// ---------------------------------------------------------------------------------------------------
// A fake for tests.

/// Records every (topic, target) pushed; answers a configurable outcome per token (default `Sent`).
#[derive(Debug, Default)]
pub struct RecordingPusher {
    pushes: Mutex<Vec<(String, PushTarget)>>,
    outcomes: Mutex<HashMap<Vec<u8>, PushOutcome>>,
}

impl RecordingPusher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Everything pushed so far, in order.
    pub fn pushes(&self) -> Vec<(String, PushTarget)> {
        self.pushes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// From now on, pushes to `token` answer `outcome`.
    pub fn set_outcome(&self, token: &[u8], outcome: PushOutcome) {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_vec(), outcome);
    }

    /// Forget the recorded pushes (configured outcomes stay; see [`Self::clear_outcomes`]).
    pub fn clear(&self) {
        self.pushes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Every token answers `Sent` again.
    pub fn clear_outcomes(&self) {
        self.outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[async_trait::async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, topic: &str, targets: &[PushTarget]) -> Vec<PushOutcome> {
        self.pushes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(targets.iter().map(|t| (topic.to_string(), t.clone())));
        let outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        targets
            .iter()
            .map(|t| {
                outcomes
                    .get(&t.token)
                    .cloned()
                    .unwrap_or(PushOutcome::Sent { apns_id: None })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn target(n: u8) -> PushTarget {
        PushTarget {
            id: format!("device-{n}"),
            token: vec![n; 32],
            push_magic: format!("magic-{n}"),
        }
    }

    const TOPIC: &str = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9";

    #[test]
    fn request_shape() {
        let t = PushTarget {
            id: "E9085AF6-DCCB-5661-A678-BCE8F4D1A4D6".into(),
            token: (0u8..32).collect(),
            push_magic: "5A2B6D7E-51F0-4F3F-A1C2-7D3B8E0C9F11".into(),
        };
        let req = mdm_request(&t, TOPIC, 1_700_086_400);
        // The exact body: only "mdm", no "aps".
        assert_eq!(
            req.to_json_string().unwrap(),
            r#"{"mdm":"5A2B6D7E-51F0-4F3F-A1C2-7D3B8E0C9F11"}"#
        );
        // The path token: lowercase hex of the 32 bytes.
        assert_eq!(
            req.get_device_token(),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        // The headers a2 derives from the options.
        let o = req.get_options();
        assert_eq!(
            o.apns_push_type.map(|p| p.to_string()).as_deref(),
            Some("mdm")
        );
        assert_eq!(
            o.apns_priority.as_ref().map(|p| p.to_string()).as_deref(),
            Some("10")
        );
        assert_eq!(o.apns_topic, Some(TOPIC));
        assert_eq!(o.apns_expiration, Some(1_700_086_400));
        assert_eq!(o.apns_id, None);
        assert!(o.apns_collapse_id.is_none());

        // PushMagic is JSON-escaped, never spliced.
        let odd = PushTarget {
            push_magic: "a\"b\\c\n".into(),
            ..t
        };
        let body = mdm_request(&odd, TOPIC, 0).to_json_string().unwrap();
        assert_eq!(body, r#"{"mdm":"a\"b\\c\n"}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, serde_json::json!({"mdm": "a\"b\\c\n"}));
    }

    #[test]
    fn precheck_refuses_unpushable_targets() {
        assert_eq!(precheck(&target(1)), None);
        let no_token = PushTarget {
            token: vec![],
            ..target(1)
        };
        assert!(
            matches!(precheck(&no_token), Some(PushOutcome::Failed(m)) if m.contains("no push token"))
        );
        let no_magic = PushTarget {
            push_magic: String::new(),
            ..target(1)
        };
        assert!(
            matches!(precheck(&no_magic), Some(PushOutcome::Failed(m)) if m.contains("PushMagic"))
        );
    }

    fn response(code: u16, reason: Option<&str>) -> a2::Response {
        a2::Response {
            code,
            apns_id: Some("EC1BF194-B3B2-424A-89A9-5A918A6E6B5D".into()),
            // Built the way a2 builds it: from APNs's JSON body.
            error: reason
                .map(|r| serde_json::from_value(serde_json::json!({ "reason": r })).unwrap()),
        }
    }

    #[test]
    fn outcome_mapping() {
        let dead = |o: PushOutcome| matches!(o, PushOutcome::DeadToken(_));
        let retry = |o: PushOutcome| matches!(o, PushOutcome::Retry(_));
        let failed = |o: PushOutcome| matches!(o, PushOutcome::Failed(_));
        let map =
            |code, reason| outcome_from_error(a2::Error::ResponseError(response(code, reason)));

        assert_eq!(
            outcome_from_response(&response(200, None)),
            PushOutcome::Sent {
                apns_id: Some("EC1BF194-B3B2-424A-89A9-5A918A6E6B5D".into())
            }
        );
        assert!(dead(map(400, Some("BadDeviceToken"))));
        assert!(dead(map(400, Some("DeviceTokenNotForTopic"))));
        assert!(dead(map(410, Some("Unregistered"))));
        assert!(dead(map(410, None))); // e.g. ExpiredToken, unknown to a2
        assert!(retry(map(429, Some("TooManyRequests"))));
        assert!(retry(map(429, None)));
        assert!(retry(map(500, Some("InternalServerError"))));
        assert!(retry(map(503, Some("ServiceUnavailable"))));
        assert!(retry(map(503, Some("Shutdown"))));
        assert!(retry(map(502, None)));
        assert!(retry(map(400, Some("IdleTimeout"))));
        assert!(failed(map(400, Some("BadTopic"))));
        assert!(failed(map(400, Some("TopicDisallowed"))));
        assert!(failed(map(400, Some("PayloadEmpty"))));
        assert!(failed(map(400, None)));
        assert!(failed(map(403, Some("BadCertificate"))));
        assert!(failed(map(403, Some("BadCertificateEnvironment"))));
        assert!(failed(map(413, Some("PayloadTooLarge"))));

        // The message says what happened.
        let mut r = response(410, Some("Unregistered"));
        r.error.as_mut().unwrap().timestamp = Some(1_508_249_865_488);
        match outcome_from_response(&r) {
            PushOutcome::DeadToken(m) => {
                assert!(
                    m.contains("410") && m.contains("Unregistered") && m.contains("1508249865488"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }

        // Transport problems are retried; requests that cannot be built are not.
        assert!(retry(outcome_from_error(a2::Error::RequestTimeout(20))));
        assert!(retry(outcome_from_error(a2::Error::ReadError(
            std::io::Error::other("reset")
        ))));
        assert!(failed(outcome_from_error(a2::Error::InvalidOptions(
            "x".into()
        ))));
        assert!(failed(outcome_from_error(a2::Error::InvalidCertificate)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_is_bounded_and_ordered() {
        let targets: Vec<PushTarget> = (1..=20).map(target).collect();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let outcomes = run_batch(&targets, 3, |t| {
            let in_flight = Arc::clone(&in_flight);
            let peak = Arc::clone(&peak);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later targets finish first.
                let n = u64::from(t.token[0]);
                tokio::time::sleep(Duration::from_millis(2 * (21 - n))).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                PushOutcome::Sent {
                    apns_id: Some(t.id),
                }
            }
        })
        .await;
        let expected: Vec<PushOutcome> = targets
            .iter()
            .map(|t| PushOutcome::Sent {
                apns_id: Some(t.id.clone()),
            })
            .collect();
        assert_eq!(outcomes, expected);
        assert_eq!(peak.load(Ordering::SeqCst), 3);

        // Unpushable targets are answered in place, the rest still go out; 0 means 1 at a time.
        let mut mixed = vec![target(1), target(2), target(3)];
        mixed[1].token.clear();
        let calls = Arc::new(AtomicUsize::new(0));
        let outcomes = run_batch(&mixed, 0, |t| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                PushOutcome::Retry(t.id)
            }
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(outcomes[0], PushOutcome::Retry("device-1".into()));
        assert!(matches!(&outcomes[1], PushOutcome::Failed(m) if m.contains("no push token")));
        assert_eq!(outcomes[2], PushOutcome::Retry("device-3".into()));

        assert!(
            run_batch(&[], 4, |_| async { PushOutcome::Retry(String::new()) })
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn batch_survives_a_panicking_send() {
        let targets = vec![target(1), target(2)];
        let outcomes = run_batch(&targets, 2, |t| async move {
            if t.token[0] == 1 {
                panic!("boom");
            }
            PushOutcome::Sent { apns_id: None }
        })
        .await;
        assert!(matches!(&outcomes[0], PushOutcome::Failed(_)));
        assert_eq!(outcomes[1], PushOutcome::Sent { apns_id: None });
    }

    #[tokio::test]
    async fn topic_without_certificate_fails_every_target() {
        let pusher = ApnsPusher::new(ApnsEnvironment::Production, 86_400, 8);
        let outcomes = pusher.push(TOPIC, &[target(1), target(2)]).await;
        let expected = PushOutcome::Failed(format!("no push certificate for topic {TOPIC}"));
        assert_eq!(outcomes, vec![expected.clone(), expected]);
        assert!(pusher.push(TOPIC, &[]).await.is_empty());
    }

    fn test_certificate(topic: &str, not_after_unix: i64) -> PushCertificate {
        use openssl::asn1::Asn1Time;
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::{X509Builder, X509NameBuilder};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::USERID, topic).unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(not_after_unix - 365 * 86_400).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(not_after_unix).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        let cert_pem = b.build().to_pem().unwrap();
        let key_pem = key.private_key_to_pem_pkcs8().unwrap();
        PushCertificate::from_pem(&cert_pem, &key_pem, None, not_after_unix - 86_400).unwrap()
    }

    #[tokio::test]
    async fn certificates_per_topic() {
        let pusher = ApnsPusher::new(ApnsEnvironment::Sandbox, 3600, 4);
        let a = test_certificate("com.apple.mgmt.External.aaaa", unix_now() + 86_400);
        let b = test_certificate("com.apple.mgmt.External.bbbb", unix_now() + 86_400);
        pusher.set_certificate(&a).unwrap();
        pusher.set_certificate(&b).unwrap();
        pusher.set_certificate(&b).unwrap(); // replace
        assert_eq!(pusher.topics(), vec![a.topic.clone(), b.topic.clone()]);
        pusher.remove_topic(&a.topic);
        pusher.remove_topic("not installed");
        assert_eq!(pusher.topics(), vec![b.topic.clone()]);
        let outcomes = pusher.push(&a.topic, &[target(1)]).await;
        assert!(
            matches!(&outcomes[0], PushOutcome::Failed(m) if m.starts_with("no push certificate"))
        );
        assert!(format!("{pusher:?}").contains("bbbb"));

        // An installed certificate that has since expired: refused without a connection attempt.
        let old = test_certificate("com.apple.mgmt.External.cccc", unix_now() - 10);
        pusher.set_certificate(&old).unwrap();
        let outcomes = pusher.push(&old.topic, &[target(1)]).await;
        assert!(matches!(&outcomes[0], PushOutcome::Failed(m) if m.contains("expired")));

        // a2 refuses a key it cannot use.
        let mut broken = b.clone();
        broken.key_pem =
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n".to_vec();
        assert!(matches!(
            pusher.set_certificate(&broken),
            Err(PushError::Client(_))
        ));
    }

    /// Goes through a2 to the (unreachable, here) APNs host: every outcome is a transport error, in order,
    /// with the unpushable target answered in place. Ignored by default: it contacts Apple's DNS/APNs
    /// where a network exists.
    #[tokio::test]
    #[ignore]
    async fn end_to_end_without_network() {
        let pusher = ApnsPusher::new(ApnsEnvironment::Sandbox, 3600, 2);
        let cert = test_certificate("com.apple.mgmt.External.dddd", unix_now() + 86_400);
        pusher.set_certificate(&cert).unwrap();
        let mut targets: Vec<PushTarget> = (1..=5).map(target).collect();
        targets[2].push_magic.clear();
        let outcomes =
            tokio::time::timeout(Duration::from_secs(60), pusher.push(&cert.topic, &targets))
                .await
                .unwrap();
        assert_eq!(outcomes.len(), 5);
        for (i, o) in outcomes.iter().enumerate() {
            eprintln!("{i}: {o:?}");
            if i == 2 {
                assert!(matches!(o, PushOutcome::Failed(m) if m.contains("PushMagic")));
            } else {
                assert!(!matches!(o, PushOutcome::Sent { .. }));
            }
        }
    }

    #[tokio::test]
    async fn recording_pusher() {
        let p = RecordingPusher::new();
        let dead = PushOutcome::DeadToken("Unregistered".into());
        p.set_outcome(&target(2).token, dead.clone());
        let outcomes = p.push(TOPIC, &[target(1), target(2)]).await;
        assert_eq!(
            outcomes,
            vec![PushOutcome::Sent { apns_id: None }, dead.clone()]
        );
        p.push("com.apple.mgmt.other", &[target(3)]).await;
        assert_eq!(
            p.pushes(),
            vec![
                (TOPIC.to_string(), target(1)),
                (TOPIC.to_string(), target(2)),
                ("com.apple.mgmt.other".to_string(), target(3)),
            ]
        );
        p.clear();
        assert!(p.pushes().is_empty());
        assert_eq!(p.push(TOPIC, &[target(2)]).await, vec![dead]);
        p.clear_outcomes();
        assert_eq!(
            p.push(TOPIC, &[target(2)]).await,
            vec![PushOutcome::Sent { apns_id: None }]
        );
        // Usable as a trait object.
        let dynamic: Arc<dyn Pusher> = p.clone();
        assert_eq!(dynamic.push(TOPIC, &[]).await, vec![]);
        assert_eq!(p.pushes().len(), 2);
    }
}
