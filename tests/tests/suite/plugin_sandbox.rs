//! Hostile plugins against the real server: each misbehaviour is contained per the failure policy, the
//! server stays responsive, repeat offenders are quarantined, and the audit log says why.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use mdm_tests::plugins;
use serde_json::{json, Value};

fn hostile_manifest(patch: Value) -> Value {
    let mut m = plugins::manifest("hostile");
    for (k, v) in patch.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

async fn upload(s: &TestServer, manifest: &Value, config: Value) -> Resp {
    let wasm = std::fs::read(plugins::build("hostile-plugin")).unwrap();
    let approve = manifest["capabilities"].clone();
    s.post(
        "/api/v1/plugins",
        json!({"manifest": manifest, "wasm_base64": STANDARD.encode(wasm), "config": config, "approve_capabilities": approve}),
    )
    .await
}

async fn audit(s: &TestServer) -> Vec<Value> {
    s.get("/api/v1/plugin-audit?plugin_id=hostile&limit=1000")
        .await
        .json()["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// A server whose breaker trips after 3 faults.
async fn server(db: mdm_server::storage::testing::TestDatabase) -> TestServer {
    TestServer::start_with(db, |c| c.plugins.quarantine_after_faults = 3).await
}

/// Only on-checkin, fail-open: the device must get through whatever the plugin does.
fn notifier() -> Value {
    hostile_manifest(
        json!({"hooks": ["on-checkin"], "failure_policy": {"on-checkin": "fail-open"}}),
    )
}

#[tokio::test]
async fn runaway_plugins_time_out_and_are_quarantined() {
    each_database(|db| async move {
        let s = server(db).await;
        let r = upload(&s, &notifier(), json!({"mode": "loop"})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let dev = Device::new(Platform::Ios);
        let started = std::time::Instant::now();
        s.enroll(&dev).await; // Authenticate + TokenUpdate: two faults
        assert_eq!(
            s.checkin(&dev, dev.token_update(None)).await.status,
            200,
            "third fault"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "deadlines held: {:?}",
            started.elapsed()
        );
        let p = s.get("/api/v1/plugins/hostile").await.json();
        assert!(p["quarantined_at"].is_string(), "quarantined: {p}");
        assert!(p["quarantine_reason"]
            .as_str()
            .unwrap()
            .contains("deadline"));
        let faults = audit(&s).await;
        assert_eq!(faults.len(), 3, "{faults:?}");
        assert!(faults.iter().all(|f| f["outcome"] == "timeout"));
        // Quarantined: no longer called.
        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        assert_eq!(audit(&s).await.len(), 3);
        // Re-enabling lifts the quarantine.
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/hostile",
                Some(&s.admin_key),
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(r.json()["quarantined_at"].is_null());
        let m = s
            .api(reqwest::Method::GET, "/metrics", None, None)
            .await
            .text();
        assert!(
            m.contains(r#"mdm_plugin_quarantines_total{plugin="hostile"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(
                r#"mdm_plugin_calls_total{plugin="hostile",hook="on-checkin",outcome="timeout"} 3"#
            ),
            "{m}"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn memory_bombs_and_panics_trap_without_hurting_the_server() {
    each_database(|db| async move {
        let s = server(db).await;
        for mode in ["memory", "panic"] {
            let r = upload(&s, &notifier(), json!({"mode": mode})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::MacOs);
            s.enroll(&dev).await;
            let faults = audit(&s).await;
            let last = &faults[0];
            assert_eq!(last["outcome"], "trap", "{mode}: {last}");
            // A new upload is a new revision: the breaker starts clean.
        }
        let r = s.api(reqwest::Method::GET, "/healthz", None, None).await;
        assert_eq!(r.status, 200);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn huge_outputs_and_enqueue_floods_are_refused_whole() {
    each_database(|db| async move {
        let s = server(db).await;
        let dev = Device::new(Platform::Ios);
        for mode in ["huge", "flood"] {
            let r = upload(&s, &notifier(), json!({"mode": mode})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let before = s.snapshot().await;
            assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
            let rows = audit(&s).await;
            assert_eq!(rows[0]["outcome"], "rejected", "{mode}: {}", rows[0]);
            assert!(rows[0]["detail"]["reason"]
                .as_str()
                .unwrap()
                .contains("none applied"));
            // Nothing of what it asked for exists: no attributes, no commands.
            let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
            assert!(d["attributes"].as_object().unwrap().is_empty(), "{mode}");
            let after = s.snapshot().await;
            assert_eq!(
                before.lines().nth(2),
                after.lines().nth(2),
                "{mode}: no commands"
            );
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn imports_beyond_the_grants_are_refused_at_upload() {
    each_database(|db| async move {
        let s = server(db).await;
        // The component imports kv (and http, config); a manifest without kv is refused.
        let m = hostile_manifest(json!({"capabilities": ["config", "http", "commands", "attributes"]}));
        let r = upload(&s, &m, json!({})).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.json()["error"].as_str().unwrap().contains("mdm:plugin/kv"), "{}", r.text());
        // Declared but not approved by the admin: refused too.
        let wasm = std::fs::read(plugins::build("hostile-plugin")).unwrap();
        let r = s
            .post(
                "/api/v1/plugins",
                json!({"manifest": hostile_manifest(json!({})), "wasm_base64": STANDARD.encode(&wasm), "approve_capabilities": ["config"]}),
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("not approved"), "{}", r.text());
        // Not a component at all.
        let r = s
            .post(
                "/api/v1/plugins",
                json!({"manifest": hostile_manifest(json!({})), "wasm_base64": STANDARD.encode(b"\0asm junk"), "approve_capabilities": []}),
            )
            .await;
        assert_eq!(r.status, 400);
        // A config the plugin itself rejects.
        let r = s
            .api(reqwest::Method::PUT, "/api/v1/plugins/hostile/config", Some(&s.admin_key), Some(json!({"mode": "ok"})))
            .await;
        assert_eq!(r.status, 404, "nothing was stored by the refused uploads");
        assert!(s.get("/api/v1/plugins").await.json().as_array().unwrap().is_empty());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn outbound_http_is_held_to_the_allow_list_and_the_deadline() {
    // A listener that records connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    let hang = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = hang.accept().await {
            held.push(sock);
        }
    });
    each_database(|db| {
        let hits = hits.clone();
        async move {
            let s = server(db).await;
            // Off the allow-list: refused before any connection is made.
            let r = upload(
                &s,
                &notifier(),
                json!({"mode": "http", "url": format!("http://127.0.0.1:{port}/x")}),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::Ios);
            assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
            let rows = audit(&s).await;
            assert!(
                rows[0]["detail"]["fault"]
                    .as_str()
                    .unwrap()
                    .contains("NotAllowed"),
                "{}",
                rows[0]
            );
            assert_eq!(
                hits.load(std::sync::atomic::Ordering::SeqCst),
                0,
                "no request was made"
            );
            // On the list but never answering: the call's deadline covers host calls too.
            let r = upload(
                &s,
                &notifier(),
                json!({"mode": "http", "url": format!("http://127.0.0.2:{hang_port}/x")}),
            )
            .await;
            assert_eq!(r.status, 200);
            let started = std::time::Instant::now();
            assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            // Either the call's deadline fired, or the HTTP capability's own timeout (the same budget) did
            // and the plugin reported it: both mean the deadline held.
            let row = &audit(&s).await[0];
            let timed_out = row["outcome"] == "timeout"
                || (row["outcome"] == "error"
                    && row["detail"]["fault"].as_str().unwrap().contains("Timeout"));
            assert!(timed_out, "{row}");
            s.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn enrollment_decisions_fail_closed_and_deny_overrides() {
    each_database(|db| async move {
        let s = server(db).await;
        let gate = hostile_manifest(json!({"hooks": ["decide-enrollment"]}));
        for (mode, why) in [
            ("deny", "hostile says no"),
            ("error", "fail-closed"),
            ("loop", "fail-closed"),
        ] {
            let r = upload(&s, &gate, json!({"mode": mode})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::Ios);
            let before = s.snapshot().await;
            let r = s.checkin(&dev, dev.authenticate()).await;
            assert_eq!(r.status, 403, "{mode}: {}", r.text());
            assert!(r.text().contains(why), "{mode}: {}", r.text());
            assert_eq!(before, s.snapshot().await, "{mode}: nothing stored");
            assert_eq!(
                s.get(&format!("/api/v1/devices/{}", dev.udid)).await.status,
                404
            );
        }
        // Dry-run: asked, audited, not obeyed.
        upload(&s, &gate, json!({"mode": "deny"})).await;
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/hostile",
                Some(&s.admin_key),
                Some(json!({"dry_run": true})),
            )
            .await;
        assert_eq!(r.status, 200);
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let rows = audit(&s).await;
        assert_eq!(
            (rows[0]["kind"].as_str(), rows[0]["outcome"].as_str()),
            (Some("decision"), Some("dry-run"))
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_fail_closed_checkin_hook_refuses_with_503_and_stores_nothing() {
    each_database(|db| async move {
        let s = server(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let m = hostile_manifest(
            json!({"hooks": ["on-checkin"], "failure_policy": {"on-checkin": "fail-closed"}}),
        );
        assert_eq!(upload(&s, &m, json!({"mode": "error"})).await.status, 200);
        let before = s.snapshot().await;
        let r = s.checkin(&dev, dev.token_update(None)).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(before, s.snapshot().await);
        // Disabled, it no longer stands in the way.
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/hostile",
                Some(&s.admin_key),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dry_run_audits_actions_without_applying_them() {
    each_database(|db| async move {
        let s = server(db).await;
        assert_eq!(
            upload(&s, &notifier(), json!({"mode": "tag"})).await.status,
            200
        );
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!(d["attributes"]["hostile"], "was here");
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/hostile",
                Some(&s.admin_key),
                Some(json!({"dry_run": true})),
            )
            .await;
        assert_eq!(r.status, 200);
        let other = Device::new(Platform::Ios);
        s.enroll(&other).await;
        let d = s
            .get(&format!("/api/v1/devices/{}", other.udid))
            .await
            .json();
        assert!(d["attributes"].as_object().unwrap().is_empty());
        let rows = audit(&s).await;
        assert_eq!(
            (rows[0]["kind"].as_str(), rows[0]["outcome"].as_str()),
            (Some("set-attribute"), Some("dry-run"))
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_calls_actions_apply_all_or_nothing() {
    each_database(|db| async move {
        let s = server(db).await;
        for (mode, refused, why) in [
            ("half-applied", "enqueue", "invalid typed command"),
            ("half-checked", "push", "a push names 1 to"),
        ] {
            let r = upload(&s, &notifier(), json!({"mode": mode})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::Ios);
            let before = s.snapshot().await;
            assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
            let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
            assert!(
                d["attributes"].as_object().unwrap().is_empty(),
                "{mode}: the tag was taken back"
            );
            let after = s.snapshot().await;
            assert_eq!(
                before.lines().nth(2),
                after.lines().nth(2),
                "{mode}: no commands"
            );
            // Newest first: the refused action, then the tag, refused for its sake.
            let rows = audit(&s).await;
            assert_eq!(
                (rows[0]["kind"].as_str(), rows[0]["outcome"].as_str()),
                (Some(refused), Some("rejected")),
                "{mode}"
            );
            assert!(
                rows[0]["detail"]["reason"].as_str().unwrap().contains(why),
                "{mode}: {}",
                rows[0]
            );
            assert_eq!(
                (rows[1]["kind"].as_str(), rows[1]["outcome"].as_str()),
                (Some("set-attribute"), Some("rejected"))
            );
            assert!(
                rows[1]["detail"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("all or nothing"),
                "{}",
                rows[1]
            );
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn plugins_run_in_priority_order_with_ties_by_id() {
    each_database(|db| async move {
        let s = server(db).await;
        for id in ["alpha", "zeta"] {
            let mut m = notifier();
            m["id"] = json!(id);
            let r = upload(&s, &m, json!({"mode": "tag"})).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // The audit log lists newest first, so the plugin that ran last comes first.
        let last_to_run = async |s: &TestServer| {
            let dev = Device::new(Platform::Ios);
            assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 200);
            let rows = s
                .get(&format!("/api/v1/plugin-audit?device_id={}", dev.udid))
                .await
                .json();
            rows["entries"][0]["plugin_id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(last_to_run(&s).await, "zeta", "equal priorities: id order");
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/zeta",
                Some(&s.admin_key),
                Some(json!({"priority": -5})),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(last_to_run(&s).await, "alpha", "lower priority runs first");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn compiled_components_are_cached_by_content_hash() {
    each_database(|db| async move {
        let s = server(db).await;
        let r = upload(&s, &notifier(), json!({"mode": "ok"})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let sha = r.json()["wasm_sha256"].as_str().unwrap().to_string();
        let cache = s.config.data_dir.join("plugin-cache");
        let cached: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert!(
            cached
                .iter()
                .any(|f| f.starts_with(&sha) && f.ends_with(".cwasm")),
            "{cached:?}"
        );
        s.stop().await;
    })
    .await;
}
