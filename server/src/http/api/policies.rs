//! Policies and their versions: create and read policies, upload a version's bundle (a zip, as
//! `mdm-server policy pack` makes it), read versions. Reads need `devices:read`, changes `policies:write`.

use super::groups::{positive_group_id, IdPageQuery};
use super::{body as json_body, page_limit, query};
use crate::clock::to_rfc3339;
use crate::http::auth::{Auth, DevicesRead, PoliciesWrite};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::policies::admin;
use crate::policies::rollout::{Activation, Control, Report};
use crate::storage::policies::{self, Policy, VersionSummary};
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most versions one listing answers (newest first).
const MAX_VERSIONS_LISTED: u64 = 1_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicy {
    /// 1 to 128 characters, unique; no control characters, no space at either end.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// The group whose devices the policy is for.
    #[schema(minimum = 1)]
    target_group: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    id: i64,
    name: String,
    target_group: i64,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    policies: Vec<PolicyView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// The label from the bundle's policy.json.
    version: String,
    /// SHA-256 of the bundle's canonical form (docs/POLICIES.md), lowercase hex.
    sha256: String,
    /// The trusted signer's file whose key verified the bundle's signature; null if unsigned.
    signer: Option<String>,
    created_by: String,
    created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionUploaded {
    #[serde(flatten)]
    version: VersionView,
    /// False: this exact bundle was stored before, and nothing was written.
    created: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionDetail {
    #[serde(flatten)]
    version: VersionView,
    /// The bundle's policy.json.
    #[schema(value_type = Object)]
    manifest: serde_json::Value,
    /// Its configuration profiles as read at upload.
    profiles: Vec<crate::policies::profile::Profile>,
}

fn view(p: Policy) -> PolicyView {
    PolicyView {
        id: p.id,
        name: p.name,
        target_group: p.target_group,
        created_at: to_rfc3339(p.created_at),
        updated_at: to_rfc3339(p.updated_at),
    }
}

fn version_view(v: VersionSummary) -> VersionView {
    VersionView {
        version: v.version,
        sha256: v.sha256,
        signer: v.signer,
        created_by: v.created_by,
        created_at: to_rfc3339(v.created_at),
    }
}

async fn find(state: &AppState, id: &str) -> Result<Policy, ApiError> {
    let id = super::positive_id(id, "policy")?;
    policies::find(&state.storage.read(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no policy {id}")))
}

/// Create a policy for a group's devices.
#[utoipa::path(post, path = "/api/v1/policies", tag = "policies", operation_id = "create_policy", request_body = CreatePolicy,
    responses((status = 201, body = PolicyView), (status = 400, body = ErrorBody, description = "Bad input, or no such group"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "The name is taken")),
    security(("api_key" = ["policies:write"])))]
pub async fn create(
    auth: Auth<PoliciesWrite>,
    b: super::Body<CreatePolicy>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(b)?;
    let target = positive_group_id(b.target_group)?;
    let now = state.clock.now_ms();
    let p = admin::create(&state.storage, b.name, target, auth.actor(), now).await?;
    Ok(HttpResponse::Created().json(view(p)))
}

/// Policies, by id.
#[utoipa::path(get, path = "/api/v1/policies", tag = "policies", operation_id = "list_policies", params(IdPageQuery),
    responses((status = 200, body = PolicyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<IdPageQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let found = policies::list(&state.storage.read(), q.cursor, limit).await?;
    let next_cursor = super::next_cursor(&found, limit, |p| p.id);
    Ok(HttpResponse::Ok().json(PolicyList {
        policies: found.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// One policy.
#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "policies", operation_id = "get_policy",
    params(("id" = String, Path, description = "Policy id (a positive integer)")),
    responses((status = 200, body = PolicyView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn get(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(view(find(&state, &id).await?)))
}

/// Upload a version: the body is the bundle (a zip of a folder with policy.json; see docs/POLICIES.md),
/// checked whole — its files, its declarations against Apple's schemas, its signature against
/// `policies.trusted_signers` — before anything is stored. 201 with the version's label and SHA-256; the
/// same bundle again answers 200 with what is stored; the same label with other content is a 409.
#[utoipa::path(post, path = "/api/v1/policies/{id}/versions", tag = "policies", operation_id = "upload_policy_version",
    params(("id" = String, Path, description = "Policy id (a positive integer)")),
    request_body(content = Vec<u8>, content_type = "application/zip", description = "The bundle, at most 16 MiB"),
    responses((status = 201, body = VersionUploaded), (status = 200, body = VersionUploaded, description = "This bundle was stored before"),
        (status = 400, body = ErrorBody, description = "The bundle, a declaration in it, or its signature is refused; the message says why"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The version exists with other content")),
    security(("api_key" = ["policies:write"])))]
pub async fn upload_version(
    auth: Auth<PoliciesWrite>,
    id: web::Path<String>,
    body: Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let p = find(&state, &id).await?;
    let now = state.clock.now_ms();
    let up = admin::upload_version(
        &state.storage,
        p.id,
        body.to_vec(),
        &state.policy_trust,
        auth.actor(),
        now,
    )
    .await?;
    let out = VersionUploaded {
        version: version_view(up.version),
        created: up.created,
    };
    Ok(if out.created {
        HttpResponse::Created().json(out)
    } else {
        HttpResponse::Ok().json(out)
    })
}

/// A policy's versions, newest first (at most 1,000).
#[utoipa::path(get, path = "/api/v1/policies/{id}/versions", tag = "policies", operation_id = "list_policy_versions",
    params(("id" = String, Path, description = "Policy id (a positive integer)")),
    responses((status = 200, body = Vec<VersionView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn versions(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let p = find(&state, &id).await?;
    let found = policies::versions(&state.storage.read(), p.id, MAX_VERSIONS_LISTED).await?;
    let out: Vec<VersionView> = found.into_iter().map(version_view).collect();
    Ok(HttpResponse::Ok().json(out))
}

/// One version, with its manifest. Its stored bundle is read again and its digest recomputed: a
/// mismatch is a 500, never a silently served different version.
#[utoipa::path(get, path = "/api/v1/policies/{id}/versions/{version}", tag = "policies", operation_id = "get_policy_version",
    params(("id" = String, Path, description = "Policy id (a positive integer)"), ("version" = String, Path, description = "The version's label")),
    responses((status = 200, body = VersionDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn version(
    _auth: Auth<DevicesRead>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, label) = path.into_inner();
    let p = find(&state, &id).await?;
    crate::policies::bundle::check_label(&label)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let v = policies::find_version(&state.storage.read(), p.id, &label)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no version {label}")))?;
    let (v, b) = admin::verify_stored(v).await?;
    let manifest = serde_json::to_value(&b.manifest).unwrap_or_default();
    Ok(HttpResponse::Ok().json(VersionDetail {
        version: version_view(VersionSummary::of(v)),
        manifest,
        profiles: b.profiles,
    }))
}

/// Roll a version out: its declarations reach the pilot now, and the rollout is promoted stage by stage
/// (pilot, canary, full) while its gates hold (docs/POLICIES.md). 201 with the rollout; activating the
/// version already rolling out (or rolled out) changes nothing and answers 200 with it. The version's
/// stored bundle is checked against its digest first.
#[utoipa::path(post, path = "/api/v1/policies/{id}/activate", tag = "policies", operation_id = "activate_policy_version",
    params(("id" = String, Path, description = "Policy id (a positive integer)")), request_body = Activation,
    responses((status = 201, body = Report, description = "The rollout started"), (status = 200, body = Report, description = "This version was active already: nothing changed"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such policy or version"),
        (status = 409, body = ErrorBody, description = "Another version is rolling out, or the stored version failed its digest check")),
    security(("api_key" = ["policies:write"])))]
pub async fn activate(
    auth: Auth<PoliciesWrite>,
    id: web::Path<String>,
    b: super::Body<Activation>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let p = find(&state, &id).await?;
    let a = json_body(b)?;
    crate::policies::bundle::check_label(&a.version)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = state.clock.now_ms();
    let done = state.rollouts.activate(p.id, a, auth.actor(), now).await?;
    let report = state.rollouts.report(p.id, now).await?;
    Ok(if done.started {
        HttpResponse::Created().json(report)
    } else {
        HttpResponse::Ok().json(report)
    })
}

/// A policy's rollout: its state and stage, each stage's devices by how they stand, the gates against
/// their thresholds, the most frequent failure reasons and the earliest next promotion.
#[utoipa::path(get, path = "/api/v1/policies/{id}/rollout", tag = "policies", operation_id = "get_policy_rollout",
    params(("id" = String, Path, description = "Policy id (a positive integer)")),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such policy, or no version was activated")),
    security(("api_key" = ["devices:read"])))]
pub async fn rollout(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let p = find(&state, &id).await?;
    let now = state.clock.now_ms();
    Ok(HttpResponse::Ok().json(state.rollouts.report(p.id, now).await?))
}

/// Act on a rollout: `pause` (no promotion until resumed), `resume`, `promote` (the next stage now,
/// whatever the gates say), `rollback` (every device gets the previous version back). Answers the rollout.
#[utoipa::path(post, path = "/api/v1/policies/{id}/rollout/{action}", tag = "policies", operation_id = "control_policy_rollout",
    params(("id" = String, Path, description = "Policy id (a positive integer)"), ("action" = String, Path, description = "pause, resume, promote or rollback")),
    responses((status = 200, body = Report), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such policy, or no version was activated"),
        (status = 409, body = ErrorBody, description = "The rollout's state does not allow it, or its version failed its digest check")),
    security(("api_key" = ["policies:write"])))]
pub async fn control(
    auth: Auth<PoliciesWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let what = Control::parse(&action).ok_or_else(|| {
        ApiError::BadRequest("the action is pause, resume, promote or rollback".into())
    })?;
    let p = find(&state, &id).await?;
    let now = state.clock.now_ms();
    state
        .rollouts
        .control(p.id, what, auth.actor(), now)
        .await?;
    Ok(HttpResponse::Ok().json(state.rollouts.report(p.id, now).await?))
}
