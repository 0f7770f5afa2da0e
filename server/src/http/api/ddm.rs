//! Declarative Device Management: declarations, sets, their assignment to enrollments, and what devices
//! report. Reads need `devices:read`; changes `ddm:write`.

use super::groups::group_id;
use super::{body, channel_id, channel_ids, page_limit, query};
use crate::clock::to_rfc3339;
use crate::ddm::admin::{self, Holder};
use crate::ddm::check_set_name;
use crate::ddm::sync::Synced;
use crate::ddm::views::{self, DeclarationState, DeclarationStatusView, EnrollmentView};
use crate::http::auth::{Auth, DdmWrite, DevicesRead};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::AppState;
use crate::storage::ddm::declarations::{self, StoredDeclaration, Written};
use crate::storage::ddm::{assignments, sets};
use crate::storage::enrollments;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationPut {
    identifier: String,
    #[serde(rename = "type")]
    declaration_type: String,
    /// The ServerToken the server computed over the content.
    server_token: String,
    /// created, changed or unchanged.
    result: &'static str,
    synced: Synced,
}

/// A declaration as `PUT /api/v1/ddm/declarations` takes it. Only for the document: the handler reads the
/// bytes itself (`Declaration::parse`), and checks the Payload against Apple's schema for the Type.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct DeclarationBody {
    /// An Apple declaration type, e.g. `com.apple.configuration.passcode.settings`.
    #[serde(rename = "Type")]
    declaration_type: String,
    /// Letters, digits, `.`, `-`, `_`, `:` and `@`, starting with a letter or digit; at most 64. Those
    /// starting `mdm.builtin.` are the server's own.
    #[serde(rename = "Identifier")]
    #[schema(pattern = r"^(?!mdm\.builtin\.)[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")]
    identifier: String,
    #[serde(rename = "Payload")]
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// Computed by the server; one sent must be the one it computes.
    #[serde(rename = "ServerToken")]
    server_token: Option<String>,
}

/// Create or replace a declaration (`{"Type", "Identifier", "Payload"}`; a `ServerToken`, if given, must
/// be the one the server computes). Validated against Apple's schema for its Type. Enrollments holding
/// it are synced if it changed.
#[utoipa::path(put, path = "/api/v1/ddm/declarations", tag = "ddm",
    request_body(content = DeclarationBody, content_type = "application/json"),
    responses((status = 200, body = DeclarationPut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn put_declaration(
    auth: Auth<DdmWrite>,
    b: Result<Bytes, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = b.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let now = state.clock.now_ms();
    let (d, written, synced) =
        admin::put_declaration(&state.storage, &b, auth.actor(), now).await?;
    let result = match written {
        Written::Created => "created",
        Written::Changed => "changed",
        Written::Unchanged => "unchanged",
    };
    Ok(HttpResponse::Ok().json(DeclarationPut {
        identifier: d.identifier,
        declaration_type: d.declaration_type,
        server_token: d.server_token,
        result,
        synced,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationSummary {
    identifier: String,
    #[serde(rename = "type")]
    declaration_type: String,
    category: String,
    server_token: String,
    /// The server's own declarations (from its configuration), in every enrollment's set.
    builtin: bool,
    updated_at: String,
}

fn summary(d: &StoredDeclaration) -> DeclarationSummary {
    DeclarationSummary {
        identifier: d.identifier.clone(),
        declaration_type: d.declaration_type.clone(),
        category: d.category.clone(),
        server_token: d.server_token.clone(),
        builtin: d.builtin,
        updated_at: to_rfc3339(d.updated_at),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationList {
    declarations: Vec<DeclarationSummary>,
    next_cursor: Option<String>,
}

/// List declarations in identifier order.
#[utoipa::path(get, path = "/api/v1/ddm/declarations", tag = "ddm", params(PageQuery),
    responses((status = 200, body = DeclarationList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list_declarations(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<PageQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let page = declarations::list(&state.storage.read(), q.cursor.as_deref(), limit + 1).await?;
    let (page, next_cursor) = split_page(page, limit, |d| d.identifier.clone());
    Ok(HttpResponse::Ok().json(DeclarationList {
        declarations: page.iter().map(summary).collect(),
        next_cursor,
    }))
}

/// A page fetched with one extra row: the page, and the cursor for the next if there is one.
fn split_page<T>(
    mut rows: Vec<T>,
    limit: u64,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(&key)).flatten();
    (rows, next)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeclarationDetail {
    #[serde(flatten)]
    summary: DeclarationSummary,
    #[schema(value_type = Object)]
    payload: serde_json::Value,
    /// The sets holding it.
    sets: Vec<String>,
}

/// One declaration, with its payload and the sets holding it.
#[utoipa::path(get, path = "/api/v1/ddm/declarations/{identifier}", tag = "ddm",
    params(("identifier" = String, Path)),
    responses((status = 200, body = DeclarationDetail), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn get_declaration(
    _auth: Auth<DevicesRead>,
    identifier: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = state.storage.read();
    let d = declarations::get(&read, &identifier)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("declaration {identifier} not found")))?;
    let payload = serde_json::from_str(&d.payload).unwrap_or(serde_json::Value::Null);
    Ok(HttpResponse::Ok().json(DeclarationDetail {
        summary: summary(&d),
        payload,
        sets: sets::holding(&read, &identifier).await?,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Remove it from the sets holding it too (otherwise a declaration in a set is refused with 409).
    force: Option<bool>,
}

/// Delete a declaration.
#[utoipa::path(delete, path = "/api/v1/ddm/declarations/{identifier}", tag = "ddm",
    params(("identifier" = String, Path), DeleteQuery),
    responses((status = 200, body = Synced), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn delete_declaration(
    auth: Auth<DdmWrite>,
    identifier: web::Path<String>,
    q: Result<web::Query<DeleteQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let force = query(q)?.force.unwrap_or(false);
    let now = state.clock.now_ms();
    let synced =
        admin::delete_declaration(&state.storage, &identifier, force, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(synced))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Which enrollments to page through (default not_synced).
    state: Option<DeclarationState>,
    /// `next_cursor` from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// How a declaration stands across the enrollments holding it: counts by state, the top reasons among
/// the invalid, and a page of the enrollments in one state.
#[utoipa::path(get, path = "/api/v1/ddm/declarations/{identifier}/status", tag = "ddm",
    params(("identifier" = String, Path), StatusQuery),
    responses((status = 200, body = DeclarationStatusView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn declaration_status(
    _auth: Auth<DevicesRead>,
    identifier: web::Path<String>,
    q: Result<web::Query<StatusQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let which = q.state.unwrap_or(DeclarationState::NotSynced);
    let view = views::declaration_status(
        &state.storage.read(),
        &identifier,
        which,
        q.cursor.as_deref(),
        limit,
    )
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// Declaration identifiers (at most 10000); each must exist.
    #[schema(max_items = 10000)]
    declarations: Vec<String>,
}

/// The most declarations one set may hold.
const MAX_SET_MEMBERS: usize = 10_000;

/// Create a set or replace its declarations. Its enrollments are synced.
#[utoipa::path(put, path = "/api/v1/ddm/sets/{name}", tag = "ddm",
    params(("name" = String, Path)), request_body = SetBody,
    responses((status = 200, body = Synced), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn put_set(
    auth: Auth<DdmWrite>,
    name: web::Path<String>,
    b: super::Body<SetBody>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let members = body(b)?.declarations;
    if members.len() > MAX_SET_MEMBERS {
        return Err(ApiError::BadRequest(format!(
            "a set holds at most {MAX_SET_MEMBERS} declarations"
        )));
    }
    let now = state.clock.now_ms();
    let synced = admin::put_set(&state.storage, &name, members, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(synced))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetDetail {
    name: String,
    declarations: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SetList {
    sets: Vec<String>,
    next_cursor: Option<String>,
}

/// List sets in name order.
#[utoipa::path(get, path = "/api/v1/ddm/sets", tag = "ddm", params(PageQuery),
    responses((status = 200, body = SetList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn list_sets(
    _auth: Auth<DevicesRead>,
    q: Result<web::Query<PageQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let page = sets::list(&state.storage.read(), q.cursor.as_deref(), limit + 1).await?;
    let (page, next_cursor) = split_page(page, limit, |s| s.name.clone());
    Ok(HttpResponse::Ok().json(SetList {
        sets: page.into_iter().map(|s| s.name).collect(),
        next_cursor,
    }))
}

/// One set and its declarations.
#[utoipa::path(get, path = "/api/v1/ddm/sets/{name}", tag = "ddm",
    params(("name" = String, Path)),
    responses((status = 200, body = SetDetail), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn get_set(
    _auth: Auth<DevicesRead>,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let declarations = sets::members(&state.storage.read(), &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("set {name} not found")))?;
    Ok(HttpResponse::Ok().json(SetDetail {
        name: name.into_inner(),
        declarations,
    }))
}

/// Delete a set and its assignments. Its enrollments are synced.
#[utoipa::path(delete, path = "/api/v1/ddm/sets/{name}", tag = "ddm",
    params(("name" = String, Path)),
    responses((status = 200, body = Synced), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn delete_set(
    auth: Auth<DdmWrite>,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_ms();
    let synced = admin::delete_set(&state.storage, &name, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(synced))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssignmentChanged {
    /// False if it already was (assign) or was not (unassign) assigned.
    changed: bool,
}

async fn assignment(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    assign: bool,
) -> Result<HttpResponse, ApiError> {
    let (id, set) = path.into_inner();
    channel_id(&id)?;
    check_set_name(&set)?;
    assigned(auth, Holder::Enrollment(id), set, state, assign).await
}

async fn assigned(
    auth: Auth<DdmWrite>,
    holder: Holder,
    set: String,
    state: web::Data<AppState>,
    assign: bool,
) -> Result<HttpResponse, ApiError> {
    let now = state.clock.now_ms();
    let changed =
        admin::set_assignment(&state.storage, holder, &set, assign, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(AssignmentChanged { changed }))
}

/// Assign a set to an enrollment (device or user channel). The enrollment is synced.
#[utoipa::path(put, path = "/api/v1/ddm/enrollments/{id}/sets/{name}", tag = "ddm",
    params(("id" = String, Path, description = "Enrollment id"), ("name" = String, Path, description = "Set name")),
    responses((status = 200, body = AssignmentChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn assign(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    assignment(auth, path, state, true).await
}

/// Remove a set from an enrollment. The enrollment is synced.
#[utoipa::path(delete, path = "/api/v1/ddm/enrollments/{id}/sets/{name}", tag = "ddm",
    params(("id" = String, Path, description = "Enrollment id"), ("name" = String, Path, description = "Set name")),
    responses((status = 200, body = AssignmentChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn unassign(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    assignment(auth, path, state, false).await
}

async fn group_assignment(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    assign: bool,
) -> Result<HttpResponse, ApiError> {
    let (id, set) = path.into_inner();
    let id = group_id(&id)?;
    check_set_name(&set)?;
    assigned(auth, Holder::Group(id), set, state, assign).await
}

/// Assign a set to a device group: the device channel of every member holds it, and a device that joins
/// or leaves the group (a static group's edit, or a dynamic group following its rule) gains or loses it
/// with nothing else to do. The members whose declarations change are synced.
#[utoipa::path(put, path = "/api/v1/ddm/groups/{id}/sets/{name}", tag = "ddm", operation_id = "assign_group_set",
    params(("id" = String, Path, description = "Group id (a positive integer)"), ("name" = String, Path, description = "Set name")),
    responses((status = 200, body = AssignmentChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn assign_group(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    group_assignment(auth, path, state, true).await
}

/// Remove a set from a device group. The members whose declarations change are synced.
#[utoipa::path(delete, path = "/api/v1/ddm/groups/{id}/sets/{name}", tag = "ddm", operation_id = "unassign_group_set",
    params(("id" = String, Path, description = "Group id (a positive integer)"), ("name" = String, Path, description = "Set name")),
    responses((status = 200, body = AssignmentChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn unassign_group(
    auth: Auth<DdmWrite>,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    group_assignment(auth, path, state, false).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSets {
    id: i64,
    /// The sets assigned to the group, by name.
    sets: Vec<String>,
}

/// The sets assigned to a device group.
#[utoipa::path(get, path = "/api/v1/ddm/groups/{id}", tag = "ddm", operation_id = "get_group_sets",
    params(("id" = String, Path, description = "Group id (a positive integer)")),
    responses((status = 200, body = GroupSets), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn group_sets(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = group_id(&id)?;
    let read = state.storage.read();
    if crate::storage::groups::find(&read, id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no group {id}")));
    }
    let sets = assignments::sets_of_group(&read, id).await?;
    Ok(HttpResponse::Ok().json(GroupSets { id, sets }))
}

/// An enrollment's sets, effective declarations with what its device last reported of each, its
/// DeclarationsToken, when it last synced, and its status items.
#[utoipa::path(get, path = "/api/v1/ddm/enrollments/{id}", tag = "ddm",
    params(("id" = String, Path, description = "Enrollment id")),
    responses((status = 200, body = EnrollmentView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = ["devices:read"])))]
pub async fn enrollment(
    _auth: Auth<DevicesRead>,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    channel_id(&id)?;
    let read = state.storage.read();
    if enrollments::find(&read, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("enrollment {id} not found")));
    }
    let view: EnrollmentView = views::enrollment(&read, &id).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The most ids one forced sync may name.
const MAX_SYNC_IDS: usize = 1_000;

/// Queue a sync to these enrollments (comma-separated ids) whether or not anything changed: for support
/// and testing.
#[utoipa::path(put, path = "/api/v1/ddm/sync/{ids}", tag = "ddm",
    params(("ids" = String, Path, description = "Comma-separated enrollment ids")),
    responses((status = 200, body = Synced), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = ["ddm:write"])))]
pub async fn sync(
    auth: Auth<DdmWrite>,
    ids: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ids: Vec<String> = ids.split(',').map(str::to_string).collect();
    if ids.len() > MAX_SYNC_IDS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_SYNC_IDS} ids per sync"
        )));
    }
    channel_ids(ids.iter().map(String::as_str))?;
    let now = state.clock.now_ms();
    let synced = admin::force_sync(&state.storage, ids, auth.actor(), now).await?;
    Ok(HttpResponse::Ok().json(synced))
}
