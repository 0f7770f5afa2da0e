//! Crash safety: the server binary runs as a child process under load from simulated devices and is killed
//! with SIGKILL at random moments, then started again on the same data. Afterwards every command a device
//! acknowledged (and got a 200 for) is recorded exactly once as acknowledged, every command whose enqueue
//! got a 200 was delivered and finished (none lost), and no device ever received a command after its
//! Acknowledged. On SQLite and, with `MDM_TEST_DATABASE_URL`, on PostgreSQL.
//!
//! Kill points come from a seeded generator; the seed is printed and `MDM_CRASH_SEED` repeats a run.

use mdm_server::storage::entities::{command, queue_item};
use mdm_server::storage::testing::{test_databases, TestDatabase};
use mdm_server::storage::Storage;
use mdm_tests::device::{Device, Platform, ReceivedCommand};
use mdm_tests::process::{admin_key, ServerProcess};
use mdm_tests::sim::responder::Rng;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mdm-server-under-test");
const DEVICES: usize = 8;
const KILLS: usize = 5;

/// What the devices and the admin saw, to hold the database to afterwards.
#[derive(Default)]
struct Ledger {
    /// CommandUUID -> device, for enqueues that got a 200 saying "queued".
    enqueued: BTreeMap<String, String>,
    /// Enqueues whose outcome is unknown (the server died under them): stored or not, never half.
    uncertain: BTreeMap<String, String>,
    /// (device, CommandUUID) whose Acknowledged got a 200.
    acked: BTreeSet<(String, String)>,
    deliveries: u64,
    not_nows: u64,
    violations: Vec<String>,
}

fn envelope(uuid: &str) -> String {
    // A raw envelope keeps its CommandUUID, so the test knows it before the server answers.
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><plist version=\"1.0\"><dict>\
         <key>CommandUUID</key><string>{uuid}</string>\
         <key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict>\
         </dict></plist>"
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The port the server listens on changes never: devices and the admin keep the base URL across restarts.
#[derive(Clone)]
struct Target {
    base: String,
    key: String,
}

async fn put_signed(
    http: &reqwest::Client,
    t: &Target,
    dev: &Device,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), reqwest::Error> {
    let sig = dev.sign(&body);
    let res = http
        .put(format!("{}{path}", t.base))
        .header("Mdm-Signature", sig)
        .body(body)
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.bytes().await?.to_vec()))
}

/// One device: Idle, answer whatever comes (Acknowledged, sometimes NotNow), and resend a report whose
/// answer it never got, as a device does after a dropped connection. Ends once `stop` is set and an Idle
/// comes back empty.
async fn device_loop(
    t: Target,
    dev: Device,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let http = client();
    let mut rng = Rng::new(seed);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    // The report to send next (status, uuid); None means Idle.
    let mut report: Option<(&str, String)> = None;
    loop {
        let was_idle = report.is_none();
        let body = match &report {
            Some((status, uuid)) => dev.report(None, status, uuid, Default::default()),
            None => dev.idle(None),
        };
        let (status, resp) = match put_signed(&http, &t, &dev, "/mdm/connect", body).await {
            Ok(r) => r,
            Err(_) => {
                // Down or dying: try the same message again shortly.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if status >= 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        // What to do next, decided under the ledger's lock (not held across an await).
        let pause = {
            let mut l = ledger.lock().unwrap();
            if status != 200 {
                l.violations.push(format!(
                    "{}: {status} to {:?}: {}",
                    dev.udid,
                    report,
                    String::from_utf8_lossy(&resp)
                ));
                return;
            }
            if let Some((st, uuid)) = report.take() {
                if st == "Acknowledged" {
                    acked.insert(uuid.clone());
                    l.acked.insert((dev.udid.clone(), uuid));
                } else {
                    l.not_nows += 1;
                }
            }
            if resp.is_empty() {
                true
            } else {
                let cmd = match ReceivedCommand::parse(&resp) {
                    Ok(c) => c,
                    Err(e) => {
                        l.violations.push(format!("{}: bad command: {e}", dev.udid));
                        return;
                    }
                };
                l.deliveries += 1;
                if acked.contains(&cmd.uuid) {
                    l.violations.push(format!(
                        "{}: {} delivered after its Acknowledged got a 200",
                        dev.udid, cmd.uuid
                    ));
                }
                let answer = if rng.chance(0.1) {
                    "NotNow"
                } else {
                    "Acknowledged"
                };
                report = Some((answer, cmd.uuid));
                false
            }
        };
        if pause {
            // Done once an Idle comes back empty (after a NotNow the server rightly waits for the next
            // Idle before offering that command again).
            if was_idle && stop.load(Ordering::SeqCst) {
                return;
            }
            // Load pacing, not a wait for anything: an idle device checks in again a little later.
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
}

/// Enqueue one command at a time to a random device until `stop`.
async fn enqueuer(
    t: Target,
    udids: Vec<String>,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) {
    let http = client();
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::SeqCst) {
        let udid = udids[(rng.next_u64() % udids.len() as u64) as usize].clone();
        let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
        let res = http
            .post(format!("{}/api/v1/commands", t.base))
            .bearer_auth(&t.key)
            .json(&serde_json::json!({"ids": [udid], "raw_plist": envelope(&uuid)}))
            .send()
            .await;
        let outcome = match res {
            Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok(),
            Ok(r) if r.status().is_client_error() => {
                let s = r.status();
                let text = r.text().await.unwrap_or_default();
                ledger
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("enqueue refused: {s} {text}"));
                return;
            }
            // Refused at connect: the server is down and never saw it.
            Err(e) if e.is_connect() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            _ => None,
        };
        {
            let mut l = ledger.lock().unwrap();
            match outcome {
                Some(v) if v["results"][&udid]["status"] == "queued" => {
                    l.enqueued.insert(uuid, udid);
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Some(v) => l.violations.push(format!("enqueue not queued: {v}")),
                None => {
                    l.uncertain.insert(uuid, udid);
                }
            }
        }
        // Load pacing: a steady stream of enqueues, not a flood that starves the devices.
        tokio::time::sleep(Duration::from_millis(5 + rng.next_u64() % 20)).await;
    }
}

async fn run(db: &TestDatabase, seed: u64) {
    let started = Instant::now();
    // SQLite: the server's own database in its data directory, as deployed; PostgreSQL: a fresh schema.
    let data = tempfile::tempdir().expect("data dir");
    let url = match &db.schema {
        Some(_) => db.url.clone(),
        None => format!("sqlite://{}?mode=rwc", data.path().join("mdm.db").display()),
    };
    let open = || async {
        let s = Storage::connect(&url, db.schema.as_deref())
            .await
            .expect("database");
        s.migrate().await.expect("migrate");
        s
    };
    let storage = open().await;
    let key = admin_key(&storage).await.expect("admin key");
    // The server owns the database while it runs; the test reads it again at the end.
    drop(storage);
    let mut env = vec![
        // No APNs here, so devices poll; the push worker still claims owed pushes (they fail at once
        // without a certificate) and housekeeping runs every second, so both are killed mid-work too.
        ("MDM_PUSH__WORKER", "true".to_string()),
        ("MDM_HOUSEKEEPING_INTERVAL_SECS", "1".to_string()),
    ];
    if let Some(s) = &db.schema {
        env.push(("MDM_DATABASE_URL", db.url.clone()));
        env.push(("MDM_DATABASE_SCHEMA", s.clone()));
    }
    let mut server = ServerProcess::spawn("crash", BIN.as_ref(), data.path(), &env)
        .await
        .expect("server starts");
    let t = Target {
        base: server.base.clone(),
        key,
    };

    let http = client();
    let devices: Vec<Device> = (0..DEVICES).map(|_| Device::new(Platform::Ios)).collect();
    for dev in &devices {
        for body in [dev.authenticate(), dev.token_update(None)] {
            let (status, resp) = put_signed(&http, &t, dev, "/mdm/checkin", body)
                .await
                .expect("enroll");
            assert_eq!(status, 200, "enroll: {}", String::from_utf8_lossy(&resp));
        }
    }

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_enqueue = Arc::new(AtomicBool::new(false));
    let stop_devices = Arc::new(AtomicBool::new(false));
    let enqueued = Arc::new(AtomicU64::new(0));
    let udids: Vec<String> = devices.iter().map(|d| d.udid.clone()).collect();
    let enq = tokio::spawn(enqueuer(
        t.clone(),
        udids.clone(),
        seed,
        ledger.clone(),
        stop_enqueue.clone(),
        enqueued.clone(),
    ));
    let mut tasks = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        tasks.push(tokio::spawn(device_loop(
            t.clone(),
            dev.clone(),
            seed.wrapping_add(1 + i as u64),
            ledger.clone(),
            stop_devices.clone(),
        )));
    }

    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    let under_load = |before: u64| {
        let enqueued = enqueued.clone();
        async move {
            // Polled: the first requests after a start warm the server's connections up.
            let deadline = Instant::now() + Duration::from_secs(60);
            while enqueued.load(Ordering::SeqCst) < before + 3 {
                assert!(Instant::now() < deadline, "no load reaches the server");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    for k in 0..KILLS {
        // Once load is flowing, a random stretch more, then pull the plug wherever the server is.
        let before = enqueued.load(Ordering::SeqCst);
        under_load(before).await;
        let ms = rng.next_u64() % 1200;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        server.kill();
        eprintln!(
            "   kill {} {ms} ms into the load ({} commands enqueued since the start)",
            k + 1,
            enqueued.load(Ordering::SeqCst) - before
        );
        server.start().await.expect("server restarts");
    }
    under_load(enqueued.load(Ordering::SeqCst)).await;
    // Drain: no more enqueues; each device stops at an empty Idle.
    stop_enqueue.store(true, Ordering::SeqCst);
    enq.await.expect("enqueuer");
    stop_devices.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("devices drain their queues")
            .expect("device task");
    }
    server.stop();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");

    // Now hold the database to what the devices and the admin saw.
    let storage = open().await;
    let rows = queue_item::Entity::find()
        .all(mdm_server::storage::testing::db(&storage))
        .await
        .expect("queue");
    // Every task has ended: the ledger is final.
    let l = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(l.violations.is_empty(), "violations: {:#?}", l.violations);
    let mut by_key: HashMap<(String, String), Vec<&queue_item::Model>> = HashMap::new();
    for r in &rows {
        by_key
            .entry((r.enrollment_id.clone(), r.command_uuid.clone()))
            .or_default()
            .push(r);
    }
    for (key, rs) in &by_key {
        assert_eq!(rs.len(), 1, "{key:?} is queued {} times", rs.len());
    }
    for (dev, uuid) in &l.acked {
        let r = by_key
            .get(&(dev.clone(), uuid.clone()))
            .unwrap_or_else(|| panic!("acknowledged {uuid} on {dev} is not recorded"))[0];
        assert_eq!(r.status, "acknowledged", "{uuid} on {dev}");
        let raw = r.result_raw.as_deref().expect("result kept");
        let result = plist::Value::from_reader(std::io::Cursor::new(raw)).expect("result plist");
        let d = result.as_dictionary().expect("result dictionary");
        assert_eq!(
            d.get("CommandUUID").and_then(|v| v.as_string()),
            Some(uuid.as_str())
        );
        assert_eq!(
            d.get("Status").and_then(|v| v.as_string()),
            Some("Acknowledged")
        );
    }
    for r in &rows {
        if r.status == "acknowledged" {
            assert!(
                l.acked
                    .contains(&(r.enrollment_id.clone(), r.command_uuid.clone())),
                "{} on {} is recorded acknowledged but no device got a 200 for that",
                r.command_uuid,
                r.enrollment_id
            );
        }
        assert!(
            !matches!(r.status.as_str(), "queued" | "not_now"),
            "{} on {} still {} after the devices drained their queues",
            r.command_uuid,
            r.enrollment_id,
            r.status
        );
    }
    for (uuid, dev) in &l.enqueued {
        assert!(
            l.acked.contains(&(dev.clone(), uuid.clone())),
            "{uuid} was enqueued (200) to {dev} but never acknowledged: lost"
        );
    }
    for (uuid, dev) in &l.uncertain {
        let stored = by_key.get(&(dev.clone(), uuid.clone()));
        let command = command::Entity::find()
            .filter(command::Column::Uuid.eq(uuid.as_str()))
            .one(mdm_server::storage::testing::db(&storage))
            .await
            .expect("command");
        assert_eq!(
            stored.is_some(),
            command.is_some(),
            "an interrupted enqueue of {uuid} is half stored"
        );
        if stored.is_some() {
            assert!(l.acked.contains(&(dev.clone(), uuid.clone())), "{uuid}");
        }
    }
    assert!(
        l.enqueued.len() >= KILLS && !l.acked.is_empty(),
        "too little load to mean anything: {} enqueued",
        l.enqueued.len()
    );
    eprintln!(
        "-- {}: {} kills, {} commands enqueued (+{} interrupted, {} of them stored), {} deliveries, {} NotNow, \
         {} acknowledged, {:.1} s",
        db.label,
        KILLS,
        l.enqueued.len(),
        l.uncertain.len(),
        l.uncertain
            .iter()
            .filter(|(u, d)| by_key.contains_key(&((*d).clone(), (*u).clone())))
            .count(),
        l.deliveries,
        l.not_nows,
        l.acked.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let seed = std::env::var("MDM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("crash_safety seed {seed} (MDM_CRASH_SEED={seed} repeats the kill points)");
    for db in test_databases().await {
        eprintln!("-- on {}", db.label);
        run(&db, seed).await;
        db.cleanup().await;
    }
}
