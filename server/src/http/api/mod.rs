//! The admin JSON API under `/api/v1`.

pub mod commands;
pub mod ddm;
pub mod devices;
pub mod enrollment;
pub mod groups;
pub mod keys;
pub mod plugins;
pub mod push;

use super::error::ApiError;
use actix_web::web;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .route("/devices", web::get().to(devices::list))
            .route("/devices/{id}", web::get().to(devices::get))
            .route(
                "/devices/{id}/reenrollment",
                web::post().to(devices::allow_reenrollment),
            )
            .route("/groups", web::post().to(groups::create))
            .route("/groups", web::get().to(groups::list))
            .route("/groups/{id}", web::get().to(groups::get))
            .route("/groups/{id}", web::patch().to(groups::update))
            .route("/groups/{id}", web::delete().to(groups::delete))
            .route("/groups/{id}/devices", web::get().to(groups::devices))
            .route("/enrollments/{id}/commands", web::get().to(commands::queue))
            .route(
                "/enrollments/{id}/commands",
                web::delete().to(commands::clear),
            )
            .route(
                "/enrollments/{id}/commands/{uuid}",
                web::delete().to(commands::cancel),
            )
            .route("/commands", web::post().to(commands::enqueue))
            .route("/commands/{uuid}", web::get().to(commands::status))
            .route(
                "/commands/{uuid}/results/{enrollment_id}",
                web::get().to(commands::result),
            )
            .route("/api-keys", web::get().to(keys::list))
            .route("/api-keys", web::post().to(keys::create))
            .route("/api-keys/{id}", web::delete().to(keys::revoke))
            .route("/plugins", web::get().to(plugins::list))
            .route("/plugins", web::post().to(plugins::upload))
            .route("/plugins/{id}", web::get().to(plugins::get))
            .route("/plugins/{id}", web::patch().to(plugins::update))
            .route("/plugins/{id}", web::delete().to(plugins::delete))
            .route("/plugins/{id}/config", web::put().to(plugins::set_config))
            .route("/plugin-audit", web::get().to(plugins::audit))
            .route("/push", web::post().to(push::push))
            .route("/push-certs", web::get().to(push::certs))
            .route("/push-certs", web::post().to(push::upload_cert))
            .route("/enrollment-tokens", web::get().to(enrollment::list_tokens))
            .route(
                "/enrollment-tokens",
                web::post().to(enrollment::create_token),
            )
            .route(
                "/enrollment-tokens/{id}",
                web::delete().to(enrollment::revoke_token),
            )
            .route(
                "/scep-challenges",
                web::post().to(enrollment::create_challenge),
            )
            .route(
                "/identity-certificates",
                web::get().to(enrollment::list_certificates),
            )
            .route(
                "/identity-certificates/{serial}/revoke",
                web::post().to(enrollment::revoke_certificate),
            )
            .route("/identities/expiring", web::get().to(enrollment::expiring))
            .route("/ddm/declarations", web::put().to(ddm::put_declaration))
            .route("/ddm/declarations", web::get().to(ddm::list_declarations))
            .route(
                "/ddm/declarations/{identifier}",
                web::get().to(ddm::get_declaration),
            )
            .route(
                "/ddm/declarations/{identifier}",
                web::delete().to(ddm::delete_declaration),
            )
            .route(
                "/ddm/declarations/{identifier}/status",
                web::get().to(ddm::declaration_status),
            )
            .route("/ddm/sets", web::get().to(ddm::list_sets))
            .route("/ddm/sets/{name}", web::put().to(ddm::put_set))
            .route("/ddm/sets/{name}", web::get().to(ddm::get_set))
            .route("/ddm/sets/{name}", web::delete().to(ddm::delete_set))
            .route("/ddm/enrollments/{id}", web::get().to(ddm::enrollment))
            .route(
                "/ddm/enrollments/{id}/sets/{name}",
                web::put().to(ddm::assign),
            )
            .route(
                "/ddm/enrollments/{id}/sets/{name}",
                web::delete().to(ddm::unassign),
            )
            .route("/ddm/sync/{ids}", web::put().to(ddm::sync)),
    );
}

/// JSON bodies: size-capped, and malformed ones answered in our error format.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid JSON body: {err}")).into())
}

/// Bodies and queries are extracted infallibly and checked inside the handler, after `Auth`: actix polls
/// all extractors together, and a caller without a valid key must learn nothing from validation errors.
pub fn body<T>(b: Result<web::Json<T>, actix_web::Error>) -> Result<T, ApiError> {
    b.map(web::Json::into_inner)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub fn query<T>(q: Result<web::Query<T>, actix_web::Error>) -> Result<T, ApiError> {
    q.map(web::Query::into_inner)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))
}

/// Refuse, with a 400 naming its position, any id that cannot name an enrollment (`device` or
/// `device:user`, each part by the identifier rules devices are held to), before anything is looked up
/// or queued: such an id names nothing that exists, and one with a `:` too many would be ambiguous.
pub fn channel_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), ApiError> {
    for (i, id) in ids.into_iter().enumerate() {
        crate::protocol::enrollment::check_channel_id(id)
            .map_err(|e| ApiError::BadRequest(format!("ids[{i}]: {e}")))?;
    }
    Ok(())
}

/// One enrollment id from a path (see [`channel_ids`]).
pub fn channel_id(id: &str) -> Result<(), ApiError> {
    crate::protocol::enrollment::check_channel_id(id)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Page sizes: default 100, at most 1000.
pub fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "limit {n} is out of range (1 to 1000)"
        ))),
    }
}

pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time ({e})")))
}
