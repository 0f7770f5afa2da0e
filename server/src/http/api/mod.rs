//! The admin JSON API under `/api/v1`.

pub mod commands;
pub mod ddm;
pub mod devices;
pub mod enrollment;
pub mod groups;
pub mod keys;
pub mod plugins;
pub mod policies;
pub mod push;
pub mod sinks;

use super::error::ApiError;
use actix_web::http::Method;
use actix_web::web;
use actix_web::HttpResponse;
use actix_web::{Resource, Route};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::marker::PhantomData;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method as M;
    let (get, post, put, patch, delete) = (M::GET, M::POST, M::PUT, M::PATCH, M::DELETE);
    let v1 =
        web::scope("/v1")
            // A path segment that is not UTF-8 is the caller's mistake, answered like every other API error.
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::BadRequest(format!("invalid path: {err}")).into()
            }))
            .service(resource(
                "/devices",
                [(get.clone(), web::to(devices::list))],
            ))
            .service(resource(
                "/devices/{id}",
                [(get.clone(), web::to(devices::get))],
            ))
            .service(resource(
                "/devices/{id}/profiles",
                [(get.clone(), web::to(devices::profiles))],
            ))
            .service(resource(
                "/devices/{id}/reenrollment",
                [(post.clone(), web::to(devices::allow_reenrollment))],
            ))
            .service(resource(
                "/groups",
                [
                    (post.clone(), web::to(groups::create)),
                    (get.clone(), web::to(groups::list)),
                ],
            ))
            .service(resource(
                "/groups/{id}",
                [
                    (get.clone(), web::to(groups::get)),
                    (patch.clone(), web::to(groups::update)),
                    (delete.clone(), web::to(groups::delete)),
                ],
            ))
            .service(resource(
                "/groups/{id}/devices",
                [(get.clone(), web::to(groups::devices))],
            ))
            .service(resource(
                "/enrollments/{id}/commands",
                [
                    (get.clone(), web::to(commands::queue)),
                    (delete.clone(), web::to(commands::clear)),
                ],
            ))
            .service(resource(
                "/enrollments/{id}/commands/{uuid}",
                [(delete.clone(), web::to(commands::cancel))],
            ))
            .service(resource(
                "/commands",
                [(post.clone(), web::to(commands::enqueue))],
            ))
            .service(resource(
                "/commands/{uuid}",
                [(get.clone(), web::to(commands::status))],
            ))
            .service(resource(
                "/commands/{uuid}/results/{enrollment_id}",
                [(get.clone(), web::to(commands::result))],
            ))
            .service(resource(
                "/api-keys",
                [
                    (get.clone(), web::to(keys::list)),
                    (post.clone(), web::to(keys::create)),
                ],
            ))
            .service(resource(
                "/api-keys/{id}",
                [(delete.clone(), web::to(keys::revoke))],
            ))
            .service(resource(
                "/plugins",
                [
                    (get.clone(), web::to(plugins::list)),
                    (post.clone(), web::to(plugins::upload)),
                ],
            ))
            .service(resource(
                "/plugins/{id}",
                [
                    (get.clone(), web::to(plugins::get)),
                    (patch.clone(), web::to(plugins::update)),
                    (delete.clone(), web::to(plugins::delete)),
                ],
            ))
            .service(resource(
                "/plugins/{id}/config",
                [(put.clone(), web::to(plugins::set_config))],
            ))
            .service(resource(
                "/plugin-audit",
                [(get.clone(), web::to(plugins::audit))],
            ))
            .service(resource("/push", [(post.clone(), web::to(push::push))]))
            .service(resource("/sinks", [(get.clone(), web::to(sinks::list))]))
            .service(resource(
                "/sinks/{name}",
                [
                    (put.clone(), web::to(sinks::put)),
                    (delete.clone(), web::to(sinks::delete)),
                ],
            ))
            .service(resource(
                "/push-certs",
                [
                    (get.clone(), web::to(push::certs)),
                    (post.clone(), web::to(push::upload_cert)),
                ],
            ))
            .service(resource(
                "/enrollment-tokens",
                [
                    (get.clone(), web::to(enrollment::list_tokens)),
                    (post.clone(), web::to(enrollment::create_token)),
                ],
            ))
            .service(resource(
                "/enrollment-tokens/{id}",
                [(delete.clone(), web::to(enrollment::revoke_token))],
            ))
            .service(resource(
                "/scep-challenges",
                [(post.clone(), web::to(enrollment::create_challenge))],
            ))
            .service(resource(
                "/identity-certificates",
                [(get.clone(), web::to(enrollment::list_certificates))],
            ))
            .service(resource(
                "/identity-certificates/{serial}/revoke",
                [(post.clone(), web::to(enrollment::revoke_certificate))],
            ))
            .service(resource(
                "/identities/expiring",
                [(get.clone(), web::to(enrollment::expiring))],
            ))
            .service(resource(
                "/ddm/declarations",
                [
                    (put.clone(), web::to(ddm::put_declaration)),
                    (get.clone(), web::to(ddm::list_declarations)),
                ],
            ))
            .service(resource(
                "/ddm/declarations/{identifier}",
                [
                    (get.clone(), web::to(ddm::get_declaration)),
                    (delete.clone(), web::to(ddm::delete_declaration)),
                ],
            ))
            .service(resource(
                "/ddm/declarations/{identifier}/status",
                [(get.clone(), web::to(ddm::declaration_status))],
            ))
            .service(resource(
                "/ddm/sets",
                [(get.clone(), web::to(ddm::list_sets))],
            ))
            .service(resource(
                "/ddm/sets/{name}",
                [
                    (put.clone(), web::to(ddm::put_set)),
                    (get.clone(), web::to(ddm::get_set)),
                    (delete.clone(), web::to(ddm::delete_set)),
                ],
            ))
            .service(resource(
                "/ddm/enrollments/{id}",
                [(get.clone(), web::to(ddm::enrollment))],
            ))
            .service(resource(
                "/ddm/enrollments/{id}/sets/{name}",
                [
                    (put.clone(), web::to(ddm::assign)),
                    (delete.clone(), web::to(ddm::unassign)),
                ],
            ))
            .service(resource(
                "/ddm/groups/{id}",
                [(get.clone(), web::to(ddm::group_sets))],
            ))
            .service(resource(
                "/ddm/groups/{id}/sets/{name}",
                [
                    (put.clone(), web::to(ddm::assign_group)),
                    (delete.clone(), web::to(ddm::unassign_group)),
                ],
            ))
            .service(resource(
                "/ddm/sync/{ids}",
                [(put.clone(), web::to(ddm::sync))],
            ))
            .service(resource(
                "/policies",
                [
                    (post.clone(), web::to(policies::create)),
                    (get.clone(), web::to(policies::list)),
                ],
            ))
            .service(resource(
                "/policies/{id}",
                [(get.clone(), web::to(policies::get))],
            ))
            .service(resource(
                "/policies/{id}/versions",
                [
                    (post.clone(), web::to(policies::upload_version)),
                    (get.clone(), web::to(policies::versions)),
                ],
            ))
            .service(resource(
                "/policies/{id}/versions/{version}",
                [(get.clone(), web::to(policies::version))],
            ))
            .service(resource(
                "/policies/{id}/activate",
                [(post.clone(), web::to(policies::activate))],
            ))
            .service(resource(
                "/policies/{id}/rollout",
                [(get.clone(), web::to(policies::rollout))],
            ))
            .service(resource(
                "/policies/{id}/rollout/{action}",
                [(post.clone(), web::to(policies::control))],
            ))
            // A nested scope falls back to the app's default, not its parent's: say it again.
            .default_service(web::to(not_found));
    cfg.service(
        web::scope("/api")
            .service(resource(
                "/openapi.json",
                [(get, web::to(super::ops::openapi))],
            ))
            .service(v1)
            .default_service(web::to(not_found)),
    );
}

/// A path and the handler for each method it answers. Any other method gets 405 with `Allow` naming
/// these (RFC 9110), in the API's error shape: one resource per path, so a wrong method is not mistaken
/// for an unknown path.
fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    let allow: Vec<Method> = routes.iter().map(|(m, _)| m.clone()).collect();
    let resource = routes
        .into_iter()
        .fold(web::resource(path), |r, (m, route)| {
            r.route(route.method(m))
        });
    resource.default_service(web::to(move || {
        let allow = allow.clone();
        async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) }
    }))
}

/// Any path under `/api` that names no endpoint: a JSON 404 like every other API error, not an empty one.
async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no API endpoint at this path".into()))
}

/// JSON bodies: size-capped, and malformed ones answered in our error format.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| ApiError::BadRequest(format!("invalid JSON body: {err}")).into())
}

/// A JSON body as handlers take it: extracted infallibly, and read with [`body`].
pub type Body<T> = Result<web::Json<Object<T>>, actix_web::Error>;

/// Bodies and queries are extracted infallibly and checked inside the handler, after `Auth`: actix polls
/// all extractors together, and a caller without a valid key must learn nothing from validation errors.
pub fn body<T>(b: Body<T>) -> Result<T, ApiError> {
    b.map(|j| j.into_inner().0)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A request body that must be a JSON object. serde's derived structs also accept an array of their
/// fields in order (`[null]` is a `ChallengeRequest`); the API documents objects, and an array is
/// refused rather than read as one.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectOnly(PhantomData)).map(Object)
    }
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

/// An id the server numbers (a group's, a policy's) from a path: a positive integer, else a 400 naming
/// `what` it should have been.
pub fn positive_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .map_or_else(|_| Err(not_an_id(what)), |id| positive(id, what))
}

/// Such an id given as a number: ids start at 1.
pub fn positive(id: i64, what: &str) -> Result<i64, ApiError> {
    if id < 1 {
        return Err(not_an_id(what));
    }
    Ok(id)
}

fn not_an_id(what: &str) -> ApiError {
    ApiError::BadRequest(format!("a {what} id is a positive integer"))
}

/// The cursor of the page after `page`: the last row's key if the page is full (there may be more),
/// none if it is the last.
pub fn next_cursor<T, K>(page: &[T], limit: u64, key: impl Fn(&T) -> K) -> Option<K> {
    (page.len() as u64 == limit)
        .then(|| page.last().map(key))
        .flatten()
}

pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time ({e})")))
}

/// Integer fields of request bodies. JSON has one number type and JSON Schema counts `30.0` as the
/// integer 30, so a whole number is taken in either spelling; a fraction, or a number out of the field's
/// range, is still refused.
pub mod whole {
    use serde::de::{Deserialize, Deserializer, Error, Unexpected};

    fn integer<T: TryFrom<i128>, E: Error>(n: serde_json::Number) -> Result<T, E> {
        // Beyond 2^53 a float is not an exact integer any more.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let value = match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i128::from(i),
            (_, Some(u), _) => i128::from(u),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() <= EXACT => f as i128,
            (_, _, f) => {
                return Err(E::invalid_type(
                    Unexpected::Float(f.unwrap_or(f64::NAN)),
                    &"an integer",
                ))
            }
        };
        T::try_from(value).map_err(|_| {
            E::invalid_value(Unexpected::Other(&n.to_string()), &"an integer in range")
        })
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
        integer(serde_json::Number::deserialize(d)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(d)?
            .map(integer)
            .transpose()
    }
}
