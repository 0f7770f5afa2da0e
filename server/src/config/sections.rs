//! The configuration's sections, one struct each, with their defaults. Every struct refuses keys it does not
//! know (`deny_unknown_fields`): a misspelt setting stops the start instead of silently keeping its default.
//! Secrets are [`SecretString`]s and credential-bearing URLs [`SecretUrl`]s, which `Debug` never prints.

use super::{SecretUrl, TrustedProxies};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Connection and request limits, and which peers are proxies. Every deadline and bound here exists because a
/// client that never finishes (or opens thousands of connections) must not take the server from devices.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// IPs or CIDRs (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`) of reverse proxies in front of this server. Only
    /// from these TCP peers are forwarding headers (`Forwarded`, `X-Forwarded-For`) and the identity proxy
    /// header (`identity.proxy_cert_header`) believed; anyone else could write them. Empty: none are.
    pub trusted_proxies: TrustedProxies,
    /// Seconds a client has to send a request's head (actix `client_request_timeout`).
    pub header_timeout_secs: u64,
    /// Seconds a client has, from the start of a request, to send its whole body; then 408 and the
    /// connection is closed.
    pub body_timeout_secs: u64,
    /// Seconds a whole request may take, body and handler; then 503 and the connection is closed.
    pub request_timeout_secs: u64,
    /// Open connections this process accepts; beyond it a connection gets 503 and is closed. Keep it under
    /// the process's open-file limit (`ulimit -n`) with room for the database and logs.
    pub max_connections: usize,
    /// Open connections one peer address may hold (trusted proxies are exempt: they carry everyone);
    /// beyond it 429 and the connection is closed.
    pub max_connections_per_peer: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: TrustedProxies::default(),
            header_timeout_secs: 5,
            body_timeout_secs: 60,
            request_timeout_secs: 120,
            max_connections: 4096,
            max_connections_per_peer: 128,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Header in which a trusted TLS-terminating proxy passes the device's client certificate
    /// (RFC 9440 `:base64:` or URL-escaped PEM). Off unless set: only enable it behind a proxy that
    /// strips the header from client requests.
    pub proxy_cert_header: Option<String>,
    /// PEM bundle of further CAs device identity certificates may chain to, besides this server's SCEP CA
    /// (which is always trusted): an organisation's CA, or the CA of the MDM devices are migrated from.
    pub device_ca_file: Option<PathBuf>,
    /// Accept device identities from any issuer, self-signed included (only their validity period is
    /// checked). Off: a certificate must chain to the SCEP CA or `device_ca_file`. For migrating devices
    /// whose issuer is not at hand; logged as a warning at every start and shown on `/readyz`.
    pub accept_any_issuer: bool,
    /// How many verified `Mdm-Signature`s to remember (about 1.2 KiB each). A device sends the same bytes for
    /// the same message (an Idle, above all), and a hit spares verifying them again; past half full a message
    /// is remembered only the second time it is seen, so one-off messages do not push the Idles out. Size it
    /// to the fleet.
    /// 0 turns the cache off.
    pub signature_cache_entries: usize,
    /// How many certificates whose chain was verified to remember by fingerprint (about 100 bytes each), so a
    /// chain is verified once, not on every message. Size it to the fleet. 0 verifies every time.
    pub verified_certificate_entries: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            proxy_cert_header: None,
            device_ca_file: None,
            accept_any_issuer: false,
            signature_cache_entries: 100_000,
            verified_certificate_entries: 200_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Load every `<dir>/<name>/` (plugin.json, one .wasm, optional config.json) at start.
    pub dir: Option<PathBuf>,
    /// Development: look at `dir` again every `reload_interval_secs` and load what changed (a rebuilt
    /// component, an edited manifest or config.json); the directory then wins over API changes to its
    /// plugins. Needs `dir`; reported by `/readyz`.
    pub watch_dir: bool,
    /// Plugin instances that may run at once (the size of the instance pool).
    pub max_concurrent: u32,
    /// A plugin that faults this many times within `quarantine_window_secs` is quarantined.
    pub quarantine_after_faults: u32,
    pub quarantine_window_secs: u64,
    /// How often a replica checks the database for plugin changes made elsewhere.
    pub reload_interval_secs: u64,
    /// How often schedules run, and event delivery at the latest (it also runs as soon as a check-in
    /// that emitted events commits), in milliseconds.
    pub worker_interval_ms: u64,
    /// Run schedules and event delivery in this process (off for replicas that should only serve devices;
    /// both are claimed in the database, so several replicas may run them).
    pub worker: bool,
    /// Where plugin events go, by name: `[plugins.sinks.webhook] url = "https://..."`.
    pub sinks: BTreeMap<String, SinkConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Where events are POSTed; may carry credentials (printed redacted).
    pub url: SecretUrl,
    /// Extra headers sent with each event (e.g. an authorization token): their values are secrets.
    #[serde(default)]
    #[serde(skip_serializing)]
    pub headers: BTreeMap<String, SecretString>,
    #[serde(default = "default_sink_timeout")]
    pub timeout_secs: u64,
    /// Events per POST, at most. 1 (the default): each event is a POST of its own payload. More: the
    /// sink's due events go up to this many per POST as `{"events": [...]}`, delivered or retried together.
    #[serde(default = "default_sink_batch")]
    pub batch_max_events: usize,
}

/// The most events one POST may carry: as many as delivery takes at once.
pub const MAX_SINK_BATCH: usize = 200;

fn default_sink_timeout() -> u64 {
    10
}

fn default_sink_batch() -> usize {
    1
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            watch_dir: false,
            max_concurrent: 64,
            quarantine_after_faults: 5,
            quarantine_window_secs: 60,
            reload_interval_secs: 2,
            worker_interval_ms: 1000,
            worker: true,
            sinks: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// APNs endpoint: `production` or `sandbox` (development builds of Apple's MDM client).
    pub environment: ApnsEnvironmentConfig,
    /// How long APNs keeps trying to deliver a push, in seconds.
    pub expiration_secs: u64,
    /// A channel with pending commands that has not checked in is pushed again after this long, doubling
    /// each time up to `max_backoff_secs`.
    pub repush_interval_secs: u64,
    pub max_backoff_secs: u64,
    /// Pushes this replica sends per second at most (re-push and enqueue alike).
    pub max_per_second: u32,
    /// Concurrent APNs requests (HTTP/2 streams) per batch.
    pub max_concurrent: usize,
    /// Secret that seals push certificate private keys at rest (16+ bytes). Unset: one is generated into
    /// `<data_dir>/push-seal.key` on first start (fine for a single dev server; set it in production).
    #[serde(skip_serializing)]
    pub key_secret: Option<SecretString>,
    /// How often the push worker looks for owed pushes, in milliseconds.
    pub worker_interval_ms: u64,
    /// Run the push worker in this process (off for replicas that should not send pushes).
    pub worker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironmentConfig {
    Production,
    Sandbox,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            environment: ApnsEnvironmentConfig::Production,
            expiration_secs: 86_400,
            repush_interval_secs: 600,
            max_backoff_secs: 86_400,
            max_per_second: 500,
            max_concurrent: 64,
            key_secret: None,
            worker_interval_ms: 1000,
            worker: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScepConfig {
    /// The CA that issues device identities. Unset: one is generated into the data dir on first start
    /// (`scep-ca.pem`, and `scep-ca.key` encrypted under the sealing secret, see `push.key_secret`).
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// Passphrase of `ca_key_file`, if it is encrypted.
    #[serde(skip_serializing)]
    pub ca_key_passphrase: Option<SecretString>,
    /// Subject of a generated CA.
    pub ca_common_name: String,
    pub organization: String,
    pub ca_validity_days: i64,
    /// Validity of issued device identities.
    pub validity_days: u32,
    /// How long a challenge (one per profile download) can be used.
    pub challenge_ttl_secs: u64,
}

impl Default for ScepConfig {
    fn default() -> Self {
        Self {
            ca_cert_file: None,
            ca_key_file: None,
            ca_key_passphrase: None,
            ca_common_name: "MDM Device CA".into(),
            organization: "mdm-server".into(),
            ca_validity_days: 3650,
            validity_days: 365,
            challenge_ttl_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrollConfig {
    /// The URL devices reach this server at (`https://mdm.example.com`), used in enrollment profiles.
    /// Required unless the server listens on loopback only (development), where the listen address is used.
    /// Never taken from a request: the profile is signed, and `Host` is whatever the client says.
    pub public_url: Option<SecretUrl>,
    /// `/enroll` needs a one-time token from the admin API (`/enroll?token=...`).
    pub require_token: bool,
    /// Lifetime of an enrollment token.
    pub token_ttl_secs: u64,
    /// Devices sign every message (`Mdm-Signature`), for deployments behind a TLS-terminating proxy.
    pub sign_message: bool,
    /// APNs topic for the MDM payload. Unset: the topic of the stored push certificate that expires last.
    pub topic: Option<String>,
    /// Shown to users installing the profile.
    pub organization: String,
    /// Certificate and key (PEM) that sign enrollment profiles. Unset: one issued by the SCEP CA is
    /// generated into the data dir (`profile-signing.pem`/`.key`).
    pub signing_cert_file: Option<PathBuf>,
    pub signing_key_file: Option<PathBuf>,
    #[serde(skip_serializing)]
    pub signing_key_passphrase: Option<SecretString>,
    /// Queue a fresh enrollment profile (a new identity) this many days before a device's identity
    /// certificate expires; 0 turns automatic renewal off.
    pub renew_days_before_expiry: u32,
    /// Unused SCEP challenges from anonymous `/enroll` downloads (no token) kept at most; beyond it
    /// `/enroll` answers 503 with `Retry-After` until some are used or expire. Bounds the table.
    pub max_anonymous_challenges: u64,
    /// Anonymous `/enroll` downloads one client address may make per minute (429 beyond it); 0: no limit.
    pub anonymous_per_client_per_minute: u32,
}

impl Default for EnrollConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            require_token: false,
            token_ttl_secs: 300,
            sign_message: true,
            topic: None,
            organization: "mdm-server".into(),
            signing_cert_file: None,
            signing_key_file: None,
            signing_key_passphrase: None,
            renew_days_before_expiry: 30,
            max_anonymous_challenges: 10_000,
            anonymous_per_client_per_minute: 30,
        }
    }
}

/// TLS served by the server itself. MDM endpoints then require a client certificate issued by the SCEP CA
/// (or by `identity.device_ca_file`); `/enroll`, `/scep` and the admin API do not.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain and key (PEM, key unencrypted).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Development: generate a self-signed server certificate into the data dir (`tls-server.pem`) for
    /// `localhost`, 127.0.0.1 and these extra names.
    pub self_signed: bool,
    pub self_signed_names: Vec<String>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert_file.is_some()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mdm_server=debug,info`. `RUST_LOG` overrides it.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserAuthenticatePolicy {
    Decline,
    Accept,
}

/// What the server reports of itself beyond logs: metrics read from storage, and (with an endpoint) traces.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// How often the fleet gauges (pending commands, devices by last seen) are read from storage, seconds.
    pub gauges_interval_secs: u64,
    /// An OpenTelemetry collector's OTLP/HTTP endpoint (`http://collector:4318`; `/v1/traces` is added
    /// unless the URL ends with it). Unset: no traces are recorded or sent.
    pub otlp_endpoint: Option<String>,
    /// The share of traces started here that are kept (0 to 1). A request that arrives with a sampled
    /// `traceparent` follows its caller's decision.
    pub sample_ratio: f64,
    /// `service.instance.id` of this process's traces; unset, a random id per start.
    pub instance: Option<String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            gauges_interval_secs: 30,
            otlp_endpoint: None,
            sample_ratio: 1.0,
            instance: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

/// Declarative Device Management: what the server's own management declarations tell devices.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdmConfig {
    /// The organization devices show as managing them (the organization-info declaration; none if unset).
    pub organization_name: Option<String>,
    pub organization_email: Option<String>,
    pub organization_url: Option<String>,
    /// Properties set on every device (the properties declaration; none if empty), for predicates in
    /// activations.
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// Policies: which signatures a version's bundle must carry, and how versions roll out (docs/POLICIES.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoliciesConfig {
    /// PEM files, each an Ed25519 or ECDSA P-256 public key, or an X.509 certificate (its key's raw
    /// signatures, when Ed25519 or P-256, and CMS signatures made with it): whom a bundle's `policy.sig`
    /// may be made by. Read at start; a file that holds neither stops it.
    pub trusted_signers: Vec<PathBuf>,
    /// Refuse a version whose bundle is not signed by a trusted signer. On by default; turning it off is
    /// a development shortcut, shown by `/readyz`. A signature that is present is always checked.
    pub require_signature: bool,
    /// How long each stage of a rollout runs before it may be promoted (an activation may set its own).
    pub default_soak_secs: u64,
    /// A rollout halts, and takes its version back, when this share of the devices that reported failed.
    pub max_failure_ratio: f64,
    /// A stage is promoted only once this share of its devices reported.
    pub min_reported_ratio: f64,
    /// The pilot's share of the target group, in percent (an activation may set its own, or groups).
    pub pilot_percent: u32,
    /// The pilot's and the canary's share together, in percent.
    pub canary_percent: u32,
    /// How often running rollouts are looked at (gates checked, stages promoted).
    pub rollout_interval_secs: u64,
    /// Names of `plugins.sinks` every rollout step (activation, promotion, completion, pause, resume,
    /// rollback, a failed digest check) is sent to as an event.
    pub event_sinks: Vec<String>,
}

impl Default for PoliciesConfig {
    fn default() -> Self {
        Self {
            trusted_signers: Vec::new(),
            require_signature: true,
            default_soak_secs: 3_600,
            max_failure_ratio: 0.005,
            min_reported_ratio: 0.9,
            pilot_percent: 10,
            canary_percent: 25,
            rollout_interval_secs: 60,
            event_sinks: Vec::new(),
        }
    }
}
