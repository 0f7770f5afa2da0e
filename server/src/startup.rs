//! Start-up: wire the application from its configuration. `Application::build` opens storage, builds every
//! service and the HTTP state, binds the listening port and starts the background jobs; `run_until_stopped`
//! serves.

use crate::checkin::CheckinService;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, IdentityConfig};
use crate::enroll::EnrollService;
use crate::http::{self, AppState};
use crate::identity::{CaVerifier, DeviceTrust, Issuers, SignatureVerifier};
use crate::jobs;
use crate::metrics::Metrics;
use crate::pki::KeyPair;
use crate::plugins::delivery::Delivery;
use crate::plugins::PluginHost;
use crate::push::apns::{ApnsEnvironment, ApnsPusher, Pusher};
use crate::push::cert::PushCertificate;
use crate::push::seal::KeySealer;
use crate::push::service::{CertificateSink, PushService};
use crate::queue::QueueService;
use crate::scep::ScepService;
use crate::storage::Storage;
use secrecy::ExposeSecret;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

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
    #[error("declarative management: {0}")]
    Ddm(#[from] crate::ddm::DdmError),
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
    #[error("policies.trusted_signers: {0}")]
    Policies(String),
}

/// A built server, bound to its port but not yet running.
pub struct Application {
    port: u16,
    server: http::Server,
    state: Arc<AppState>,
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
            config.database_url().expose_secret(),
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
        let setup_warnings = setup_warnings(&config)?;
        let trusted_proxies = config.http.trusted_proxies.clone();
        let bind = |e| StartError::Bind(config.listen.clone(), e);
        let listener = TcpListener::bind(&config.listen).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let storage = Self::open_storage(&config).await?;
        let secret = seal_secret(&config)?;
        // Escrowed tokens are sealed under this secret; clear ones an earlier version stored are sealed now.
        crate::storage::sealing::install_and_seal(&storage, &secret).await?;
        crate::ddm::builtin::install(&storage, &config.ddm, clock.now_ms()).await?;
        let scep_ca = crate::scep::load_ca(
            &config.scep,
            &config.data_dir,
            &secret,
            clock.now_ms() / 1000,
        )?;
        let signer =
            crate::enroll::load_signer(&config.enroll, &scep_ca, &config.data_dir, &secret)?;
        let metrics = Arc::new(Metrics::new());
        let not_after = |pair: &crate::pki::KeyPair| crate::pki::unix_time(pair.cert.not_after());
        metrics.certificate("scep_ca", "scep_ca", not_after(&scep_ca)?);
        metrics.certificate("profile_signer", "profile_signer", not_after(&signer)?);
        let trust = device_trust(&config.identity, &scep_ca, &metrics)?;
        let plugins = plugin_host(&config, &storage, &clock, &metrics).await?;
        let push = push_service(
            &config,
            overrides.pusher,
            &secret,
            &storage,
            &clock,
            &metrics,
        )
        .await?;
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
            base_url(&config, local),
        ));
        let queue = QueueService::new(storage.clone(), clock.clone(), metrics.clone());
        let policy_trust = crate::policies::trust::Trust::load(&config.policies)
            .map_err(|e| StartError::Policies(e.to_string()))?;
        let rollouts = Arc::new(crate::policies::rollout::Rollouts::new(
            storage.clone(),
            config.policies.clone(),
            metrics.clone(),
            plugins.clone(),
        ));
        let state = Arc::new(AppState {
            rollouts: rollouts.clone(),
            checkin: CheckinService::new(
                storage.clone(),
                clock.clone(),
                metrics.clone(),
                config.user_authenticate,
                plugins.clone(),
                config.push.repush_interval_secs as i64 * 1000,
            ),
            queue: queue.clone(),
            storage: storage.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            plugins: plugins.clone(),
            push: push.clone(),
            proxy_cert_header: config
                .identity
                .proxy_cert_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
            scep,
            enroll: enroll.clone(),
            trust,
            signatures: SignatureVerifier::new(
                config.identity.signature_cache_entries,
                metrics.identity_cache_counters("signature"),
            ),
            trusted_proxies,
            setup_warnings,
            enroll_rate: http::enroll::ClientRate::new(
                config.enroll.anonymous_per_client_per_minute,
            ),
            policy_trust,
        });
        let tls = if config.tls.enabled() {
            let tls_not_after = http::tls::not_after(&config.tls, &config.data_dir, &secret)?;
            metrics.certificate("tls", "tls", tls_not_after);
            let client_cas = [&scep_ca.cert];
            Some(http::tls::acceptor(
                &config.tls,
                &config.data_dir,
                &secret,
                &client_cas,
            )?)
        } else {
            None
        };
        let server = http::server(state.clone(), listener, &config, tls).map_err(bind)?;
        let delivery = Delivery::new(
            storage.clone(),
            clock.clone(),
            metrics.clone(),
            plugins.sinks().clone(),
        );
        jobs::spawn_all(
            jobs::Services {
                storage,
                clock,
                queue,
                enroll,
                push,
                plugins,
                delivery,
                rollouts,
                metrics,
            },
            &config,
        );
        let port = local.port();
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
        self.state.clone()
    }

    /// Serve until stopped (SIGINT/SIGTERM stop gracefully).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// What a development server lacks to be run in production (`/readyz` shows them). Refuses a reachable
/// listen address without the settings that make it safe; on loopback only, says loudly what production
/// would need.
fn setup_warnings(config: &Config) -> Result<Vec<String>, StartError> {
    let mut warnings = config.production_check()?;
    for w in &warnings {
        tracing::warn!(listen = %config.listen, "DEVELOPMENT ONLY (loopback): {w}");
    }
    if let Some(w) = crate::policies::trust::warning(&config.policies) {
        tracing::warn!("DEVELOPMENT ONLY: {w}");
        warnings.push(w);
    }
    if config.plugins.watch_dir {
        let w =
            "plugins.watch_dir is on: plugins.dir is loaded again whenever it changes, over any \
                 change made through the API to its plugins"
                .to_string();
        tracing::warn!("DEVELOPMENT ONLY: {w}");
        warnings.push(w);
    }
    if config.identity.accept_any_issuer {
        // Allowed anywhere (migrations need it), but never quietly: logged by `device_trust`, and here
        // for `/readyz`.
        warnings.push(
            "identity.accept_any_issuer is on: any certificate, self-signed included, can enroll as a \
             new device; set identity.device_ca_file for the CA devices are migrated from instead"
                .to_string(),
        );
    }
    Ok(warnings)
}

/// Signed profiles point devices here: the configured public URL, or (loopback only, checked by
/// `production_check`) the address we listen on. Never a request's Host or forwarding headers.
fn base_url(config: &Config, local: SocketAddr) -> String {
    match &config.enroll.public_url {
        Some(u) => u.expose_secret().trim_end_matches('/').to_string(),
        None => {
            let scheme = if config.tls.enabled() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{local}")
        }
    }
}

/// The plugin host with the stored plugins, and those of `plugins.dir`, loaded.
async fn plugin_host(
    config: &Config,
    storage: &Storage,
    clock: &SharedClock,
    metrics: &Arc<Metrics>,
) -> Result<Arc<PluginHost>, StartError> {
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
    Ok(plugins)
}

/// The push service with its stored certificates installed: sending through `pusher`, or through APNs
/// (which then receives every certificate installed later).
async fn push_service(
    config: &Config,
    pusher: Option<Arc<dyn Pusher>>,
    secret: &str,
    storage: &Storage,
    clock: &SharedClock,
    metrics: &Arc<Metrics>,
) -> Result<Arc<PushService>, StartError> {
    let (pusher, sink): (Arc<dyn Pusher>, Option<Arc<dyn CertificateSink>>) = match pusher {
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
    let sealer = KeySealer::new(secret).map_err(|e| StartError::Push(e.to_string()))?;
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
    Ok(push)
}

/// Installs each push certificate uploaded or loaded in the APNs sender.
struct ApnsSink(Arc<ApnsPusher>);

impl CertificateSink for ApnsSink {
    fn install(&self, cert: &PushCertificate) -> Result<(), String> {
        self.0.set_certificate(cert).map_err(|e| e.to_string())
    }
}

/// Device identities must chain to the SCEP CA or `identity.device_ca_file`, unless the admin has
/// explicitly accepted any issuer (said loudly at every start).
fn device_trust(
    config: &IdentityConfig,
    scep_ca: &KeyPair,
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

/// The secret that seals push keys: configured, or generated once into the data dir (0600) for a single
/// development server. Production sets `push.key_secret` so the key never sits beside the data.
fn seal_secret(config: &Config) -> Result<String, StartError> {
    if let Some(s) = &config.push.key_secret {
        return Ok(s.expose_secret().to_string());
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
