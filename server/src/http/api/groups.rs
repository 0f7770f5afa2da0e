//! Device groups: create (static with devices, or dynamic with a rule), list, read, change, delete, and a
//! group's devices page by page. Reads need `devices:read`, changes `groups:write`.

use super::{body as json_body, page_limit, query};
use crate::clock::to_rfc3339;
use crate::groups::admin::{self, GroupError, GroupUpdate, NewGroup};
use crate::groups::Rule;
use crate::http::auth::{Auth, DevicesRead, GroupsWrite};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::storage::groups::{self, members, Change, Group};
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// 1 to 128 characters, unique; no control characters, no space at either end.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// A static group: its devices (ids of stored devices, at most 10,000 per request).
    #[schema(schema_with = crate::http::openapi::group_devices)]
    devices: Option<Vec<String>>,
    /// A dynamic group: its rule (see docs/GROUPS.md), e.g.
    /// `{"all": [{"fact": "platform", "op": "eq", "value": "iOS"}, {"fact": "os_version", "op": "gte", "value": "17.2"}]}`.
    #[schema(value_type = Option<Object>)]
    rule: Option<Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchGroup {
    /// A new name: 1 to 128 characters, unique.
    #[schema(min_length = 1, max_length = 128)]
    name: Option<String>,
    /// A dynamic group's new rule; every device is evaluated against it.
    #[schema(value_type = Option<Object>)]
    rule: Option<Value>,
    /// Devices to add to a static group (at most 10,000 per request).
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::group_devices)]
    add: Vec<String>,
    /// Devices to remove from a static group (at most 10,000 per request).
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::group_devices)]
    remove: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    id: i64,
    name: String,
    #[schema(example = "dynamic")]
    kind: String,
    /// A dynamic group's rule, in canonical form.
    #[schema(value_type = Option<Object>)]
    rule: Option<Value>,
    /// How many devices are members.
    members: u64,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembershipChanges {
    /// How many devices joined.
    joined: usize,
    /// How many devices left.
    left: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupWritten {
    #[serde(flatten)]
    group: GroupView,
    /// What this change did to the membership.
    changes: MembershipChanges,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupList {
    groups: Vec<GroupView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// The device's id (its device channel's enrollment id).
    id: String,
    /// When it joined the group.
    since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    devices: Vec<Member>,
    /// Pass as `cursor` for the next page; absent on the last page.
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdPageQuery {
    /// `next_cursor` from the previous page.
    pub cursor: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

fn view(g: Group, members: u64) -> GroupView {
    GroupView {
        rule: g.rule.as_deref().and_then(|r| serde_json::from_str(r).ok()),
        id: g.id,
        name: g.name,
        kind: g.kind,
        members,
        created_at: to_rfc3339(g.created_at),
        updated_at: to_rfc3339(g.updated_at),
    }
}

fn changes(c: &[Change]) -> MembershipChanges {
    let joined = c.iter().filter(|c| c.joined).count();
    MembershipChanges {
        joined,
        left: c.len() - joined,
    }
}

/// A group id from a path.
pub fn group_id(s: &str) -> Result<i64, ApiError> {
    super::positive_id(s, "group")
}

/// A group id given as a number (a filter, a policy's target): ids start at 1.
pub fn positive_group_id(id: i64) -> Result<i64, ApiError> {
    super::positive(id, "group")
}

fn rule(v: &Value) -> Result<Rule, ApiError> {
    Ok(Rule::from_json(v).map_err(GroupError::from)?)
}

async fn written(
    state: &AppState,
    group: Group,
    made: &[Change],
) -> Result<GroupWritten, ApiError> {
    let count = members::count(&state.storage.read(), group.id).await?;
    Ok(GroupWritten {
        group: view(group, count),
        changes: changes(made),
    })
}

/// Create a group: static (`devices`) or dynamic (`rule`, evaluated over every device before this answers).
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", operation_id = "create_group", request_body = CreateGroup,
    responses((status = 201, body = GroupWritten), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody, description = "The name is taken, or the server holds the most groups it takes")),
    security(("api_key" = ["groups:write"])))]
pub async fn create(
    auth: Auth<GroupsWrite>,
    b: super::Body<CreateGroup>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = json_body(b)?;
    let new = match (b.devices, b.rule) {
        (Some(devices), None) => NewGroup::Static { devices },
        (None, Some(r)) => NewGroup::Dynamic { rule: rule(&r)? },
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `devices` (a static group) and `rule` (a dynamic group)"
                    .into(),
            ))
        }
    };
    let now = state.clock.now_ms();
    let (group, made) = admin::create(&state.storage, b.name, new, auth.actor(), now).await?;
    Ok(HttpResponse::Created().json(written(&state, group, &made).await?))
}

/// List groups with their member counts.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups", operation_id = "list_groups", params(IdPageQuery),
    responses((status = 200, body = GroupList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<IdPageQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let db = &state.storage.read();
    let found = groups::list(db, q.cursor, limit).await?;
    let ids: Vec<i64> = found.iter().map(|g| g.id).collect();
    let counts = members::counts(db, &ids).await?;
    let next_cursor = super::next_cursor(&found, limit, |g| g.id);
    let groups = found
        .into_iter()
        .map(|g| {
            let n = counts.get(&g.id).copied().unwrap_or(0);
            view(g, n)
        })
        .collect();
    Ok(HttpResponse::Ok().json(GroupList {
        groups,
        next_cursor,
    }))
}

/// One group.
#[utoipa::path(get, path = "/api/v1/groups/{id}", tag = "groups", operation_id = "get_group",
    params(("id" = String, Path, description = "Group id (a positive integer)")),
    responses((status = 200, body = GroupView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn get(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = group_id(&id)?;
    let db = &state.storage.read();
    let g = groups::find(db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no group {id}")))?;
    let n = members::count(db, id).await?;
    Ok(HttpResponse::Ok().json(view(g, n)))
}

/// Change a group: rename it; replace a dynamic group's rule (every device is evaluated against it before
/// this answers); add or remove a static group's devices.
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "groups", operation_id = "update_group", request_body = PatchGroup,
    params(("id" = String, Path, description = "Group id (a positive integer)")),
    responses((status = 200, body = GroupWritten), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["groups:write"])))]
pub async fn update(
    auth: Auth<GroupsWrite>,
    id: web::Path<String>,
    b: super::Body<PatchGroup>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = group_id(&id)?;
    let b = json_body(b)?;
    let u = GroupUpdate {
        name: b.name,
        rule: b.rule.as_ref().map(rule).transpose()?,
        add: b.add,
        remove: b.remove,
    };
    let now = state.clock.now_ms();
    let (group, made) = admin::update(&state.storage, id, u, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(written(&state, group, &made).await?))
}

/// Delete a group (its devices stay; only the memberships go). Refused while a policy targets it.
#[utoipa::path(delete, path = "/api/v1/groups/{id}", tag = "groups", operation_id = "delete_group",
    params(("id" = String, Path, description = "Group id (a positive integer)")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "A policy targets the group")),
    security(("api_key" = ["groups:write"])))]
pub async fn delete(
    auth: Auth<GroupsWrite>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = group_id(&id)?;
    let now = state.clock.now_ms();
    admin::delete(&state.storage, id, auth.actor(), now).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// A group's devices, by id.
#[utoipa::path(get, path = "/api/v1/groups/{id}/devices", tag = "groups", operation_id = "group_devices",
    params(("id" = String, Path, description = "Group id (a positive integer)"), MembersQuery),
    responses((status = 200, body = MemberList), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn devices(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    q: Result<web::Query<MembersQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = group_id(&id)?;
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let db = &state.storage.read();
    if groups::find(db, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no group {id}")));
    }
    let page = members::page(db, id, q.cursor.as_deref(), limit).await?;
    let next_cursor = super::next_cursor(&page, limit, |(d, _)| d.clone());
    Ok(HttpResponse::Ok().json(MemberList {
        devices: page
            .into_iter()
            .map(|(id, since)| Member {
                id,
                since: to_rfc3339(since),
            })
            .collect(),
        next_cursor,
    }))
}
