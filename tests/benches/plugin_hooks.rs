//! Plugin overhead. `cargo bench -p mdm-tests --bench plugin_hooks`
//!
//! - `hook_call/*`: one hook call on a built component through the host runtime: instantiate from the
//!   prepared `InstancePre`, call, drop (in-memory host; no database, no HTTP); `on-command-result/*` is
//!   one workflow written in Rust, Python and JavaScript.
//! - `checkin/plugins=N`: a signed TokenUpdate through the real server over HTTP on SQLite, with N no-op
//!   plugins subscribed to on-checkin: the end-to-end cost a device sees.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mdm_server::plugins::event::{CheckinKind, CommandStatus};
use mdm_server::plugins::testing::{events, Harness};
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::TestServer;
use mdm_tests::{languages, plugins};
use serde_json::json;

fn hook_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let root = plugins::workspace_root();
    let allow = rt
        .block_on(Harness::load(
            plugins::build("serial-allowlist"),
            root.join("plugins/serial-allowlist/plugin.json"),
            json!({"prefixes": ["C02"]}),
        ))
        .expect("serial-allowlist loads");
    let noop = rt
        .block_on(Harness::load(
            plugins::build("hostile-plugin"),
            root.join("tests/plugins/hostile/plugin.json"),
            json!({"mode": "ok"}),
        ))
        .expect("no-op plugin loads");
    let mut g = c.benchmark_group("hook_call");
    g.bench_function("decide-enrollment/serial-allowlist", |b| {
        b.to_async(&rt).iter(|| async {
            allow
                .decide_enrollment(events::enrollment_request("UDID-1", Some("C02ABC")))
                .await
                .unwrap()
        })
    });
    g.bench_function("on-checkin/noop", |b| {
        b.to_async(&rt).iter(|| async {
            let mut event = events::checkin(
                CheckinKind::TokenUpdate,
                events::device_enrollment("UDID-1"),
            );
            event.token_update_count = Some(2);
            noop.on_checkin(event).await.unwrap()
        })
    });
    // One workflow in three languages (`tests/tests/suite/plugin_languages.rs`), on the event that makes it act.
    let report = json!({"QueryResponses": {"OSVersion": "16.4"}});
    let config = json!({"minimum_os": "17.0", "target_os": "17.5"});
    for (dir, wasm) in [
        ("os-update", plugins::build("os-update")),
        ("os-update-py", languages::python_plugin().to_path_buf()),
        ("os-update-js", languages::js_plugin().to_path_buf()),
    ] {
        let manifest = root.join("plugins").join(dir).join("plugin.json");
        let h = rt
            .block_on(Harness::load(&wasm, manifest, config.clone()))
            .expect("os-update loads");
        g.bench_function(format!("on-command-result/{dir}"), |b| {
            b.to_async(&rt).iter(|| async {
                let event = events::command_result(
                    events::device_enrollment("UDID-1"),
                    "DeviceInformation",
                    CommandStatus::Acknowledged,
                    &report,
                );
                let actions = h.on_command_result(event).await.unwrap();
                assert_eq!(actions.len(), 2);
            })
        });
    }
    g.finish();
}

fn checkin(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("checkin");
    for n in [0usize, 1, 5] {
        let (server, dev) = rt.block_on(async {
            let db = mdm_server::storage::testing::test_databases()
                .await
                .into_iter()
                .next()
                .unwrap();
            let s = TestServer::start(db).await;
            let wasm = std::fs::read(plugins::build("hostile-plugin")).unwrap();
            for i in 0..n {
                let mut m = plugins::manifest("hostile");
                m["id"] = json!(format!("noop-{i}"));
                m["hooks"] = json!(["on-checkin"]);
                use base64::Engine;
                let r = s
                    .post(
                        "/api/v1/plugins",
                        json!({"manifest": m, "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&wasm),
                               "config": {"mode": "ok"}, "approve_capabilities": m["capabilities"]}),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
            let dev = Device::new(Platform::Ios);
            s.enroll(&dev).await;
            (s, dev)
        });
        let body = dev.token_update(None);
        let sig = dev.sign(&body);
        g.bench_with_input(BenchmarkId::new("plugins", n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                let r = server
                    .put(
                        "/mdm/checkin",
                        body.clone(),
                        &[("Mdm-Signature", sig.clone())],
                    )
                    .await;
                assert_eq!(r.status, 200);
            })
        });
        rt.block_on(server.stop());
    }
    g.finish();
}

criterion_group!(benches, hook_call, checkin);
criterion_main!(benches);
