//! One typed configuration: defaults that run locally, then an optional TOML file, then `MDM_*` environment
//! variables (nested keys with `__`, e.g. `MDM_IDENTITY__PROXY_CERT_HEADER`).

use crate::storage::WriterCpu;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server binds (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where the embedded database and generated files live.
    pub data_dir: PathBuf,
    /// `postgres://...` for production; unset means SQLite at `<data_dir>/mdm.db`.
    pub database_url: Option<String>,
    /// PostgreSQL schema (search_path) to use, so several deployments can share one database.
    pub database_schema: Option<String>,
    /// SQLite only: the CPU its writer thread keeps to, `auto` (the last this process may run on), `none`
    /// or a CPU number. See `storage::WriterCpu`.
    pub sqlite_writer_cpu: WriterCpu,
    /// Largest request body accepted from a device or admin, in bytes. Inventory results can be large.
    pub max_body_bytes: usize,
    /// How to answer macOS UserAuthenticate: `decline` (HTTP 410, the usual choice) or `accept`.
    pub user_authenticate: UserAuthenticatePolicy,
    /// Finished commands and their results are deleted this many days after they finished.
    pub retention_days: u32,
    /// How often expiry and retention run, in seconds.
    pub housekeeping_interval_secs: u64,
    pub identity: IdentityConfig,
    pub plugins: PluginsConfig,
    pub push: PushConfig,
    pub scep: ScepConfig,
    pub enroll: EnrollConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    /// HTTP worker threads; unset means one per core.
    pub workers: Option<usize>,
    pub http: HttpConfig,
}

/// Connection and request limits, and which peers are proxies. Every deadline and bound here exists because a
/// client that never finishes (or opens thousands of connections) must not take the server from devices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// IPs or CIDRs (`10.0.0.5`, `10.0.0.0/8`, `fd00::/8`) of reverse proxies in front of this server. Only
    /// from these TCP peers are forwarding headers (`Forwarded`, `X-Forwarded-For`) and the identity proxy
    /// header (`identity.proxy_cert_header`) believed; anyone else could write them. Empty: none are.
    pub trusted_proxies: Vec<String>,
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
            trusted_proxies: Vec::new(),
            header_timeout_secs: 5,
            body_timeout_secs: 60,
            request_timeout_secs: 120,
            max_connections: 4096,
            max_connections_per_peer: 128,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Load every `<dir>/<name>/` (plugin.json, one .wasm, optional config.json) at start.
    pub dir: Option<PathBuf>,
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
    pub sinks: std::collections::BTreeMap<String, SinkConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub url: String,
    /// Extra headers sent with each event (e.g. an authorization token).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
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
    pub key_secret: Option<String>,
    /// How often the push worker looks for owed pushes, in milliseconds.
    pub worker_interval_ms: u64,
    /// Run the push worker in this process (off for replicas that should not send pushes).
    pub worker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ScepConfig {
    /// The CA that issues device identities. Unset: one is generated into the data dir on first start
    /// (`scep-ca.pem`, and `scep-ca.key` encrypted under the sealing secret, see `push.key_secret`).
    pub ca_cert_file: Option<PathBuf>,
    pub ca_key_file: Option<PathBuf>,
    /// Passphrase of `ca_key_file`, if it is encrypted.
    pub ca_key_passphrase: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EnrollConfig {
    /// The URL devices reach this server at (`https://mdm.example.com`), used in enrollment profiles.
    /// Required unless the server listens on loopback only (development), where the listen address is used.
    /// Never taken from a request: the profile is signed, and `Host` is whatever the client says.
    pub public_url: Option<String>,
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
    pub signing_key_passphrase: Option<String>,
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mdm_server=debug,info`. `RUST_LOG` overrides it.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserAuthenticatePolicy {
    Decline,
    Accept,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_schema: None,
            sqlite_writer_cpu: WriterCpu::Auto,
            max_body_bytes: 16 * 1024 * 1024,
            user_authenticate: UserAuthenticatePolicy::Decline,
            retention_days: 30,
            housekeeping_interval_secs: 300,
            identity: IdentityConfig::default(),
            plugins: PluginsConfig::default(),
            push: PushConfig::default(),
            scep: ScepConfig::default(),
            enroll: EnrollConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            workers: None,
            http: HttpConfig::default(),
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the file (if given; it must exist), then `MDM_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} not found",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        // Only our own keys: MDM_TEST_DATABASE_URL and friends belong to the test suite.
        let cfg: Config = fig
            .merge(
                Env::prefixed("MDM_")
                    .split("__")
                    .filter(|k| !k.as_str().starts_with("test_")),
            )
            .extract()
            .map_err(Box::new)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.max_body_bytes < 1024 {
            return bad(format!(
                "max_body_bytes = {} is too small (at least 1024)",
                self.max_body_bytes
            ));
        }
        if self.retention_days == 0 {
            return bad("retention_days must be at least 1".into());
        }
        if self.housekeeping_interval_secs == 0 {
            return bad("housekeeping_interval_secs must be at least 1".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() && !self.listen.contains(':') {
            return bad(format!("listen = {:?} is not host:port", self.listen));
        }
        if let Some(h) = &self.identity.proxy_cert_header {
            if actix_web::http::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                return bad(format!(
                    "identity.proxy_cert_header {h:?} is not a header name"
                ));
            }
        }
        let push = &self.push;
        if push.repush_interval_secs == 0
            || push.max_backoff_secs < push.repush_interval_secs
            || push.max_per_second == 0
            || push.max_concurrent == 0
            || push.worker_interval_ms == 0
        {
            return bad("push: repush_interval_secs, max_per_second, max_concurrent and worker_interval_ms must be at least 1, and max_backoff_secs at least repush_interval_secs".into());
        }
        if push.key_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return bad("push.key_secret must be at least 16 bytes".into());
        }
        let p = &self.plugins;
        if !(1..=10_000).contains(&p.max_concurrent)
            || p.quarantine_after_faults == 0
            || p.reload_interval_secs == 0
            || p.worker_interval_ms == 0
        {
            return bad("plugins: max_concurrent 1-10000, quarantine_after_faults, reload_interval_secs and worker_interval_ms at least 1".into());
        }
        for (name, sink) in &p.sinks {
            if url_scheme_ok(&sink.url).is_none() {
                return bad(format!(
                    "plugins.sinks.{name}.url {:?} is not an http(s) URL",
                    redact_url(&sink.url)
                ));
            }
            if !(1..=MAX_SINK_BATCH).contains(&sink.batch_max_events) {
                return bad(format!(
                    "plugins.sinks.{name}.batch_max_events must be 1-{MAX_SINK_BATCH}"
                ));
            }
        }
        if let Some(d) = &p.dir {
            if !d.is_dir() {
                return bad(format!("plugins.dir {} is not a directory", d.display()));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls.cert_file and tls.key_file go together".into());
        }
        if self.scep.ca_cert_file.is_some() != self.scep.ca_key_file.is_some() {
            return bad("scep.ca_cert_file and scep.ca_key_file go together".into());
        }
        if self.enroll.signing_cert_file.is_some() != self.enroll.signing_key_file.is_some() {
            return bad("enroll.signing_cert_file and enroll.signing_key_file go together".into());
        }
        if self.scep.validity_days == 0
            || self.scep.challenge_ttl_secs == 0
            || self.enroll.token_ttl_secs == 0
        {
            return bad("scep.validity_days, scep.challenge_ttl_secs and enroll.token_ttl_secs must be at least 1".into());
        }
        if let Some(u) = &self.enroll.public_url {
            if url_scheme_ok(u).is_none() {
                return bad(format!(
                    "enroll.public_url {:?} is not an http(s) URL",
                    redact_url(u)
                ));
            }
        }
        if let Some(f) = &self.identity.device_ca_file {
            if !f.exists() {
                return bad(format!("identity.device_ca_file {} not found", f.display()));
            }
        }
        self.check_renewal_window()?;
        self.validate_http()
    }

    /// Automatic renewal needs issued identities to outlive the renewal window: a certificate valid for
    /// `scep.validity_days` <= `enroll.renew_days_before_expiry` is due for renewal the moment it is issued,
    /// so every renewal would queue the next one at once (a renewal loop). 0 turns renewal off.
    pub fn check_renewal_window(&self) -> Result<(), ConfigError> {
        let (validity, renew) = (
            self.scep.validity_days,
            self.enroll.renew_days_before_expiry,
        );
        if renew != 0 && validity <= renew {
            return Err(ConfigError::Invalid(format!(
                "scep.validity_days ({validity}) must be greater than enroll.renew_days_before_expiry \
                 ({renew}): each renewed certificate would be due for renewal as soon as it is issued, \
                 a renewal loop (raise scep.validity_days, lower enroll.renew_days_before_expiry, or set \
                 it to 0 to turn automatic renewal off)"
            )));
        }
        Ok(())
    }

    /// The `http` section's values, and the enrollment bounds.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
        crate::http::peer::TrustedProxies::parse(&h.trusted_proxies)
            .map_err(|e| ConfigError::Invalid(format!("http.trusted_proxies: {e}")))?;
        if h.header_timeout_secs == 0
            || h.body_timeout_secs == 0
            || h.request_timeout_secs == 0
            || h.max_connections == 0
            || h.max_connections_per_peer == 0
            || self.enroll.max_anonymous_challenges == 0
        {
            return Err(ConfigError::Invalid("http: header_timeout_secs, body_timeout_secs, request_timeout_secs, max_connections and max_connections_per_peer, and enroll.max_anonymous_challenges, must be at least 1".into()));
        }
        Ok(())
    }

    /// Whether `listen` is on loopback only (every address it resolves to), so only this host can connect.
    pub fn listens_on_loopback_only(&self) -> bool {
        use std::net::ToSocketAddrs;
        match self.listen.to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
            }
            Err(_) => false,
        }
    }

    /// The settings that keep a reachable server safe, checked at start. Reachable (not loopback only):
    /// each missing one is an error naming it and why. Loopback only (development): the same findings are
    /// returned as warnings, to be logged loudly and shown by `/readyz`.
    pub fn production_check(&self) -> Result<Vec<String>, ConfigError> {
        let mut missing = Vec::new();
        if self.enroll.public_url.is_none() {
            missing.push("enroll.public_url is not set: the URLs in signed enrollment profiles must be this server's own, never taken from a request's Host header".to_string());
        }
        if self.push.key_secret.is_none() {
            missing.push(format!("push.key_secret is not set: the sealing secret for private keys would be a generated file beside the data ({})", self.data_dir.join("push-seal.key").display()));
        }
        if self.identity.proxy_cert_header.is_some() && self.http.trusted_proxies.is_empty() {
            missing.push("identity.proxy_cert_header is set but http.trusted_proxies is empty: the header is believed only from a trusted proxy, so it would never be used".to_string());
        }
        if missing.is_empty() || self.listens_on_loopback_only() {
            return Ok(missing);
        }
        Err(ConfigError::Invalid(format!(
            "refusing to listen on {} (not loopback) without production settings:\n  - {}",
            self.listen,
            missing.join("\n  - ")
        )))
    }

    /// A copy safe to print: secrets (sealing secret, key passphrases, sink headers) replaced by
    /// `<redacted>`, and every URL passed through [`redact_url`] (a credential may sit in any of them).
    pub fn redacted(&self) -> Config {
        const R: &str = "<redacted>";
        let hide = |s: &Option<String>| s.as_ref().map(|_| R.to_string());
        let mut c = self.clone();
        c.push.key_secret = hide(&c.push.key_secret);
        c.scep.ca_key_passphrase = hide(&c.scep.ca_key_passphrase);
        c.enroll.signing_key_passphrase = hide(&c.enroll.signing_key_passphrase);
        for sink in c.plugins.sinks.values_mut() {
            sink.url = redact_url(&sink.url);
            for v in sink.headers.values_mut() {
                *v = R.to_string();
            }
        }
        c.database_url = c.database_url.as_deref().map(redact_url);
        c.enroll.public_url = c.enroll.public_url.as_deref().map(redact_url);
        c
    }

    /// The database to connect to: the configured URL, or SQLite inside `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("mdm.db").display()
            ),
        }
    }
}

/// What a redacted credential in a URL reads as: plain letters, so no URL encoding changes it.
pub const URL_REDACTED: &str = "REDACTED";

/// `url` safe to print or log: the userinfo password and the value of every query (or fragment) parameter
/// whose name looks like a credential ([`is_secret_param`]) become [`URL_REDACTED`]; the rest is kept as
/// written, so the URL still says where it points. The one function for every URL the configuration prints
/// or logs (`postgres://u:pw@h/db?password=..`, sinks' `https://u:pw@h/?token=..`).
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_unparsed(url);
    };
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have a password, which this one has.
        let _ = parsed.set_password(Some(URL_REDACTED));
    }
    if let Some(q) = parsed.query().map(redact_params) {
        parsed.set_query(Some(&q));
    }
    if let Some(f) = parsed.fragment().map(redact_params) {
        parsed.set_fragment(Some(&f));
    }
    parsed.into()
}

/// `a=1&token=x` → `a=1&token=REDACTED`, each pair otherwise byte for byte as it was.
fn redact_params(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={URL_REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether a query parameter's name looks like it carries a credential: it contains (ignoring case,
/// `-`, `_`, `.` and percent-encoding) password/pass/pwd, token, secret, key, sig(nature), auth, credential
/// or session. Printing a harmless value as redacted costs little; printing a secret cannot be undone.
pub fn is_secret_param(name: &str) -> bool {
    const SECRET_WORDS: &[&str] = &[
        "pass",
        "pwd",
        "token",
        "secret",
        "key",
        "sig",
        "auth",
        "credential",
        "session",
    ];
    let name: String = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// A string that is not a URL (a typo in the configuration): what would be userinfo and the whole query
/// are hidden, since there is no telling which part is secret.
fn redact_unparsed(s: &str) -> String {
    let (before_query, query) = match s.split_once('?') {
        Some((b, _)) => (b, Some(URL_REDACTED)),
        None => (s, None),
    };
    let (scheme, rest) = match before_query.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), before_query),
    };
    let mut out = match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}{URL_REDACTED}@{host}"),
        None => before_query.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn url_scheme_ok(u: &str) -> Option<()> {
    let parsed = url::Url::parse(u).ok()?;
    matches!(parsed.scheme(), "http" | "https").then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_file_overrides() {
        Config::default().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "listen = \"0.0.0.0:9999\"\nretention_days = 7\n[identity]\nproxy_cert_header = \"X-Client-Cert\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9999");
        assert_eq!(c.retention_days, 7);
        assert_eq!(
            c.identity.proxy_cert_header.as_deref(),
            Some("X-Client-Cert")
        );
    }

    #[test]
    fn redacted_config_shows_no_secrets() {
        let mut c = Config {
            database_url: Some("postgres://mdm:hunter2hunter2@db/mdm".into()),
            ..Config::default()
        };
        c.push.key_secret = Some("sealing-secret-0123456789".into());
        c.scep.ca_key_passphrase = Some("ca-pass-phrase".into());
        c.enroll.signing_key_passphrase = Some("signing-pass".into());
        c.plugins.sinks.insert(
            "hook".into(),
            SinkConfig {
                url: "https://example.com".into(),
                headers: [("Authorization".to_string(), "Bearer sink-token".to_string())].into(),
                timeout_secs: 1,
                batch_max_events: 1,
            },
        );
        let printed = format!("{:#?}", c.redacted());
        for secret in [
            "hunter2hunter2",
            "sealing-secret",
            "ca-pass-phrase",
            "signing-pass",
            "sink-token",
        ] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
        assert!(printed.contains("postgres://mdm:"));
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = Config {
            retention_days: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        assert!(Config::load(Some(Path::new("/nonexistent/c.toml"))).is_err());
    }

    /// Every credential a URL can carry is hidden, wherever it sits; the rest still says where it points.
    #[test]
    fn urls_are_printed_without_credentials() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "postgres://mdm:hunter2@db:5432/mdm?sslmode=require&password=pw2",
                &["postgres://mdm:REDACTED@db:5432/mdm", "sslmode=require", "password=REDACTED"][..],
                &["hunter2", "pw2"][..],
            ),
            (
                "https://hook:s3cr3t@hooks.example.com/mdm?token=tok1&x=1&api_key=k2&X-Amz-Signature=sig3&sig=s4&auth=a5&pass=p6#access_token=f7",
                &["https://hook:REDACTED@hooks.example.com/mdm?token=REDACTED&x=1&api_key=REDACTED", "X-Amz-Signature=REDACTED", "sig=REDACTED", "auth=REDACTED", "pass=REDACTED", "#access_token=REDACTED"],
                &["s3cr3t", "tok1", "k2", "sig3", "s4", "a5", "p6", "f7"],
            ),
            (
                "https://h.example.com/?Client%5FSecret=c8&apiKey=c9&secret",
                &["https://h.example.com/?Client%5FSecret=REDACTED&apiKey=REDACTED&secret"],
                &["c8", "c9"],
            ),
            // Not a URL at all: userinfo and the whole query go.
            ("https://u:p%zz@x y?token=t10", &["https://REDACTED@x y?REDACTED"], &["p%zz", "t10"]),
        ];
        for &(url, kept, hidden) in cases {
            let r = redact_url(url);
            for k in kept {
                assert!(r.contains(k), "{url}: {k} missing from {r}");
            }
            for h in hidden {
                assert!(!r.contains(h), "{url}: {h} shown in {r}");
            }
        }
        // Nothing to hide: unchanged.
        let plain = "https://hooks.example.com/mdm?x=1&y=two";
        assert_eq!(redact_url(plain), plain);
        assert_eq!(redact_url("postgres://mdm@db/mdm"), "postgres://mdm@db/mdm");
    }

    /// `config` prints every URL redacted, and a refused URL is quoted redacted in the error.
    #[test]
    fn the_printed_config_and_its_errors_hide_url_credentials() {
        let mut c = Config {
            database_url: Some("postgres://mdm@db/mdm?password=dbpass1".into()),
            ..Config::default()
        };
        c.enroll.public_url = Some("https://mdm.example.com/?token=pubtok2".into());
        for (name, url) in [
            ("a", "https://user:sinkpass3@hooks.example.com/"),
            ("b", "https://hooks.example.com/?token=sinktok4"),
        ] {
            c.plugins.sinks.insert(
                name.into(),
                serde_json::from_value(serde_json::json!({ "url": url })).unwrap(),
            );
        }
        c.validate().unwrap();
        let printed = format!("{:#?}", c.redacted());
        for secret in ["dbpass1", "pubtok2", "sinkpass3", "sinktok4"] {
            assert!(!printed.contains(secret), "{secret} printed");
        }
        assert!(printed.contains("postgres://mdm@db/mdm?password=REDACTED"));

        let mut bad = Config::default();
        bad.plugins.sinks.insert(
            "c".into(),
            serde_json::from_value(serde_json::json!({ "url": "ftp://u:ftppass5@h/?key=k6" }))
                .unwrap(),
        );
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("ftppass5") && !err.contains("k6"), "{err}");
        bad.plugins.sinks.clear();
        bad.enroll.public_url = Some("mdm.example.com/?token=pubtok7".into());
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("pubtok7"), "{err}");
    }

    /// Issued identities must outlive the renewal window, or each renewal schedules the next at once;
    /// renewal off (0) needs nothing of the validity.
    #[test]
    fn a_renewal_window_as_long_as_the_validity_is_refused() {
        let with = |validity: u32, renew: u32| {
            let mut c = Config::default();
            c.scep.validity_days = validity;
            c.enroll.renew_days_before_expiry = renew;
            c
        };
        for (validity, renew) in [(30, 30), (10, 30), (1, 1)] {
            let err = with(validity, renew).validate().unwrap_err().to_string();
            assert!(
                err.contains("scep.validity_days")
                    && err.contains("enroll.renew_days_before_expiry")
                    && err.contains("renewal loop"),
                "{err}"
            );
            assert!(with(validity, renew).check_renewal_window().is_err());
        }
        for (validity, renew) in [(31, 30), (365, 30), (1, 0)] {
            with(validity, renew).validate().unwrap();
        }
        // At start, from a file, with the reason.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[scep]\nvalidity_days = 14\n[enroll]\nrenew_days_before_expiry = 30\n",
        )
        .unwrap();
        let err = Config::load(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("renewal loop"), "{err}");
    }

    /// `sqlite_writer_cpu` reads as a word, a number, or digits (as an environment variable may give it);
    /// anything else is refused with what it should be.
    #[test]
    fn the_writer_s_cpu_is_a_word_or_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let with = |v: &str| {
            std::fs::write(&f, format!("sqlite_writer_cpu = {v}\n")).unwrap();
            Config::load(Some(&f)).map(|c| c.sqlite_writer_cpu)
        };
        assert_eq!(Config::default().sqlite_writer_cpu, WriterCpu::Auto);
        assert_eq!(with("\"auto\"").unwrap(), WriterCpu::Auto);
        assert_eq!(with("\"none\"").unwrap(), WriterCpu::Anywhere);
        assert_eq!(with("1").unwrap(), WriterCpu::Cpu(1));
        assert_eq!(with("\"3\"").unwrap(), WriterCpu::Cpu(3));
        let err = with("\"last\"").unwrap_err().to_string();
        assert!(err.contains("\"auto\", \"none\" or a CPU number"), "{err}");
        // What `config` prints reads back as the same setting.
        for cpu in [WriterCpu::Auto, WriterCpu::Anywhere, WriterCpu::Cpu(2)] {
            let text = serde_json::to_string(&cpu).unwrap();
            assert_eq!(serde_json::from_str::<WriterCpu>(&text).unwrap(), cpu);
        }
    }

    /// Listening beyond loopback needs `enroll.public_url` and `push.key_secret`; the refusal names each.
    /// On loopback the same findings are warnings.
    #[test]
    fn a_reachable_listen_address_needs_production_settings() {
        let mut c = Config {
            listen: "0.0.0.0:8443".into(),
            ..Config::default()
        };
        let err = c.production_check().unwrap_err().to_string();
        assert!(
            err.contains("enroll.public_url") && err.contains("push.key_secret"),
            "{err}"
        );
        c.identity.proxy_cert_header = Some("X-Client-Cert".into());
        let err = c.production_check().unwrap_err().to_string();
        assert!(err.contains("http.trusted_proxies"), "{err}");
        c.http.trusted_proxies = vec!["10.0.0.0/8".into()];
        c.enroll.public_url = Some("https://mdm.example.com".into());
        let err = c.production_check().unwrap_err().to_string();
        assert!(
            !err.contains("enroll.public_url") && err.contains("push.key_secret"),
            "{err}"
        );
        c.push.key_secret = Some("a-sealing-secret-of-length".into());
        assert_eq!(c.production_check().unwrap(), Vec::<String>::new());
        for loopback in ["127.0.0.1:8080", "[::1]:0", "localhost:8080"] {
            let dev = Config {
                listen: loopback.into(),
                ..Config::default()
            };
            let warnings = dev.production_check().unwrap();
            assert_eq!(warnings.len(), 2, "{loopback}: {warnings:?}");
        }
        let bad = Config {
            http: HttpConfig {
                trusted_proxies: vec!["proxy.internal".into()],
                ..HttpConfig::default()
            },
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("proxy.internal"));
    }

    /// A sink takes 1 to [`MAX_SINK_BATCH`] events per POST; 1 unless set.
    #[test]
    fn a_sink_s_batch_size_is_bounded() {
        let with_batch = |n: Option<usize>| {
            let mut sink = serde_json::json!({"url": "https://hooks.example.com/mdm"});
            if let Some(n) = n {
                sink["batch_max_events"] = n.into();
            }
            let sink: SinkConfig = serde_json::from_value(sink).unwrap();
            let mut c = Config::default();
            c.plugins.sinks.insert("s".into(), sink.clone());
            (sink.batch_max_events, c.validate().is_ok())
        };
        assert_eq!(with_batch(None), (1, true));
        assert_eq!(with_batch(Some(MAX_SINK_BATCH)), (MAX_SINK_BATCH, true));
        assert!(!with_batch(Some(0)).1);
        assert!(!with_batch(Some(MAX_SINK_BATCH + 1)).1);
    }
}
