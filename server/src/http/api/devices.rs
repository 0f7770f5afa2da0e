//! Devices: list with filters and cursor pagination, and one device's detail with its channels.

use super::{body, page_limit, parse_time, query};
use crate::clock::to_rfc3339;
use crate::http::auth::{Admin, Auth, DevicesRead};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::plugins::actions::MAX_ATTRIBUTE_KEY;
use crate::storage::devices::{self, Device, DeviceFilter};
use crate::storage::enrollments::{self, Enrollment};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Exact serial number.
    serial_number: Option<String>,
    /// iOS, iPadOS, macOS, tvOS, watchOS or visionOS.
    platform: Option<String>,
    /// Only devices whose device channel is enabled (true) or not (false).
    enabled: Option<bool>,
    /// Only members of this group (its id).
    #[param(minimum = 1)]
    group: Option<i64>,
    /// Only devices with this plugin attribute: `key=value`, or `key` for any value; the key 1 to 128
    /// characters.
    #[param(pattern = r"^[^=]{1,128}(=[\s\S]*)?$")]
    attribute: Option<String>,
    /// Last seen at or after this RFC 3339 time.
    #[param(format = DateTime)]
    seen_after: Option<String>,
    /// Last seen before this RFC 3339 time.
    #[param(format = DateTime)]
    seen_before: Option<String>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceSummary {
    /// UDID, or EnrollmentID for a User Enrollment.
    id: String,
    serial_number: Option<String>,
    platform: Option<String>,
    model: Option<String>,
    model_name: Option<String>,
    product_name: Option<String>,
    device_name: Option<String>,
    os_version: Option<String>,
    build_version: Option<String>,
    /// Whether the device channel is enabled (a TokenUpdate arrived since the last Authenticate).
    enabled: bool,
    authenticated_at: String,
    last_seen_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    devices: Vec<DeviceSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityInfo {
    /// SHA-256 of the identity certificate (hex).
    fingerprint: Option<String>,
    subject: Option<String>,
    not_after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelInfo {
    /// The enrollment id commands are queued to.
    id: String,
    #[schema(value_type = String, example = "device")]
    kind: String,
    enabled: bool,
    user_id: Option<String>,
    user_short_name: Option<String>,
    user_long_name: Option<String>,
    topic: Option<String>,
    push_token_present: bool,
    awaiting_configuration: Option<bool>,
    token_update_count: i32,
    last_seen_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    summary: DeviceSummary,
    imei: Option<String>,
    meid: Option<String>,
    identity: IdentityInfo,
    unlock_token_present: bool,
    bootstrap_token_present: bool,
    created_at: String,
    channels: Vec<ChannelInfo>,
    /// Attributes set by plugins.
    attributes: std::collections::BTreeMap<String, String>,
}

fn summary(d: &Device, enabled: bool) -> DeviceSummary {
    DeviceSummary {
        id: d.id.clone(),
        serial_number: d.serial_number.clone(),
        platform: d.platform.clone(),
        model: d.model.clone(),
        model_name: d.model_name.clone(),
        product_name: d.product_name.clone(),
        device_name: d.device_name.clone(),
        os_version: d.os_version.clone(),
        build_version: d.build_version.clone(),
        enabled,
        authenticated_at: to_rfc3339(d.authenticated_at),
        last_seen_at: to_rfc3339(d.last_seen_at),
    }
}

fn channel(e: &Enrollment) -> ChannelInfo {
    ChannelInfo {
        id: e.id.clone(),
        kind: e.kind.clone(),
        enabled: e.enabled,
        user_id: e.user_id.clone(),
        user_short_name: e.user_short_name.clone(),
        user_long_name: e.user_long_name.clone(),
        topic: e.topic.clone(),
        push_token_present: e.token.is_some(),
        awaiting_configuration: e.awaiting_configuration,
        token_update_count: e.token_update_count,
        last_seen_at: to_rfc3339(e.last_seen_at),
    }
}

/// `key=value` (the value may hold `=`) or `key`. Plugins set keys of 1 to 128 bytes; the filter counts
/// characters, as the document does, and a longer key simply matches nothing.
fn attribute_filter(s: &str) -> Result<(String, Option<String>), ApiError> {
    let (key, value) = match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (s, None),
    };
    if key.is_empty() || key.chars().count() > MAX_ATTRIBUTE_KEY {
        return Err(ApiError::BadRequest(format!(
            "attribute: `key=value` or `key`, the key 1 to {MAX_ATTRIBUTE_KEY} characters"
        )));
    }
    Ok((key.to_string(), value))
}

/// List devices.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", operation_id = "list_devices", params(ListQuery),
    responses((status = 200, body = DeviceList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<ListQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let filter = DeviceFilter {
        serial_number: q.serial_number,
        platform: q.platform,
        enabled: q.enabled,
        group: q.group.map(super::groups::positive_group_id).transpose()?,
        attribute: q.attribute.as_deref().map(attribute_filter).transpose()?,
        seen_after: q
            .seen_after
            .as_deref()
            .map(|s| parse_time("seen_after", s))
            .transpose()?,
        seen_before: q
            .seen_before
            .as_deref()
            .map(|s| parse_time("seen_before", s))
            .transpose()?,
        after: q.cursor,
        limit,
    };
    let db = &state.storage.read();
    let found = devices::list(db, &filter).await?;
    let ids: Vec<String> = found.iter().map(|d| d.id.clone()).collect();
    let enabled: HashMap<String, bool> = enrollments::find_many(db, &ids)
        .await?
        .into_iter()
        .map(|e| (e.id, e.enabled))
        .collect();
    let next_cursor = super::next_cursor(&found, limit, |d| d.id.clone());
    Ok(HttpResponse::Ok().json(DeviceList {
        devices: found
            .iter()
            .map(|d| summary(d, enabled.get(&d.id).copied().unwrap_or(false)))
            .collect(),
        next_cursor,
    }))
}

/// The device a path names. A device id is a UDID or EnrollmentID: refused before the lookup, and never
/// echoed when huge.
async fn known_device<C: sea_orm::ConnectionTrait>(db: &C, id: &str) -> Result<Device, ApiError> {
    crate::protocol::enrollment::DEVICE_ID
        .check(id)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    devices::find(db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {id} not found")))
}

/// One device with its identity and channels.
#[utoipa::path(get, path = "/api/v1/devices/{id}", tag = "devices", operation_id = "get_device",
    params(("id" = String, Path, description = "UDID or EnrollmentID")),
    responses((status = 200, body = DeviceDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn get(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let db = &state.storage.read();
    let d = known_device(db, &id).await?;
    let channels = enrollments::for_device(db, &d.id).await?;
    let attributes = crate::storage::attributes::for_device(db, &d.id)
        .await?
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect();
    let enabled = channels.iter().any(|c| c.id == d.id && c.enabled);
    Ok(HttpResponse::Ok().json(DeviceDetail {
        summary: summary(&d, enabled),
        imei: d.imei.clone(),
        meid: d.meid.clone(),
        identity: IdentityInfo {
            fingerprint: d.identity_fingerprint.clone(),
            subject: d.identity_subject.clone(),
            not_after: d.identity_not_after.map(to_rfc3339),
        },
        unlock_token_present: d.unlock_token.is_some(),
        bootstrap_token_present: d.bootstrap_token.is_some(),
        created_at: to_rfc3339(d.created_at),
        channels: channels.iter().map(channel).collect(),
        attributes,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceProfiles {
    device_id: String,
    /// Every configuration profile a policy wants (or wanted) on the device, and where it stands.
    profiles: Vec<crate::policies::reconciler::ProfileView>,
}

/// The configuration profiles policies install on a device: pending, verified (listed by the device
/// with the wanted content), failed (with the device's error chain), removing, removed, or skipped (not
/// for the device's platform).
#[utoipa::path(get, path = "/api/v1/devices/{id}/profiles", tag = "devices", operation_id = "get_device_profiles",
    params(("id" = String, Path, description = "UDID or EnrollmentID")),
    responses((status = 200, body = DeviceProfiles), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn profiles(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let db = &state.storage.read();
    let d = known_device(db, &id).await?;
    let rows = crate::storage::profiles::of_devices(db, std::slice::from_ref(&d.id)).await?;
    Ok(HttpResponse::Ok().json(DeviceProfiles {
        profiles: rows
            .iter()
            .map(crate::policies::reconciler::ProfileView::of)
            .collect(),
        device_id: d.id,
    }))
}

/// The longest an allowance to re-enroll may stay open.
const MAX_REENROLLMENT_WINDOW_SECS: u32 = 30 * 86_400;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReenrollmentRequest {
    /// How long the allowance stays open, in seconds (default a day, at most 30 days).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 2592000)]
    ttl_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReenrollmentAllowed {
    device_id: String,
    /// The device may authenticate with a new identity once before this time.
    allowed_until: String,
}

/// Allow a known device to enroll again with a new identity, once (after a wipe, a lost identity, or a
/// revocation). Without it, a known device's new identity is refused unless it renews the bound one, the
/// device checked out, or the identity was issued against a token pinned to its serial number.
#[utoipa::path(post, path = "/api/v1/devices/{id}/reenrollment", tag = "devices",
    params(("id" = String, Path, description = "UDID or EnrollmentID")),
    request_body = ReenrollmentRequest,
    responses((status = 200, body = ReenrollmentAllowed), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["admin"])))]
pub async fn allow_reenrollment(
    auth: Auth<Admin>,
    id: web::Path<String>,
    b: super::Body<ReenrollmentRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ttl = body(b)?.ttl_seconds.unwrap_or(86_400);
    if ttl == 0 || ttl > MAX_REENROLLMENT_WINDOW_SECS {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be between 1 and {MAX_REENROLLMENT_WINDOW_SECS}"
        )));
    }
    let id = id.into_inner();
    let now = state.clock.now_ms();
    let until = now + i64::from(ttl) * 1000;
    let actor = auth.actor();
    let device_id = id.clone();
    let found = state
        .storage
        .transaction(move |txn| {
            Box::pin(async move {
                if !devices::allow_reenrollment(txn, &device_id, until, now).await? {
                    return Ok::<_, ApiError>(false);
                }
                let detail = serde_json::json!({ "allowed_until": until });
                let entry = crate::storage::audit_log::NewEntry::new(
                    now,
                    actor,
                    "device.reenrollment_allowed",
                    Some(&device_id),
                    detail,
                );
                crate::storage::audit_log::append(txn, vec![entry]).await?;
                Ok(true)
            })
        })
        .await?;
    if !found {
        return Err(ApiError::NotFound(format!("device {id} not found")));
    }
    tracing::warn!(device = %id, until, "re-enrollment with a new identity allowed once");
    Ok(HttpResponse::Ok().json(ReenrollmentAllowed {
        device_id: id,
        allowed_until: to_rfc3339(until),
    }))
}
