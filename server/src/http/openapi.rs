//! The OpenAPI document, generated from the handlers' annotations and served at `/api/openapi.json`, with
//! what annotations cannot say added in one place ([`document`]): the rules shared by every operation
//! (both ways to send a key, the statuses any of them may answer) and the constraints that span fields.
//!
//! The document is a contract checked in CI (`.ci/contract.sh`: openapi-spec-validator and schemathesis):
//! every constraint the server enforces on input is in it, and every status it answers.

use super::api::{
    commands, ddm, devices, enrollment, groups, keys, plugins, policies, push, sinks,
};
use serde_json::{json, Value};
use std::sync::OnceLock;
use utoipa::openapi::schema::{
    Array, ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// One character of an enrollment id part (`Allowed::Opaque` in `protocol::enrollment`): printable
/// ASCII but `:`, `/`, `\` and `,`.
macro_rules! opaque {
    () => {
        r"[!-+\-.0-9;-\[\]-~]"
    };
}
/// A device id (UDID or EnrollmentID), as `protocol::enrollment::DEVICE_ID` admits it.
pub const DEVICE_ID: &str = concat!("^", opaque!(), "{1,128}$");
/// An enrollment (channel) id: a device id, or `device:user` (`check_channel_id`).
pub const CHANNEL_ID: &str = concat!("^", opaque!(), "{1,128}(:", opaque!(), "{1,255})?$");
/// Up to 1000 comma-separated enrollment ids (`PUT /api/v1/ddm/sync/{ids}`).
const CHANNEL_IDS: &str = concat!(
    "^",
    opaque!(),
    "{1,128}(:",
    opaque!(),
    "{1,255})?(,",
    opaque!(),
    "{1,128}(:",
    opaque!(),
    "{1,255})?){0,999}$"
);
/// A declaration identifier (`protocol::ddm::declaration::check_identifier`).
const DECLARATION_ID: &str = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$";
/// One an admin may write or delete: the server's own (`ddm::BUILTIN_PREFIX`) are reserved.
pub const WRITABLE_DECLARATION_ID: &str = r"^(?!mdm\.builtin\.)[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$";
/// A set name as read.
const SET_NAME: &str = r"^[A-Za-z0-9._-]{1,128}$";
/// One an admin may write or assign (`ddm::check_set_name`): policies' own (`ddm::POLICY_SET_PREFIX`) are
/// reserved.
const WRITABLE_SET_NAME: &str = r"^(?!mdm\.policy\.)[A-Za-z0-9._-]{1,128}$";
/// What an admin may do to a rollout (`policies::rollout::Control`).
const ROLLOUT_ACTION: &str = r"^(pause|resume|promote|rollback)$";
/// An id the server numbers, a group's or a policy's (`http::api::positive_id`): a positive integer.
const POSITIVE_ID: &str = r"^[1-9][0-9]{0,17}$";
/// An event sink's name as the API takes it (`plugins::sinks::check_name`).
const SINK_NAME: &str = r"^[A-Za-z0-9._-]{1,64}$";
/// A policy version's label (`policies::bundle::check_label`).
const VERSION_LABEL: &str = r"^[A-Za-z0-9._-]{1,64}$";

#[derive(OpenApi)]
#[openapi(
    info(title = "mdm-server admin API", description = "Devices, groups, commands, declarative management and API keys. Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`)."),
    paths(
        devices::list, devices::get, devices::profiles, devices::allow_reenrollment,
        groups::create, groups::list, groups::get, groups::update, groups::delete, groups::devices,
        commands::enqueue, commands::status, commands::result, commands::queue, commands::clear, commands::cancel,
        keys::create, keys::list, keys::revoke,
        plugins::upload, plugins::list, plugins::get, plugins::update, plugins::set_config, plugins::delete, plugins::audit,
        push::push, push::upload_cert, push::certs,
        sinks::list, sinks::put, sinks::delete,
        enrollment::create_token, enrollment::list_tokens, enrollment::revoke_token, enrollment::create_challenge,
        enrollment::list_certificates, enrollment::revoke_certificate, enrollment::expiring,
        ddm::put_declaration, ddm::list_declarations, ddm::get_declaration, ddm::delete_declaration,
        ddm::declaration_status, ddm::put_set, ddm::list_sets, ddm::get_set, ddm::delete_set,
        ddm::assign, ddm::unassign, ddm::enrollment, ddm::sync,
        ddm::group_sets, ddm::assign_group, ddm::unassign_group,
        policies::create, policies::list, policies::get, policies::upload_version, policies::versions, policies::version,
        policies::activate, policies::rollout, policies::control,
    ),
    components(schemas(crate::http::error::ErrorBody, crate::apikeys::Scope)),
    modifiers(&Security),
    tags((name = "devices"), (name = "groups"), (name = "commands"), (name = "api-keys"), (name = "plugins"), (name = "sinks"), (name = "push"), (name = "enrollment"), (name = "ddm"), (name = "policies"))
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The ids a command is queued to (`storage::enqueue::MAX_IDS_PER_ENQUEUE` at most), beside `groups`:
/// either may be empty, not both (see [`targets`]).
pub fn enqueue_ids() -> Array {
    strings(CHANNEL_ID, crate::storage::enqueue::MAX_IDS_PER_ENQUEUE)
}

/// The ids an explicit push wakes, beside `groups` as for [`enqueue_ids`].
pub fn push_ids() -> Array {
    strings(CHANNEL_ID, push::MAX_PUSH_IDS)
}

/// A static group's devices in one request.
pub fn group_devices() -> Array {
    strings(DEVICE_ID, crate::groups::admin::MAX_DEVICES_PER_REQUEST)
}

/// Groups named as targets: positive ids (an unknown one is refused with 400).
pub fn group_ids() -> Array {
    let id = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1));
    ArrayBuilder::new()
        .items(id)
        .max_items(Some(crate::storage::enqueue::MAX_GROUPS_PER_ENQUEUE))
        .build()
}

/// Up to `max` strings, each matching `pattern`.
fn strings(pattern: &str, max: usize) -> Array {
    let item = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern));
    ArrayBuilder::new().items(item).max_items(Some(max)).build()
}

/// Path parameters the server checks before looking anything up, with the rule they are checked by:
/// (path, method or `*` for every method of the path, parameter, pattern).
const PATH_PATTERNS: &[(&str, &str, &str, &str)] = &[
    ("/api/v1/devices/{id}", "*", "id", DEVICE_ID),
    ("/api/v1/devices/{id}/profiles", "*", "id", DEVICE_ID),
    ("/api/v1/enrollments/{id}/commands", "*", "id", CHANNEL_ID),
    (
        "/api/v1/enrollments/{id}/commands/{uuid}",
        "*",
        "id",
        CHANNEL_ID,
    ),
    (
        "/api/v1/commands/{uuid}/results/{enrollment_id}",
        "*",
        "enrollment_id",
        CHANNEL_ID,
    ),
    (
        "/api/v1/ddm/declarations/{identifier}",
        "get",
        "identifier",
        DECLARATION_ID,
    ),
    (
        "/api/v1/ddm/declarations/{identifier}",
        "delete",
        "identifier",
        WRITABLE_DECLARATION_ID,
    ),
    (
        "/api/v1/ddm/declarations/{identifier}/status",
        "*",
        "identifier",
        DECLARATION_ID,
    ),
    ("/api/v1/ddm/sets/{name}", "get", "name", SET_NAME),
    ("/api/v1/ddm/sets/{name}", "put", "name", WRITABLE_SET_NAME),
    (
        "/api/v1/ddm/sets/{name}",
        "delete",
        "name",
        WRITABLE_SET_NAME,
    ),
    ("/api/v1/ddm/enrollments/{id}", "*", "id", CHANNEL_ID),
    (
        "/api/v1/ddm/enrollments/{id}/sets/{name}",
        "*",
        "id",
        CHANNEL_ID,
    ),
    (
        "/api/v1/ddm/enrollments/{id}/sets/{name}",
        "*",
        "name",
        WRITABLE_SET_NAME,
    ),
    ("/api/v1/ddm/sync/{ids}", "*", "ids", CHANNEL_IDS),
    ("/api/v1/groups/{id}", "*", "id", POSITIVE_ID),
    ("/api/v1/sinks/{name}", "*", "name", SINK_NAME),
    ("/api/v1/ddm/groups/{id}", "*", "id", POSITIVE_ID),
    ("/api/v1/policies/{id}", "*", "id", POSITIVE_ID),
    ("/api/v1/policies/{id}/versions", "*", "id", POSITIVE_ID),
    (
        "/api/v1/policies/{id}/versions/{version}",
        "*",
        "id",
        POSITIVE_ID,
    ),
    (
        "/api/v1/policies/{id}/versions/{version}",
        "*",
        "version",
        VERSION_LABEL,
    ),
    (
        "/api/v1/ddm/groups/{id}/sets/{name}",
        "*",
        "id",
        POSITIVE_ID,
    ),
    (
        "/api/v1/ddm/groups/{id}/sets/{name}",
        "*",
        "name",
        WRITABLE_SET_NAME,
    ),
    ("/api/v1/policies/{id}/activate", "*", "id", POSITIVE_ID),
    ("/api/v1/policies/{id}/rollout", "*", "id", POSITIVE_ID),
    (
        "/api/v1/policies/{id}/rollout/{action}",
        "*",
        "id",
        POSITIVE_ID,
    ),
    (
        "/api/v1/policies/{id}/rollout/{action}",
        "*",
        "action",
        ROLLOUT_ACTION,
    ),
    ("/api/v1/groups/{id}/devices", "*", "id", POSITIVE_ID),
];

/// Bodies that name their targets by enrollment ids, groups or both: at least one of either.
const TARGETS: &[&str] = &["EnqueueBody", "PushBody"];

fn targets() -> Value {
    json!([
        {"required": ["ids"], "properties": {"ids": {"minItems": 1}}},
        {"required": ["groups"], "properties": {"groups": {"minItems": 1}}},
    ])
}

/// Fields of which a body takes exactly one form (the handler refuses both and neither).
fn exclusive_forms() -> [(&'static str, Value); 3] {
    let absent = json!({"type": "null"});
    [
        (
            "EnqueueBody",
            json!([
                {"required": ["command"], "properties": {"command": {"$ref": "#/components/schemas/TypedCommand"}, "raw_plist": absent}},
                {"required": ["raw_plist"], "properties": {"raw_plist": {"type": "string"}, "command": absent}},
            ]),
        ),
        (
            "CertUpload",
            json!([
                {"required": ["cert_pem", "key_pem"],
                 "properties": {"cert_pem": {"type": "string"}, "key_pem": {"type": "string"}, "pkcs12_base64": absent}},
                {"required": ["pkcs12_base64"],
                 "properties": {"pkcs12_base64": {"type": "string"}, "cert_pem": absent, "key_pem": absent}},
            ]),
        ),
        (
            "CreateGroup",
            json!([
                {"required": ["devices"], "properties": {"rule": absent}},
                {"required": ["rule"], "properties": {"devices": absent}},
            ]),
        ),
    ]
}

/// The document as served: the annotations' plus the rules every `/api/v1` operation shares and the
/// constraints annotations cannot express. Built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc =
            serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
        complete(&mut doc);
        doc
    })
}

fn complete(doc: &mut Value) {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let responses = json!({
        "BadRequest": {"description": "The request is malformed or breaks a documented rule; nothing was changed", "content": error},
        "Unauthorized": {"description": "No key, or not a valid one", "content": error},
        "Forbidden": {"description": "The key lacks the scope this operation needs", "content": error},
        "Internal": {"description": "The server failed; the details are in its log", "content": error},
        "Unavailable": {"description": "The database is unreachable, the request took longer than `http.request_timeout_secs`, or the server holds `http.max_connections`", "content": error},
        "TooManyConnections": {"description": "This address holds `http.max_connections_per_peer` connections", "content": error},
        "BodyTimeout": {"description": "The body did not arrive within `http.body_timeout_secs`", "content": error},
    });
    doc["components"]["responses"] = responses;
    let reference = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for op in item.as_object_mut().expect("path item").values_mut() {
            // What any operation may answer, whatever it does.
            let has_body = op.get("requestBody").is_some();
            let has_input = has_body
                || op
                    .get("parameters")
                    .is_some_and(|p| p.as_array().is_some_and(|p| !p.is_empty()));
            // Every admin operation needs a key, sent either way (`http::auth::presented_key`).
            let security = op["security"]
                .as_array_mut()
                .expect("every operation declares its security");
            let scopes = security[0]["api_key"].clone();
            assert!(
                scopes.is_array(),
                "{path}: security names the api_key scheme first"
            );
            security.push(json!({"api_key_header": scopes}));
            let r = op["responses"].as_object_mut().expect("responses");
            let mut common = vec![
                ("401", "Unauthorized"),
                ("403", "Forbidden"),
                ("429", "TooManyConnections"),
                ("500", "Internal"),
                ("503", "Unavailable"),
            ];
            if has_input {
                common.push(("400", "BadRequest"));
            }
            if has_body {
                common.push(("408", "BodyTimeout"));
            }
            for (status, name) in common {
                r.entry(status).or_insert_with(|| reference(name));
            }
        }
    }
    for (path, method, name, pattern) in PATH_PATTERNS {
        let item = paths
            .get_mut(*path)
            .unwrap_or_else(|| panic!("{path} is in the document"));
        let mut found = false;
        let ops = item.as_object_mut().expect("path item").iter_mut();
        for (_, op) in ops.filter(|(m, _)| *method == "*" || m == method) {
            for p in op["parameters"].as_array_mut().into_iter().flatten() {
                if p["in"] == "path" && p["name"] == *name {
                    p["schema"]["pattern"] = json!(pattern);
                    found = true;
                }
            }
        }
        assert!(found, "{path} has a path parameter {name}");
    }
    let schemas = &mut doc["components"]["schemas"];
    for (name, forms) in exclusive_forms() {
        assert!(schemas[name].is_object(), "{name} is in the document");
        schemas[name]["oneOf"] = forms;
    }
    for name in TARGETS {
        assert!(schemas[*name].is_object(), "{name} is in the document");
        schemas[*name]["anyOf"] = targets();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `#/components/schemas/X` the document points at, wherever it stands.
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                    out.push(r.to_string());
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_the_document_refers_to_is_in_it() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let (kind, name) = r
                .strip_prefix("#/components/")
                .and_then(|r| r.split_once('/'))
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let defined = doc["components"][kind].as_object();
            assert!(
                defined.is_some_and(|d| d.contains_key(name)),
                "{r} is not in the document"
            );
        }
        // The manifest's check-in selection is described, not left dangling.
        let manifest = &schemas["Manifest"]["properties"];
        assert!(manifest["checkins"].is_object(), "{manifest}");
        assert!(schemas.contains_key("CheckinSelector"));
    }
}
