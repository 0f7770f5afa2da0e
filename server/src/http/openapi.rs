//! The OpenAPI document, generated from the handlers' annotations and served at `/api/openapi.json`.

use super::api::{commands, ddm, devices, enrollment, groups, keys, plugins, push};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "mdm-server admin API", description = "Devices, groups, commands, declarative management and API keys. Authenticate with `Authorization: Bearer <key>` (or `X-API-Key`)."),
    paths(
        devices::list, devices::get, devices::allow_reenrollment,
        groups::create, groups::list, groups::get, groups::update, groups::delete, groups::devices,
        commands::enqueue, commands::status, commands::result, commands::queue, commands::clear, commands::cancel,
        keys::create, keys::list, keys::revoke,
        plugins::upload, plugins::list, plugins::get, plugins::update, plugins::set_config, plugins::delete, plugins::audit,
        push::push, push::upload_cert, push::certs,
        enrollment::create_token, enrollment::list_tokens, enrollment::revoke_token, enrollment::create_challenge,
        enrollment::list_certificates, enrollment::revoke_certificate, enrollment::expiring,
        ddm::put_declaration, ddm::list_declarations, ddm::get_declaration, ddm::delete_declaration,
        ddm::declaration_status, ddm::put_set, ddm::list_sets, ddm::get_set, ddm::delete_set,
        ddm::assign, ddm::unassign, ddm::enrollment, ddm::sync,
    ),
    components(schemas(crate::http::error::ErrorBody, crate::apikeys::Scope)),
    modifiers(&Security),
    tags((name = "devices"), (name = "groups"), (name = "commands"), (name = "api-keys"), (name = "plugins"), (name = "push"), (name = "enrollment"), (name = "ddm"))
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
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            assert!(schemas.contains_key(name), "{r} is not in the document");
        }
        // The manifest's check-in selection is described, not left dangling.
        let manifest = &schemas["Manifest"]["properties"];
        assert!(manifest["checkins"].is_object(), "{manifest}");
        assert!(schemas.contains_key("CheckinSelector"));
    }
}
