//! actix-web: the device endpoints, the admin API, NanoMDM-compatible endpoints and operations endpoints.
//! The only module that knows actix.

pub(crate) mod api;
mod auth;
pub(crate) mod enroll;
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
use crate::clock::SharedClock;
use crate::config::Config;
use crate::enroll::EnrollService;
use crate::identity::{DeviceTrust, SignatureVerifier};
use crate::metrics::Metrics;
use crate::plugins::PluginHost;
use crate::push::service::PushService;
use crate::queue::QueueService;
use crate::scep::ScepService;
use crate::storage::Storage;
use actix_web::{web, App, HttpServer};
use openssl::ssl::SslAcceptorBuilder;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// What [`server`] returns and what `AppState` names headers with, for the start-up that wires them.
pub use actix_web::{dev::Server, http::header::HeaderName};

/// Everything a request handler may reach.
pub struct AppState {
    pub(crate) storage: Storage,
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
    pub trusted_proxies: crate::config::TrustedProxies,
    /// What a development server lacks to be run in production (`Config::production_check`), shown by
    /// `/readyz` as warnings.
    pub setup_warnings: Vec<String>,
    /// Anonymous `/enroll` downloads per client address (`enroll.anonymous_per_client_per_minute`).
    pub enroll_rate: enroll::ClientRate,
    /// `Mdm-Signature` verification, with its cache of verified signatures.
    pub signatures: SignatureVerifier,
    /// Which policy bundles are accepted (`policies.trusted_signers`, `policies.require_signature`).
    pub policy_trust: crate::policies::trust::Trust,
    /// Policy rollouts: activation, their state, an admin's controls.
    pub rollouts: Arc<crate::policies::rollout::Rollouts>,
}

/// The actix server for `state` on `listener`, serving once awaited: every route, the middleware, the
/// limits of `config.http`, and TLS with `tls` when given.
pub fn server(
    state: Arc<AppState>,
    listener: TcpListener,
    config: &Config,
    tls: Option<SslAcceptorBuilder>,
) -> std::io::Result<Server> {
    let state = web::Data::from(state);
    let max_body = config.max_body_bytes;
    let h = &config.http;
    let deadlines = limits::Deadlines {
        body: Duration::from_secs(h.body_timeout_secs),
        request: Duration::from_secs(h.request_timeout_secs),
    };
    let conns = limits::ConnLimits::new(
        h.max_connections,
        h.max_connections_per_peer,
        state.trusted_proxies.clone(),
    );
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
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
    .client_request_timeout(Duration::from_secs(h.header_timeout_secs))
    // actix's own bound is per worker and makes new connections wait in the backlog: a backstop
    // behind `http.max_connections`, which answers over-limit connections at once.
    .max_connections(h.max_connections.saturating_add(64));
    server = match tls {
        Some(acceptor) => server.listen_openssl(listener, acceptor),
        None => server.listen(listener),
    }?;
    if let Some(w) = config.workers {
        server = server.workers(w.max(1));
    }
    Ok(server.run())
}
