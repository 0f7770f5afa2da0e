//! Enrollment: one-time enrollment tokens and SCEP challenges (`enroll`), the certificates our CA issued and
//! identities about to expire (`devices:read`), revocation (`admin`).

use super::{body as json_body, page_limit, query};
use crate::clock::to_rfc3339;
use crate::http::auth::{Admin, Auth, DevicesRead, Enroll};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::storage::devices;
use crate::storage::issued_certs::{self, IssuedCertificate};
use crate::storage::secrets::{self, OneTimeSecret, SecretKind, SecretScope};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Only the device with this serial number may use the token (it must send its signed device
    /// information, as Automated Device Enrollment does), and only it may authenticate with the identity.
    #[schema(pattern = r"\S")]
    serial_number: Option<String>,
    /// Lifetime in seconds (default `enroll.token_ttl_secs`, 300), at most 30 days.
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_seconds: Option<u64>,
    /// A note to recognise the token by.
    label: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    id: String,
    serial_number: Option<String>,
    label: Option<String>,
    created_at: String,
    expires_at: String,
    used_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    /// The token; shown only now.
    token: String,
    /// The enrollment link to give the user.
    url: String,
}

fn token_info(t: OneTimeSecret) -> TokenInfo {
    TokenInfo {
        id: t.id,
        serial_number: t.serial_number,
        label: t.label,
        created_at: to_rfc3339(t.created_at),
        expires_at: to_rfc3339(t.expires_at),
        used_at: t.used_at.map(to_rfc3339),
    }
}

const MAX_TTL_SECS: u64 = 30 * 86_400;

/// The longest expiry window a listing looks ahead: a hundred years is longer than any certificate, and
/// a bound keeps a mistyped number a 400 rather than a silent "everything".
const MAX_WINDOW_DAYS: u32 = 36_500;

fn window_days(name: &str, days: u32) -> Result<u32, ApiError> {
    if days > MAX_WINDOW_DAYS {
        return Err(ApiError::BadRequest(format!(
            "{name} must be 0 to {MAX_WINDOW_DAYS}"
        )));
    }
    Ok(days)
}

/// Create a one-time enrollment token (`/enroll?token=...`).
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "enrollment", request_body = TokenRequest,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["enroll"])))]
pub async fn create_token(
    _auth: Auth<Enroll>,
    body: super::Body<TokenRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    if b.ttl_seconds.is_some_and(|t| t == 0 || t > MAX_TTL_SECS) {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be 1 to {MAX_TTL_SECS}"
        )));
    }
    if b.serial_number
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        return Err(ApiError::BadRequest("serial_number is empty".into()));
    }
    let (t, token) = state
        .enroll
        .create_token(b.serial_number, b.ttl_seconds, b.label)
        .await?;
    // The server's own URL (public_url, or the loopback listen address in development), never the request's
    // Host: the link is handed to users, and leads to a signed profile.
    Ok(HttpResponse::Created().json(CreatedToken {
        info: token_info(t),
        url: format!("{}/enroll?token={token}", state.enroll.base_url()),
        token,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// Include used and expired tokens.
    all: Option<bool>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// Enrollment tokens, newest first (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "enrollment", params(TokenListQuery),
    responses((status = 200, body = Vec<TokenInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["enroll"])))]
pub async fn list_tokens(
    _auth: Auth<Enroll>,
    q: Result<web::Query<TokenListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let tokens = secrets::list(
        &state.storage.read(),
        SecretKind::Token,
        q.all.unwrap_or(false),
        state.clock.now_ms(),
        page_limit(q.limit)?,
    )
    .await?;
    Ok(HttpResponse::Ok().json(tokens.into_iter().map(token_info).collect::<Vec<_>>()))
}

/// Withdraw an unused enrollment token.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["enroll"])))]
pub async fn revoke_token(
    _auth: Auth<Enroll>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if secrets::revoke(&state.storage, SecretKind::Token, &id, state.clock.now_ms()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "no unused enrollment token {id}"
        )))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// Only a device with this serial number may authenticate with the identity issued against it.
    serial_number: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedChallenge {
    /// A one-time SCEP challengePassword, valid for `scep.challenge_ttl_secs`.
    challenge: String,
}

/// A one-time SCEP challenge, for profiles built elsewhere or other SCEP clients.
#[utoipa::path(post, path = "/api/v1/scep-challenges", tag = "enrollment", request_body = ChallengeRequest,
    responses((status = 201, body = CreatedChallenge), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["enroll"])))]
pub async fn create_challenge(
    _auth: Auth<Enroll>,
    body: super::Body<ChallengeRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    let challenge = state
        .scep
        .new_challenge(SecretScope {
            serial_number: b.serial_number,
            label: Some("api".into()),
            ..Default::default()
        })
        .await?;
    Ok(HttpResponse::Created().json(CreatedChallenge { challenge }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CertListQuery {
    /// Only unrevoked certificates expiring within this many days (0 to 36500).
    #[param(maximum = 36500)]
    expiring_within_days: Option<u32>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateInfo {
    /// Serial number, uppercase hex.
    serial: String,
    /// SHA-256 of the certificate (hex).
    fingerprint: String,
    subject: String,
    not_before: String,
    not_after: String,
    issued_at: String,
    /// The device that authenticated with it.
    device_id: Option<String>,
    /// The certificate this one renewed.
    renewal_of: Option<String>,
    pinned_serial_number: Option<String>,
    revoked_at: Option<String>,
}

fn cert_info(c: IssuedCertificate) -> CertificateInfo {
    CertificateInfo {
        serial: c.serial,
        fingerprint: c.fingerprint,
        subject: c.subject,
        not_before: to_rfc3339(c.not_before),
        not_after: to_rfc3339(c.not_after),
        issued_at: to_rfc3339(c.issued_at),
        device_id: c.device_id,
        renewal_of: c.renewal_of,
        pinned_serial_number: c.pinned_serial_number,
        revoked_at: c.revoked_at.map(to_rfc3339),
    }
}

/// Identity certificates our SCEP CA issued, soonest expiry first.
#[utoipa::path(get, path = "/api/v1/identity-certificates", tag = "enrollment", params(CertListQuery),
    responses((status = 200, body = Vec<CertificateInfo>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list_certificates(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<CertListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let days = q
        .expiring_within_days
        .map(|d| window_days("expiring_within_days", d))
        .transpose()?;
    let before = days.map(|d| state.clock.now_ms() + i64::from(d) * 86_400_000);
    let certs = issued_certs::list(&state.storage.read(), before, page_limit(q.limit)?).await?;
    Ok(HttpResponse::Ok().json(certs.into_iter().map(cert_info).collect::<Vec<_>>()))
}

/// Revoke an identity certificate: the device bound to it can no longer check in or authenticate with it,
/// nor renew it.
#[utoipa::path(post, path = "/api/v1/identity-certificates/{serial}/revoke", tag = "enrollment",
    params(("serial" = String, Path, description = "Serial number (hex)")),
    responses((status = 200, body = CertificateInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn revoke_certificate(
    _auth: Auth<Admin>,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let serial = path.into_inner();
    match state.scep.revoke(&serial).await? {
        Some(c) => Ok(HttpResponse::Ok().json(cert_info(c))),
        None => Err(ApiError::NotFound(format!(
            "no unrevoked certificate with serial {serial}"
        ))),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExpiringQuery {
    /// Window in days, 0 to 36500 (default 30).
    #[param(maximum = 36500)]
    days: Option<u32>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiringIdentity {
    device_id: String,
    serial_number: Option<String>,
    /// SHA-256 of the identity certificate (hex).
    fingerprint: Option<String>,
    not_after: Option<String>,
    /// When a renewal profile was last queued.
    renewal_requested_at: Option<String>,
}

/// Devices whose identity certificate (from any CA) expires within the window, soonest first.
#[utoipa::path(get, path = "/api/v1/identities/expiring", tag = "enrollment", params(ExpiringQuery),
    responses((status = 200, body = Vec<ExpiringIdentity>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn expiring(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<ExpiringQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let days = window_days("days", q.days.unwrap_or(30))?;
    let before = state.clock.now_ms() + i64::from(days) * 86_400_000;
    // i64::MAX as the retry cut-off: every device in the window, renewal queued or not.
    let list = devices::renewal_candidates(
        &state.storage.read(),
        before,
        i64::MAX,
        page_limit(q.limit)?,
    )
    .await?;
    Ok(HttpResponse::Ok().json(
        list.into_iter()
            .map(|d| ExpiringIdentity {
                device_id: d.id,
                serial_number: d.serial_number,
                fingerprint: d.identity_fingerprint,
                not_after: d.identity_not_after.map(to_rfc3339),
                renewal_requested_at: d.renewal_requested_at.map(to_rfc3339),
            })
            .collect::<Vec<_>>(),
    ))
}
