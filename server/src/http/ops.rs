//! Operations: liveness, readiness, Prometheus metrics, the OpenAPI document.

use super::openapi::document;
use super::AppState;
use actix_web::{web, HttpResponse};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
    // `/api/openapi.json` is routed with the rest of `/api` (`api::routes`), whose unknown paths and
    // wrong methods are answered in the API's error shape.
}

/// The process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: the database answers.
/// The first-run hint a server without a push certificate shows.
const NO_PUSH_CERTIFICATE: &str = "no APNs push certificate: devices cannot be woken to fetch their commands; upload one with POST /api/v1/push-certs (README, Push)";

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.storage.ping().await {
        Ok(()) => {
            // Ready, with warnings an operator must act on (a push certificate about to expire stops every
            // device from being woken).
            let mut warnings = state.push.expiring(30).await.unwrap_or_default();
            if state.push.certificates().await.is_ok_and(|c| c.is_empty()) {
                warnings.push(NO_PUSH_CERTIFICATE.to_string());
            }
            // A development server (loopback only) says what production would refuse to start without.
            warnings.extend(state.setup_warnings.iter().cloned());
            HttpResponse::Ok().json(serde_json::json!({"status": "ready", "warnings": warnings}))
        }
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            HttpResponse::ServiceUnavailable().json(
                serde_json::json!({"status": "unavailable", "reason": "database unreachable"}),
            )
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}

/// The OpenAPI document of the admin API.
pub(super) async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}
