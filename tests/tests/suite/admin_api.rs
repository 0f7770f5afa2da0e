//! The admin API: authentication and scopes on every route, listing and pagination, typed-command
//! validation, API key management, NanoMDM compatibility, and the operations endpoints.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_server::apikeys::Scope;
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// Every operation in the OpenAPI document with the scope it declares.
fn operations(doc: &Value) -> Vec<(Method, String, Scope)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let scope = op["security"][0]["api_key"][0]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no scope"));
            let scope = Scope::parse(scope).unwrap_or_else(|| panic!("unknown scope {scope}"));
            // Fill path parameters with placeholders.
            let concrete = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "X" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            out.push((m, concrete, scope));
        }
    }
    out
}

#[tokio::test]
async fn every_route_needs_a_valid_key_with_its_scope() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let doc = s
            .api(Method::GET, "/api/openapi.json", None, None)
            .await
            .json();
        let ops = operations(&doc);
        assert!(ops.len() >= 11, "the document lists the API: {ops:?}");
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        for (method, path, scope) in ops {
            let before = s.snapshot().await;
            // Real ids in the paths, so a refusal cannot hide behind a 404.
            let path = path.replace("/X", &format!("/{}", dev.udid));
            let body = (method == Method::POST).then(|| json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "name": "k", "scopes": ["admin"]}));
            let r = s.api(method.clone(), &path, None, body.clone()).await;
            assert_eq!(r.status, 401, "{method} {path} without a key");
            assert_eq!(r.json()["code"], "unauthorized");
            let r = s
                .api(
                    method.clone(),
                    &path,
                    Some("mdm_not-a-real-key"),
                    body.clone(),
                )
                .await;
            assert_eq!(r.status, 401, "{method} {path} with a wrong key");
            // A key holding every scope except the needed one (and admin) is refused.
            let others: Vec<Scope> = Scope::ALL
                .into_iter()
                .filter(|x| *x != scope && *x != Scope::Admin)
                .collect();
            let key = s.key(&others).await;
            let r = s.api(method.clone(), &path, Some(&key), body.clone()).await;
            assert_eq!(r.status, 403, "{method} {path} without {}", scope.as_str());
            let now = s.snapshot().await;
            let strip = |x: &str| x.lines().take(4).collect::<Vec<_>>().join("\n");
            assert_eq!(strip(&before), strip(&now), "{method} {path}: a refused call changed storage");
            // With the scope it gets past authorization.
            let key = s.key(&[scope]).await;
            let r = s.api(method.clone(), &path, Some(&key), body).await;
            assert!(
                ![401, 403].contains(&r.status),
                "{method} {path} with {}: {}",
                scope.as_str(),
                r.status
            );
        }
        // A revoked key stops working.
        let key = s.key(&[Scope::DevicesRead]).await;
        assert_eq!(
            s.api(Method::GET, "/api/v1/devices", Some(&key), None)
                .await
                .status,
            200
        );
        let keys = s.get("/api/v1/api-keys").await.json();
        let id = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| key.starts_with(k["prefix"].as_str().unwrap()))
            .expect("the new key is listed")["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            s.delete(&format!("/api/v1/api-keys/{id}")).await.status,
            204
        );
        assert_eq!(
            s.api(Method::GET, "/api/v1/devices", Some(&key), None)
                .await
                .status,
            401
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn api_keys_are_shown_once_and_stored_hashed() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = s
            .post(
                "/api/v1/api-keys",
                json!({"name": "ci", "scopes": ["devices:read", "commands:write"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let created = r.json();
        let key = created["key"].as_str().unwrap().to_string();
        assert_eq!(
            s.api(Method::GET, "/api/v1/devices", Some(&key), None)
                .await
                .status,
            200
        );
        let listing = s.get("/api/v1/api-keys").await.text();
        assert!(!listing.contains(&key), "listing never shows a secret");
        assert!(
            !s.snapshot().await.contains(&key),
            "the secret is not stored"
        );
        // X-API-Key works as well as Bearer.
        let r = s
            .http
            .get(format!("{}/api/v1/devices", s.base))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for bad in [
            json!({"name": "x", "scopes": []}),
            json!({"name": "x", "scopes": ["root"]}),
            json!({"name": "", "scopes": ["admin"]}),
        ] {
            assert_eq!(
                s.post("/api/v1/api-keys", bad.clone()).await.status,
                400,
                "{bad}"
            );
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn device_list_filters_and_paginates() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let mut devices = Vec::new();
        for i in 0..5 {
            let d = Device::new(if i % 2 == 0 {
                Platform::Ios
            } else {
                Platform::MacOs
            });
            s.enroll(&d).await;
            devices.push(d);
        }
        let half_enrolled = Device::new(Platform::Ios);
        assert_eq!(
            s.checkin(&half_enrolled, half_enrolled.authenticate())
                .await
                .status,
            200
        );

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("/api/v1/devices?limit=2&cursor={c}"),
                None => "/api/v1/devices?limit=2".into(),
            };
            let page = s.get(&q).await.json();
            for d in page["devices"].as_array().unwrap() {
                seen.push(d["id"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut all: Vec<String> = devices
            .iter()
            .map(|d| d.udid.clone())
            .chain([half_enrolled.udid.clone()])
            .collect();
        all.sort();
        assert_eq!(seen, all, "every device once, in id order");

        let macs = s.get("/api/v1/devices?platform=macOS").await.json();
        assert_eq!(macs["devices"].as_array().unwrap().len(), 2);
        let one = s
            .get(&format!(
                "/api/v1/devices?serial_number={}",
                devices[3].serial
            ))
            .await
            .json();
        assert_eq!(one["devices"][0]["id"], devices[3].udid.as_str());
        let disabled = s.get("/api/v1/devices?enabled=false").await.json();
        assert_eq!(disabled["devices"].as_array().unwrap().len(), 1);
        assert_eq!(disabled["devices"][0]["id"], half_enrolled.udid.as_str());
        let enabled = s.get("/api/v1/devices?enabled=true").await.json();
        assert_eq!(enabled["devices"].as_array().unwrap().len(), 5);
        let recent = s
            .get("/api/v1/devices?seen_after=2026-01-01T00:00:00Z")
            .await
            .json();
        assert_eq!(recent["devices"].as_array().unwrap().len(), 6);
        let future = s
            .get("/api/v1/devices?seen_after=2030-01-01T00:00:00Z")
            .await
            .json();
        assert!(future["devices"].as_array().unwrap().is_empty());
        for bad in [
            "/api/v1/devices?limit=0",
            "/api/v1/devices?limit=5000",
            "/api/v1/devices?seen_after=yesterday",
            "/api/v1/devices?enabled=maybe",
        ] {
            let r = s.get(bad).await;
            assert_eq!(r.status, 400, "{bad}: {}", r.text());
        }
        assert_eq!(s.get("/api/v1/devices/NOPE").await.status, 404);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_commands_are_refused_before_anything_is_stored() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let before = s.snapshot().await;
        let cases = [
            json!({"ids": [dev.udid], "command": {"RequestType": "DeviceLock", "PIN": "12"}}),
            json!({"ids": [dev.udid], "command": {"RequestType": "Teleport"}}),
            json!({"ids": [dev.udid], "command": {"RequestType": "RemoveProfile"}}),
            json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList", "Typo": 1}}),
            json!({"ids": [dev.udid], "raw_plist": "not a plist"}),
            json!({"ids": [dev.udid], "raw_plist": "<plist version=\"1.0\"><dict/></plist>"}),
            json!({"ids": [dev.udid]}),
            json!({"ids": [], "command": {"RequestType": "ProfileList"}}),
            json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "priority": 5000}),
            json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "ttl_seconds": 0}),
            json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "surprise": true}),
        ];
        for body in cases {
            let r = s.post("/api/v1/commands", body.clone()).await;
            assert_eq!(r.status, 400, "{body}: {}", r.text());
            assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let r = s
            .http
            .post(format!("{}/api/v1/commands", s.base))
            .bearer_auth(&s.admin_key)
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(before, s.snapshot().await);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn nanomdm_compatible_enqueue() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let key = s.key(&[Scope::CommandsWrite]).await;
        let basic = format!("Basic {}", STANDARD.encode(format!("nanomdm:{key}")));
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict>
<key>CommandUUID</key><string>fedd659e-fc3c-4e35-8bb1-c8f51ae542a5</string></dict></plist>"#;
        let put = |ids: String, auth: String| {
            s.http.put(format!("{}/v1/enqueue/{ids}", s.base)).header("Authorization", auth).body(body).send()
        };
        let r = put(format!("{},NOPE", dev.udid), basic.clone()).await.unwrap();
        assert_eq!(r.status(), 207);
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["command_uuid"], "fedd659e-fc3c-4e35-8bb1-c8f51ae542a5");
        assert_eq!(j["request_type"], "ProfileList");
        assert!(j["status"]["NOPE"]["command_error"].is_string());
        // The device receives the admin's plist byte for byte.
        let idle = dev.idle(None);
        let r = s.connect(&dev, idle).await;
        assert_eq!(r.body, body.as_bytes());
        // The same CommandUUID cannot be queued twice.
        assert_eq!(put(dev.udid.clone(), basic.clone()).await.unwrap().status(), 409);
        let wrong = format!("Basic {}", STANDARD.encode("nanomdm:wrong"));
        assert_eq!(put(dev.udid.clone(), wrong).await.unwrap().status(), 401);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn operations_endpoints() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.connect(&dev, dev.idle(None)).await;
        let r = s.api(Method::GET, "/healthz", None, None).await;
        assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
        let r = s.api(Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, 200);
        let m = s.api(Method::GET, "/metrics", None, None).await.text();
        assert!(
            m.contains(r#"mdm_checkins_total{message_type="Authenticate",outcome="ok"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"mdm_command_reports_total{status="Idle"} 1"#),
            "{m}"
        );
        assert!(
            m.contains("mdm_http_request_duration_seconds_bucket"),
            "{m}"
        );
        let doc = s
            .api(Method::GET, "/api/openapi.json", None, None)
            .await
            .json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["components"]["schemas"]["TypedCommand"].is_object());
        let r = s.api(Method::GET, "/healthz", None, None).await;
        assert_eq!(r.status, 200);
        let res = s
            .http
            .get(format!("{}/healthz", s.base))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("x-request-id").is_some());
        s.stop().await;
    })
    .await;
}
