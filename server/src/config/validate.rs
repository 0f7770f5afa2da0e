//! What a loaded configuration must satisfy: each value in its range, settings that go together, and the
//! settings a server reachable from other hosts needs.

use super::{Config, ConfigError, SinkConfig, MAX_SINK_BATCH};
use secrecy::ExposeSecret;

impl Config {
    /// Each value in its range and the settings that go together; the first problem found is the error.
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
        let t = &self.telemetry;
        if t.gauges_interval_secs == 0 {
            return bad("telemetry.gauges_interval_secs must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&t.sample_ratio) {
            return bad("telemetry.sample_ratio must be between 0 and 1".into());
        }
        if let Some(u) = &t.otlp_endpoint {
            if url_scheme_ok(u).is_none() {
                return bad("telemetry.otlp_endpoint must be an http or https URL".into());
            }
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() && !self.listen.contains(':') {
            return bad(format!("listen = {:?} is not host:port", self.listen));
        }
        if let Some(h) = &self.identity.proxy_cert_header {
            if !is_token(h) {
                return Err(ConfigError::NotAHeaderName(h.clone()));
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
        if push
            .key_secret
            .as_ref()
            .is_some_and(|s| s.expose_secret().len() < 16)
        {
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
        if p.watch_dir && p.dir.is_none() {
            return bad("plugins.watch_dir needs plugins.dir".into());
        }
        for (name, sink) in &p.sinks {
            if let Err(e) = sink.check() {
                return bad(format!("plugins.sinks.{name}.{e}"));
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
            if url_scheme_ok(u.expose_secret()).is_none() {
                return bad(format!(
                    "enroll.public_url {:?} is not an http(s) URL",
                    u.redacted()
                ));
            }
        }
        if let Some(f) = &self.identity.device_ca_file {
            if !f.exists() {
                return bad(format!("identity.device_ca_file {} not found", f.display()));
            }
        }
        self.check_renewal_window()?;
        self.validate_policies()?;
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
            return Err(ConfigError::RenewalLoop { validity, renew });
        }
        Ok(())
    }

    /// The rollout defaults: ratios between 0 and 1, shares in order, a round at least every second.
    fn validate_policies(&self) -> Result<(), ConfigError> {
        let p = &self.policies;
        let ratio = |r: f64| (0.0..=1.0).contains(&r);
        if !ratio(p.max_failure_ratio) || !ratio(p.min_reported_ratio) {
            return Err(ConfigError::Invalid(
                "policies.max_failure_ratio and policies.min_reported_ratio must be between 0 and 1"
                    .into(),
            ));
        }
        crate::policies::stages::check_shares(p.pilot_percent, p.canary_percent)
            .map_err(|e| ConfigError::Invalid(format!("policies: {e}")))?;
        if let Some(unknown) = p
            .event_sinks
            .iter()
            .find(|s| !self.plugins.sinks.contains_key(*s))
        {
            return Err(ConfigError::Invalid(format!(
                "policies.event_sinks names {unknown:?}, which is not one of plugins.sinks"
            )));
        }
        if p.rollout_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "policies.rollout_interval_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The `http` section's values (`trusted_proxies` was parsed as it was read), and the enrollment bounds.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let h = &self.http;
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
        Err(ConfigError::NotForProduction {
            listen: self.listen.clone(),
            missing,
        })
    }
}

/// The longest sink URL.
pub const MAX_SINK_URL: usize = 2048;
/// The most headers a sink sends.
pub const MAX_SINK_HEADERS: usize = 32;
/// The longest a sink may take to answer.
pub const MAX_SINK_TIMEOUT_SECS: u64 = 300;

impl SinkConfig {
    /// What makes a sink usable, from the configuration file or the API: an http(s) URL of at most
    /// [`MAX_SINK_URL`] bytes, a timeout of 1 to [`MAX_SINK_TIMEOUT_SECS`], batches of 1 to
    /// [`MAX_SINK_BATCH`] events, at most [`MAX_SINK_HEADERS`] headers with valid names and values. The
    /// error starts with the field's name and quotes no secret.
    pub fn check(&self) -> Result<(), String> {
        if self.url.expose_secret().len() > MAX_SINK_URL {
            return Err(format!("url: at most {MAX_SINK_URL} bytes"));
        }
        if url_scheme_ok(self.url.expose_secret()).is_none() {
            return Err(format!(
                "url {:?} is not an http(s) URL",
                self.url.redacted()
            ));
        }
        if !(1..=MAX_SINK_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!("timeout_secs must be 1-{MAX_SINK_TIMEOUT_SECS}"));
        }
        if !(1..=MAX_SINK_BATCH).contains(&self.batch_max_events) {
            return Err(format!("batch_max_events must be 1-{MAX_SINK_BATCH}"));
        }
        if self.headers.len() > MAX_SINK_HEADERS {
            return Err(format!("headers: at most {MAX_SINK_HEADERS}"));
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(format!("headers: {name:?} is not a header name"));
            }
            if reqwest::header::HeaderValue::from_str(value.expose_secret()).is_err() {
                return Err(format!("headers.{name}: not a header value"));
            }
        }
        Ok(())
    }
}

fn url_scheme_ok(u: &str) -> Option<()> {
    let parsed = url::Url::parse(u).ok()?;
    matches!(parsed.scheme(), "http" | "https").then_some(())
}

/// Whether `s` is an HTTP field name: an RFC 9110 `token`, one or more of the letters, digits and
/// ``!#$%&'*+-.^_`|~``.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SinkConfig, TrustedProxies};

    #[test]
    fn a_sink_is_checked_field_by_field_and_its_secrets_never_quoted() {
        let good = || SinkConfig {
            url: "https://hooks.example.com/in?token=t0psecret"
                .to_string()
                .into(),
            headers: [("Authorization".to_string(), "Bearer h1dden".into())].into(),
            timeout_secs: 10,
            batch_max_events: 1,
        };
        assert_eq!(good().check(), Ok(()));
        type Change = fn(&mut SinkConfig);
        let cases: [(Change, &str); 8] = [
            (
                |s| s.url = format!("https://h.example.com/{}", "a".repeat(2048)).into(),
                "url",
            ),
            (
                |s| s.url = "ftp://h.example.com/?token=t0psecret".to_string().into(),
                "url",
            ),
            (|s| s.timeout_secs = 0, "timeout_secs"),
            (|s| s.timeout_secs = 301, "timeout_secs"),
            (|s| s.batch_max_events = 201, "batch_max_events"),
            (
                |s| {
                    s.headers.insert("Bad Name".into(), "x".into());
                },
                "headers",
            ),
            (
                |s| {
                    s.headers.insert("X-A".into(), "a\nb".into());
                },
                "headers.X-A",
            ),
            (
                |s| s.headers = (0..33).map(|i| (format!("X-{i}"), "v".into())).collect(),
                "headers",
            ),
        ];
        for (change, field) in cases {
            let mut sink = good();
            change(&mut sink);
            let err = sink.check().unwrap_err();
            assert!(err.starts_with(field), "{err}");
            assert!(
                !err.contains("t0psecret") && !err.contains("h1dden"),
                "{err}"
            );
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = Config {
            retention_days: 0,
            ..Config::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Invalid(_))));
    }

    /// Rollout defaults: ratios are shares, stage shares in order, event sinks configured ones.
    #[test]
    fn rollout_settings_are_checked() {
        let with = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        Config::default().validate().unwrap();
        for (f, says) in [
            (
                (|c: &mut Config| c.policies.max_failure_ratio = 1.5) as fn(&mut Config),
                "max_failure_ratio",
            ),
            (
                |c| c.policies.min_reported_ratio = -0.1,
                "min_reported_ratio",
            ),
            (|c| c.policies.pilot_percent = 0, "pilot"),
            (|c| c.policies.canary_percent = 5, "canary"),
            (
                |c| c.policies.rollout_interval_secs = 0,
                "rollout_interval_secs",
            ),
            (
                |c| c.policies.event_sinks = vec!["nowhere".into()],
                "\"nowhere\"",
            ),
        ] {
            let err = with(f).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        let mut c = Config::default();
        c.plugins.sinks.insert(
            "changes".into(),
            SinkConfig {
                url: "https://example.invalid/hook".to_string().into(),
                headers: Default::default(),
                timeout_secs: 5,
                batch_max_events: 1,
            },
        );
        c.policies.event_sinks = vec!["changes".into()];
        c.validate().unwrap();
    }

    /// Telemetry: the collector is an http(s) URL, the sampling ratio a share, the gauges' period at least a
    /// second; a collector is optional.
    #[test]
    fn telemetry_settings_are_checked() {
        let with = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().map_err(|e| e.to_string())
        };
        for (f, says) in [
            (
                (|c: &mut Config| c.telemetry.otlp_endpoint = Some("file:///etc/passwd".into()))
                    as fn(&mut Config),
                "otlp_endpoint",
            ),
            (
                |c| c.telemetry.otlp_endpoint = Some("collector:4318".into()),
                "otlp_endpoint",
            ),
            (|c| c.telemetry.sample_ratio = 1.5, "sample_ratio"),
            (|c| c.telemetry.sample_ratio = -0.1, "sample_ratio"),
            (
                |c| c.telemetry.gauges_interval_secs = 0,
                "gauges_interval_secs",
            ),
        ] {
            let err = with(f).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        with(|c| c.telemetry.otlp_endpoint = Some("https://otel.example.com:4318".into())).unwrap();
        with(|c| c.telemetry.sample_ratio = 0.0).unwrap();
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
            assert!(matches!(
                with(validity, renew).check_renewal_window(),
                Err(ConfigError::RenewalLoop { .. })
            ));
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

    /// Listening beyond loopback needs `enroll.public_url` and `push.key_secret`; the refusal names each.
    /// On loopback the same findings are warnings.
    #[test]
    fn a_reachable_listen_address_needs_production_settings() {
        let mut c = Config {
            listen: "0.0.0.0:8443".into(),
            ..Config::default()
        };
        let err = c.production_check().unwrap_err();
        assert!(matches!(err, ConfigError::NotForProduction { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("enroll.public_url") && err.contains("push.key_secret"),
            "{err}"
        );
        c.identity.proxy_cert_header = Some("X-Client-Cert".into());
        let err = c.production_check().unwrap_err().to_string();
        assert!(err.contains("http.trusted_proxies"), "{err}");
        c.http.trusted_proxies = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
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

    /// An RFC 9110 token: what the identity proxy's header may be named.
    #[test]
    fn a_header_name_is_a_token() {
        for good in [
            "X-Client-Cert",
            "ssl-client-cert",
            "x_cert.v1",
            "A!#$%&'*+-.^_`|~9",
        ] {
            assert!(is_token(good), "{good}");
        }
        for bad in [
            "", "X Client", "X-Cert:", "(cert)", "x\"y", "é", "a\tb", "a/b", "a@b",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
        let mut c = Config::default();
        c.identity.proxy_cert_header = Some("X Client Cert".into());
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::NotAHeaderName(_)), "{err}");
        assert!(
            err.to_string()
                .contains("\"X Client Cert\" is not a header name"),
            "{err}"
        );
    }
}
