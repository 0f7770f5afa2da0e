//! The admin API's contract: the OpenAPI document is usable by client generators (unique operationIds,
//! every operation's security declared with both ways to send a key), wrong methods and unknown paths are
//! answered in the API's error shape, and input the document calls invalid is refused without effect.
//! CI checks the same document against the running server with openapi-spec-validator and schemathesis
//! (`.ci/contract.sh`); these are the cases it found, kept so they cannot come back unnoticed.

use mdm_server::storage::secrets::{self, SecretKind};
use mdm_tests::harness::{each_database, TestServer, START_MS};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Every operation in the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.clone(), path.clone(), op));
        }
    }
    out
}

#[tokio::test]
async fn the_document_names_each_operation_once_and_declares_its_security() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = s.api(Method::GET, "/api/openapi.json", None, None).await;
        assert_eq!(r.status, 200);
        let doc = r.json();
        let ops = operations(&doc);
        assert!(ops.len() > 40, "the document lists the API: {}", ops.len());

        // Client generators name a function per operationId: a repeat makes them fail or overwrite.
        let mut seen: BTreeMap<&str, String> = BTreeMap::new();
        for (method, path, op) in &ops {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(first) = seen.insert(id, format!("{method} {path}")) {
                panic!("operationId {id} names both {first} and {method} {path}");
            }
        }

        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        for (method, path, op) in &ops {
            assert!(path.starts_with("/api/v1/"), "{path}");
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no security"));
            // Each declared scheme exists, and the key may be sent either way the server reads it.
            let mut named = Vec::new();
            for requirement in security {
                for (scheme, scopes) in requirement.as_object().expect("requirement") {
                    assert!(schemes.contains_key(scheme), "{method} {path}: {scheme}");
                    assert_eq!(
                        scopes.as_array().map(Vec::len),
                        Some(1),
                        "{method} {path}: one scope"
                    );
                    named.push(scheme.as_str());
                }
            }
            assert_eq!(
                named,
                ["api_key", "api_key_header"],
                "{method} {path}: Bearer or X-API-Key"
            );
            // A status the operation may answer is documented: the refusals every operation shares.
            for status in ["401", "403", "500", "503"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} does not document {status}"
                );
            }
        }

        // Constraints the server enforces are in the document.
        let params = |path: &str, method: &str| doc["paths"][path][method]["parameters"].clone();
        let limit = params("/api/v1/devices", "get")
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .cloned()
            .expect("limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
        assert_eq!(limit["schema"]["maximum"], 1000, "{limit}");
        let schemas = &doc["components"]["schemas"];
        // Targets: ids, groups or both, at least one of either; the most ids one call takes.
        let ids = &schemas["EnqueueBody"]["properties"]["ids"];
        assert_eq!(ids["maxItems"], 100_000, "{ids}");
        assert!(ids["items"]["pattern"].is_string(), "{ids}");
        let groups = &schemas["EnqueueBody"]["properties"]["groups"];
        assert_eq!(groups["items"]["minimum"], 1, "{groups}");
        for body in ["EnqueueBody", "PushBody"] {
            let any = schemas[body]["anyOf"].as_array().expect("ids or groups");
            let required: Vec<&Value> = any.iter().map(|f| &f["required"][0]).collect();
            assert_eq!(required, [&json!("ids"), &json!("groups")], "{body}");
        }
        assert!(
            schemas["CreateGroup"]["oneOf"].is_array(),
            "devices or rule"
        );
        assert_eq!(
            schemas["CreateGroup"]["properties"]["name"]["maxLength"],
            128
        );
        assert!(
            schemas["EnqueueBody"]["oneOf"].is_array(),
            "command or raw_plist"
        );
        assert_eq!(schemas["CreateKey"]["properties"]["name"]["minLength"], 1);
        assert!(schemas["Manifest"]["properties"]["id"]["pattern"].is_string());
    })
    .await;
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow_and_unknown_api_paths_a_json_404() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        for (method, path, allow) in [
            (Method::PATCH, "/api/v1/devices", "GET"),
            (Method::DELETE, "/api/v1/api-keys", "GET, POST"),
            (Method::POST, "/api/v1/plugins/x", "GET, PATCH, DELETE"),
            (Method::PUT, "/api/openapi.json", "GET"),
        ] {
            let r = s
                .http
                .request(method.clone(), format!("{}{path}", s.base))
                .bearer_auth(&s.admin_key)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 405, "{method} {path}");
            let got = r
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_string());
            assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
            let body: Value = r.json().await.expect("a JSON body");
            assert_eq!(
                body["code"], "method_not_allowed",
                "{method} {path}: {body}"
            );
        }
        for path in [
            "/api/v1/nothing-here",
            "/api/v1/devices/a/b/c",
            "/api/nothing",
            "/api/",
        ] {
            for key in [None, Some(s.admin_key.as_str())] {
                let r = s.api(Method::GET, path, key, None).await;
                assert_eq!(r.status, 404, "{path}");
                assert_eq!(r.json()["code"], "not_found", "{path}");
            }
        }
        // The routes themselves still answer.
        assert_eq!(s.get("/api/v1/devices").await.status, 200);
        assert_eq!(s.get("/api/openapi.json").await.status, 200);
    })
    .await;
}

#[tokio::test]
async fn invalid_input_the_document_refuses_is_refused_and_changes_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let challenges = || async {
            secrets::list(
                &s.storage.read(),
                SecretKind::Challenge,
                true,
                START_MS,
                1000,
            )
            .await
            .expect("challenges")
            .len()
        };
        let before = (challenges().await, s.snapshot().await);
        // serde reads a struct from an array of its fields too; the API takes objects only.
        for (path, body) in [
            ("/api/v1/scep-challenges", json!([null])),
            ("/api/v1/scep-challenges", json!([])),
            ("/api/v1/api-keys", json!(["k", ["admin"]])),
            (
                "/api/v1/commands",
                json!([["X"], {"RequestType": "ProfileList"}]),
            ),
            // More ids than the document's maxItems, even if they are one id repeated.
            ("/api/v1/push", json!({"ids": vec!["X"; 10_001]})),
        ] {
            let r = s.post(path, body.clone()).await;
            assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
            assert_eq!(r.json()["code"], "bad_request", "{path} {body}");
        }
        for path in [
            "/api/v1/identities/expiring?days=2147483648",
            "/api/v1/identities/expiring?days=36501",
            "/api/v1/identity-certificates?expiring_within_days=2147483648",
            "/api/v1/devices?limit=0",
            "/api/v1/devices?limit=1001",
            // Filters the document bounds (schemathesis found these): a group id is positive, an
            // attribute key 1 to 128 characters.
            "/api/v1/devices?group=0",
            "/api/v1/devices?group=-9223372036854775808",
            "/api/v1/devices?attribute=",
            "/api/v1/devices?attribute==x",
        ] {
            let r = s.get(path).await;
            assert_eq!(r.status, 400, "{path}: {}", r.text());
            assert_eq!(r.json()["code"], "bad_request", "{path}");
        }
        assert_eq!(
            before,
            (challenges().await, s.snapshot().await),
            "a refused request changed storage"
        );
        // The same requests, valid, are accepted: the refusals above are about the input.
        assert_eq!(
            s.post("/api/v1/scep-challenges", json!({})).await.status,
            201
        );
        assert_eq!(challenges().await, before.0 + 1);
        for path in [
            "/api/v1/identities/expiring?days=36500",
            "/api/v1/identity-certificates?expiring_within_days=0",
            "/api/v1/devices?limit=1000",
            "/api/v1/devices?group=1",
            "/api/v1/devices?attribute=k=",
            "/api/v1/devices?attribute=k=a%0Ab",
        ] {
            assert_eq!(s.get(path).await.status, 200, "{path}");
        }
        // 128 two-byte characters: the document's maxLength, so accepted (and matching nothing).
        let key = "%C3%A9".repeat(128);
        let r = s.get(&format!("/api/v1/devices?attribute={key}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = s.get(&format!("/api/v1/devices?attribute={key}e")).await;
        assert_eq!(r.status, 400, "{}", r.text());
    })
    .await;
}
