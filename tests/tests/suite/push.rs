//! APNs push through a recording pusher: pushed after the enqueue commits (in bulk), re-pushed with backoff
//! while commands stay pending, dead tokens, the rate limit, explicit pushes, certificates.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_server::config::ExposeSecret;
use mdm_server::push::apns::PushOutcome;
use mdm_tests::device::{Device, Platform, TOPIC};
use mdm_tests::enrollment::push_cert;
use mdm_tests::harness::{each_database, TestServer};
use plist::Dictionary;
use serde_json::json;

const INTERVAL_MS: i64 = 600_000; // push.repush_interval_secs default

fn pushes_to(s: &TestServer, dev: &Device) -> usize {
    s.pusher
        .pushes()
        .iter()
        .filter(|(_, t)| t.token == dev.token)
        .count()
}

#[tokio::test]
async fn an_enqueue_is_pushed_after_it_commits_and_nopush_is_not() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        // A refused enqueue owes nothing.
        let r = s.post("/api/v1/commands", json!({"ids": [dev.udid], "command": {"RequestType": "Nope"}})).await;
        assert_eq!(r.status, 400);
        assert_eq!(s.push.run_once().await.unwrap(), 0);
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"})).await;
        assert!(s.pusher.pushes().is_empty(), "nothing is sent from inside the request");
        assert_eq!(s.push.run_once().await.unwrap(), 1);
        let pushes = s.pusher.pushes();
        assert_eq!(pushes.len(), 1);
        let (topic, target) = &pushes[0];
        assert_eq!(topic, TOPIC);
        assert_eq!((target.token.as_slice(), target.push_magic.as_str()), (dev.token.as_slice(), dev.push_magic.as_str()));
        // no_push: queued, not pushed.
        let other = Device::new(Platform::MacOs);
        s.enroll(&other).await;
        let r = s
            .post("/api/v1/commands", json!({"ids": [other.udid], "command": {"RequestType": "ProfileList"}, "no_push": true}))
            .await;
        assert_eq!(r.status, 200);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &other), 0);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn pending_commands_are_re_pushed_with_backoff_until_the_device_comes() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 1);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 1, "not again at once");
        s.clock.advance_ms(INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 2, "re-pushed after one interval");
        s.clock.advance_ms(INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 2, "the wait doubled");
        s.clock.advance_ms(INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 3);
        // The device comes and finishes its queue: nothing more is owed.
        let r = s.connect(&dev, dev.idle(None)).await;
        let c = mdm_tests::device::ReceivedCommand::parse(&r.body).unwrap();
        s.connect(
            &dev,
            dev.report(None, "Acknowledged", &c.uuid, Dictionary::new()),
        )
        .await;
        s.clock.advance_ms(100 * INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 3);
        // A disabled (checked-out) device is not pushed either.
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        assert_eq!(s.checkin(&dev, dev.checkout()).await.status, 200);
        s.clock.advance_ms(100 * INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 3);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_dead_token_stops_pushes_until_the_next_token_update() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.pusher
            .set_outcome(&dev.token, PushOutcome::DeadToken("Unregistered".into()));
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 1);
        s.clock.advance_ms(10 * INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 1, "dead: no more pushes");
        let r = s
            .post("/api/v1/push", json!({"ids": [dev.udid]}))
            .await
            .json();
        assert_eq!(r["results"][&dev.udid]["status"], "no_token");
        // A TokenUpdate brings the token back.
        s.pusher
            .set_outcome(&dev.token, PushOutcome::Sent { apns_id: None });
        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        s.clock.advance_ms(INTERVAL_MS);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_round_respects_the_rate_limit_and_replicas_push_once() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.push.max_per_second = 3;
            c.push.worker_interval_ms = 1000;
        })
        .await;
        let devs: Vec<Device> = (0..5).map(|_| Device::new(Platform::Ios)).collect();
        for d in &devs {
            s.enroll(d).await;
        }
        let ids: Vec<&str> = devs.iter().map(|d| d.udid.as_str()).collect();
        s.enqueue(&ids, json!({"RequestType": "ProfileList"})).await;
        let b = s.replica().await;
        let (x, y) = tokio::join!(s.push.run_once(), b.push.run_once());
        let first = x.unwrap() + y.unwrap();
        assert!(first <= 6, "each replica sends at most its budget");
        let (x, y) = tokio::join!(s.push.run_once(), b.push.run_once());
        assert_eq!(
            first + x.unwrap() + y.unwrap(),
            5,
            "each owed push sent exactly once"
        );
        assert_eq!(s.pusher.pushes().len(), 5);
        b.stop().await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn explicit_pushes_report_per_id() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        let half = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        assert_eq!(s.checkin(&half, half.authenticate()).await.status, 200);
        let r = s
            .post(
                "/api/v1/push",
                json!({"ids": [dev.udid, half.udid, "NOPE"]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["results"][&dev.udid]["status"], "sent");
        assert_eq!(j["results"][&half.udid]["status"], "disabled");
        assert_eq!(j["results"]["NOPE"]["status"], "unknown");
        // NanoMDM's form, basic auth with the key as password.
        let key = s.key(&[mdm_server::apikeys::Scope::CommandsWrite]).await;
        let r = s
            .http
            .get(format!("{}/v1/push/{},NOPE", s.base, dev.udid))
            .basic_auth("nanomdm", Some(&key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 207);
        let j: serde_json::Value = r.json().await.unwrap();
        assert_eq!(j["status"][&dev.udid]["push_result"], "sent");
        assert!(j["status"]["NOPE"]["push_error"].is_string());
        assert_eq!(pushes_to(&s, &dev), 2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn push_certificates_are_validated_sealed_and_watched() {
    // The server's clock must agree with the certificates' validity: use the real time here.
    each_database(|db| async move {
        // With its public URL set, /readyz has no development warnings: only the push certificates' own.
        let s = TestServer::start_with(db, |c| {
            c.enroll.public_url = Some("https://mdm.example.test".into())
        })
        .await;
        s.clock
            .advance_ms(chrono::Utc::now().timestamp_millis() - s.clock_now());
        let ready = s
            .api(reqwest::Method::GET, "/readyz", None, None)
            .await
            .json();
        assert!(
            ready["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with("no APNs push certificate"),
            "a first run is told what it lacks: {ready}"
        );
        let topic = "com.apple.mgmt.External.0b6e5c1e-1111-2222-3333-444455556666";
        let (cert, key) = push_cert(Some(topic), 365);
        let r = s
            .post(
                "/api/v1/push-certs",
                json!({"cert_pem": cert, "key_pem": key}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json()["topic"], topic);
        // Stored sealed: the key's PEM is nowhere in the database.
        let stored = mdm_server::storage::push::certs(mdm_server::storage::testing::db(&s.storage))
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert!(!String::from_utf8_lossy(&stored[0].key_sealed).contains("PRIVATE KEY"));
        let list = s.get("/api/v1/push-certs").await.json();
        assert!(list[0]["days_left"].as_i64().unwrap() >= 364);
        let ready = s
            .api(reqwest::Method::GET, "/readyz", None, None)
            .await
            .json();
        assert!(ready["warnings"].as_array().unwrap().is_empty(), "{ready}");

        // Refusals: another key, no topic, a non-MDM topic, expired.
        let (_, other_key) = push_cert(Some(topic), 365);
        for (c, k, why) in [
            (cert.clone(), other_key, "key"),
            (push_cert(None, 365).0, push_cert(None, 365).1, "topic"),
            (
                push_cert(Some("com.example.other"), 365).0,
                String::new(),
                "mgmt",
            ),
        ] {
            let r = s
                .post("/api/v1/push-certs", json!({"cert_pem": c, "key_pem": k}))
                .await;
            assert_eq!(r.status, 400, "{why}: {}", r.text());
        }
        let (expired, expired_key) = push_cert(Some(topic), -1);
        let r = s
            .post(
                "/api/v1/push-certs",
                json!({"cert_pem": expired, "key_pem": expired_key}),
            )
            .await;
        assert_eq!(r.status, 400);
        assert!(r.text().to_lowercase().contains("expired"), "{}", r.text());

        // Renewal (same topic) through NanoMDM's endpoint; expiring soon raises a readiness warning.
        let (soon, soon_key) = push_cert(Some(topic), 10);
        let r = s
            .http
            .put(format!("{}/v1/pushcert", s.base))
            .basic_auth("nanomdm", Some(&s.admin_key))
            .body(format!("{soon}{soon_key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ready = s
            .api(reqwest::Method::GET, "/readyz", None, None)
            .await
            .json();
        assert!(
            ready["warnings"][0].as_str().unwrap().contains(topic),
            "{ready}"
        );
        let m = s
            .api(reqwest::Method::GET, "/metrics", None, None)
            .await
            .text();
        let series = format!(r#"mdm_certificate_not_after_seconds{{kind="push",name="{topic}"}}"#);
        assert!(m.contains(&series), "{m}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_real_expired_apple_push_certificate_is_refused() {
    let Some(root) = mdm_tests::shared::shared_path("testdata/peers/nanomdm/certs") else {
        return;
    };
    let cert = std::fs::read_to_string(root.join("apns-push-cert.public.pem")).unwrap();
    each_database(|db| {
        let cert = cert.clone();
        async move {
            let s = TestServer::start(db).await;
            let (_, key) = push_cert(Some("x"), 1);
            let r = s
                .post(
                    "/api/v1/push-certs",
                    json!({"cert_pem": cert, "key_pem": key}),
                )
                .await;
            assert_eq!(r.status, 400, "{}", r.text());
            let p12 = STANDARD.encode(b"not a p12");
            let r = s
                .post(
                    "/api/v1/push-certs",
                    json!({"pkcs12_base64": p12, "password": "x"}),
                )
                .await;
            assert_eq!(r.status, 400);
            s.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_plugin_push_action_is_sent_after_the_checkin_commits() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        // Queued without a push: nothing owed yet.
        let r = s
            .post("/api/v1/commands", json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "no_push": true}))
            .await;
        assert_eq!(r.status, 200);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 0);
        let mut m = mdm_tests::plugins::manifest("hostile");
        m["hooks"] = json!(["on-checkin"]);
        let wasm = std::fs::read(mdm_tests::plugins::build("hostile-plugin")).unwrap();
        let r = s
            .post(
                "/api/v1/plugins",
                json!({"manifest": m, "wasm_base64": STANDARD.encode(wasm), "config": {"mode": "push"}, "approve_capabilities": m["capabilities"]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        s.push.run_once().await.unwrap();
        assert_eq!(pushes_to(&s, &dev), 1, "the plugin's push went out after the check-in");
        let audit = s.get("/api/v1/plugin-audit?plugin_id=hostile").await.json();
        assert_eq!((audit["entries"][0]["kind"].as_str(), audit["entries"][0]["outcome"].as_str()), (Some("push"), Some("applied")));
        s.stop().await;
    })
    .await;
}

/// The bulk claim under a race: two replicas (two connection pools on PostgreSQL) claim at the same
/// instants in batches smaller than what is owed; each due channel is claimed by exactly one of them per
/// due time, and comes due again after the backoff of the attempt it was claimed for.
#[tokio::test]
async fn racing_bulk_claims_take_each_due_channel_once_per_due_time() {
    use mdm_server::storage::{push, Storage};
    use std::collections::BTreeMap;
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let devs: Vec<Device> = (0..12).map(|_| Device::new(Platform::Ios)).collect();
        for d in &devs {
            s.enroll(d).await;
        }
        let ids: Vec<&str> = devs.iter().map(|d| d.udid.as_str()).collect();
        s.enqueue(&ids, json!({"RequestType": "ProfileList"})).await;
        let other = Storage::connect(
            s.config.database_url.as_ref().unwrap().expose_secret(),
            s.config.database_schema.as_deref(),
        )
        .await
        .unwrap();
        let backoff = |attempt: i32| 1000i64 << (attempt.clamp(1, 30) - 1).min(3);
        let mut now = s.clock_now();
        for attempt in 1..=5 {
            let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let (x, y) = tokio::join!(
                    push::claim_owed(
                        mdm_server::storage::testing::db(&s.storage),
                        now,
                        5,
                        backoff
                    ),
                    push::claim_owed(mdm_server::storage::testing::db(&other), now, 5, backoff)
                );
                let (x, y) = (x.unwrap(), y.unwrap());
                if x.is_empty() && y.is_empty() {
                    break;
                }
                for e in x.iter().chain(&y) {
                    *claimed.entry(e.id.clone()).or_default() += 1;
                    assert_eq!(e.push_attempts, attempt, "{}", e.id);
                    assert_eq!(e.next_push_at, Some(now + backoff(attempt)));
                    assert_eq!(e.last_push_at, Some(now));
                }
            }
            assert_eq!(
                claimed.len(),
                devs.len(),
                "attempt {attempt}: every channel"
            );
            assert!(
                claimed.values().all(|n| *n == 1),
                "attempt {attempt}: claimed twice: {claimed:?}"
            );
            assert!(push::owed(
                mdm_server::storage::testing::db(&s.storage),
                now + backoff(attempt) - 1,
                100
            )
            .await
            .unwrap()
            .is_empty());
            now += backoff(attempt);
        }
        s.stop().await;
    })
    .await;
}
