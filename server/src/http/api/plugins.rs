//! Plugin management: upload (component + manifest + config + approvals), list, get, enable/disable,
//! reorder, dry-run, configure, delete, and the plugin audit log. Needs the `admin` scope.

use super::{body as json_body, page_limit, query};
use crate::clock::to_rfc3339;
use crate::http::auth::{Admin, Auth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::plugins::admin::Upload;
use crate::plugins::{Capability, Manifest};
use crate::storage::plugin_audit::{self, AuditFilter, AuditRow};
use crate::storage::plugins::{self as repo, Settings};
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadBody {
    manifest: Manifest,
    /// The component (`.wasm`), base64.
    wasm_base64: String,
    /// Configuration; omitted keeps the current one (or the manifest's default for a new plugin).
    #[schema(value_type = Option<Object>)]
    config: Option<serde_json::Value>,
    /// The capabilities you approve; they must cover the manifest's.
    approve_capabilities: Vec<Capability>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginInfo {
    id: String,
    version: String,
    description: String,
    enabled: bool,
    priority: i32,
    dry_run: bool,
    revision: i64,
    wasm_sha256: String,
    wasm_bytes: usize,
    approved_capabilities: Vec<String>,
    quarantined_at: Option<String>,
    quarantine_reason: Option<String>,
    #[schema(value_type = Object)]
    manifest: serde_json::Value,
    #[schema(value_type = Object)]
    config: serde_json::Value,
    created_at: String,
    updated_at: String,
}

fn info(p: &repo::Listed) -> PluginInfo {
    PluginInfo {
        id: p.id.clone(),
        version: p.version.clone(),
        description: p.description.clone(),
        enabled: p.enabled,
        priority: p.priority,
        dry_run: p.dry_run,
        revision: p.revision,
        wasm_sha256: p.wasm_sha256.clone(),
        wasm_bytes: p.wasm_bytes as usize,
        approved_capabilities: p.approved.split_whitespace().map(str::to_string).collect(),
        quarantined_at: p.quarantined_at.map(to_rfc3339),
        quarantine_reason: p.quarantine_reason.clone(),
        manifest: serde_json::from_str(&p.manifest).unwrap_or_default(),
        config: serde_json::from_str(&p.config).unwrap_or_default(),
        created_at: to_rfc3339(p.created_at),
        updated_at: to_rfc3339(p.updated_at),
    }
}

async fn find(state: &AppState, id: &str) -> Result<repo::Listed, ApiError> {
    repo::find_listed(&state.storage.read(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("plugin {id} not found")))
}

/// Upload a plugin, or a new version of one (swapped in atomically; calls in flight finish on the old one).
#[utoipa::path(post, path = "/api/v1/plugins", tag = "plugins", operation_id = "upload_plugin", request_body = UploadBody,
    responses((status = 200, body = PluginInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn upload(
    _auth: Auth<Admin>,
    body: super::Body<UploadBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    let wasm = STANDARD
        .decode(b.wasm_base64.trim())
        .map_err(|e| ApiError::BadRequest(format!("wasm_base64: {e}")))?;
    let stored = state
        .plugins
        .upload(Upload {
            manifest: b.manifest,
            wasm,
            config: b.config,
            approve: b.approve_capabilities,
        })
        .await?;
    Ok(HttpResponse::Ok().json(info(&stored)))
}

/// List plugins in run order.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", operation_id = "list_plugins",
    responses((status = 200, body = Vec<PluginInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn list(
    _auth: Auth<Admin>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let all = repo::list(&state.storage.read()).await?;
    Ok(HttpResponse::Ok().json(all.iter().map(info).collect::<Vec<_>>()))
}

/// One plugin.
#[utoipa::path(get, path = "/api/v1/plugins/{id}", tag = "plugins", operation_id = "get_plugin",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginInfo), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn get(
    _auth: Auth<Admin>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(info(&find(&state, &id).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Enabling also lifts a quarantine.
    enabled: Option<bool>,
    /// Lower runs first (ties by id), -10000 to 10000.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = -10000, maximum = 10000)]
    priority: Option<i32>,
    /// Compute and audit actions without applying them; decisions are not enforced.
    dry_run: Option<bool>,
}

/// Enable, disable, reorder, or switch dry-run.
#[utoipa::path(patch, path = "/api/v1/plugins/{id}", tag = "plugins", operation_id = "update_plugin", request_body = SettingsBody,
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginInfo), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn update(
    _auth: Auth<Admin>,
    id: web::Path<String>,
    body: super::Body<SettingsBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    if b.priority.is_some_and(|p| !(-10_000..=10_000).contains(&p)) {
        return Err(ApiError::BadRequest(
            "priority must be between -10000 and 10000".into(),
        ));
    }
    state
        .plugins
        .update(
            &id,
            Settings {
                enabled: b.enabled,
                priority: b.priority,
                dry_run: b.dry_run,
                config: None,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(info(&find(&state, &id).await?)))
}

/// Set a plugin's configuration; the plugin's validate-config must accept it.
#[utoipa::path(put, path = "/api/v1/plugins/{id}/config", tag = "plugins", operation_id = "set_plugin_config", request_body = Object,
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 200, body = PluginInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn set_config(
    _auth: Auth<Admin>,
    id: web::Path<String>,
    body: super::Body<serde_json::Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let config = json_body(body)?;
    state.plugins.set_config(&id, config).await?;
    Ok(HttpResponse::Ok().json(info(&find(&state, &id).await?)))
}

/// Delete a plugin.
#[utoipa::path(delete, path = "/api/v1/plugins/{id}", tag = "plugins", operation_id = "delete_plugin",
    params(("id" = String, Path, description = "Plugin id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn delete(
    _auth: Auth<Admin>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.plugins.delete(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    plugin_id: Option<String>,
    device_id: Option<String>,
    /// decide-enrollment, on-checkin, on-command-result, on-schedule or validate-config.
    hook: Option<String>,
    /// `next_cursor` of the previous page (newest first).
    cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    id: i64,
    plugin_id: String,
    hook: String,
    event_id: String,
    device_id: Option<String>,
    enrollment_id: Option<String>,
    kind: String,
    outcome: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
    next_cursor: Option<i64>,
}

fn entry(r: AuditRow) -> AuditEntry {
    AuditEntry {
        id: r.id,
        plugin_id: r.plugin_id,
        hook: r.hook,
        event_id: r.event_id,
        device_id: r.device_id,
        enrollment_id: r.enrollment_id,
        kind: r.kind,
        outcome: r.outcome,
        detail: serde_json::from_str(&r.detail).unwrap_or_default(),
        created_at: to_rfc3339(r.created_at),
    }
}

/// The plugin audit log, newest first, filtered by plugin, device and hook.
#[utoipa::path(get, path = "/api/v1/plugin-audit", tag = "plugins", operation_id = "plugin_audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn audit(
    _auth: Auth<Admin>,
    q: Result<web::Query<AuditQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let rows = plugin_audit::list(
        &state.storage.read(),
        &AuditFilter {
            plugin_id: q.plugin_id,
            device_id: q.device_id,
            hook: q.hook,
            before_id: q.cursor,
            limit,
        },
    )
    .await?;
    let next_cursor = super::next_cursor(&rows, limit, |r| r.id);
    Ok(HttpResponse::Ok().json(AuditPage {
        entries: rows.into_iter().map(entry).collect(),
        next_cursor,
    }))
}
