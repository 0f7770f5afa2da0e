//! The load benchmarks at tiny scale, as CI runs them: each scenario of `mdm-sim bench` completes on SQLite
//! (and PostgreSQL when `MDM_TEST_DATABASE_URL` is set) with zero protocol violations and the counts it
//! must have. No timing is asserted; the figures mean nothing at this size.
//!
//! The memory scenario runs the server in this process unless `MDM_SIM_SERVER_BIN` names an
//! `mdm-server` binary to run as a child process.

use mdm_server::storage::testing::TEST_DATABASE_ENV;
use mdm_tests::sim::fleet::{Fleet, FleetConfig};
use mdm_tests::sim::pki::{KeyKind, KeyPool, Provisioner};
use mdm_tests::sim::scenarios::{self, Common, Report};
use mdm_tests::sim::target::{BenchDb, DbChoice, Server, ServerMode, ServerOptions};
use mdm_tests::sim::transport::Transport;
use serde_json::json;
use std::sync::Arc;

fn databases() -> Vec<DbChoice> {
    let mut v = vec![DbChoice::Sqlite];
    if let Ok(url) = std::env::var(TEST_DATABASE_ENV) {
        if !url.is_empty() {
            v.push(DbChoice::Postgres(url));
        }
    }
    v
}

fn common(db: DbChoice) -> Common {
    Common {
        db,
        key_pool: 4,
        ..Common::default()
    }
}

fn figure(r: &Report, name: &str) -> u64 {
    r.figures
        .get(name)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("{} has no figure {name}:\n{}", r.scenario, r.text()))
}

fn clean(r: &Report) {
    eprintln!("{}", r.text());
    assert_eq!(
        r.total_violations(),
        0,
        "protocol violations in {}:\n{}",
        r.scenario,
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_benchmark_scenario_completes_without_protocol_violations() {
    for db in databases() {
        eprintln!("-- on {}", db.label());
        let c = common(db);

        // 1. Idle check-ins over HTTP-enrolled devices, then over seeded ones.
        for seed in [false, true] {
            let r = scenarios::checkins(
                &c,
                &scenarios::CheckinParams {
                    devices: 6,
                    connections: 3,
                    warmup_secs: 0.0,
                    seconds: 0.0,
                    requests: Some(30),
                    seed,
                    breakdown: 5,
                },
            )
            .await
            .expect("checkins");
            clean(&r);
            let m = r
                .measurement("idle check-ins (signed, presigned bodies)")
                .expect("measured");
            assert_eq!(m.requests, 30);
            assert_eq!(figure(&r, "commands_received"), 0, "nothing was queued");
        }

        // 2. Commands woken by push, with NotNow and Error answers, profiles installed and removed, and an
        //    unknown command; then the same by polling.
        for poll in [false, true] {
            let devices = 5;
            let r = scenarios::commands(
                &c,
                &scenarios::CommandParams {
                    devices,
                    per_device: 5,
                    connections: 3,
                    not_now_rate: 0.25,
                    error_rate: 0.1,
                    extra_commands: true,
                    poll,
                    seed: poll,
                    timeout_secs: 60,
                },
            )
            .await
            .expect("commands");
            clean(&r);
            let queued = figure(&r, "commands_queued");
            assert_eq!(queued, (devices * 9) as u64);
            assert_eq!(
                figure(&r, "acknowledged") + figure(&r, "errors"),
                queued,
                "every queued command finished exactly once"
            );
            // The unknown RequestType is answered Error by every device.
            assert!(figure(&r, "errors") >= devices as u64);
            assert!(
                figure(&r, "commands_received") >= queued,
                "NotNow'd ones come again"
            );
            if !poll {
                assert!(
                    figure(&r, "pushes") >= devices as u64,
                    "devices were pushed"
                );
            }
        }

        // 3. Fan-out.
        let r = scenarios::fanout(
            &c,
            &scenarios::FanoutParams {
                devices: 40,
                repeat: 2,
                push_per_second: scenarios::UNLIMITED_PUSH_RATE,
            },
        )
        .await
        .expect("fanout");
        clean(&r);
        assert_eq!(figure(&r, "command_queue_rows"), 80);
        assert!(figure(&r, "db_bytes_after") > figure(&r, "db_bytes_before"));

        // 4. Queue depth.
        let r = scenarios::queue_depth(
            &c,
            &scenarios::QueueDepthParams {
                probes: 4,
                per_probe: 5,
                deep_rows: 3_000,
                background_channels: 30,
                connections: 2,
            },
        )
        .await
        .expect("queue depth");
        clean(&r);
        assert_eq!(figure(&r, "shallow_command_queue_rows"), 20);
        assert_eq!(figure(&r, "deep_command_queue_rows"), 3_000);
        for label in ["shallow", "deep"] {
            let m = r
                .measurements
                .iter()
                .find(|(n, _)| n.starts_with(&format!("{label}: requests answered")))
                .expect("measured");
            assert_eq!(m.1.requests, 20, "every probe command was delivered once");
        }

        // 5. Memory (in-process unless a server binary is named).
        let mut mc = c.clone();
        if let Ok(bin) = std::env::var("MDM_SIM_SERVER_BIN") {
            mc.mode = ServerMode::Process(bin.into());
        }
        let r = scenarios::memory(
            &mc,
            &scenarios::MemoryParams {
                devices: 30,
                connections: 4,
                sweep_devices: None,
                drain_devices: 10,
            },
        )
        .await
        .expect("memory");
        clean(&r);
        assert_eq!(figure(&r, "drained_commands"), 10);
        assert!(figure(&r, "server_peak_rss_mib") > 0);

        // 6. Plugins: none, then the webhook plugin (its events reach the sink).
        let r = scenarios::plugins(
            &c,
            &scenarios::PluginParams {
                devices: 4,
                connections: 2,
                warmup_secs: 0.0,
                seconds: 0.0,
                requests: Some(12),
                sets: vec![vec![], vec!["webhook".into()]],
                rounds: 2,
                sink_batch: 1,
            },
        )
        .await
        .expect("plugins");
        clean(&r);
        assert_eq!(
            r.measurements.len(),
            9,
            "enroll + 2 rounds x 2 sets x 2 workloads"
        );
        let per_round = &r.figures["1 plugin(s): webhook: TokenUpdate throughput cost % per round"];
        assert_eq!(
            per_round.as_array().map(Vec::len),
            Some(2),
            "one cost per round"
        );
        assert!(
            r.figures
                .contains_key("1 plugin(s): webhook: TokenUpdate throughput cost %"),
            "the median cost is reported"
        );
        assert!(
            figure(&r, "plugin_audit_rows") >= 24,
            "the webhook plugin ran on every TokenUpdate"
        );

        // 7. DDM: full syncs, then an edit queued to every device.
        let r = scenarios::ddm(
            &c,
            &scenarios::DdmParams {
                devices: 6,
                connections: 2,
                declarations: 5,
                warmup_secs: 0.0,
                seconds: 0.0,
                requests: Some(12),
            },
        )
        .await
        .expect("ddm");
        clean(&r);
        assert_eq!(r.measurements[0].1.requests, 12, "every sync completed");
        assert_eq!(
            figure(&r, "edit_syncs_queued"),
            6,
            "the edit reached every device"
        );
    }
}

/// The checks can fail: a device told to expect commands in another order than the server's, and one
/// told to expect a command never queued, both end up as violations in the report's tally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_are_detected_and_counted() {
    let db = BenchDb::create(&DbChoice::Sqlite).await.unwrap();
    let storage = db.storage().await.unwrap();
    let prov = Provisioner::new(KeyPool::load_or_generate(KeyKind::P256, 2, None));
    let fleet = Arc::new(Fleet::build(
        FleetConfig {
            devices: 2,
            ..FleetConfig::default()
        },
        &prov,
    ));
    fleet.seed(&storage, 10).await.unwrap();
    let server = Server::start(
        &db,
        &storage,
        &prov.ca_pem(),
        &ServerMode::InProcess,
        &ServerOptions::default(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let udid = fleet.devices[0].sim.udid.clone();
    let mut uuids = Vec::new();
    for rt in ["ProfileList", "SecurityInfo"] {
        let (status, out) = server
            .api(
                &http,
                reqwest::Method::POST,
                "/api/v1/commands",
                Some(json!({"ids": [udid], "command": {"RequestType": rt}, "no_push": true})),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{out}");
        uuids.push(
            out["results"][&udid]["command_uuid"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Expected the other way round: the server (correctly) sends ProfileList first.
    fleet.expect(0, &uuids[1], 0).await;
    fleet.expect(0, &uuids[0], 0).await;
    // And a command nobody queued.
    fleet.expect(1, "NEVER-QUEUED", 0).await;
    let transport = Transport::new(&server.base, 2);
    fleet.connection(&transport, 0).await.unwrap();
    fleet.connection(&transport, 1).await.unwrap();
    fleet.flag_undelivered().await;
    let counts = fleet.violations.counts();
    assert_eq!(counts.get("out_of_order"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("not_delivered"), Some(&1), "{counts:?}");
    assert_eq!(fleet.violations.total(), 2);
}
