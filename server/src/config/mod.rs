//! One typed configuration: defaults that run locally, then an optional TOML file, then `MDM_*` environment
//! variables (nested keys with `__`, e.g. `MDM_IDENTITY__PROXY_CERT_HEADER`).
//!
//! The rules: every section refuses keys it does not know, and start-up fails naming the key, its section and
//! the file or variable it came from ([`ConfigError::UnknownKey`]); secrets are [`SecretString`]s and URLs
//! [`SecretUrl`]s, so neither `Debug` (any log) nor `mdm-server config`'s TOML ([`Config::to_toml`]) shows
//! them, and the code reads one with `expose_secret()` only where it uses it. Values are parsed once, here
//! (`http.trusted_proxies` into [`TrustedProxies`]); nothing in this module knows about HTTP.

mod error;
mod load;
mod print;
mod proxies;
mod redact;
mod sections;
mod validate;

pub use error::{ConfigError, Origin, Section};
pub use proxies::{ProxyEntryError, TrustedProxies};
pub use redact::{redact_url, SecretUrl};
pub use secrecy::{ExposeSecret, SecretString};
pub use sections::{
    ApnsEnvironmentConfig, DdmConfig, EnrollConfig, HttpConfig, IdentityConfig, LogConfig,
    LogFormat, PluginsConfig, PoliciesConfig, PushConfig, ScepConfig, SinkConfig, TelemetryConfig,
    TlsConfig, UserAuthenticatePolicy, MAX_SINK_BATCH,
};

use crate::storage::WriterCpu;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where the embedded database and generated files live.
    pub data_dir: PathBuf,
    /// `postgres://...` for production; unset means SQLite at `<data_dir>/mdm.db`.
    pub database_url: Option<SecretUrl>,
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
    pub telemetry: TelemetryConfig,
    pub ddm: DdmConfig,
    pub policies: PoliciesConfig,
    /// HTTP worker threads; unset means one per core.
    pub workers: Option<usize>,
    pub http: HttpConfig,
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
            telemetry: TelemetryConfig::default(),
            ddm: DdmConfig::default(),
            policies: PoliciesConfig::default(),
            workers: None,
            http: HttpConfig::default(),
        }
    }
}

impl Config {
    /// The database to connect to: the configured URL, or SQLite inside `data_dir`.
    pub fn database_url(&self) -> SecretUrl {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("mdm.db").display()
            )
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Debug` of a configuration with every secret set shows none of them: what `mdm-server config`
    /// prints, and what any log of it would. URLs still say where they point.
    #[test]
    fn debug_shows_no_secret() {
        let mut c = Config {
            database_url: Some("postgres://mdm:hunter2hunter2@db/mdm?password=dbpass1".into()),
            ..Config::default()
        };
        c.push.key_secret = Some("sealing-secret-0123456789".into());
        c.scep.ca_key_passphrase = Some("ca-pass-phrase".into());
        c.enroll.signing_key_passphrase = Some("signing-pass".into());
        c.enroll.public_url = Some("https://mdm.example.com/?token=pubtok2".into());
        for (name, url) in [
            ("a", "https://user:sinkpass3@hooks.example.com/"),
            ("b", "https://hooks.example.com/?token=sinktok4"),
        ] {
            c.plugins.sinks.insert(
                name.into(),
                SinkConfig {
                    url: url.into(),
                    headers: [("Authorization".to_string(), "Bearer sink-token".into())].into(),
                    timeout_secs: 1,
                    batch_max_events: 1,
                },
            );
        }
        c.validate().unwrap();
        for printed in [format!("{c:?}"), format!("{c:#?}")] {
            for secret in [
                "hunter2hunter2",
                "dbpass1",
                "sealing-secret",
                "ca-pass-phrase",
                "signing-pass",
                "pubtok2",
                "sinkpass3",
                "sinktok4",
                "sink-token",
            ] {
                assert!(!printed.contains(secret), "{secret} printed");
            }
            for kept in [
                "postgres://mdm:REDACTED@db/mdm?password=REDACTED",
                "https://mdm.example.com/?token=REDACTED",
                "https://user:REDACTED@hooks.example.com/",
                "\"Authorization\"",
            ] {
                assert!(printed.contains(kept), "{kept} missing");
            }
        }
        assert_eq!(
            c.database_url().expose_secret(),
            "postgres://mdm:hunter2hunter2@db/mdm?password=dbpass1"
        );
    }

    /// A refused URL is quoted redacted in the error.
    #[test]
    fn errors_quote_urls_redacted() {
        let mut bad = Config::default();
        bad.plugins.sinks.insert(
            "c".into(),
            serde_json::from_value(serde_json::json!({ "url": "ftp://u:ftppass5@h/?key=k6" }))
                .unwrap(),
        );
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("plugins.sinks.c.url"), "{err}");
        assert!(!err.contains("ftppass5") && !err.contains("k6"), "{err}");
        bad.plugins.sinks.clear();
        bad.enroll.public_url = Some("mdm.example.com/?token=pubtok7".into());
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("pubtok7"), "{err}");
    }

    /// Without a URL, the database is SQLite in the data directory.
    #[test]
    fn the_default_database_is_sqlite_in_the_data_dir() {
        let c = Config {
            data_dir: "/var/lib/mdm".into(),
            ..Config::default()
        };
        assert_eq!(
            c.database_url().expose_secret(),
            "sqlite:///var/lib/mdm/mdm.db?mode=rwc"
        );
    }
}
