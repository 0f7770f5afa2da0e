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
    cfg.route("/v1/enqueue/{ids}", web::put().to(enqueue));
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
    let ids: Vec<String> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let no_push = q.nopush.as_deref().is_some_and(|v| !v.is_empty());
    let outcome = match state
        .queue
        .enqueue(EnqueueRequest {
            ids,
            command: CommandSpec::Raw(body.to_vec()),
            priority: 0,
            ttl_seconds: None,
            source: format!("nanomdm-api:{}", auth.principal.name),
            no_push,
        })
        .await
    {
        Ok(o) => o,
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
