//! Commands: enqueue (typed or raw) to many ids, status per device, results, queue inspection, cancel, clear.

use super::{body as json_body, channel_id, channel_ids, page_limit, query};
use crate::clock::to_rfc3339;
use crate::http::auth::{Auth, CommandsRead, CommandsWrite};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::protocol::commands::TypedCommand;
use crate::queue::{CommandSpec, EnqueueOutcome, EnqueueRequest};
use crate::storage::queue::{self, QueueItem, QueueStatus};
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// Enrollment ids (UDID, EnrollmentID, or `UDID:UserID` for a user channel): with `groups`' devices,
    /// 1 to 100000 targets.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::enqueue_ids)]
    ids: Vec<String>,
    /// Group ids: their devices' device channels are targets too (each id once, whichever way it is named).
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::group_ids)]
    groups: Vec<i64>,
    /// A typed command, with Apple's key names: `{"RequestType": "DeviceLock", "PIN": "123456"}`.
    command: Option<TypedCommand>,
    /// Or a raw command plist (XML text): a whole envelope, or just the Command dictionary. Any RequestType.
    raw_plist: Option<String>,
    /// Higher is delivered first (-1000 to 1000, default 0); equal priorities go in enqueue order.
    #[serde(default, deserialize_with = "super::whole::required")]
    #[schema(minimum = -1000, maximum = 1000)]
    priority: i32,
    /// Expire the command if not finished within this many seconds (1 to 31536000, a year).
    #[serde(default, deserialize_with = "super::whole::optional")]
    #[schema(minimum = 1, maximum = 31536000)]
    ttl_seconds: Option<u64>,
    /// Do not push: the devices get the command at their next check-in.
    #[serde(default)]
    no_push: bool,
}

/// Queue a command to devices.
#[utoipa::path(post, path = "/api/v1/commands", tag = "commands", operation_id = "enqueue_command", request_body = EnqueueBody,
    responses((status = 200, body = EnqueueOutcome, description = "Per-id results (groups' devices by their ids); unknown and disabled ids are reported, the rest queued"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:write"])))]
pub async fn enqueue(
    auth: Auth<CommandsWrite>,
    body: super::Body<EnqueueBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(body)?;
    channel_ids(b.ids.iter().map(String::as_str))?;
    let command = match (b.command, b.raw_plist) {
        (Some(t), None) => CommandSpec::Typed(t),
        (None, Some(raw)) => CommandSpec::Raw(raw.into_bytes()),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `command` and `raw_plist`".into(),
            ))
        }
    };
    let outcome = state
        .queue
        .enqueue(EnqueueRequest {
            ids: b.ids,
            groups: b.groups,
            command,
            priority: b.priority,
            ttl_seconds: b.ttl_seconds,
            source: format!("api:{}", auth.principal.name),
            no_push: b.no_push,
        })
        .await?;
    // Serialised first (100k per-id results for a fan-out), so the answer is not held up by the pushes.
    let response = HttpResponse::Ok().json(outcome);
    // The push worker sends what the enqueue made owed; wake it rather than wait for its next round.
    state.push.wake();
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// `next_cursor` from the previous page.
    cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    enrollment_id: String,
    status: QueueStatus,
    delivered_at: Option<String>,
    delivery_count: i32,
    completed_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandStatus {
    command_uuid: String,
    request_type: String,
    priority: i32,
    source: String,
    created_at: String,
    expires_at: Option<String>,
    deliveries: Vec<Delivery>,
    next_cursor: Option<i64>,
}

fn delivery(i: &QueueItem) -> Result<Delivery, ApiError> {
    Ok(Delivery {
        enrollment_id: i.enrollment_id.clone(),
        status: QueueStatus::parse(&i.status)?,
        delivered_at: i.delivered_at.map(to_rfc3339),
        delivery_count: i.delivery_count,
        completed_at: i.completed_at.map(to_rfc3339),
    })
}

/// A command and where it stands on each device it was queued to.
#[utoipa::path(get, path = "/api/v1/commands/{uuid}", tag = "commands", operation_id = "command_status",
    params(("uuid" = String, Path, description = "CommandUUID"), StatusQuery),
    responses((status = 200, body = CommandStatus), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:read"])))]
pub async fn status(
    _auth: Auth<CommandsRead>,
    uuid: web::Path<String>,
    q: Result<web::Query<StatusQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let db = &state.storage.read();
    let cmd = queue::find_command(db, &uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("command {uuid} not found")))?;
    let limit = page_limit(q.limit)?;
    let items = queue::for_command(db, &uuid, q.cursor, limit).await?;
    let next_cursor = super::next_cursor(&items, limit, |i| i.id);
    Ok(HttpResponse::Ok().json(CommandStatus {
        command_uuid: cmd.uuid,
        request_type: cmd.request_type,
        priority: cmd.priority,
        source: cmd.source,
        created_at: to_rfc3339(cmd.created_at),
        expires_at: cmd.expires_at.map(to_rfc3339),
        deliveries: items.iter().map(delivery).collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandResult {
    enrollment_id: String,
    command_uuid: String,
    status: QueueStatus,
    completed_at: Option<String>,
    /// The device's report as JSON (data as base64, dates as RFC 3339).
    #[schema(value_type = Object)]
    result: Option<serde_json::Value>,
    /// The device's report exactly as received, base64.
    result_plist_base64: Option<String>,
}

/// One device's result for a command.
#[utoipa::path(get, path = "/api/v1/commands/{uuid}/results/{enrollment_id}", tag = "commands", operation_id = "command_result",
    params(("uuid" = String, Path, description = "CommandUUID"), ("enrollment_id" = String, Path, description = "Enrollment id")),
    responses((status = 200, body = CommandResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:read"])))]
pub async fn result(
    _auth: Auth<CommandsRead>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (uuid, enrollment_id) = path.into_inner();
    channel_id(&enrollment_id)?;
    let item = queue::find_item(&state.storage.read(), &enrollment_id, &uuid)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("command {uuid} was not queued to {enrollment_id}"))
        })?;
    let result = match &item.result_json {
        Some(j) => Some(
            serde_json::from_str(j)
                .map_err(|e| crate::storage::StorageError::Corrupt(e.to_string()))?,
        ),
        None => None,
    };
    Ok(HttpResponse::Ok().json(CommandResult {
        status: QueueStatus::parse(&item.status)?,
        completed_at: item.completed_at.map(to_rfc3339),
        result_plist_base64: item.result_raw.as_ref().map(|r| STANDARD.encode(r)),
        result,
        enrollment_id: item.enrollment_id,
        command_uuid: item.command_uuid,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Show only commands still pending (queued or NotNow). Default true.
    pending_only: Option<bool>,
    /// At most this many, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueEntry {
    command_uuid: String,
    request_type: Option<String>,
    status: QueueStatus,
    priority: i32,
    /// Enqueue sequence: delivery order among equal priorities.
    sequence: i64,
    created_at: String,
    expires_at: Option<String>,
    delivered_at: Option<String>,
    delivery_count: i32,
    completed_at: Option<String>,
}

/// An enrollment's queue, in delivery order.
#[utoipa::path(get, path = "/api/v1/enrollments/{id}/commands", tag = "commands", operation_id = "command_queue",
    params(("id" = String, Path, description = "Enrollment id"), QueueQuery),
    responses((status = 200, body = Vec<QueueEntry>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:read"])))]
pub async fn queue(
    _auth: Auth<CommandsRead>,
    id: web::Path<String>,
    q: Result<web::Query<QueueQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    channel_id(&id)?;
    let rows = queue::for_enrollment(
        &state.storage.read(),
        &id,
        q.pending_only.unwrap_or(true),
        page_limit(q.limit)?,
    )
    .await?;
    let entries = rows
        .into_iter()
        .map(|(i, cmd)| {
            Ok(QueueEntry {
                status: QueueStatus::parse(&i.status)?,
                request_type: cmd.map(|c| c.request_type),
                priority: i.priority,
                sequence: i.id,
                created_at: to_rfc3339(i.created_at),
                expires_at: i.expires_at.map(to_rfc3339),
                delivered_at: i.delivered_at.map(to_rfc3339),
                delivery_count: i.delivery_count,
                completed_at: i.completed_at.map(to_rfc3339),
                command_uuid: i.command_uuid,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(HttpResponse::Ok().json(entries))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    canceled: u64,
}

/// Cancel every pending command of an enrollment.
#[utoipa::path(delete, path = "/api/v1/enrollments/{id}/commands", tag = "commands", operation_id = "clear_command_queue",
    params(("id" = String, Path, description = "Enrollment id")),
    responses((status = 200, body = Cleared), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:write"])))]
pub async fn clear(
    _auth: Auth<CommandsWrite>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    channel_id(&id)?;
    let canceled = state.queue.clear(&id).await?;
    Ok(HttpResponse::Ok().json(Cleared { canceled }))
}

/// Cancel one pending command of an enrollment.
#[utoipa::path(delete, path = "/api/v1/enrollments/{id}/commands/{uuid}", tag = "commands", operation_id = "cancel_command",
    params(("id" = String, Path, description = "Enrollment id"), ("uuid" = String, Path, description = "CommandUUID")),
    responses((status = 204, description = "Canceled"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["commands:write"])))]
pub async fn cancel(
    _auth: Auth<CommandsWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (id, uuid) = path.into_inner();
    channel_id(&id)?;
    if state.queue.cancel(&id, &uuid).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!(
            "no pending command {uuid} for {id}"
        )))
    }
}
