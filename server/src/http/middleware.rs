//! Per-request tracing span with a request id, echoed in `X-Request-Id`, the access log line, and latency
//! metrics by route.

use super::AppState;
use crate::apikeys::Principal;
use crate::storage::audit_log::{self, NewEntry};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use tracing::Instrument;

/// Every authenticated admin request that changes something goes to the audit log: who (the key), what (the
/// route), which (the path), and how it ended. Never the body: it may hold keys and certificates.
async fn audit_admin_action<B>(
    state: &AppState,
    res: &ServiceResponse<B>,
    route: &str,
    request_id: &str,
) {
    let method = res.request().method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return;
    }
    let Some(principal) = res.request().extensions().get::<Principal>().cloned() else {
        return;
    };
    let entry = NewEntry {
        at: state.clock.now_ms(),
        actor: format!("api-key:{}", principal.key_id),
        action: format!("{method} {route}"),
        target: Some(res.request().path().to_string()),
        detail: serde_json::json!({
            "status": res.status().as_u16(),
            "key_name": principal.name,
            "request_id": request_id,
        }),
    };
    if let Err(e) = audit_log::append(&state.storage, vec![entry]).await {
        tracing::error!(error = %e, "writing the audit log failed");
    }
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %req.method(),
        route = %route,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        otel.name = %format_args!("{} {route}", req.method()),
        otel.kind = "server",
        http.response.status_code = tracing::field::Empty,
    );
    if route.starts_with("/api") {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(parent) = header("traceparent") {
            crate::traces::continue_from(&span, parent, header("tracestate"));
        }
    }
    if let Some((trace_id, span_id)) = crate::traces::ids(&span) {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    span.record("http.response.status_code", status);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // The access log: every admin request and every refusal at INFO (a failed upload leaves a trace);
    // a device's successful check-ins, the bulk of the traffic, at DEBUG.
    span.in_scope(|| {
        if status >= 400 || route.starts_with("/api") {
            tracing::info!(status, elapsed_ms, "request")
        } else {
            tracing::debug!(status, elapsed_ms, "request")
        }
    });
    if let Some(state) = &state {
        state
            .metrics
            .observe_request(&route, started.elapsed().as_secs_f64());
    }
    if let Some(state) = &state {
        audit_admin_action(state, &res, &route, &request_id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    Ok(res)
}
