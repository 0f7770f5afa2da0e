//! Event sinks: list them (the configuration file's and the API's), create or replace one, delete one.
//! Needs the `admin` scope. Where a sink posts and its headers' values are secrets: never answered.

use crate::clock::to_rfc3339;
use crate::config::SinkConfig;
use crate::http::auth::{Admin, Auth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::plugins::sinks::Origin;
use crate::storage::sinks as repo;
use actix_web::{web, HttpResponse};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A sink as `PUT /api/v1/sinks/{name}` takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkBody {
    /// Where events are POSTed: an http or https URL; may carry credentials, kept sealed.
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^[Hh][Tt][Tt][Pp][Ss]?://"
    )]
    url: String,
    /// Headers sent with each event (e.g. an authorization token), at most 32; their values are kept
    /// sealed.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// How long a POST may take (default 10).
    #[schema(minimum = 1, maximum = 300)]
    timeout_secs: Option<u64>,
    /// Events per POST (default 1: each event is a POST of its own payload).
    #[schema(minimum = 1, maximum = 200)]
    batch_max_events: Option<usize>,
}

/// A sink as listed: never its credentials or header values.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkView {
    name: String,
    /// `config`: set in the configuration file (change it there); `api`: managed here.
    #[schema(pattern = "^(config|api)$")]
    origin: &'static str,
    /// The URL, its password and secret-looking query values redacted.
    url: String,
    /// The names of the headers sent.
    headers: Vec<String>,
    timeout_secs: u64,
    batch_max_events: usize,
    /// For sinks of the API: who changed it last, and when.
    updated_by: Option<String>,
    updated_at: Option<String>,
}

fn view(name: &str, origin: Origin, sink: &SinkConfig, row: Option<&repo::StoredSink>) -> SinkView {
    SinkView {
        name: name.to_string(),
        origin: match origin {
            Origin::Config => "config",
            Origin::Api => "api",
        },
        url: sink.url.redacted(),
        headers: sink.headers.keys().cloned().collect(),
        timeout_secs: sink.timeout_secs,
        batch_max_events: sink.batch_max_events,
        updated_by: row.map(|r| r.updated_by.clone()),
        updated_at: row.map(|r| to_rfc3339(r.updated_at)),
    }
}

/// Every sink as listed (`only`: just that one), from one snapshot of the sinks and one read of the
/// stored rows.
async fn views(state: &AppState, only: Option<&str>) -> Result<Vec<SinkView>, ApiError> {
    let rows = repo::list(&state.storage.read()).await?;
    Ok(state
        .plugins
        .sinks()
        .entries()
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
        .map(|(name, (origin, sink))| {
            let row = (*origin == Origin::Api)
                .then(|| rows.iter().find(|r| &r.name == name))
                .flatten();
            view(name, *origin, sink, row)
        })
        .collect())
}

/// Every event sink: the configuration file's and the API's.
#[utoipa::path(get, path = "/api/v1/sinks", tag = "sinks", operation_id = "list_sinks",
    responses((status = 200, body = Vec<SinkView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn list(
    _auth: Auth<Admin>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let out = views(&state, None).await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Create or replace a sink. Plugins may name it in their manifests once it exists; every replica
/// posts to it from its next plugin reload (`plugins.reload_interval_secs`).
#[utoipa::path(put, path = "/api/v1/sinks/{name}", tag = "sinks", operation_id = "put_sink",
    params(("name" = String, Path, description = "1 to 64 letters, digits, '.', '_' and '-'")),
    request_body = SinkBody,
    responses((status = 200, body = SinkView, description = "replaced"), (status = 201, body = SinkView, description = "created"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a sink of the configuration file")),
    security(("api_key" = ["admin"])))]
pub async fn put(
    auth: Auth<Admin>,
    name: web::Path<String>,
    body: super::Body<SinkBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = super::body(body)?;
    let sink = SinkConfig {
        url: b.url.into(),
        headers: b
            .headers
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
        timeout_secs: b.timeout_secs.unwrap_or(10),
        batch_max_events: b.batch_max_events.unwrap_or(1),
    };
    let now = state.clock.now_ms();
    let created = state
        .plugins
        .put_sink(&name, sink, &auth.actor(), now)
        .await?;
    let shown = views(&state, Some(&name))
        .await?
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("no sink {:?}", name.as_str())))?;
    Ok(if created {
        HttpResponse::Created().json(shown)
    } else {
        HttpResponse::Ok().json(shown)
    })
}

/// Delete a sink of the API's. Refused while a plugin's manifest names it. Events queued for it wait,
/// undelivered, until a sink of that name exists again.
#[utoipa::path(delete, path = "/api/v1/sinks/{name}", tag = "sinks", operation_id = "delete_sink",
    params(("name" = String, Path, description = "1 to 64 letters, digits, '.', '_' and '-'")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a sink of the configuration file, or named by a plugin")),
    security(("api_key" = ["admin"])))]
pub async fn delete(
    auth: Auth<Admin>,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_ms();
    state.plugins.delete_sink(&name, &auth.actor(), now).await?;
    Ok(HttpResponse::NoContent().finish())
}
