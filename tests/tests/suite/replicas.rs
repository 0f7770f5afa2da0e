//! Several replicas: two server processes on one PostgreSQL schema, no sticky routing. Devices alternate
//! their requests between the two; plugin changes made through one take effect on the other; background
//! jobs run once cluster-wide (schedule ticks, re-push claims, retention), shown with database evidence.
//! PostgreSQL only (SQLite is one process's file): skipped when `MDM_TEST_DATABASE_URL` is unset.

use base64::Engine;
use mdm_server::storage::testing::{test_databases, TestDatabase, TEST_DATABASE_ENV};
use mdm_server::storage::Storage;
use mdm_tests::device::{Device, Platform, ReceivedCommand};
use mdm_tests::process::{admin_key, metric_sum, ServerProcess};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mdm-server-under-test");
const ACTIVE: usize = 6;
const COMMANDS_EACH: usize = 3;
const SLEEPERS: usize = 3;
const TICKS: usize = 3;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Poll `check` until it yields a value or the deadline passes (the replicas notice changes on their own
/// timers: reload every second, background work every 200 ms).
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    replicas: [ServerProcess; 2],
    key: String,
    http: reqwest::Client,
    storage: Storage,
}

impl Cluster {
    fn base(&self, i: usize) -> &str {
        &self.replicas[i % 2].base
    }

    async fn put_signed(
        &self,
        i: usize,
        dev: &Device,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let sig = dev.sign(&body);
        let res = self
            .http
            .put(format!("{}{path}", self.base(i)))
            .header("Mdm-Signature", sig)
            .body(body)
            .send()
            .await
            .expect("device request");
        let status = res.status().as_u16();
        (status, res.bytes().await.expect("body").to_vec())
    }

    async fn api(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .http
            .request(method, format!("{}{path}", self.base(i)))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    async fn upload(&self, i: usize, package: &str, config: serde_json::Value) {
        let wasm = std::fs::read(mdm_tests::plugins::build(package)).expect("wasm");
        let manifest = mdm_tests::plugins::manifest(package);
        let approve = manifest["capabilities"].clone();
        let body = json!({
            "manifest": manifest,
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
            "config": config,
            "approve_capabilities": approve,
        });
        let (status, r) = self
            .api(i, reqwest::Method::POST, "/api/v1/plugins", body)
            .await;
        assert_eq!(status, 200, "upload {package}: {r}");
    }

    async fn enroll(&self, i: usize, dev: &Device) {
        for (n, body) in [dev.authenticate(), dev.token_update(None)]
            .into_iter()
            .enumerate()
        {
            let (status, r) = self.put_signed(i + n, dev, "/mdm/checkin", body).await;
            assert_eq!(status, 200, "enroll: {}", String::from_utf8_lossy(&r));
        }
    }

    async fn metric(&self, prefix: &str) -> [f64; 2] {
        let mut out = [0.0; 2];
        for (i, r) in self.replicas.iter().enumerate() {
            out[i] = metric_sum(&r.metrics(&self.http).await.expect("metrics"), prefix);
        }
        out
    }

    async fn scalar(&self, sql: &str) -> i64 {
        let row = mdm_server::storage::testing::db(&self.storage)
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_string()))
            .await
            .expect("query")
            .expect("a row");
        row.try_get_by_index::<i64>(0).expect("an integer")
    }

    async fn exec(&self, sql: &str) {
        mdm_server::storage::testing::db(&self.storage)
            .execute_unprepared(sql)
            .await
            .expect("statement");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_act_as_one_server() {
    if std::env::var(TEST_DATABASE_ENV).map_or(true, |v| v.is_empty()) {
        eprintln!(
            "skipped: two replicas need PostgreSQL; set {TEST_DATABASE_ENV}=postgres://... to run this test"
        );
        return;
    }
    let db: TestDatabase = test_databases()
        .await
        .into_iter()
        .find(|d| d.schema.is_some())
        .expect("a PostgreSQL schema");
    let started = Instant::now();
    run(&db).await;
    eprintln!("-- replicas: {:.1} s", started.elapsed().as_secs_f64());
    db.cleanup().await;
}

async fn run(db: &TestDatabase) {
    let storage = db.storage().await.expect("storage");
    let key = admin_key(&storage).await.expect("admin key");
    let data = tempfile::tempdir().expect("data");
    let env = vec![
        ("MDM_DATABASE_URL", db.url.clone()),
        ("MDM_DATABASE_SCHEMA", db.schema.clone().unwrap()),
        ("MDM_PLUGINS__RELOAD_INTERVAL_SECS", "1".to_string()),
        ("MDM_PLUGINS__WORKER_INTERVAL_MS", "200".to_string()),
        // The push worker runs on both; with no certificate uploaded each push fails at once, after its
        // claim: the claims are what is under test.
        ("MDM_PUSH__WORKER", "true".to_string()),
        ("MDM_PUSH__WORKER_INTERVAL_MS", "200".to_string()),
        ("MDM_PUSH__REPUSH_INTERVAL_SECS", "1".to_string()),
        ("MDM_PUSH__MAX_BACKOFF_SECS", "1".to_string()),
        ("MDM_HOUSEKEEPING_INTERVAL_SECS", "1".to_string()),
        // Housekeeping reports what it removed at info.
        ("MDM_LOG__FILTER", "warn,mdm_server::jobs=info".to_string()),
    ];
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        replicas.push(
            ServerProcess::spawn(name, BIN.as_ref(), &data.path().join(name), &env)
                .await
                .expect("replica starts"),
        );
    }
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    let c = Cluster {
        replicas: [a, b],
        key,
        http: client(),
        storage,
    };

    let active: Vec<Device> = (0..ACTIVE).map(|_| Device::new(Platform::Ios)).collect();
    for (i, dev) in active.iter().enumerate() {
        c.enroll(i, dev).await;
    }

    plugin_changes_reach_the_other_replica(&c).await;
    commands_are_delivered_and_acknowledged_once(&c, &active).await;
    let t_ticks = schedule_ticks_run_once(&c).await;
    repush_is_claimed_once_per_due_time(&c, t_ticks).await;
    retention_runs_once(&c).await;

    for r in &c.replicas {
        let log = r.log();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", r.name);
    }
}

/// A plugin uploaded, reconfigured and disabled through replica A governs replica B within its reload
/// interval.
async fn plugin_changes_reach_the_other_replica(c: &Cluster) {
    let mut mac = Device::new(Platform::MacOs);
    mac.serial = "C02REPLICA1".into();
    let sim = Device::new(Platform::Ios); // serial starts with SIM
    let auth_on_b = |dev: &Device| {
        let dev = dev.clone();
        async move {
            c.put_signed(1, &dev, "/mdm/checkin", dev.authenticate())
                .await
                .0
        }
    };
    assert_eq!(auth_on_b(&mac).await, 200, "no plugin yet");

    c.upload(0, "serial-allowlist", json!({"prefixes": ["SIM"]}))
        .await;
    until("B to enforce the allow-list uploaded through A", || async {
        (auth_on_b(&mac).await == 403).then_some(())
    })
    .await;
    assert_eq!(auth_on_b(&sim).await, 200);

    let (status, r) = c
        .api(
            0,
            reqwest::Method::PUT,
            "/api/v1/plugins/serial-allowlist/config",
            json!({"prefixes": ["C02"]}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    until("B to apply the configuration changed through A", || async {
        (auth_on_b(&mac).await == 200).then_some(())
    })
    .await;
    assert_eq!(auth_on_b(&sim).await, 403);

    let (status, r) = c
        .api(
            0,
            reqwest::Method::PATCH,
            "/api/v1/plugins/serial-allowlist",
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    until(
        "B to stop running the plugin disabled through A",
        || async { (auth_on_b(&sim).await == 200).then_some(()) },
    )
    .await;
}

/// Commands enqueued through either replica, fetched through one and acknowledged through the other:
/// each delivered once and acknowledged once.
async fn commands_are_delivered_and_acknowledged_once(c: &Cluster, devices: &[Device]) {
    let mut expected = BTreeMap::new();
    for round in 0..COMMANDS_EACH {
        for (i, dev) in devices.iter().enumerate() {
            let (status, r) = c
                .api(
                    i + round,
                    reqwest::Method::POST,
                    "/api/v1/commands",
                    json!({"ids": [dev.udid], "command": {"RequestType": "ProfileList"}, "no_push": true}),
                )
                .await;
            assert_eq!(status, 200, "{r}");
            let uuid = r["results"][&dev.udid]["command_uuid"]
                .as_str()
                .expect("queued")
                .to_string();
            expected.insert(uuid, dev.udid.clone());
        }
    }
    let mut tasks = Vec::new();
    for (n, dev) in devices.iter().enumerate() {
        let dev = dev.clone();
        let bases = [c.base(0).to_string(), c.base(1).to_string()];
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut seen: BTreeMap<String, (u32, u32)> = BTreeMap::new();
            let mut report: Option<String> = None;
            // No sticky routing: every request goes to the other replica than the one before.
            for turn in n.. {
                let body = match &report {
                    Some(u) => dev.report(None, "Acknowledged", u, Default::default()),
                    None => dev.idle(None),
                };
                let sig = dev.sign(&body);
                let res = http
                    .put(format!("{}/mdm/connect", bases[turn % 2]))
                    .header("Mdm-Signature", sig)
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(res.status().as_u16(), 200);
                let bytes = res.bytes().await.expect("body");
                if let Some(u) = report.take() {
                    seen.entry(u).or_default().1 += 1;
                }
                if bytes.is_empty() {
                    return seen;
                }
                let cmd = ReceivedCommand::parse(&bytes).expect("command");
                seen.entry(cmd.uuid.clone()).or_default().0 += 1;
                report = Some(cmd.uuid);
            }
            unreachable!()
        }));
    }
    let mut observed = BTreeMap::new();
    for t in tasks {
        observed.extend(t.await.expect("device"));
    }
    assert_eq!(
        observed.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "every command reached its device"
    );
    for (uuid, (delivered, acked)) in &observed {
        assert_eq!((*delivered, *acked), (1, 1), "{uuid}");
    }
    for (uuid, udid) in &expected {
        let sql = format!(
            "SELECT COUNT(*) FROM command_queue WHERE command_uuid = '{uuid}' AND enrollment_id = '{udid}' \
             AND status = 'acknowledged' AND delivery_count = 1"
        );
        assert_eq!(
            c.scalar(&sql).await,
            1,
            "{uuid} recorded once, delivered once"
        );
    }
    eprintln!(
        "   {} commands, each delivered and acknowledged once across the two replicas",
        expected.len()
    );
}

/// The inventory plugin's nightly schedule, made due by hand several times: each tick runs on exactly one
/// replica (one on-schedule call in total, one DeviceInformation per remembered device). Returns the time
/// before the first tick.
async fn schedule_ticks_run_once(c: &Cluster) -> i64 {
    c.upload(0, "inventory", json!({})).await;
    // Devices enrolled through B once B runs inventory, so both replicas have it loaded.
    let sleepers: Vec<Device> = (0..SLEEPERS).map(|_| Device::new(Platform::Ios)).collect();
    for dev in &sleepers {
        c.enroll(1, dev).await;
        let remembered = format!(
            "SELECT COUNT(*) FROM plugin_kv WHERE plugin_id = 'inventory' AND key = 'device:{}'",
            dev.udid
        );
        until(
            "B to run the inventory plugin uploaded through A",
            || async {
                if c.scalar(&remembered).await == 1 {
                    return Some(());
                }
                c.put_signed(1, dev, "/mdm/checkin", dev.token_update(None))
                    .await;
                None
            },
        )
        .await;
    }
    until("the nightly schedule to be registered", || async {
        (c.scalar("SELECT COUNT(*) FROM plugin_schedules WHERE plugin_id = 'inventory' AND name = 'nightly'")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let calls = "mdm_plugin_calls_total{plugin=\"inventory\",hook=\"on-schedule\"";
    let t0 = now_ms();
    let before = c.metric(calls).await;
    for tick in 1..=TICKS {
        // Due now for both replicas: each looks every 200 ms; one may claim it.
        c.exec("UPDATE plugin_schedules SET next_run_at = 0 WHERE plugin_id = 'inventory' AND name = 'nightly'")
            .await;
        until("the tick to be claimed and run", || async {
            let m = c.metric(calls).await;
            let ran = (m[0] - before[0]) + (m[1] - before[1]);
            (ran >= tick as f64).then_some(())
        })
        .await;
    }
    let per_device =
        "SELECT COUNT(*) FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid \
         WHERE c.request_type = 'DeviceInformation' AND q.enrollment_id = ";
    for dev in &sleepers {
        let n = until("the last tick's commands", || async {
            let n = c.scalar(&format!("{per_device}'{}'", dev.udid)).await;
            (n >= TICKS as i64).then_some(n)
        })
        .await;
        assert_eq!(
            n, TICKS as i64,
            "{}: one DeviceInformation per tick",
            dev.udid
        );
    }
    let after = c.metric(calls).await;
    let ran = [after[0] - before[0], after[1] - before[1]];
    assert_eq!(ran[0] + ran[1], TICKS as f64, "one run per tick: {ran:?}");
    eprintln!(
        "   {TICKS} schedule ticks ran once each (replica A {}, B {})",
        ran[0], ran[1]
    );
    t0
}

/// Devices that never come back have commands pending (from the ticks), so both replicas' push workers keep
/// re-pushing them every second. A claim moves the due time one second on, so if claims are exclusive a
/// channel's attempts over a stretch cannot exceed one per second of it, plus one; both replicas claiming the
/// same due time would double that.
async fn repush_is_claimed_once_per_due_time(c: &Cluster, _t_ticks: i64) {
    let sleepers =
        "SELECT COUNT(*) FROM enrollments e WHERE EXISTS (SELECT 1 FROM command_queue q \
         WHERE q.enrollment_id = e.id AND q.status = 'queued')";
    assert_eq!(c.scalar(sleepers).await, SLEEPERS as i64);
    let attempts = |which: &'static str| async move {
        c.scalar(&format!(
            "SELECT COALESCE(SUM({which}), 0)::bigint FROM enrollments e WHERE EXISTS (SELECT 1 FROM \
             command_queue q WHERE q.enrollment_id = e.id AND q.status = 'queued')"
        ))
        .await
    };
    let pushes = "mdm_pushes_total{status=\"failed\"}";
    let m0 = c.metric(pushes).await;
    let t0 = now_ms();
    let a0 = attempts("push_attempts").await;
    let a1 = until("several re-push rounds", || async {
        let a = attempts("push_attempts").await;
        (a >= a0 + 4 * SLEEPERS as i64).then_some(a)
    })
    .await;
    let t1 = now_ms();
    let m1 = c.metric(pushes).await;
    let bound = ((t1 - t0) / 1000 + 2) * SLEEPERS as i64;
    assert!(
        a1 - a0 <= bound,
        "{} claims in {} ms for {SLEEPERS} channels due once a second: a due time was claimed twice",
        a1 - a0,
        t1 - t0
    );
    eprintln!(
        "   {} re-push claims in {} ms over {SLEEPERS} channels (at most {bound}); pushes by A {}, by B {}",
        a1 - a0,
        t1 - t0,
        m1[0] - m0[0],
        m1[1] - m0[1]
    );
}

/// Expired plugin keys and finished commands past retention: purged once, by one replica's round, and the
/// counts the replicas report add up to exactly what there was.
async fn retention_runs_once(c: &Cluster) {
    let before: u64 = c.replicas.iter().map(|r| housekept(&r.log())).sum();
    let expired_keys = 40;
    for i in 0..expired_keys {
        c.exec(&format!(
            "INSERT INTO plugin_kv (plugin_id, key, value, expires_at, updated_at) \
             VALUES ('inventory', 'junk:{i}', '\\x00', 1, 1)"
        ))
        .await;
    }
    until("housekeeping to purge the expired keys", || async {
        (c.scalar("SELECT COUNT(*) FROM plugin_kv WHERE key LIKE 'junk:%'")
            .await
            == 0)
            .then_some(())
    })
    .await;
    // The purging round logs after it commits.
    let reported = until("the round's report", || async {
        let n: u64 = c.replicas.iter().map(|r| housekept(&r.log())).sum();
        (n - before >= expired_keys).then_some(n - before)
    })
    .await;
    assert_eq!(reported, expired_keys, "each expired key counted once");
    eprintln!("   {expired_keys} expired keys purged and counted once");
}

/// The expired plugin keys housekeeping rounds reported in this log.
fn housekept(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("expired_kv: ")? + "expired_kv: ".len()..];
            rest.split(|ch: char| !ch.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
