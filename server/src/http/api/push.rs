//! Push: explicit pushes (`commands:write`) and push certificates (`admin`).

use super::body as json_body;
use crate::http::auth::{Admin, Auth, CommandsWrite};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::push::cert::PushCertificate;
use crate::push::service::{CertInfo, PushResult};
use crate::storage::enqueue::targets;
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The most channels one explicit push wakes: it is sent while the caller waits.
pub const MAX_PUSH_IDS: usize = 10_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// Enrollment ids to wake: with `groups`' devices, 1 to 10000 channels.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::push_ids)]
    ids: Vec<String>,
    /// Group ids: their devices' device channels are woken too.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::group_ids)]
    groups: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushResults {
    results: BTreeMap<String, PushResult>,
}

/// Push enrollments now (an MDM push wakes the device; it then fetches its queue).
#[utoipa::path(post, path = "/api/v1/push", tag = "push", operation_id = "push", request_body = PushBody,
    responses((status = 200, body = PushResults), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:write"])))]
pub async fn push(
    _auth: Auth<CommandsWrite>,
    body: super::Body<PushBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    // Bounded as given, before any lookup; and again once the groups' devices are added.
    if b.ids.len() > MAX_PUSH_IDS {
        return Err(ApiError::BadRequest(format!(
            "give at most {MAX_PUSH_IDS} ids ({} given)",
            b.ids.len()
        )));
    }
    super::channel_ids(b.ids.iter().map(String::as_str))?;
    let ids = targets(&state.storage.read(), b.ids, &b.groups).await?;
    if ids.is_empty() || ids.len() > MAX_PUSH_IDS {
        return Err(ApiError::BadRequest(format!(
            "give 1 to {MAX_PUSH_IDS} ids, groups' devices included ({} given); \
             a command to a larger target pushes through the push worker",
            ids.len()
        )));
    }
    let results = state.push.push_now(&ids).await?;
    Ok(HttpResponse::Ok().json(PushResults { results }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertUpload {
    /// PEM certificate (with `key_pem`), or
    cert_pem: Option<String>,
    /// PEM private key (PKCS#1 or PKCS#8; encrypted ones need `password`).
    key_pem: Option<String>,
    /// A PKCS#12 (.p12) file, base64 (with `password`).
    pkcs12_base64: Option<String>,
    password: Option<String>,
}

/// Upload an APNs MDM push certificate (PEM certificate and key, or PKCS#12). Its topic is the certificate's
/// UID; a certificate for a topic already present replaces it (yearly renewal).
#[utoipa::path(post, path = "/api/v1/push-certs", tag = "push", request_body = CertUpload,
    responses((status = 201, body = CertInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn upload_cert(
    _auth: Auth<Admin>,
    body: super::Body<CertUpload>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    let now = state.clock.now_ms() / 1000;
    let cert = match (b.cert_pem, b.key_pem, b.pkcs12_base64) {
        (Some(c), Some(k), None) => {
            PushCertificate::from_pem(c.as_bytes(), k.as_bytes(), b.password.as_deref(), now)
        }
        (None, None, Some(p12)) => {
            let der = STANDARD
                .decode(p12.trim())
                .map_err(|e| ApiError::BadRequest(format!("pkcs12_base64: {e}")))?;
            PushCertificate::from_pkcs12(&der, b.password.as_deref().unwrap_or(""), now)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give cert_pem and key_pem, or pkcs12_base64 (with password)".into(),
            ))
        }
    }
    .map_err(|e| ApiError::BadRequest(format!("push certificate refused: {e}")))?;
    Ok(HttpResponse::Created().json(state.push.store(cert).await?))
}

/// Push certificates with their expiry.
#[utoipa::path(get, path = "/api/v1/push-certs", tag = "push",
    responses((status = 200, body = Vec<CertInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn certs(
    _auth: Auth<Admin>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.push.certificates().await?))
}
