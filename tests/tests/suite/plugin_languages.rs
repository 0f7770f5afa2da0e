//! One workflow — a device reporting an OS below the minimum gets an update scheduled and a sink is told —
//! written in Rust (`plugins/os-update`, the SDK), Python (`plugins/os-update-py`, componentize-py) and
//! JavaScript (`plugins/os-update-js`, componentize-js), each built with its ecosystem's own tools
//! (`mdm_tests::languages`). The three answer every event alike in the harness, and run side by side in a
//! server over SQLite and PostgreSQL.

use mdm_server::plugins::event::{Action, CommandStatus};
use mdm_server::plugins::testing::{events, Harness};
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, TestServer};
use mdm_tests::sink::Sink;
use mdm_tests::{languages, plugins};
use serde_json::{json, Value};
use std::path::PathBuf;

const CONFIG: &str = r#"{"minimum_os": "17.0", "target_os": "17.5"}"#;

/// (package dir, plugin id, built component) of each language.
fn the_three() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("os-update", plugins::build("os-update")),
        ("os-update-py", languages::python_plugin().to_path_buf()),
        ("os-update-js", languages::js_plugin().to_path_buf()),
    ]
}

fn manifest(dir: &str) -> PathBuf {
    plugins::workspace_root()
        .join("plugins")
        .join(dir)
        .join("plugin.json")
}

/// What a call answered, comparable across languages: each action as JSON (a typed command's text
/// parsed, so key order does not count).
fn answer(actions: Vec<Action>) -> Vec<Value> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Enqueue(e) => {
                let command = match e.command {
                    mdm_server::plugins::event::CommandSpec::TypedJson(t) => {
                        serde_json::from_str::<Value>(&t).unwrap()
                    }
                    other => json!(format!("{other:?}")),
                };
                json!({"enqueue": e.enrollment_ids, "command": command, "priority": e.priority,
                    "ttl": e.ttl_seconds})
            }
            Action::Emit(e) => json!({"emit": e.sink, "topic": e.topic,
                "payload": serde_json::from_str::<Value>(&e.payload_json).unwrap()}),
            other => json!(format!("{other:?}")),
        })
        .collect()
}

#[tokio::test]
async fn the_same_workflow_answers_alike_in_rust_python_and_javascript() {
    let cases = [
        (
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"OSVersion": "16.7.2"}}),
        ),
        (
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"OSVersion": "17.0"}}),
        ),
        (
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"OSVersion": "9.3.5"}}),
        ),
        (
            "DeviceInformation",
            CommandStatus::NotNow,
            json!({"QueryResponses": {"OSVersion": "16.0"}}),
        ),
        (
            "ProfileList",
            CommandStatus::Acknowledged,
            json!({"QueryResponses": {"OSVersion": "16.0"}}),
        ),
        (
            "DeviceInformation",
            CommandStatus::Acknowledged,
            json!({"OSVersion": "16.0"}),
        ),
    ];
    let config: Value = serde_json::from_str(CONFIG).unwrap();
    let mut answers: Vec<(&str, Vec<Vec<Value>>)> = Vec::new();
    for (dir, wasm) in the_three() {
        let h = Harness::load(&wasm, manifest(dir), config.clone())
            .await
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert_eq!(h.wit_version(), mdm_server::plugins::WIT_VERSION);
        let mut got = Vec::new();
        for (request_type, status, fields) in &cases {
            let enrollment = events::device_enrollment("UDID-1");
            let event = events::command_result(enrollment, request_type, *status, fields);
            let actions = h
                .on_command_result(event)
                .await
                .unwrap_or_else(|f| panic!("{dir} on {request_type}: {f:?}"));
            got.push(answer(actions));
        }
        for bad in [
            json!({"minimum_os": "x", "target_os": "17.5"}),
            json!({}),
            json!([]),
        ] {
            assert!(
                h.validate_config(&bad).await.is_err(),
                "{dir} accepted {bad}"
            );
        }
        assert!(h.validate_config(&config).await.is_ok(), "{dir}");
        answers.push((dir, got));
    }
    let (_, rust) = &answers[0];
    assert_eq!(
        rust[0],
        [
            json!({"enqueue": ["UDID-1"], "priority": 0, "ttl": null, "command": {"RequestType": "ScheduleOSUpdate",
                "Updates": [{"ProductVersion": "17.5", "InstallAction": "InstallASAP"}]}}),
            json!({"emit": "os-alerts", "topic": "os.update-scheduled",
                "payload": {"device_id": "UDID-1", "os_version": "16.7.2", "target_os": "17.5"}}),
        ]
    );
    assert_eq!(rust[2].len(), 2, "9.3.5 is below 17.0 as numbers");
    assert!(rust[1].is_empty() && rust[3].is_empty() && rust[4].is_empty() && rust[5].is_empty());
    for (dir, got) in &answers[1..] {
        assert_eq!(got, rust, "{dir} answers as the Rust plugin does");
    }
}

/// The three uploaded to one server: a device's answer below the minimum gets three updates queued and
/// three events delivered, one from each.
#[tokio::test]
async fn python_and_javascript_plugins_run_beside_rust_in_a_server() {
    let sink = Sink::start(200).await;
    let built = the_three();
    each_database(|db| {
        let (sink, built) = (&sink, &built);
        async move {
            let url = sink.url.clone();
            let s = TestServer::start_with(db, move |c| {
                // An interpreter's component is 12-19 MB, over the default JSON body as base64.
                c.max_body_bytes = 48 * 1024 * 1024;
                c.plugins.sinks.insert(
                    "os-alerts".into(),
                    mdm_server::config::SinkConfig {
                        url: url.into(),
                        headers: Default::default(),
                        timeout_secs: 5,
                        batch_max_events: 1,
                    },
                );
            })
            .await;
            for (dir, wasm) in built {
                let manifest: Value =
                    serde_json::from_slice(&std::fs::read(manifest(dir)).unwrap()).unwrap();
                let r = s
                    .upload_component(wasm, manifest, serde_json::from_str(CONFIG).unwrap())
                    .await;
                assert_eq!(r.status, 200, "{dir}: {}", r.text());
            }
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            let before = sink.received().len();
            s.report_os(&dev, "16.4").await;
            let path = format!("/api/v1/enrollments/{}/commands", dev.udid);
            let queue = s.get(&path).await.json();
            let updates = queue
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["request_type"] == "ScheduleOSUpdate")
                .count();
            assert_eq!(updates, 3, "{queue}");
            s.deliver_events().await;
            assert!(
                sink.wait_for(before + 3, std::time::Duration::from_secs(10))
                    .await
            );
            let topics: Vec<String> = sink.received()[before..]
                .iter()
                .map(|e| e.topic.clone())
                .collect();
            assert_eq!(topics, ["os.update-scheduled"; 3]);
            s.stop().await;
        }
    })
    .await;
}
