//! Declarative Device Management end to end, on SQLite and PostgreSQL: admins upload declarations, group
//! them in sets and assign sets; devices are told by a DeclarativeManagement command, sync with the
//! simulated DDM client and report status, which the API shows.

use mdm_server::apikeys::Scope;
use mdm_tests::ddm::{request, DdmClient};
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

fn passcode(id: &str, min_length: i64) -> Value {
    json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": id,
           "Payload": {"RequirePasscode": true, "MinimumLength": min_length}})
}

fn activation(id: &str, configurations: &[&str]) -> Value {
    json!({"Type": "com.apple.activation.simple", "Identifier": id,
           "Payload": {"StandardConfigurations": configurations}})
}

fn software_update(id: &str) -> Value {
    json!({"Type": "com.apple.configuration.softwareupdate.enforcement.specific", "Identifier": id,
           "Payload": {"TargetOSVersion": "17.6", "TargetLocalDateTime": "2026-03-01T09:00:00"}})
}

async fn put_declaration(s: &TestServer, d: Value) -> Resp {
    s.api(
        Method::PUT,
        "/api/v1/ddm/declarations",
        Some(&s.admin_key),
        Some(d),
    )
    .await
}

async fn ok(r: Resp, what: &str) -> Value {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    r.json()
}

async fn put_set(s: &TestServer, name: &str, ids: &[&str]) -> Value {
    let r = s
        .api(
            Method::PUT,
            &format!("/api/v1/ddm/sets/{name}"),
            Some(&s.admin_key),
            Some(json!({ "declarations": ids })),
        )
        .await;
    ok(r, "put set").await
}

async fn assign(s: &TestServer, id: &str, set: &str) -> Value {
    let path = format!("/api/v1/ddm/enrollments/{id}/sets/{set}");
    ok(
        s.api(Method::PUT, &path, Some(&s.admin_key), None).await,
        "assign",
    )
    .await
}

/// The DeclarativeManagement commands waiting for an enrollment.
async fn pending_syncs(s: &TestServer, id: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/v1/enrollments/{id}/commands")).await;
    let all = ok(r, "queue").await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] == "DeclarativeManagement")
        .cloned()
        .collect()
}

async fn enrolled(s: &TestServer) -> Device {
    let dev = Device::new(Platform::Ios);
    s.enroll(&dev).await;
    dev
}

async fn enrollment_view(s: &TestServer, id: &str) -> Value {
    ok(
        s.get(&format!("/api/v1/ddm/enrollments/{id}")).await,
        "enrollment view",
    )
    .await
}

#[tokio::test]
async fn first_sync_delivers_everything_and_status_shows_in_the_api() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s).await;
        let up = ok(
            put_declaration(&s, passcode("com.example.passcode", 6)).await,
            "put",
        )
        .await;
        assert_eq!(up["result"], "created");
        let token = up["server_token"].as_str().unwrap().to_string();
        ok(
            put_declaration(&s, activation("com.example.act", &["com.example.passcode"])).await,
            "put",
        )
        .await;
        put_set(&s, "baseline", &["com.example.passcode", "com.example.act"]).await;
        let before = s.pusher.pushes().len();
        assert_eq!(assign(&s, &dev.udid, "baseline").await["changed"], true);

        // One DeclarativeManagement command, carrying the tokens, and a push owed for it.
        assert_eq!(pending_syncs(&s, &dev.udid).await.len(), 1);
        s.push.run_once().await.unwrap();
        assert!(s.pusher.pushes().len() > before, "the device was pushed");
        let cmd = s.next_command(&dev).await.expect("a command");
        assert_eq!(cmd.request_type, "DeclarativeManagement");
        let data = cmd
            .command
            .get("Data")
            .and_then(|d| d.as_data())
            .expect("Data");
        let tokens: Value = serde_json::from_slice(data).unwrap();
        let announced = tokens["SyncTokens"]["DeclarationsToken"]
            .as_str()
            .unwrap()
            .to_string();

        let mut client = DdmClient::default();
        let round = s.ddm_sync(&dev, &mut client).await;
        assert!(round.fetched.contains(&"com.example.passcode".to_string()));
        assert!(round.fetched.contains(&"com.example.act".to_string()));
        assert!(
            round
                .fetched
                .iter()
                .any(|i| i.starts_with("mdm.builtin.server-capabilities")),
            "built-in management declarations are in every set: {round:?}"
        );
        assert_eq!(
            client.declarations_token.as_deref(),
            Some(announced.as_str())
        );
        let held = &client.held["com.example.passcode"].declaration;
        assert_eq!(held["Payload"]["MinimumLength"], 6);
        assert_eq!(held["ServerToken"], token.as_str());

        let view = enrollment_view(&s, &dev.udid).await;
        assert_eq!(view["sets"], json!(["baseline"]));
        assert_eq!(view["declarations_token"], announced.as_str());
        assert_eq!(view["synced_token"], announced.as_str());
        let passcode = view["declarations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["identifier"] == "com.example.passcode")
            .unwrap()
            .clone();
        assert_eq!(passcode["current"], true);
        assert_eq!(passcode["active"], true);
        assert_eq!(passcode["valid"], "valid");
        assert!(view["last_status_at"].is_i64());

        // Answers are JSON, said so.
        let body = request(&dev.udid, "tokens", None);
        let res = s
            .http
            .put(format!("{}/mdm/checkin", s.base))
            .header("Mdm-Signature", dev.sign(&body))
            .header("Content-Type", "application/x-apple-aspen-mdm-checkin")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], "application/json");

        // Nothing changed: the next sync fetches tokens only.
        assert!(s.ddm_sync(&dev, &mut client).await.up_to_date);
        let status = ok(
            s.get("/api/v1/ddm/declarations/com.example.passcode/status?state=active")
                .await,
            "status",
        )
        .await;
        assert_eq!(status["counts"]["active"], 1);
        assert_eq!(status["enrollments"], json!([dev.udid]));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_edit_reaches_only_the_devices_holding_it_and_repeated_edits_coalesce() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (a, b) = (enrolled(&s).await, enrolled(&s).await);
        ok(put_declaration(&s, passcode("p.a", 6)).await, "put").await;
        ok(put_declaration(&s, software_update("su.b")).await, "put").await;
        put_set(&s, "set-a", &["p.a"]).await;
        put_set(&s, "set-b", &["su.b"]).await;
        assign(&s, &a.udid, "set-a").await;
        assign(&s, &b.udid, "set-b").await;
        let (mut ca, mut cb) = (DdmClient::default(), DdmClient::default());
        for (dev, client) in [(&a, &mut ca), (&b, &mut cb)] {
            s.next_command(dev).await.expect("initial sync command");
            s.ddm_sync(dev, client).await;
            assert!(pending_syncs(&s, &dev.udid).await.is_empty());
        }

        let edited = ok(put_declaration(&s, passcode("p.a", 8)).await, "edit").await;
        assert_eq!(edited["result"], "changed");
        assert_eq!(edited["synced"]["queued"], 1);
        // The same content again changes nothing and queues nothing.
        let again = ok(put_declaration(&s, passcode("p.a", 8)).await, "same").await;
        assert_eq!(again["result"], "unchanged");
        assert_eq!(pending_syncs(&s, &a.udid).await.len(), 1);
        assert!(
            pending_syncs(&s, &b.udid).await.is_empty(),
            "b does not hold p.a"
        );

        // A second edit before the device comes replaces the waiting command.
        ok(put_declaration(&s, passcode("p.a", 10)).await, "edit").await;
        let waiting = pending_syncs(&s, &a.udid).await;
        assert_eq!(waiting.len(), 1, "{waiting:?}");
        let cmd = s.next_command(&a).await.unwrap();
        let tokens: Value =
            serde_json::from_slice(cmd.command.get("Data").unwrap().as_data().unwrap()).unwrap();
        let round = s.ddm_sync(&a, &mut ca).await;
        assert_eq!(
            round.fetched,
            vec!["p.a".to_string()],
            "only what changed is fetched"
        );
        assert_eq!(ca.held["p.a"].declaration["Payload"]["MinimumLength"], 10);
        assert_eq!(
            ca.declarations_token.as_deref(),
            tokens["SyncTokens"]["DeclarationsToken"].as_str(),
            "the command carried the newest tokens"
        );
        assert!(s.next_command(&b).await.is_none());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn removal_and_unassignment_take_declarations_away() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s).await;
        ok(put_declaration(&s, passcode("p", 6)).await, "put").await;
        ok(put_declaration(&s, software_update("su")).await, "put").await;
        put_set(&s, "s1", &["p", "su"]).await;
        put_set(&s, "s2", &["su"]).await;
        assign(&s, &dev.udid, "s1").await;
        let mut client = DdmClient::default();
        s.ddm_sync(&dev, &mut client).await;

        // A declaration in a set is not deleted without force.
        let r = s.delete("/api/v1/ddm/declarations/p").await;
        assert_eq!(r.status, 409, "{}", r.text());
        let r = s.delete("/api/v1/ddm/declarations/p?force=true").await;
        assert_eq!(ok(r, "force delete").await["queued"], 1);
        let round = s.ddm_sync(&dev, &mut client).await;
        assert_eq!(round.dropped, vec!["p".to_string()]);
        assert!(client.held.contains_key("su"));

        // Unassigning s1 while s2 (which also holds su) is assigned changes nothing the device has.
        assign(&s, &dev.udid, "s2").await;
        let path = format!("/api/v1/ddm/enrollments/{}/sets/s1", dev.udid);
        ok(s.delete(&path).await, "unassign").await;
        assert!(s.ddm_sync(&dev, &mut client).await.up_to_date);
        let path = format!("/api/v1/ddm/enrollments/{}/sets/s2", dev.udid);
        ok(s.delete(&path).await, "unassign").await;
        let round = s.ddm_sync(&dev, &mut client).await;
        assert_eq!(round.dropped, vec!["su".to_string()]);
        assert!(client.held.keys().all(|k| k.starts_with("mdm.builtin.")));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_declaration_reported_by_the_device_is_visible_in_the_api() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (good, bad) = (enrolled(&s).await, enrolled(&s).await);
        ok(put_declaration(&s, passcode("p", 6)).await, "put").await;
        ok(put_declaration(&s, activation("act", &["p"])).await, "put").await;
        put_set(&s, "s", &["p", "act"]).await;
        assign(&s, &good.udid, "s").await;
        assign(&s, &bad.udid, "s").await;
        s.ddm_sync(&good, &mut DdmClient::default()).await;
        let mut refusing = DdmClient::default();
        refusing.refuses.insert("p".into());
        s.ddm_sync(&bad, &mut refusing).await;

        let view = enrollment_view(&s, &bad.udid).await;
        let p = view["declarations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["identifier"] == "p")
            .unwrap()
            .clone();
        assert_eq!(p["valid"], "invalid");
        assert_eq!(p["active"], false);
        assert_eq!(
            p["reasons"][0]["code"],
            "Error.ConfigurationCannotBeApplied"
        );

        let status = ok(
            s.get("/api/v1/ddm/declarations/p/status?state=invalid")
                .await,
            "status",
        )
        .await;
        assert_eq!(status["counts"]["invalid"], 1);
        assert_eq!(status["counts"]["active"], 1);
        assert_eq!(status["enrollments"], json!([bad.udid]));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_device_enrolling_again_starts_clean() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s).await;
        ok(put_declaration(&s, passcode("p", 6)).await, "put").await;
        put_set(&s, "s", &["p"]).await;
        assign(&s, &dev.udid, "s").await;
        s.ddm_sync(&dev, &mut DdmClient::default()).await;
        assert_eq!(enrollment_view(&s, &dev.udid).await["sets"], json!(["s"]));

        s.enroll(&dev).await;
        let view = enrollment_view(&s, &dev.udid).await;
        assert_eq!(view["sets"], json!([]));
        assert!(view["last_status_at"].is_null());
        assert!(view["status_items"].as_object().unwrap().is_empty());
        let mut fresh = DdmClient::default();
        let round = s.ddm_sync(&dev, &mut fresh).await;
        assert!(!round.fetched.contains(&"p".to_string()));

        // CheckOut forgets too.
        assign(&s, &dev.udid, "s").await;
        assert_eq!(s.checkin(&dev, dev.checkout()).await.status, 200);
        assert_eq!(enrollment_view(&s, &dev.udid).await["sets"], json!([]));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_device_cannot_fetch_another_devices_declaration_or_speak_for_it() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (a, b) = (enrolled(&s).await, enrolled(&s).await);
        ok(put_declaration(&s, passcode("secret", 6)).await, "put").await;
        put_set(&s, "only-a", &["secret"]).await;
        assign(&s, &a.udid, "only-a").await;
        let fetch = |dev: &Device, endpoint: &str| request(&dev.udid, endpoint, None);
        let r = s
            .checkin(&a, fetch(&a, "declaration/configuration/secret"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let not_held = s
            .checkin(&b, fetch(&b, "declaration/configuration/secret"))
            .await;
        let missing = s
            .checkin(&b, fetch(&b, "declaration/configuration/nothing"))
            .await;
        assert_eq!(not_held.status, 404);
        assert_eq!(
            (missing.status, missing.body),
            (404, not_held.body),
            "the two refusals read the same"
        );
        // The wrong category is not found either.
        assert_eq!(
            s.checkin(&a, fetch(&a, "declaration/asset/secret"))
                .await
                .status,
            404
        );

        // B's identity speaking for A's UDID is refused before anything is read.
        let body = fetch(&a, "declaration/configuration/secret");
        let sig = b.sign(&body);
        let r = s
            .put(
                "/mdm/checkin",
                body,
                &[
                    ("Mdm-Signature", sig),
                    (
                        "Content-Type",
                        "application/x-apple-aspen-mdm-checkin".into(),
                    ),
                ],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        // A stranger (an identity from the trusted CA, never enrolled) likewise.
        let stranger = Device::new(Platform::Ios);
        assert_eq!(
            s.checkin(&stranger, fetch(&stranger, "tokens"))
                .await
                .status,
            403
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_requests_get_a_400_and_change_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s).await;
        s.ddm_sync(&dev, &mut DdmClient::default()).await;
        let before = s.snapshot().await;
        for (endpoint, data) in [
            ("status", Some(b"not json".to_vec())),
            ("status", Some(b"[]".to_vec())),
            ("status", Some(br#"{"StatusItems": {"management": {"declarations": {"configurations": [{"identifier": 5}]}}}, "Errors": []}"#.to_vec())),
            ("status", None),
            ("nonsense", None),
            ("declaration/profile/x", None),
        ] {
            let r = s.checkin(&dev, request(&dev.udid, endpoint, data)).await;
            assert_eq!(r.status, 400, "{endpoint}: {}", r.text());
        }
        assert_eq!(s.snapshot().await, before);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn admin_changes_are_validated_scoped_and_audited() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        // Schema validation names the offending key.
        let mut bad = passcode("p", 6);
        bad["Payload"]["MinimumLength"] = json!("six");
        let r = put_declaration(&s, bad).await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("MinimumLength"), "{}", r.text());
        let mut unknown = passcode("p", 6);
        unknown["Payload"]["Bogus"] = json!(true);
        let r = put_declaration(&s, unknown).await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("Bogus"), "{}", r.text());
        let r = put_declaration(
            &s,
            json!({"Type": "com.example.nope", "Identifier": "x", "Payload": {}}),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let r = put_declaration(&s, passcode("mdm.builtin.mine", 6)).await;
        assert_eq!(
            r.status,
            400,
            "the built-in prefix is reserved: {}",
            r.text()
        );
        // A set may only name declarations that exist.
        let r = s
            .api(
                Method::PUT,
                "/api/v1/ddm/sets/s",
                Some(&s.admin_key),
                Some(json!({"declarations": ["ghost"]})),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());

        // Sets and forced syncs are bounded before anything is looked up.
        let many: Vec<String> = (0..10_001).map(|i| format!("d{i}")).collect();
        let r = s
            .api(
                Method::PUT,
                "/api/v1/ddm/sets/big",
                Some(&s.admin_key),
                Some(json!({"declarations": many})),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let ids: Vec<String> = (0..1_001).map(|i| format!("D{i}")).collect();
        let r = s
            .api(
                Method::PUT,
                &format!("/api/v1/ddm/sync/{}", ids.join(",")),
                Some(&s.admin_key),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());

        // Reads with devices:read, changes with ddm:write.
        let reader = s.key(&[Scope::DevicesRead]).await;
        let writer = s.key(&[Scope::DdmWrite]).await;
        let r = s
            .api(
                Method::PUT,
                "/api/v1/ddm/declarations",
                Some(&reader),
                Some(passcode("p", 6)),
            )
            .await;
        assert_eq!(r.status, 403);
        let r = s
            .api(
                Method::PUT,
                "/api/v1/ddm/declarations",
                Some(&writer),
                Some(passcode("p", 6)),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = s
            .api(
                Method::GET,
                "/api/v1/ddm/declarations/p",
                Some(&reader),
                None,
            )
            .await;
        assert_eq!(ok(r, "get").await["payload"]["MinimumLength"], 6);
        let r = s
            .api(Method::GET, "/api/v1/ddm/declarations", None, None)
            .await;
        assert_eq!(r.status, 401);

        let actions: Vec<String> = s
            .audit_chain()
            .await
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert!(
            actions.contains(&"ddm.declaration_put".to_string()),
            "{actions:?}"
        );
        s.stop().await;
    })
    .await;
}

/// KMFDDM's status reports, taken from real devices, are accepted and stored.
#[tokio::test]
async fn real_status_reports_are_accepted_and_stored() {
    let Some(dir) = mdm_tests::shared::shared_path("testdata/peers/kmfddm") else {
        return;
    };
    each_database(|db| {
        let dir = dir.clone();
        async move {
            let s = TestServer::start(db).await;
            let dev = enrolled(&s).await;
            for name in [
                "ddm-status.first-report.json",
                "ddm-status.full-report.iOS16-beta.json",
                "ddm-status.not-referenced-error.json",
            ] {
                let report = std::fs::read(dir.join(name)).unwrap();
                let r = s
                    .checkin(&dev, request(&dev.udid, "status", Some(report)))
                    .await;
                assert_eq!(r.status, 200, "{name}: {}", r.text());
            }
            let view = enrollment_view(&s, &dev.udid).await;
            let items = view["status_items"].as_object().unwrap();
            assert!(
                items.contains_key("management.client-capabilities"),
                "{items:?}"
            );
            assert!(
                items.contains_key("device.operating-system.version"),
                "{items:?}"
            );
            s.stop().await;
        }
    })
    .await;
}

/// The device's own, genuinely signed status reports, mangled: each is stored (200) or refused (400),
/// never a 5xx, and the device keeps working.
#[tokio::test]
async fn hostile_status_reports_are_refused_without_a_5xx() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = enrolled(&s).await;
        let mut client = DdmClient::default();
        s.ddm_sync(&dev, &mut client).await;
        let good = client.status_report();
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
        let wide = format!(
            r#"{{"StatusItems":{{"management":{{"declarations":{{"configurations":[{}]}}}}}},"Errors":[]}}"#,
            vec![r#"{"identifier":"x","server-token":"t","active":true,"valid":"valid"}"#; 20_000].join(",")
        )
        .into_bytes();
        let mut cases: Vec<Vec<u8>> = vec![deep, wide, vec![0xff; 64], b"{}".to_vec(), b"null".to_vec()];
        for cut in (0..good.len()).step_by(good.len() / 16 + 1) {
            cases.push(good[..cut].to_vec());
        }
        for (i, bit) in (0..good.len()).step_by(7).enumerate().take(64) {
            let mut b = good.clone();
            b[bit] ^= 1 << (i % 8);
            cases.push(b);
        }
        for (i, body) in cases.into_iter().enumerate() {
            let r = s.checkin(&dev, request(&dev.udid, "status", Some(body))).await;
            assert!(r.status == 200 || r.status == 400, "case {i}: {} {}", r.status, r.text());
        }
        assert!(s.ddm_sync(&dev, &mut client).await.up_to_date);
        s.stop().await;
    })
    .await;
}
