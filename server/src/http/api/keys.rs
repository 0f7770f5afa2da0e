//! API keys: create (the secret is shown once), list, revoke. Needs the `admin` scope.

use crate::apikeys::{self, Scope};
use crate::clock::to_rfc3339;
use crate::http::auth::{Admin, Auth};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::storage::api_keys::{self as repo, ApiKey};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1 to 200 characters, not all blank (surrounding blanks are trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfo {
    id: String,
    name: String,
    /// The key's first characters, to recognise it.
    prefix: String,
    scopes: Vec<String>,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// The secret. It is shown only here; the server keeps only its hash.
    key: String,
}

fn info(k: &ApiKey) -> KeyInfo {
    KeyInfo {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.split_whitespace().map(str::to_string).collect(),
        created_at: to_rfc3339(k.created_at),
        last_used_at: k.last_used_at.map(to_rfc3339),
        revoked_at: k.revoked_at.map(to_rfc3339),
    }
}

/// Create an API key.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", operation_id = "create_api_key", request_body = CreateKey,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn create(
    _auth: Auth<Admin>,
    body: super::Body<CreateKey>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = super::body(body)?;
    // Characters, as the message and the document say (not bytes).
    if b.name.trim().is_empty() || b.name.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "name must be 1 to 200 characters".into(),
        ));
    }
    if b.scopes.is_empty() {
        return Err(ApiError::BadRequest("give at least one scope".into()));
    }
    let (rec, key) = apikeys::create(
        &state.storage,
        b.name.trim(),
        &b.scopes,
        state.clock.now_ms(),
    )
    .await?;
    Ok(HttpResponse::Created().json(CreatedKey {
        info: info(&rec),
        key,
    }))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", operation_id = "list_api_keys",
    responses((status = 200, body = Vec<KeyInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn list(
    _auth: Auth<Admin>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let keys = repo::list(&state.storage.read()).await?;
    Ok(HttpResponse::Ok().json(keys.iter().map(info).collect::<Vec<_>>()))
}

/// Revoke an API key.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys", operation_id = "revoke_api_key",
    params(("id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn revoke(
    _auth: Auth<Admin>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if repo::revoke(&state.storage, &id, state.clock.now_ms()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no active key {id}")))
    }
}
