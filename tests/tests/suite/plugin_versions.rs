//! `mdm:plugin@0.2` beside 0.1 on a real server: a component built against the frozen 0.1 WIT keeps loading
//! and running next to 0.2 ones, and what 0.2 added (provide-token, on-ddm-status's actions and their
//! grant) works through the plugin host over a real database, on SQLite and PostgreSQL; and end to end, a
//! device's status report assigning the compliance plugin's remediation set.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_server::plugins::event::DdmStatusEvent;
use mdm_server::plugins::testing::events;
use mdm_server::plugins::{EventScope, Hook, HookRun, MAX_TOKEN_BYTES};
use mdm_server::storage::plugin_audit::{self, AuditFilter};
use mdm_server::storage::testing;
use mdm_tests::ddm::{self, DdmClient};
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use serde_json::{json, Value};

/// Upload a plugin crate's component (`package`, manifest in `dir`) as plugin `id`, its manifest changed by
/// `tweak`, approving what the manifest declares.
async fn upload(
    s: &TestServer,
    (package, dir): (&str, &str),
    id: &str,
    config: Value,
    tweak: impl FnOnce(&mut Value),
) -> Resp {
    let wasm = std::fs::read(mdm_tests::plugins::build(package)).expect("wasm");
    let mut manifest = mdm_tests::plugins::manifest(dir);
    manifest["id"] = json!(id);
    tweak(&mut manifest);
    let approve = manifest["capabilities"].clone();
    s.post(
        "/api/v1/plugins",
        json!({"manifest": manifest, "wasm_base64": STANDARD.encode(wasm), "config": config,
               "approve_capabilities": approve}),
    )
    .await
}

const FIXTURE: (&str, &str) = ("v0_1-fixture", "v0_1-fixture");
const HOSTILE: (&str, &str) = ("hostile-plugin", "hostile");

/// The hostile plugin (0.2) as plugin `id`, subscribed to `hooks` only, in `mode`.
async fn hostile(s: &TestServer, id: &str, hooks: &[&str], config: Value) {
    let hooks = json!(hooks);
    let r = upload(s, HOSTILE, id, config, |m| {
        m["hooks"] = hooks;
        m["failure_policy"] = json!({});
    })
    .await;
    assert_eq!(r.status, 200, "{id}: {}", r.text());
}

async fn attributes(s: &TestServer, dev: &Device) -> Value {
    s.get(&format!("/api/v1/devices/{}", dev.udid)).await.json()["attributes"].clone()
}

/// A plugin's audit rows for `hook`, oldest first.
async fn audit(s: &TestServer, plugin: &str, hook: &str) -> Vec<(String, String, Value)> {
    let filter = AuditFilter {
        plugin_id: Some(plugin.into()),
        hook: Some(hook.into()),
        limit: 100,
        ..Default::default()
    };
    let mut rows: Vec<_> = plugin_audit::list(testing::db(&s.storage), &filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let detail = serde_json::from_str(&r.detail).unwrap();
            (r.kind, r.outcome, detail)
        })
        .collect();
    rows.reverse();
    rows
}

/// How many times the server called `plugin`'s `hook`, whatever the outcome, from its metrics.
async fn calls(s: &TestServer, plugin: &str, hook: &str) -> u64 {
    let m = s
        .api(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text();
    let series = format!(r#"mdm_plugin_calls_total{{plugin="{plugin}",hook="{hook}","#);
    m.lines()
        .filter(|l| l.starts_with(series.as_str()))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_0_1_component_keeps_running_beside_0_2_ones() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = upload(
            &s,
            FIXTURE,
            "v0-1-fixture",
            json!({"attribute": "v01"}),
            |_| {},
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        hostile(&s, "hostile", &["on-checkin"], json!({"mode": "tag"})).await;
        let r = s
            .upload_plugin("compliance", json!({"remediation_set": "fix"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let loaded = s.plugins.loaded();
        let ids: Vec<&str> = loaded.iter().map(|p| &*p.id).collect();
        assert_eq!(ids, ["compliance", "hostile", "v0-1-fixture"]);

        // Check-ins: the 0.1 component's actions are applied beside the 0.2 one's, and what they say
        // shows each 0.1 import reached the host (config names the attribute, kv counts, inventory
        // knows the device channel).
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let a = attributes(&s, &dev).await;
        assert_eq!(a["v01"], "token-update:2:1", "{a}");
        assert_eq!(a["hostile"], "was here", "{a}");
        assert_eq!(calls(&s, "v0-1-fixture", "on-checkin").await, 2);

        // A command result reaches it too (whatever the server queued at enrollment comes first).
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        loop {
            let cmd = s.next_command(&dev).await.expect("ProfileList");
            if cmd.request_type == "ProfileList" {
                break;
            }
        }
        let a = attributes(&s, &dev).await;
        assert_eq!(a["v01.result"], "ProfileList:acknowledged", "{a}");

        // Its enrollment decision still counts: the deny it is configured for refuses.
        let refused = Device::new(Platform::Ios);
        let r = s
            .api(
                reqwest::Method::PUT,
                "/api/v1/plugins/v0-1-fixture/config",
                Some(&s.admin_key),
                Some(json!({"attribute": "v01", "deny_prefix": refused.serial})),
            )
            .await;
        assert!(r.status < 300, "{}", r.text());
        assert_ne!(
            s.checkin(&refused, refused.authenticate()).await.status,
            200
        );
        let rows = audit(&s, "v0-1-fixture", "decide-enrollment").await;
        assert_eq!(rows.last().map(|r| r.1.as_str()), Some("deny"), "{rows:?}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_0_1_component_may_not_subscribe_to_hooks_0_2_added() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        for hook in ["on-ddm-status", "provide-token"] {
            let r = upload(&s, FIXTURE, "v0-1-fixture", json!({}), |m| {
                m["hooks"] = json!(["on-checkin", hook]);
            })
            .await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert!(
                r.text().contains(hook) && r.text().contains("0.1.0"),
                "{}",
                r.text()
            );
        }
        assert!(s.plugins.loaded().is_empty());
        s.stop().await;
    })
    .await;
}

async fn token(s: &TestServer) -> Option<Vec<u8>> {
    let enrollment = events::device_enrollment("UDID-TOKEN");
    let event_id = mdm_server::plugins::new_event_id();
    let scope = EventScope {
        event_id: &event_id,
        device_id: Some("UDID-TOKEN"),
        enrollment_id: Some("UDID-TOKEN"),
    };
    s.plugins
        .provide_token(&enrollment, "com.apple.maid", scope)
        .await
        .expect("audit written")
}

fn gives(token: &str) -> Value {
    json!({"mode": "token", "token": token})
}

async fn remove(s: &TestServer, ids: &[&str]) {
    for id in ids {
        assert_eq!(s.delete(&format!("/api/v1/plugins/{id}")).await.status, 204);
    }
}

#[tokio::test]
async fn the_first_plugin_with_a_token_gives_it() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let hooks = &["provide-token"];
        assert_eq!(token(&s).await, None, "nobody listens");

        // Not mine, not mine either: none.
        hostile(&s, "a-none", hooks, json!({"mode": "ok"})).await;
        assert_eq!(token(&s).await, None);
        assert!(audit(&s, "a-none", "provide-token").await.is_empty());

        // In run order, the first token wins and later plugins are not asked.
        hostile(&s, "b-token", hooks, gives("B-TOKEN")).await;
        hostile(&s, "c-token", hooks, gives("C-TOKEN")).await;
        assert_eq!(token(&s).await.as_deref(), Some(&b"B-TOKEN"[..]));
        assert_eq!(calls(&s, "a-none", "provide-token").await, 2);
        assert_eq!(calls(&s, "c-token", "provide-token").await, 0);
        let rows = audit(&s, "b-token", "provide-token").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            (rows[0].0.as_str(), rows[0].1.as_str()),
            ("token", "provided")
        );
        assert_eq!(
            rows[0].2,
            json!({"token_service_type": "com.apple.maid", "bytes": 7})
        );

        // A dry-run plugin's token is audited, not given.
        let r = s
            .api(
                reqwest::Method::PATCH,
                "/api/v1/plugins/b-token",
                Some(&s.admin_key),
                Some(json!({"dry_run": true})),
            )
            .await;
        assert!(r.status < 300, "{}", r.text());
        assert_eq!(token(&s).await.as_deref(), Some(&b"C-TOKEN"[..]));
        let rows = audit(&s, "b-token", "provide-token").await;
        assert_eq!(rows.last().unwrap().1, "dry-run", "{rows:?}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_empty_and_failing_answers_count_as_none() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let hooks = &["provide-token"];

        // Too large: refused and audited; alone, no token.
        hostile(&s, "a-huge", hooks, json!({"mode": "token-huge"})).await;
        assert_eq!(token(&s).await, None);
        let rows = audit(&s, "a-huge", "provide-token").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (kind, outcome, detail) = &rows[0];
        assert_eq!((kind.as_str(), outcome.as_str()), ("token", "rejected"));
        assert_eq!(detail["bytes"], MAX_TOKEN_BYTES + 1);
        assert!(
            detail["reason"]
                .as_str()
                .unwrap()
                .contains(&(MAX_TOKEN_BYTES + 1).to_string()),
            "{detail}"
        );
        // With a plugin after it that has one, that one's is given.
        hostile(&s, "z-token", hooks, gives("Z")).await;
        assert_eq!(token(&s).await.as_deref(), Some(&b"Z"[..]));
        remove(&s, &["a-huge"]).await;

        // Empty: refused the same way.
        hostile(&s, "a-empty", hooks, json!({"mode": "token-empty"})).await;
        assert_eq!(token(&s).await.as_deref(), Some(&b"Z"[..]));
        let rows = audit(&s, "a-empty", "provide-token").await;
        assert_eq!(rows[0].1, "rejected", "{rows:?}");
        remove(&s, &["a-empty"]).await;

        // Failing (an error, a trap): its fault is audited and the next plugin is asked; alone, none.
        hostile(&s, "a-error", hooks, json!({"mode": "error"})).await;
        hostile(&s, "b-panic", hooks, json!({"mode": "panic"})).await;
        assert_eq!(token(&s).await.as_deref(), Some(&b"Z"[..]));
        let rows = audit(&s, "a-error", "provide-token").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("call", "error"));
        let rows = audit(&s, "b-panic", "provide-token").await;
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("call", "trap"));
        remove(&s, &["z-token"]).await;
        assert_eq!(token(&s).await, None);
        s.stop().await;
    })
    .await;
}

fn passcode_turned(udid: &str, old: &str, new: &str) -> DdmStatusEvent {
    let json = |v: &str| serde_json::from_str::<Value>(v).expect("JSON");
    events::ddm_status(
        events::device_enrollment(udid),
        vec![events::item_turned(
            "passcode.is-compliant",
            Some(json(old)),
            json(new),
        )],
    )
}

/// The plugins' run for this status change, as the DDM check-in gets it (before its transaction).
async fn ddm_status(s: &TestServer, event: DdmStatusEvent) -> HookRun {
    let event_id = event.event_id.clone();
    let udid = event.enrollment.device_id.clone();
    let scope = EventScope {
        event_id: &event_id,
        device_id: Some(&udid),
        enrollment_id: Some(&udid),
    };
    s.plugins.on_ddm_status(event, scope).await
}

/// Apply a run in a transaction of its own, as the DDM check-in does in the one that stores the status.
async fn apply(s: &TestServer, run: HookRun, udid: &str) {
    let plugins = s.plugins.clone();
    let now = s.clock_now();
    let (event_id, udid) = (mdm_server::plugins::new_event_id(), udid.to_string());
    let events = s
        .storage
        .transaction(move |txn| {
            Box::pin(async move {
                let scope = EventScope {
                    event_id: &event_id,
                    device_id: Some(&udid),
                    enrollment_id: Some(&udid),
                };
                plugins
                    .apply(txn, run, Hook::OnDdmStatus.as_str(), scope, now)
                    .await
            })
        })
        .await
        .expect("applied");
    s.plugins.events_committed(events);
}

#[tokio::test]
async fn an_assign_set_without_ddm_assign_is_refused_and_audited() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        // The hostile plugin asks for an assignment; its manifest does not declare ddm-assign.
        hostile(
            &s,
            "hostile",
            &["on-ddm-status"],
            json!({"mode": "assign", "set": "remediation"}),
        )
        .await;
        let run = ddm_status(&s, passcode_turned(&dev.udid, "true", "false")).await;
        assert!(run.refused.is_none());
        assert_eq!(run.actions.len(), 1);
        apply(&s, run, &dev.udid).await;
        let rows = audit(&s, "hostile", "on-ddm-status").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (kind, outcome, detail) = &rows[0];
        assert_eq!(
            (kind.as_str(), outcome.as_str()),
            ("assign-set", "rejected")
        );
        assert_eq!(detail["reason"], "needs capability ddm-assign", "{detail}");

        // A fail-closed plugin that fails refuses the status report, as it would a check-in.
        let r = upload(&s, HOSTILE, "hostile", json!({"mode": "error"}), |m| {
            m["hooks"] = json!(["on-ddm-status"]);
            m["failure_policy"] = json!({"on-ddm-status": "fail-closed"});
        })
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let run = ddm_status(&s, passcode_turned(&dev.udid, "true", "false")).await;
        assert!(run.refused.is_some_and(|r| r.contains("hostile")));
        s.stop().await;
    })
    .await;
}

async fn put(s: &TestServer, path: &str, body: Value) -> Resp {
    s.api(reqwest::Method::PUT, path, Some(&s.admin_key), Some(body))
        .await
}

/// The device reports its status as the simulated DDM client does, with `passcode.is-compliant` as given.
async fn report_compliance(s: &TestServer, dev: &Device, client: &mut DdmClient, compliant: bool) {
    client.status_items = json!({"passcode": {"is-compliant": compliant}});
    let body = ddm::request(&dev.udid, "status", Some(client.status_report()));
    let r = s.checkin(dev, body).await;
    assert_eq!(r.status, 200, "status: {}", r.text());
}

/// The DeclarativeManagement commands waiting for an enrollment.
async fn pending_syncs(s: &TestServer, id: &str) -> usize {
    let q = s
        .get(&format!("/api/v1/enrollments/{id}/commands"))
        .await
        .json();
    q.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["request_type"] == "DeclarativeManagement")
        .count()
}

async fn assigned_sets(s: &TestServer, id: &str) -> Value {
    s.get(&format!("/api/v1/ddm/enrollments/{id}")).await.json()["sets"].clone()
}

#[tokio::test]
async fn a_device_out_of_compliance_gets_the_remediation_set_until_it_complies() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        for d in [
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "com.example.strict",
                   "Payload": {"RequirePasscode": true, "MinimumLength": 8}}),
            json!({"Type": "com.apple.activation.simple", "Identifier": "com.example.strict.act",
                   "Payload": {"StandardConfigurations": ["com.example.strict"]}}),
        ] {
            let r = put(&s, "/api/v1/ddm/declarations", d).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let r = put(
            &s,
            "/api/v1/ddm/sets/passcode-remediation",
            json!({"declarations": ["com.example.strict", "com.example.strict.act"]}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = s
            .upload_plugin("compliance", json!({"remediation_set": "passcode-remediation"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());

        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let mut client = DdmClient {
            status_items: json!({"passcode": {"is-compliant": true}}),
            ..Default::default()
        };
        s.ddm_sync(&dev, &mut client).await;
        while s.next_command(&dev).await.is_some() {}
        // A first report of compliance: nothing to undo.
        assert_eq!(assigned_sets(&s, &dev.udid).await, json!([]));
        assert!(audit(&s, "compliance", "on-ddm-status").await.is_empty());

        // Out of compliance: the set is assigned in the status report's transaction, a sync is queued,
        // and the device gets the stricter passcode.
        report_compliance(&s, &dev, &mut client, false).await;
        assert_eq!(assigned_sets(&s, &dev.udid).await, json!(["passcode-remediation"]));
        assert_eq!(pending_syncs(&s, &dev.udid).await, 1);
        let rows = audit(&s, "compliance", "on-ddm-status").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (kind, outcome, detail) = &rows[0];
        assert_eq!((kind.as_str(), outcome.as_str()), ("assign-set", "applied"));
        assert_eq!(detail["changed"], true, "{detail}");
        assert_eq!(
            s.next_command(&dev).await.map(|c| c.request_type),
            Some("DeclarativeManagement".into())
        );
        let round = s.ddm_sync(&dev, &mut client).await;
        assert!(round.fetched.contains(&"com.example.strict".to_string()), "{round:?}");

        // The same report again changes nothing and asks nothing of the plugin.
        report_compliance(&s, &dev, &mut client, false).await;
        assert_eq!(audit(&s, "compliance", "on-ddm-status").await.len(), 1);
        assert_eq!(pending_syncs(&s, &dev.udid).await, 0);

        // Compliant again: unassigned, and the next sync takes the declarations away.
        report_compliance(&s, &dev, &mut client, true).await;
        assert_eq!(assigned_sets(&s, &dev.udid).await, json!([]));
        let rows = audit(&s, "compliance", "on-ddm-status").await;
        assert_eq!((rows[1].0.as_str(), rows[1].1.as_str()), ("unassign-set", "applied"));
        assert!(s.next_command(&dev).await.is_some());
        let round = s.ddm_sync(&dev, &mut client).await;
        assert!(round.dropped.contains(&"com.example.strict".to_string()), "{round:?}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_assignment_of_an_unknown_set_is_refused_and_audited() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = s
            .upload_plugin("compliance", json!({"remediation_set": "no-such-set"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let run = ddm_status(&s, passcode_turned(&dev.udid, "true", "false")).await;
        apply(&s, run, &dev.udid).await;
        let rows = audit(&s, "compliance", "on-ddm-status").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        let (kind, outcome, detail) = &rows[0];
        assert_eq!(
            (kind.as_str(), outcome.as_str()),
            ("assign-set", "rejected")
        );
        assert!(
            detail["reason"].as_str().unwrap().contains("no-such-set"),
            "{detail}"
        );
        s.stop().await;
    })
    .await;
}

/// A GetToken check-in, as a device sends it.
fn get_token(dev: &Device, service: Option<&str>) -> Vec<u8> {
    let mut d = plist::Dictionary::new();
    d.insert("MessageType".into(), "GetToken".into());
    d.insert("UDID".into(), dev.udid.clone().into());
    if let Some(s) = service {
        d.insert("TokenServiceType".into(), s.into());
    }
    mdm_tests::device::xml(d)
}

#[tokio::test]
async fn a_get_token_check_in_is_answered_with_a_plugins_token() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::MacOs);
        s.enroll(&dev).await;
        // Nobody provides tokens: a 400 that says so.
        let r = s
            .checkin(&dev, get_token(&dev, Some("com.apple.maid")))
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("GetToken"), "{}", r.text());

        hostile(&s, "giver", &["provide-token"], gives("MAID-TOKEN")).await;
        let r = s
            .checkin(&dev, get_token(&dev, Some("com.apple.maid")))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = plist::Value::from_reader(std::io::Cursor::new(&r.body))
            .unwrap()
            .into_dictionary()
            .unwrap();
        assert_eq!(
            answer.get("TokenData").and_then(plist::Value::as_data),
            Some(&b"MAID-TOKEN"[..])
        );
        // No TokenServiceType: refused before any plugin is asked.
        let r = s.checkin(&dev, get_token(&dev, None)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        // Another device's identity speaking for this one gets nothing.
        let other = Device::new(Platform::MacOs);
        s.enroll(&other).await;
        let body = get_token(&dev, Some("com.apple.maid"));
        let r = s
            .put(
                "/mdm/checkin",
                body.clone(),
                &[
                    ("Mdm-Signature", other.sign(&body)),
                    (
                        "Content-Type",
                        "application/x-apple-aspen-mdm-checkin".into(),
                    ),
                ],
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.text());
        s.stop().await;
    })
    .await;
}
