//! actix-web: the device endpoints, the admin API, NanoMDM-compatible endpoints and operations endpoints.
//! The only module that knows actix.

pub(crate) mod api;
mod auth;
mod enroll;
mod error;
pub mod limits;
mod mdm;
mod middleware;
mod nanomdm;
pub mod openapi;
mod ops;
pub mod peer;
mod scep;
pub mod tls;

use crate::checkin::CheckinService;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::enroll::EnrollService;
use crate::identity::{CaVerifier, DeviceTrust, Issuers, SignatureVerifier};
use crate::metrics::Metrics;
use crate::plugins::delivery::Delivery;
use crate::plugins::PluginHost;
use crate::push::apns::{ApnsEnvironment, ApnsPusher, Pusher};
use crate::push::cert::PushCertificate;
use crate::push::seal::KeySealer;
use crate::push::service::{CertificateSink, PushService};
use crate::queue::QueueService;
use crate::scep::ScepService;
use crate::storage::{audit_log, Storage};
use actix_web::dev::Server;
use actix_web::http::header::HeaderName;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

/// Everything a request handler may reach.
pub struct AppState {
    storage: Storage,
    pub checkin: CheckinService,
    pub queue: QueueService,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub plugins: Arc<PluginHost>,
    pub push: Arc<PushService>,
    pub proxy_cert_header: Option<HeaderName>,
    pub scep: Arc<ScepService>,
    pub enroll: Arc<EnrollService>,
    /// Which certificates may act as a device (TLS client certificates, a proxy's header, `Mdm-Signature`).
    pub trust: DeviceTrust,
    /// `http.trusted_proxies`: the only peers whose forwarding and identity headers are believed.
    pub trusted_proxies: peer::TrustedProxies,
    /// What a development server lacks to be run in production (`Config::production_check`), shown by
    /// `/readyz` as warnings.
    pub setup_warnings: Vec<String>,
    /// Anonymous `/enroll` downloads per client address (`enroll.anonymous_per_client_per_minute`).
    pub enroll_rate: enroll::ClientRate,
    /// `Mdm-Signature` verification, with its cache of verified signatures.
    pub signatures: SignatureVerifier,
}

/// What tests (and embedders) replace: the clock, and the APNs sender.
pub struct Overrides {
    pub clock: SharedClock,
    /// None: the real APNs sender, with the stored certificates installed.
    pub pusher: Option<Arc<dyn Pusher>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("device CA file: {0}")]
    DeviceCa(String),
    #[error("cannot create data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("plugin host: {0}")]
    Plugins(String),
    #[error("push: {0}")]
    Push(String),
    #[error("certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// A built server, bound to its port but not yet running.
pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As `build`, with a chosen clock (tests move time without sleeping).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        Self::build_with(
            config,
            Overrides {
                clock,
                pusher: None,
            },
        )
        .await
    }

    /// The configured database, created (SQLite, in `data_dir`) and migrated: what the server and every
    /// command-line subcommand open.
    pub async fn open_storage(config: &Config) -> Result<Storage, StartError> {
        if config.database_url.is_none() {
            crate::storage::private_files::create_private_dir(&config.data_dir)
                .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
        }
        let storage = Storage::connect_with(
            &config.database_url(),
            config.database_schema.as_deref(),
            config.sqlite_writer_cpu,
        )
        .await?;
        storage.migrate().await?;
        Ok(storage)
    }

    pub async fn build_with(config: Config, overrides: Overrides) -> Result<Self, StartError> {
        let clock = overrides.clock;
        config.validate()?;
        // Refuses a reachable listen address without the settings that make it safe; on loopback only,
        // says loudly what production would need.
        let mut setup_warnings = config.production_check()?;
        for w in &setup_warnings {
            tracing::warn!(listen = %config.listen, "DEVELOPMENT ONLY (loopback): {w}");
        }
        if config.identity.accept_any_issuer {
            // Allowed anywhere (migrations need it), but never quietly: logged by `device_trust`, and here
            // for `/readyz`.
            setup_warnings.push(
                "identity.accept_any_issuer is on: any certificate, self-signed included, can enroll as a \
                 new device; set identity.device_ca_file for the CA devices are migrated from instead"
                    .to_string(),
            );
        }
        let trusted_proxies =
            peer::TrustedProxies::parse(&config.http.trusted_proxies).map_err(|e| {
                crate::config::ConfigError::Invalid(format!("http.trusted_proxies: {e}"))
            })?;
        let listener = TcpListener::bind(&config.listen)
            .map_err(|e| StartError::Bind(config.listen.clone(), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartError::Bind(config.listen.clone(), e))?;
        let port = local.port();
        // Signed profiles point devices here: the configured public URL, or (loopback only, checked above)
        // the address we listen on. Never a request's Host or forwarding headers.
        let base_url = match &config.enroll.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let scheme = if config.tls.enabled() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{local}")
            }
        };
        let storage = Self::open_storage(&config).await?;
        let secret = seal_secret(&config)?;
        // Escrowed tokens are sealed under this secret; clear ones an earlier version stored are sealed now.
        crate::storage::sealing::install_and_seal(&storage, &secret).await?;
        let scep_ca = crate::scep::load_ca(
            &config.scep,
            &config.data_dir,
            &secret,
            clock.now_ms() / 1000,
        )?;
        let signer =
            crate::enroll::load_signer(&config.enroll, &scep_ca, &config.data_dir, &secret)?;
        let metrics = Arc::new(Metrics::new());
        let trust = device_trust(&config.identity, &scep_ca, &metrics)?;
        let plugins = PluginHost::new(
            &config.plugins,
            storage.clone(),
            clock.clone(),
            metrics.clone(),
            Some(config.data_dir.join("plugin-cache")),
        )
        .map_err(|e| StartError::Plugins(format!("{e:#}")))?;
        plugins.reload().await?;
        if let Some(dir) = &config.plugins.dir {
            let n = plugins
                .load_dir(dir)
                .await
                .map_err(|e| StartError::Plugins(e.to_string()))?;
            tracing::info!(dir = %dir.display(), loaded = n, "plugins loaded from directory");
        }
        let (pusher, sink): (Arc<dyn Pusher>, Option<Arc<dyn CertificateSink>>) = match overrides
            .pusher
        {
            Some(p) => (p, None),
            None => {
                let env = match config.push.environment {
                    crate::config::ApnsEnvironmentConfig::Production => ApnsEnvironment::Production,
                    crate::config::ApnsEnvironmentConfig::Sandbox => ApnsEnvironment::Sandbox,
                };
                let apns = Arc::new(ApnsPusher::new(
                    env,
                    config.push.expiration_secs,
                    config.push.max_concurrent,
                ));
                (apns.clone(), Some(Arc::new(ApnsSink(apns))))
            }
        };
        let sealer = KeySealer::new(&secret).map_err(|e| StartError::Push(e.to_string()))?;
        let push = Arc::new(PushService::new(
            storage.clone(),
            clock.clone(),
            metrics.clone(),
            pusher,
            sink,
            sealer,
            config.push.clone(),
        ));
        let loaded = push
            .load_certificates()
            .await
            .map_err(|e| StartError::Push(e.to_string()))?;
        tracing::info!(certificates = loaded, "push certificates loaded");
        if config.push.worker {
            push.clone().spawn();
        }
        let scep = Arc::new(ScepService::new(
            scep_ca.clone(),
            storage.clone(),
            clock.clone(),
            metrics.clone(),
            config.scep.clone(),
        )?);
        let enroll = Arc::new(EnrollService::new(
            storage.clone(),
            clock.clone(),
            metrics.clone(),
            scep.clone(),
            signer,
            config.enroll.clone(),
            base_url,
        ));
        let state = web::Data::new(AppState {
            checkin: CheckinService::new(
                storage.clone(),
                clock.clone(),
                metrics.clone(),
                config.user_authenticate,
                plugins.clone(),
                config.push.repush_interval_secs as i64 * 1000,
            ),
            queue: QueueService::new(storage.clone(), clock.clone(), metrics.clone()),
            storage,
            metrics: metrics.clone(),
            clock: clock.clone(),
            plugins: plugins.clone(),
            push,
            proxy_cert_header: config
                .identity
                .proxy_cert_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            scep,
            enroll,
            trust,
            signatures: SignatureVerifier::new(
                config.identity.signature_cache_entries,
                metrics.identity_cache_counters("signature"),
            ),
            trusted_proxies: trusted_proxies.clone(),
            setup_warnings,
            enroll_rate: enroll::ClientRate::new(config.enroll.anonymous_per_client_per_minute),
        });

        let max_body = config.max_body_bytes;
        let app_state = state.clone();
        let h = &config.http;
        let deadlines = limits::Deadlines {
            body: std::time::Duration::from_secs(h.body_timeout_secs),
            request: std::time::Duration::from_secs(h.request_timeout_secs),
        };
        let conns = limits::ConnLimits::new(
            h.max_connections,
            h.max_connections_per_peer,
            trusted_proxies,
        );
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(deadlines)
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(api::json_config(max_body))
                .wrap(actix_web::middleware::from_fn(middleware::observe))
                // Outermost: an over-limit connection is answered before anything else runs.
                .wrap(actix_web::middleware::from_fn(limits::enforce))
                .configure(mdm::routes)
                .configure(scep::routes)
                .configure(enroll::routes)
                .configure(nanomdm::routes)
                .configure(api::routes)
                .configure(ops::routes)
        })
        .on_connect(move |conn, ext| {
            tls::on_connect(conn, ext);
            conns.on_connect(conn, ext);
        })
        // The head has this long; the body and the whole request have `limits::enforce`'s deadlines.
        .client_request_timeout(std::time::Duration::from_secs(h.header_timeout_secs))
        // actix's own bound is per worker and makes new connections wait in the backlog: a backstop
        // behind `http.max_connections`, which answers over-limit connections at once.
        .max_connections(h.max_connections.saturating_add(64));
        server = if config.tls.enabled() {
            let acceptor = tls::acceptor(&config.tls, &config.data_dir, &secret, &[&scep_ca.cert])?;
            server.listen_openssl(listener, acceptor)
        } else {
            server.listen(listener)
        }
        .map_err(|e| StartError::Bind(config.listen.clone(), e))?;
        if let Some(w) = config.workers {
            server = server.workers(w.max(1));
        }
        let server = server.run();

        spawn_housekeeping(
            state.clone(),
            config.retention_days,
            config.housekeeping_interval_secs,
        );
        spawn_identity_renewal(state.clone(), config.housekeeping_interval_secs);
        spawn_audit_sealer(state.storage.clone());
        spawn_plugin_workers(
            plugins,
            Delivery::new(
                state.storage.clone(),
                clock,
                metrics,
                config.plugins.sinks.clone(),
            ),
            &config.plugins,
        );
        tracing::info!(port, tls = config.tls.enabled(), "listening");
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn storage(&self) -> &Storage {
        &self.state.storage
    }

    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.state.plugins
    }

    pub fn push(&self) -> &Arc<PushService> {
        &self.state.push
    }

    /// Everything the handlers reach (tests drive background work, e.g. identity renewal, through it).
    pub fn state(&self) -> Arc<AppState> {
        self.state.clone().into_inner()
    }

    /// Serve until stopped (SIGINT/SIGTERM stop gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Run `work` every `period` in the background, the first time one period after start; late ticks are
/// delayed, not bunched. Each round logs its own failures and the next round tries again.
///
/// Not at start: work that reads the clock (housekeeping, renewal) would otherwise race whatever the process
/// does first, and tests that drive it by hand would see it run under them.
fn every<F, Fut>(period: std::time::Duration, mut work: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work().await;
        }
    });
}

/// Audit entries recorded with their changes are chained every [`audit_log::SEAL_INTERVAL`], on every
/// replica (sealing is serialised in the database). The check for pending entries is a read, off the writer.
fn spawn_audit_sealer(storage: Storage) {
    every(audit_log::SEAL_INTERVAL, move || {
        let storage = storage.clone();
        async move {
            let sealed = async {
                if audit_log::pending(&storage.read()).await? == 0 {
                    return Ok(0);
                }
                audit_log::seal(&storage).await
            };
            match sealed.await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "audit entries chained"),
                Err(e) => tracing::error!(error = %e, "audit sealing failed"),
            }
        }
    });
}

/// Expiry and retention on a timer, by one replica at a time.
fn spawn_housekeeping(state: web::Data<AppState>, retention_days: u32, every_secs: u64) {
    every(std::time::Duration::from_secs(every_secs), move || {
        let state = state.clone();
        async move {
            match housekeeping_round(&state, retention_days).await {
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

/// What one housekeeping round removed or expired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HousekeepingRound {
    pub expired_kv: u64,
    pub expired_secrets: u64,
    /// SCEP challenges that expired unused (deleted as soon as they expire, not after retention).
    pub expired_challenges: u64,
    pub delivered_events: u64,
    pub expired: u64,
    pub purged_rows: u64,
    pub purged_commands: u64,
}

/// One housekeeping round, or None when another replica holds the job's lock. On PostgreSQL the round is
/// one transaction holding the `Housekeeping` advisory lock, so replicas never run it at the same time and
/// a round cut short (the process killed) changes nothing. SQLite has a single writer: the steps run one
/// statement at a time, so check-ins are not held behind the whole round.
pub async fn housekeeping_round(
    state: &AppState,
    retention_days: u32,
) -> Result<Option<HousekeepingRound>, crate::storage::StorageError> {
    use crate::storage::{locks, outbox, plugin_kv, queue, secrets};
    use sea_orm::TransactionTrait;
    async fn steps<C: sea_orm::ConnectionTrait>(
        c: &C,
        now: i64,
        cutoff: i64,
    ) -> Result<HousekeepingRound, crate::storage::StorageError> {
        let expired_kv = plugin_kv::purge_expired(c, now).await?;
        let expired_secrets = secrets::purge(c, cutoff).await?;
        let expired_challenges = secrets::purge_expired_challenges(c, now).await?;
        let delivered_events = outbox::purge_delivered(c, cutoff).await?;
        let expired = queue::expire(c, now).await?;
        let (purged_rows, purged_commands) = queue::purge_finished(c, cutoff).await?;
        Ok(HousekeepingRound {
            expired_kv,
            expired_secrets,
            expired_challenges,
            delivered_events,
            expired,
            purged_rows,
            purged_commands,
        })
    }
    let now = state.clock.now_ms();
    let cutoff = now - i64::from(retention_days) * 86_400_000;
    let db = crate::storage::testing::db(&state.storage);
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        return steps(db, now, cutoff).await.map(Some);
    }
    let txn = db.begin().await?;
    if !locks::try_job_lock(&txn, locks::Job::Housekeeping).await? {
        txn.rollback().await?;
        return Ok(None);
    }
    let round = steps(&txn, now, cutoff).await?;
    txn.commit().await?;
    Ok(Some(round))
}

/// Queue fresh enrollment profiles for identities about to expire.
fn spawn_identity_renewal(state: web::Data<AppState>, every_secs: u64) {
    every(std::time::Duration::from_secs(every_secs), move || {
        let state = state.clone();
        async move {
            match state.enroll.renew_expiring(&state.queue).await {
                Ok(n) if n > 0 => tracing::info!(renewals = n, "identity renewal"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "identity renewal failed"),
            }
        }
    });
}

/// Plugin background work: pick up changes made through other replicas, run schedules, deliver events.
fn spawn_plugin_workers(
    plugins: Arc<PluginHost>,
    delivery: Delivery,
    cfg: &crate::config::PluginsConfig,
) {
    let p = plugins.clone();
    every(
        std::time::Duration::from_secs(cfg.reload_interval_secs),
        move || {
            let p = p.clone();
            async move {
                if let Err(e) = p.reload().await {
                    tracing::error!(error = %e, "plugin reload failed");
                }
            }
        },
    );
    if !cfg.worker {
        return;
    }
    let period = std::time::Duration::from_millis(cfg.worker_interval_ms);
    let delivery = Arc::new(delivery);
    plugins.deliver_here(delivery.clone().handoff());
    every(period, move || {
        let delivery = delivery.clone();
        async move {
            if let Err(e) = delivery.run_once().await {
                tracing::error!(error = %e, "event delivery failed");
            }
        }
    });
    every(period, move || {
        let plugins = plugins.clone();
        async move {
            if let Err(e) = plugins.run_schedules().await {
                tracing::error!(error = %e, "plugin schedules failed");
            }
        }
    });
}

struct ApnsSink(Arc<ApnsPusher>);

impl CertificateSink for ApnsSink {
    fn install(&self, cert: &PushCertificate) -> Result<(), String> {
        self.0.set_certificate(cert).map_err(|e| e.to_string())
    }
}

/// The secret that seals push keys: configured, or generated once into the data dir (0600) for a single
/// development server. Production sets `push.key_secret` so the key never sits beside the data.
/// Device identities must chain to the SCEP CA or `identity.device_ca_file`, unless the admin has
/// explicitly accepted any issuer (said loudly at every start).
fn device_trust(
    config: &crate::config::IdentityConfig,
    scep_ca: &crate::pki::KeyPair,
    metrics: &Metrics,
) -> Result<DeviceTrust, StartError> {
    let issuers = if config.accept_any_issuer {
        tracing::warn!(
            "identity.accept_any_issuer is on: any certificate, self-signed included, can enroll as a new \
             device. Use it only while migrating devices, and set identity.device_ca_file instead"
        );
        Issuers::Any
    } else {
        let mut pem = scep_ca
            .cert
            .to_pem()
            .map_err(|e| crate::pki::PkiError::crypto("CA certificate", e))?;
        if let Some(path) = &config.device_ca_file {
            let more = std::fs::read(path)
                .map_err(|e| StartError::DeviceCa(format!("{}: {e}", path.display())))?;
            pem.extend(more);
        }
        Issuers::Chained(
            CaVerifier::from_pem_bundle(&pem).map_err(|e| StartError::DeviceCa(e.to_string()))?,
        )
    };
    let counters = metrics.identity_cache_counters("certificate");
    Ok(DeviceTrust::new(
        issuers,
        config.verified_certificate_entries,
        counters,
    ))
}

fn seal_secret(config: &Config) -> Result<String, StartError> {
    if let Some(s) = &config.push.key_secret {
        return Ok(s.clone());
    }
    let path = config.data_dir.join("push-seal.key");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    crate::storage::private_files::create_private_dir(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.display().to_string(), e))?;
    let mut raw = [0u8; 32];
    openssl::rand::rand_bytes(&mut raw).map_err(|e| StartError::Push(e.to_string()))?;
    let secret = hex::encode(raw);
    crate::pki::write_new(&path, secret.as_bytes(), true)?;
    tracing::warn!(path = %path.display(), "generated a key-sealing secret; set push.key_secret in production");
    Ok(secret)
}
