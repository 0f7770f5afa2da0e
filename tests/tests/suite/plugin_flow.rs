//! The example plugins in `plugins/`, built for wasm32-wasip2 and uploaded through the admin API, driving a
//! simulated device: the allow-list gates enrollment, the baseline arrives, results become inventory,
//! NotNow is retried with backoff, webhook events reach their sink, schedules run, changes hot-reload.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_server::config::SinkConfig;
use mdm_server::storage::outbox;
use mdm_tests::device::{Device, Platform, ReceivedCommand};
use mdm_tests::harness::{each_database, TestServer};
use mdm_tests::sink::Sink;
use plist::{Dictionary, Value};
use serde_json::json;

async fn next(s: &TestServer, dev: &Device, body: Vec<u8>) -> Option<ReceivedCommand> {
    let r = s.connect(dev, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (!r.body.is_empty()).then(|| ReceivedCommand::parse(&r.body).expect("command"))
}

fn ack_with(dev: &Device, uuid: &str, key: &str, values: &[(&str, Value)]) -> Vec<u8> {
    let mut inner = Dictionary::new();
    for (k, v) in values {
        inner.insert(k.to_string(), v.clone());
    }
    let mut extra = Dictionary::new();
    extra.insert(key.to_string(), Value::Dictionary(inner));
    dev.report(None, "Acknowledged", uuid, extra)
}

async fn with_sinks(
    db: mdm_server::storage::testing::TestDatabase,
    sinks: &[(&str, &Sink)],
) -> TestServer {
    start_with_sinks(db, sinks, |_| {}).await
}

/// The same with the delivery worker running, as in production.
async fn with_worker(
    db: mdm_server::storage::testing::TestDatabase,
    sinks: &[(&str, &Sink)],
) -> TestServer {
    start_with_sinks(db, sinks, worker_on).await
}

/// The delivery worker running, its timed round an hour away.
fn worker_on(c: &mut mdm_server::config::Config) {
    c.plugins.worker = true;
    c.plugins.worker_interval_ms = 3_600_000;
}

async fn start_with_sinks(
    db: mdm_server::storage::testing::TestDatabase,
    sinks: &[(&str, &Sink)],
    tweak: impl FnOnce(&mut mdm_server::config::Config) + Send + 'static,
) -> TestServer {
    let sinks: Vec<(String, String)> = sinks
        .iter()
        .map(|(n, s)| (n.to_string(), s.url.clone()))
        .collect();
    TestServer::start_with(db, move |c| {
        for (name, url) in sinks {
            c.plugins.sinks.insert(
                name,
                SinkConfig {
                    url: url.into(),
                    headers: Default::default(),
                    timeout_secs: 5,
                    batch_max_events: 1,
                },
            );
        }
        tweak(c);
    })
    .await
}

/// The outbox once `done` says so (the worker records outcomes after the sink answers), within 30 s.
async fn outbox_once(
    s: &TestServer,
    done: impl Fn(&[outbox::OutboxEvent]) -> bool,
) -> Vec<outbox::OutboxEvent> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let events = outbox::all(mdm_server::storage::testing::db(&s.storage))
            .await
            .unwrap();
        if done(&events) {
            return events;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn serial_allowlist_gates_enrollment_and_config_changes_apply_live() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = s
            .upload_plugin("serial-allowlist", json!({"prefixes": ["SIM"]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let good = Device::new(Platform::Ios); // serials start with SIM
        s.enroll(&good).await;
        let mut bad = Device::new(Platform::MacOs);
        bad.serial = "C02BAD".into();
        let before = s.snapshot().await;
        let r = s.checkin(&bad, bad.authenticate()).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().contains("C02BAD"), "{}", r.text());
        assert_eq!(
            before,
            s.snapshot().await,
            "a denied enrollment stores nothing"
        );
        let audit = s
            .get(&format!("/api/v1/plugin-audit?device_id={}", bad.udid))
            .await
            .json();
        assert_eq!(audit["entries"][0]["outcome"], "deny");
        // The decision is in the hash-chained audit log too.
        let chained = s.audit_chain().await;
        assert!(chained.iter().any(|e| e.actor == "plugin:serial-allowlist"
            && e.action == "plugin.decision"
            && e.target.as_deref() == Some(bad.udid.as_str())
            && e.detail.contains("deny")));

        // The plugin itself validates configuration changes.
        let put = |c: serde_json::Value| {
            s.api(
                reqwest::Method::PUT,
                "/api/v1/plugins/serial-allowlist/config",
                Some(&s.admin_key),
                Some(c),
            )
        };
        assert_eq!(put(json!({"prefixes": [""]})).await.status, 400);
        assert_eq!(put(json!({"prefixes": "C02"})).await.status, 400);
        assert_eq!(put(json!({"prefixes": ["C02"]})).await.status, 200);
        // Live: C02 devices now enroll, SIM ones no longer.
        assert_eq!(s.checkin(&bad, bad.authenticate()).await.status, 200);
        let newcomer = Device::new(Platform::Ios);
        assert_eq!(
            s.checkin(&newcomer, newcomer.authenticate()).await.status,
            403
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn baseline_arrives_once_and_results_become_inventory() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        for (p, c) in [("enroll-baseline", json!({})), ("inventory", json!({}))] {
            let r = s.upload_plugin(p, c).await;
            assert_eq!(r.status, 200, "{p}: {}", r.text());
        }
        let dev = Device::new(Platform::MacOs);
        s.enroll(&dev).await;
        let info = next(&s, &dev, dev.idle(None))
            .await
            .expect("baseline DeviceInformation");
        assert_eq!(info.request_type, "DeviceInformation");
        let sec = next(
            &s,
            &dev,
            ack_with(
                &dev,
                &info.uuid,
                "QueryResponses",
                &[
                    ("OSVersion", "14.6".into()),
                    ("DeviceName", "Lab Mac".into()),
                ],
            ),
        )
        .await
        .expect("baseline SecurityInfo");
        assert_eq!(sec.request_type, "SecurityInfo");
        let done = next(
            &s,
            &dev,
            ack_with(
                &dev,
                &sec.uuid,
                "SecurityInfo",
                &[("SystemIntegrityProtectionEnabled", true.into())],
            ),
        )
        .await;
        assert!(done.is_none());
        let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
        assert_eq!(d["attributes"]["inv.os_version"], "14.6", "{d}");
        assert_eq!(d["attributes"]["inv.device_name"], "Lab Mac");
        assert!(d["attributes"]["inv.sip_enabled"].is_string(), "{d}");
        // Once per device: another TokenUpdate queues nothing.
        assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        assert!(next(&s, &dev, dev.idle(None)).await.is_none());
        // Re-enrollment (a new Authenticate) gets the baseline again.
        s.enroll(&dev).await;
        assert_eq!(
            next(&s, &dev, dev.idle(None))
                .await
                .expect("again")
                .request_type,
            "DeviceInformation"
        );

        // Nightly: the schedule re-queries every remembered device.
        s.plugins.run_schedules().await.unwrap(); // registers the schedules
        s.clock.advance_ms(86_400_000 + 1000);
        assert!(s.plugins.run_schedules().await.unwrap() >= 1);
        let q = s
            .get(&format!("/api/v1/enrollments/{}/commands", dev.udid))
            .await
            .json();
        let types: Vec<&str> = q
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["request_type"].as_str().unwrap())
            .collect();
        assert!(
            types.iter().filter(|t| **t == "DeviceInformation").count() >= 2,
            "{types:?}"
        );
        assert!(types.contains(&"SecurityInfo"), "{types:?}");
        s.stop().await;
    })
    .await;
}

/// How many times the server has called `plugin`'s on-checkin, from its metrics.
async fn checkin_calls(s: &TestServer, plugin: &str) -> u64 {
    let m = s
        .api(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text();
    let series =
        format!(r#"mdm_plugin_calls_total{{plugin="{plugin}",hook="on-checkin",outcome="ok"}} "#);
    m.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0, |n| n.trim().parse().expect("a count"))
}

/// Each channel's TokenUpdate count, as the admin API shows it.
async fn token_update_counts(s: &TestServer, dev: &Device) -> Vec<(String, i64)> {
    let d = s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json();
    let mut counts: Vec<(String, i64)> = d["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_string();
            (id, c["token_update_count"].as_i64().unwrap())
        })
        .collect();
    counts.sort();
    counts
}

#[tokio::test]
async fn a_plugin_is_called_only_for_the_check_ins_its_manifest_names() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        // enroll-baseline hears authenticate and first-token-update, and nothing else.
        let r = s.upload_plugin("enroll-baseline", json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let dev = Device::new(Platform::MacOs);
        s.enroll(&dev).await;
        assert_eq!(checkin_calls(&s, "enroll-baseline").await, 2);
        // The first TokenUpdate was handed to the plugin and stored with what it queued.
        let udid = dev.udid.clone();
        assert_eq!(token_update_counts(&s, &dev).await, [(udid.clone(), 1)]);
        let info = next(&s, &dev, dev.idle(None)).await.expect("baseline");
        assert_eq!(info.request_type, "DeviceInformation");

        // Later TokenUpdates are stored without a call.
        for _ in 0..3 {
            assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
        }
        assert_eq!(token_update_counts(&s, &dev).await, [(udid.clone(), 4)]);
        assert_eq!(checkin_calls(&s, "enroll-baseline").await, 2);

        // A user channel's first TokenUpdate (a channel not stored yet) is heard, its later ones not.
        let user = mdm_tests::device::User::new("ada");
        let user_channel = format!("{udid}:{}", user.user_id);
        for _ in 0..2 {
            let r = s.checkin(&dev, dev.token_update(Some(&user))).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        assert_eq!(checkin_calls(&s, "enroll-baseline").await, 3);
        let counts = token_update_counts(&s, &dev).await;
        assert_eq!(counts, [(udid.clone(), 4), (user_channel, 2)]);

        // Messages it does not hear: no call; a device it does not know: refused as without plugins.
        assert_eq!(s.checkin(&dev, dev.checkout()).await.status, 200);
        let stranger = Device::new(Platform::Ios);
        let r = s.checkin(&stranger, stranger.token_update(None)).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(checkin_calls(&s, "enroll-baseline").await, 3);

        // Enrolling again makes the next TokenUpdate a first one, heard again.
        s.enroll(&dev).await;
        assert_eq!(checkin_calls(&s, "enroll-baseline").await, 5);
        assert_eq!(
            next(&s, &dev, dev.idle(None))
                .await
                .expect("again")
                .request_type,
            "DeviceInformation"
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn not_now_is_retried_with_backoff_then_alerted() {
    let alerts = Sink::start(200).await;
    each_database(|db| {
        let alerts = &alerts;
        async move {
            let s = with_sinks(db, &[("alerts", alerts)]).await;
            let r = s
                .upload_plugin(
                    "retry-notnow",
                    json!({"max_attempts": 2, "base_delay_seconds": 60, "alert_sink": "alerts"}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
                .await;
            let c = next(&s, &dev, dev.idle(None)).await.expect("ProfileList");
            assert!(next(
                &s,
                &dev,
                dev.report(None, "NotNow", &c.uuid, Dictionary::new())
            )
            .await
            .is_none());
            // Deferred by the plugin: not offered on the next Idle...
            assert!(
                next(&s, &dev, dev.idle(None)).await.is_none(),
                "held back for 60 s"
            );
            // ...until the backoff has passed.
            s.clock.advance_ms(61_000);
            let again = next(&s, &dev, dev.idle(None)).await.expect("retried");
            assert_eq!(again.uuid, c.uuid);
            // The second NotNow exhausts the attempts: an alert, no further deferral.
            assert!(next(
                &s,
                &dev,
                dev.report(None, "NotNow", &c.uuid, Dictionary::new())
            )
            .await
            .is_none());
            let (delivered, failed) = s.deliver_events().await;
            assert_eq!((delivered, failed), (1, 0));
            let got = alerts.received();
            let alert = got
                .iter()
                .rev()
                .find(|e| e.topic == "command.retries_exhausted")
                .expect("alert");
            assert_eq!(alert.body["command_uuid"], c.uuid.as_str());
            s.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn webhook_events_are_delivered_durably_with_raw_payloads() {
    let hook = Sink::start(200).await;
    let broken = Sink::start(500).await;
    each_database(|db| {
        let (hook, broken) = (&hook, &broken);
        async move {
            let s = with_sinks(db, &[("webhook", hook), ("broken", broken)]).await;
            let mut manifest = mdm_tests::plugins::manifest("webhook");
            // A sink the server does not have is refused at upload, not found out at the first event.
            manifest["sinks"] = json!(["webhook", "nowhere"]);
            let config = json!({"sink": "webhook"});
            let r = s
                .upload_plugin_with("webhook", manifest.clone(), config.clone())
                .await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert!(r.text().contains("nowhere"), "{}", r.text());
            manifest["sinks"] = json!(["webhook", "broken"]);
            let r = s.upload_plugin_with("webhook", manifest, config).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let dev = Device::new(Platform::Ios);
            let before = hook.received().len();
            s.enroll(&dev).await;
            s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
                .await;
            let c = next(&s, &dev, dev.idle(None)).await.unwrap();
            next(
                &s,
                &dev,
                dev.report(None, "Acknowledged", &c.uuid, Dictionary::new()),
            )
            .await;
            let (ok, failed) = s.deliver_events().await;
            assert_eq!((ok, failed), (3, 0));
            let got = &hook.received()[before..];
            let topics: Vec<&str> = got
                .iter()
                .map(|e| e.body["topic"].as_str().unwrap_or_default())
                .collect();
            assert_eq!(
                topics,
                ["mdm.Authenticate", "mdm.TokenUpdate", "mdm.Connect"]
            );
            let auth = &got[0].body["checkin_event"];
            assert_eq!(auth["udid"], dev.udid.as_str());
            let raw = STANDARD
                .decode(auth["raw_payload"].as_str().unwrap())
                .unwrap();
            assert_eq!(raw, dev.authenticate(), "the exact plist the device sent");
            let ack = &got[2].body["acknowledge_event"];
            assert_eq!(
                (ack["status"].as_str(), ack["command_uuid"].as_str()),
                (Some("Acknowledged"), Some(c.uuid.as_str()))
            );
            // Delivered once: nothing left to send.
            assert_eq!(s.deliver_events().await, (0, 0));

            // A failing sink keeps the event and retries with backoff.
            let put = s
                .api(
                    reqwest::Method::PUT,
                    "/api/v1/plugins/webhook/config",
                    Some(&s.admin_key),
                    Some(json!({"sink": "broken"})),
                )
                .await;
            assert_eq!(put.status, 200, "{}", put.text());
            assert_eq!(s.checkin(&dev, dev.token_update(None)).await.status, 200);
            assert_eq!(s.deliver_events().await, (0, 1));
            assert_eq!(s.deliver_events().await, (0, 0), "backing off");
            s.clock.advance_ms(1_001);
            assert_eq!(s.deliver_events().await, (0, 1), "retried");
            assert!(broken.received().len() >= 2);
            s.stop().await;
        }
    })
    .await;
}

/// With the worker running (as in production) an event goes out as soon as the check-in that emitted it
/// commits, not at the worker's next tick (here an hour away).
#[tokio::test]
async fn the_worker_delivers_as_soon_as_the_check_in_commits() {
    let hook = Sink::start(200).await;
    each_database(|db| {
        let hook = &hook;
        async move {
            let s = with_worker(db, &[("webhook", hook)]).await;
            let r = s.upload_plugin("webhook", json!({"sink": "webhook"})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let before = hook.received().len();
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            assert!(
                hook.wait_for(before + 2, std::time::Duration::from_secs(30))
                    .await,
                "Authenticate and TokenUpdate events delivered without waiting for the tick"
            );
            // Recorded delivered once the sink answered; held for this process until then, so no
            // round (here one at the lease's end) sends them again.
            let events = outbox_once(&s, |events| {
                assert_eq!(events.len(), 2, "{events:?}");
                events.iter().all(|e| e.delivered_at.is_some())
            })
            .await;
            assert!(events.iter().all(|e| e.attempts == 1), "{events:?}");
            let held = |e: &outbox::OutboxEvent| {
                e.next_attempt_at == e.created_at + mdm_server::plugins::delivery::LEASE_MS
            };
            assert!(events.iter().all(held), "written held: {events:?}");
            s.clock.advance_ms(mdm_server::plugins::delivery::LEASE_MS);
            assert_eq!(s.deliver_events().await, (0, 0), "nothing left to deliver");
            assert_eq!(hook.received().len(), before + 2, "each delivered once");
            s.stop().await;
        }
    })
    .await;
}

/// Handed-over events keep a device's order across batches: after one fails, the device's next is
/// held until the failed one's retry instead of overtaking it.
#[tokio::test]
async fn a_failed_handed_over_event_holds_back_its_device_s_later_ones() {
    let broken = Sink::start(500).await;
    each_database(|db| {
        let broken = &broken;
        async move {
            let s = with_worker(db, &[("broken", broken)]).await;
            let mut manifest = mdm_tests::plugins::manifest("webhook");
            manifest["sinks"] = json!(["broken"]);
            let r = s
                .upload_plugin_with("webhook", manifest, json!({"sink": "broken"}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let before = broken.count();
            s.enroll(&Device::new(Platform::Ios)).await;
            let events = outbox_once(&s, |events| {
                assert_eq!(events.len(), 2, "{events:?}");
                let (first, second) = (&events[0], &events[1]);
                first.attempts == 1 && second.next_attempt_at == first.next_attempt_at
            })
            .await;
            assert!(events[0].last_error.is_some(), "{events:?}");
            assert_eq!(events[1].attempts, 0, "not tried: {events:?}");
            assert!(events.iter().all(|e| e.delivered_at.is_none()));
            assert_eq!(broken.count(), before + 1, "only the first was sent");
            s.stop().await;
        }
    })
    .await;
}

/// An event in the outbox from plugin `p`, due `now`, written the way a plugin run writes it.
async fn queue_event(
    db: &sea_orm::DatabaseConnection,
    sink: &str,
    topic: &str,
    device: Option<&str>,
    now: i64,
) {
    let event_id = outbox::new_event_id();
    let insert = outbox::NewEvent {
        event_id: &event_id,
        plugin_id: "p",
        sink,
        topic,
        payload: "{}",
        ordering_key: device,
        now,
        due_at: now,
    }
    .insert_statement(db.get_database_backend());
    mdm_server::storage::batch::execute(db, vec![insert])
        .await
        .unwrap();
}

/// The delivery worker keeps up with a fleet: one round delivers everything due (more than one leased
/// batch), each device's events in the order written, and a device whose event the sink refuses has its
/// later events held back until that one is retried.
#[tokio::test]
async fn a_round_delivers_everything_due_in_order_per_device() {
    let hook = Sink::start(200).await;
    let picky = Sink::start_refusing("bad").await;
    each_database(|db| {
        let (hook, picky) = (&hook, &picky);
        async move {
            let s = with_sinks(db, &[("webhook", hook), ("picky", picky)]).await;
            let (db, now) = (
                mdm_server::storage::testing::db(&s.storage),
                mdm_server::clock::Clock::now_ms(&*s.clock),
            );
            let before = hook.received().len();
            for n in 0..150 {
                for dev in ["D0", "D1", "D2"] {
                    let topic = format!("{dev}.{n}");
                    queue_event(db, "webhook", &topic, Some(dev), now).await;
                }
            }
            for n in 0..10 {
                queue_event(db, "webhook", &format!("none.{n}"), None, now).await;
            }
            assert_eq!(s.deliver_events().await, (460, 0), "all due, in one round");
            let got = &hook.received()[before..];
            assert_eq!(got.len(), 460);
            for dev in ["D0", "D1", "D2"] {
                let order: Vec<&str> = got
                    .iter()
                    .filter(|r| r.topic.starts_with(&format!("{dev}.")))
                    .map(|r| r.topic.as_str())
                    .collect();
                let expected: Vec<String> = (0..150).map(|n| format!("{dev}.{n}")).collect();
                assert_eq!(order, expected, "{dev}'s events in the order written");
            }
            assert_eq!(s.deliver_events().await, (0, 0), "nothing delivered twice");

            let before = picky.received().len();
            for (topic, dev) in [("x.1", "X"), ("bad", "X"), ("x.3", "X"), ("y.1", "Y")] {
                queue_event(db, "picky", topic, Some(dev), now).await;
            }
            assert_eq!(s.deliver_events().await, (2, 1));
            let topics = |from: usize| -> Vec<String> {
                let mut t: Vec<String> = picky.received()[from..]
                    .iter()
                    .map(|r| r.topic.clone())
                    .collect();
                t.sort();
                t
            };
            assert_eq!(
                topics(before),
                ["bad", "x.1", "y.1"],
                "x.3 waits behind bad"
            );
            assert_eq!(
                s.deliver_events().await,
                (0, 0),
                "both wait for the backoff"
            );
            s.clock.advance_ms(1_001);
            assert_eq!(
                s.deliver_events().await,
                (0, 1),
                "bad retried first, x.3 still held"
            );
            assert_eq!(topics(before), ["bad", "bad", "x.1", "y.1"]);
            s.stop().await;
        }
    })
    .await;
}

/// Every sink in `sinks` taking up to `batch` events per POST.
fn batching(sinks: &[&str], batch: usize) -> impl FnOnce(&mut mdm_server::config::Config) {
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    move |c| {
        for name in sinks {
            c.plugins
                .sinks
                .get_mut(&name)
                .expect("sink")
                .batch_max_events = batch;
        }
    }
}

/// A sink with `batch_max_events` gets due events together, each once and each device's in order; a
/// refused POST fails every event in it and holds back those devices' later events, as a refused single
/// event does.
#[tokio::test]
async fn a_batching_sink_gets_events_together_in_order_and_retries_them_together() {
    let hook = Sink::start(200).await;
    let picky = Sink::start_refusing("bad").await;
    each_database(|db| {
        let (hook, picky) = (&hook, &picky);
        async move {
            let s = start_with_sinks(db, &[("webhook", hook), ("picky", picky)], |c| {
                batching(&["webhook"], 50)(c);
                batching(&["picky"], 2)(c);
            })
            .await;
            let (db, now) = (
                mdm_server::storage::testing::db(&s.storage),
                mdm_server::clock::Clock::now_ms(&*s.clock),
            );
            let (before, posts) = (hook.received().len(), hook.requests());
            for n in 0..30 {
                for dev in ["D0", "D1", "D2"] {
                    queue_event(db, "webhook", &format!("{dev}.{n}"), Some(dev), now).await;
                }
            }
            for n in 0..5 {
                queue_event(db, "webhook", &format!("none.{n}"), None, now).await;
            }
            assert_eq!(s.deliver_events().await, (95, 0));
            assert_eq!(hook.requests() - posts, 2, "95 events in POSTs of 50");
            let got = &hook.received()[before..];
            assert_eq!(got.len(), 95);
            assert!(
                got.iter().all(|r| r.body == json!({})),
                "payloads as emitted"
            );
            for dev in ["D0", "D1", "D2", "none"] {
                let order: Vec<&str> = got
                    .iter()
                    .filter(|r| r.topic.starts_with(&format!("{dev}.")))
                    .map(|r| r.topic.as_str())
                    .collect();
                let count = if dev == "none" { 5 } else { 30 };
                let expected: Vec<String> = (0..count).map(|n| format!("{dev}.{n}")).collect();
                assert_eq!(order, expected, "{dev}'s events in the order written");
            }
            assert_eq!(s.deliver_events().await, (0, 0), "nothing delivered twice");

            // Two per POST: [x.1, bad] is refused, x.3 waits behind them, y.1 goes on its own.
            let before = picky.received().len();
            for (topic, dev) in [("x.1", "X"), ("bad", "X"), ("x.3", "X"), ("y.1", "Y")] {
                queue_event(db, "picky", topic, Some(dev), now).await;
            }
            assert_eq!(s.deliver_events().await, (1, 2));
            let topics = |from: usize| -> Vec<String> {
                picky.received()[from..]
                    .iter()
                    .map(|r| r.topic.clone())
                    .collect()
            };
            assert_eq!(
                topics(before),
                ["x.1", "bad", "y.1"],
                "x.3 waits behind bad"
            );
            assert_eq!(s.deliver_events().await, (0, 0), "all wait for the backoff");
            s.clock.advance_ms(1_001);
            assert_eq!(
                s.deliver_events().await,
                (0, 2),
                "the refused POST retried whole, x.3 still held"
            );
            assert_eq!(topics(before), ["x.1", "bad", "y.1", "x.1", "bad"]);
            s.stop().await;
        }
    })
    .await;
}

/// A device's events refused in one POST retry together, when the first of them does: a later one with
/// fewer attempts (a shorter backoff) does not go first.
#[tokio::test]
async fn a_device_s_events_refused_together_retry_together() {
    let picky = Sink::start_refusing("bad").await;
    each_database(|db| {
        let picky = &picky;
        async move {
            let s = start_with_sinks(db, &[("picky", picky)], batching(&["picky"], 2)).await;
            let db = mdm_server::storage::testing::db(&s.storage);
            let now = || mdm_server::clock::Clock::now_ms(&*s.clock);
            queue_event(db, "picky", "bad", Some("Z"), now()).await;
            assert_eq!(s.deliver_events().await, (0, 1), "bad refused, 1 s backoff");
            s.clock.advance_ms(1_001);
            queue_event(db, "picky", "z.2", Some("Z"), now()).await;
            assert_eq!(
                s.deliver_events().await,
                (0, 2),
                "[bad, z.2] refused: bad backs off 2 s, and so does z.2"
            );
            s.clock.advance_ms(1_001);
            assert_eq!(s.deliver_events().await, (0, 0), "z.2 waits for bad");
            s.clock.advance_ms(1_000);
            assert_eq!(s.deliver_events().await, (0, 2), "retried together");
            let topics: Vec<String> = picky.received().into_iter().map(|r| r.topic).collect();
            assert!(
                topics.ends_with(&["bad".into(), "z.2".into()]),
                "{topics:?}"
            );
            s.stop().await;
        }
    })
    .await;
}

/// Events the webhook plugin emits at a check-in reach a batching sink as soon as it commits, with the
/// plugin's own payloads.
#[tokio::test]
async fn handed_over_events_reach_a_batching_sink_with_their_payloads() {
    let hook = Sink::start(200).await;
    each_database(|db| {
        let hook = &hook;
        async move {
            let s = start_with_sinks(db, &[("webhook", hook)], |c| {
                worker_on(c);
                batching(&["webhook"], 10)(c);
            })
            .await;
            let r = s.upload_plugin("webhook", json!({"sink": "webhook"})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let before = hook.received().len();
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            assert!(
                hook.wait_for(before + 2, std::time::Duration::from_secs(30))
                    .await,
                "Authenticate and TokenUpdate events delivered without waiting for the tick"
            );
            let got = &hook.received()[before..];
            let topics: Vec<(&str, &str)> = got
                .iter()
                .map(|e| {
                    (
                        e.topic.as_str(),
                        e.body["topic"].as_str().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(
                topics,
                [
                    ("mdm.Authenticate", "mdm.Authenticate"),
                    ("mdm.TokenUpdate", "mdm.TokenUpdate")
                ]
            );
            assert_eq!(got[1].body["checkin_event"]["udid"], dev.udid.as_str());
            outbox_once(&s, |events| events.iter().all(|e| e.delivered_at.is_some())).await;
            s.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_new_version_swaps_in_and_replicas_follow() {
    each_database(|db| async move {
        let a = TestServer::start(db).await;
        let b = a.replica().await;
        let r = a
            .upload_plugin("serial-allowlist", json!({"prefixes": ["NOPE"]}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        // The other replica picks the change up from the database.
        b.plugins.reload().await.unwrap();
        let dev = Device::new(Platform::Ios);
        assert_eq!(b.checkin(&dev, dev.authenticate()).await.status, 403);
        // Disabled through one replica, effective on the other.
        let r = a
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/serial-allowlist",
                Some(&a.admin_key),
                Some(json!({"enabled": false})),
            )
            .await;
        assert_eq!(r.status, 200);
        b.plugins.reload().await.unwrap();
        assert_eq!(b.checkin(&dev, dev.authenticate()).await.status, 200);
        // Re-uploading bumps the revision; deleting removes it everywhere.
        let rev = a.get("/api/v1/plugins/serial-allowlist").await.json()["revision"]
            .as_i64()
            .unwrap();
        a.upload_plugin("serial-allowlist", json!({"prefixes": ["NOPE"]}))
            .await;
        assert!(
            a.get("/api/v1/plugins/serial-allowlist").await.json()["revision"]
                .as_i64()
                .unwrap()
                > rev
        );
        assert_eq!(
            a.delete("/api/v1/plugins/serial-allowlist").await.status,
            204
        );
        b.plugins.reload().await.unwrap();
        assert!(b.plugins.loaded().is_empty());
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_plugins_directory_is_loaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("serial-allowlist");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(
        mdm_tests::plugins::build("serial-allowlist"),
        sub.join("serial_allowlist.wasm"),
    )
    .unwrap();
    std::fs::write(
        sub.join("plugin.json"),
        mdm_tests::plugins::manifest("serial-allowlist").to_string(),
    )
    .unwrap();
    std::fs::write(sub.join("config.json"), r#"{"prefixes": ["SIM"]}"#).unwrap();
    let path = dir.path().to_path_buf();
    each_database(|db| {
        let path = path.clone();
        async move {
            let s = TestServer::start_with(db, |c| c.plugins.dir = Some(path)).await;
            let p = s.get("/api/v1/plugins/serial-allowlist").await.json();
            assert_eq!(p["config"]["prefixes"][0], "SIM");
            let mut bad = Device::new(Platform::Ios);
            bad.serial = "XYZ".into();
            assert_eq!(s.checkin(&bad, bad.authenticate()).await.status, 403);
            s.stop().await;
        }
    })
    .await;
}

/// Sinks an admin makes through the API: checked like the configuration's, kept sealed, named by a
/// plugin's manifest, posted to with their headers, and deleted only when no plugin names them.
#[tokio::test]
async fn sinks_made_through_the_api_take_events_and_keep_their_secrets_sealed() {
    let hook = Sink::start(200).await;
    let filed = Sink::start(200).await;
    each_database(|db| {
        let (hook, filed) = (&hook, &filed);
        async move {
            let s = start_with_sinks(db, &[("filed", filed)], |_| {}).await;
            let key = s.admin_key.clone();
            let call = |method: reqwest::Method, name: &str, body: Option<serde_json::Value>| {
                let (s, key, path) = (&s, key.clone(), format!("/api/v1/sinks/{name}"));
                async move { s.api(method, &path, Some(&key), body).await }
            };
            let put = |name: &str, body: serde_json::Value| call(reqwest::Method::PUT, name, Some(body));
            let url = format!("{}?token=s3cr3t-q", hook.url);
            for (name, body, status) in [
                ("filed", json!({"url": url}), 409),
                ("api-hook", json!({"url": "ftp://h.example.com/"}), 400),
                ("bad%20name", json!({"url": url}), 400),
                ("api-hook", json!({"url": url, "headers": {"Bad Header": "x"}}), 400),
                ("api-hook", json!({"url": url, "headers": {"X-A": "line\nbreak"}}), 400),
                ("api-hook", json!({"url": url, "timeout_secs": 0}), 400),
                ("api-hook", json!({"url": url, "batch_max_events": 201}), 400),
                ("api-hook", json!({"url": url, "extra": 1}), 400),
            ] {
                let r = put(name, body.clone()).await;
                assert_eq!(r.status, status, "{name} {body}: {}", r.text());
                assert!(!r.text().contains("s3cr3t"), "{}", r.text());
            }
            // A manifest naming a sink the server lacks is refused; once the sink exists, accepted.
            let mut manifest = mdm_tests::plugins::manifest("webhook");
            manifest["sinks"] = json!(["api-hook"]);
            let config = json!({"sink": "api-hook"});
            let r = s
                .upload_plugin_with("webhook", manifest.clone(), config.clone())
                .await;
            assert_eq!(r.status, 400, "{}", r.text());
            let body = json!({"url": url, "headers": {"Authorization": "Bearer s3cr3t-h"}, "timeout_secs": 5});
            let r = put("api-hook", body.clone()).await;
            assert_eq!(r.status, 201, "{}", r.text());
            let shown = r.json();
            assert_eq!(
                (shown["origin"].as_str(), shown["headers"].clone()),
                (Some("api"), json!(["Authorization"]))
            );
            assert!(!r.text().contains("s3cr3t"), "{}", r.text());
            assert_eq!(put("api-hook", body).await.status, 200, "replaced");
            let listed = s.get("/api/v1/sinks").await;
            assert_eq!(listed.status, 200);
            let origins: Vec<(String, String)> = listed
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| (v["name"].as_str().unwrap().into(), v["origin"].as_str().unwrap().into()))
                .collect();
            assert_eq!(
                origins,
                [("api-hook".into(), "api".into()), ("filed".into(), "config".into())]
            );
            assert!(!listed.text().contains("s3cr3t"), "{}", listed.text());
            // Sealed at rest: the stored row holds neither secret in clear.
            let rows = mdm_server::storage::sinks::list(&s.storage.read()).await.unwrap();
            let sealed = &rows[0].secret;
            assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));

            let r = s.upload_plugin_with("webhook", manifest, config).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let before = hook.received().len();
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            s.deliver_events().await;
            assert!(hook.wait_for(before + 2, std::time::Duration::from_secs(10)).await);
            let got = &hook.received()[before..];
            assert!(
                got.iter().all(|e| e.authorization.as_deref() == Some("Bearer s3cr3t-h")),
                "sent with the sink's header"
            );

            let del = |name: &str| call(reqwest::Method::DELETE, name, None);
            let r = del("api-hook").await;
            assert_eq!(r.status, 409, "named by a plugin: {}", r.text());
            assert!(r.text().contains("webhook"), "{}", r.text());
            assert_eq!(del("filed").await.status, 409, "the configuration's");
            let gone = s
                .api(reqwest::Method::DELETE, "/api/v1/plugins/webhook", Some(&key), None)
                .await;
            assert!(gone.status < 300, "{}", gone.text());
            assert_eq!(del("api-hook").await.status, 204);
            assert_eq!(del("api-hook").await.status, 404);
            let actions: Vec<String> = s.audit_chain().await.into_iter().map(|e| e.action).collect();
            for a in ["sink.created", "sink.updated", "sink.deleted"] {
                assert!(actions.iter().any(|x| x == a), "{a}: {actions:?}");
            }
            s.stop().await;
        }
    })
    .await;
}
