//! NanoMDM-compatible `PUT /v1/enqueue/{id,id,...}`: a raw command plist body, HTTP basic auth with an API key
//! as the password, and NanoMDM's result JSON. Tooling written for NanoMDM works unchanged.
//! One deviation: when every id fails, NanoMDM answers 500; we answer 422, as nothing failed on our side.

use super::auth::{Auth, CommandsWrite};
use super::error::ApiError;
use super::AppState;
use crate::queue::{CommandSpec, EnqueueRequest, EnqueueStatus};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/enqueue/{ids}", web::put().to(enqueue))
        .route("/v1/push/{ids}", web::get().to(push))
        .route("/v1/push/{ids}", web::put().to(push))
        .route("/v1/pushcert", web::put().to(pushcert));
}

fn split_ids(ids: &str) -> Vec<String> {
    ids.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Serialize)]
struct PushStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    push_result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push_error: Option<String>,
}

/// NanoMDM's push: per-id push_result or push_error; 207 when some failed, 422 when all did.
async fn push(
    _auth: Auth<CommandsWrite>,
    ids: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ids = split_ids(&ids);
    if ids.is_empty() {
        return Err(ApiError::BadRequest("no ids".into()));
    }
    super::api::channel_ids(ids.iter().map(String::as_str))?;
    let results = state.push.push_now(&ids).await?;
    let mut status = BTreeMap::new();
    let mut failed = 0;
    for (id, r) in results {
        let ok = r.status == crate::push::service::PushStatus::Sent;
        failed += usize::from(!ok);
        status.insert(
            id,
            PushStatus {
                push_result: ok.then(|| "sent".to_string()),
                push_error: (!ok).then(|| {
                    format!(
                        "{:?}{}",
                        r.status,
                        r.detail.map(|d| format!(": {d}")).unwrap_or_default()
                    )
                }),
            },
        );
    }
    let code = if failed == 0 {
        StatusCode::OK
    } else if failed < status.len() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(HttpResponse::build(code).json(serde_json::json!({ "status": status })))
}

/// NanoMDM's push certificate upload: the PEM certificate and PEM private key concatenated in the body.
async fn pushcert(
    _auth: Auth<crate::http::auth::Admin>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let text = String::from_utf8_lossy(&body);
    let (cert, key) = split_pem(&text).ok_or_else(|| {
        ApiError::BadRequest("the body must hold a PEM certificate and a PEM private key".into())
    })?;
    let cert = crate::push::cert::PushCertificate::from_pem(
        cert.as_bytes(),
        key.as_bytes(),
        None,
        state.clock.now_ms() / 1000,
    )
    .map_err(|e| ApiError::BadRequest(format!("push certificate refused: {e}")))?;
    let info = state.push.store(cert).await?;
    Ok(HttpResponse::Ok()
        .json(serde_json::json!({"topic": info.topic, "not_after": info.not_after})))
}

/// The certificate block(s) and the private-key block of a PEM bundle.
fn split_pem(text: &str) -> Option<(String, String)> {
    let mut cert = String::new();
    let mut key = String::new();
    let mut current: Option<&mut String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            current = if line.contains("PRIVATE KEY") {
                Some(&mut key)
            } else if line.contains("CERTIFICATE") {
                Some(&mut cert)
            } else {
                None
            };
        }
        if let Some(buf) = current.as_deref_mut() {
            buf.push_str(line);
            buf.push('\n');
        }
        if line.starts_with("-----END ") {
            current = None;
        }
    }
    (!cert.is_empty() && !key.is_empty()).then_some((cert, key))
}

#[derive(Deserialize)]
struct EnqueueQuery {
    nopush: Option<String>,
}

#[derive(Serialize)]
struct IdStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    command_error: Option<String>,
}

#[derive(Serialize)]
struct ApiResult {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_push: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<String, IdStatus>,
}

async fn enqueue(
    auth: Auth<CommandsWrite>,
    ids: web::Path<String>,
    q: Result<web::Query<EnqueueQuery>, actix_web::Error>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = super::api::query(q)?;
    let ids = split_ids(&ids);
    super::api::channel_ids(ids.iter().map(String::as_str))?;
    let no_push = q.nopush.as_deref().is_some_and(|v| !v.is_empty());
    let outcome = match state
        .queue
        .enqueue(EnqueueRequest {
            ids,
            groups: Vec::new(),
            command: CommandSpec::Raw(body.to_vec()),
            priority: 0,
            ttl_seconds: None,
            source: format!("nanomdm-api:{}", auth.principal.name),
            no_push,
        })
        .await
    {
        Ok(o) => {
            if !no_push {
                state.push.wake();
            }
            o
        }
        Err(crate::queue::QueueError::Storage(e)) => return Err(e.into()),
        Err(e) => {
            return Ok(HttpResponse::BadRequest().json(ApiResult {
                no_push,
                command_error: Some(e.to_string()),
                command_uuid: None,
                request_type: None,
                status: BTreeMap::new(),
            }))
        }
    };
    let mut status = BTreeMap::new();
    let mut failed = 0;
    for (id, r) in &outcome.results {
        let command_error = match r.status {
            EnqueueStatus::Queued => None,
            EnqueueStatus::Unknown => Some("unknown enrollment".to_string()),
            EnqueueStatus::Disabled => Some("enrollment is disabled".to_string()),
            EnqueueStatus::MissingUnlockToken => Some("no UnlockToken for this device".to_string()),
        };
        failed += usize::from(command_error.is_some());
        if command_error.is_some() {
            status.insert(id.clone(), IdStatus { command_error });
        }
    }
    let code = if failed == 0 {
        StatusCode::OK
    } else if failed < outcome.results.len() {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(HttpResponse::build(code).json(ApiResult {
        no_push,
        command_error: None,
        command_uuid: outcome.command_uuids.first().cloned(),
        request_type: Some(outcome.request_type),
        status,
    }))
}
