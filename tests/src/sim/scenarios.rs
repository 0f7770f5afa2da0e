//! The load benchmarks, each a function from parameters to a [`Report`] (throughput, latency
//! percentiles, sizes, memory, protocol violations). `mdm-sim bench ...` runs them at full scale; the
//! CI smoke (`tests/tests/suite/sim_smoke.rs`) runs them tiny.

use super::fleet::{Counters, Fleet, FleetConfig};
use super::pki::{KeyKind, KeyPool, Provisioner};
use super::responder::Behavior;
use super::stats::{proc_cpu_seconds, Phase, Recorder, Summary};
use super::target::{BenchDb, BoxError, DbChoice, Server, ServerMode, ServerOptions};
use super::transport::Transport;
use mdm_server::protocol::CommandEnvelope;
use mdm_server::storage::queue;
use plist::{Dictionary, Value};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub db: DbChoice,
    pub mode: ServerMode,
    pub key_kind: KeyKind,
    /// Device keys in the pool (certificates are always one per device).
    pub key_pool: usize,
    pub cache_dir: Option<PathBuf>,
    /// Server HTTP workers (None: one per core).
    pub workers: Option<usize>,
    pub ios_percent: u8,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            db: DbChoice::Sqlite,
            mode: ServerMode::InProcess,
            key_kind: KeyKind::Rsa2048,
            key_pool: 64,
            cache_dir: Some(super::pki::default_cache_dir()),
            workers: None,
            ios_percent: 60,
        }
    }
}

/// What a scenario measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub db: String,
    pub server: String,
    pub params: serde_json::Value,
    /// Named throughput/latency measurements, in the order taken.
    pub measurements: Vec<(String, Summary)>,
    /// Other figures (sizes, memory, counts).
    pub figures: BTreeMap<String, serde_json::Value>,
    pub violations: BTreeMap<&'static str, u64>,
    pub violation_samples: Vec<String>,
}

impl Report {
    fn new(scenario: &str, common: &Common, params: serde_json::Value) -> Self {
        Self {
            scenario: scenario.into(),
            db: common.db.label().into(),
            server: match &common.mode {
                ServerMode::InProcess => "in-process".into(),
                ServerMode::Process(p) => format!("process {}", p.display()),
            },
            params,
            measurements: Vec::new(),
            figures: BTreeMap::new(),
            violations: BTreeMap::new(),
            violation_samples: Vec::new(),
        }
    }

    fn measure(&mut self, name: &str, s: Summary) {
        eprintln!("  {name}: {}", s.line());
        self.measurements.push((name.into(), s));
    }

    fn figure(&mut self, name: &str, v: impl Into<serde_json::Value>) {
        let v = v.into();
        eprintln!("  {name}: {v}");
        self.figures.insert(name.into(), v);
    }

    fn violations_of(&mut self, fleet: &Fleet) {
        for (k, v) in fleet.violations.counts() {
            *self.violations.entry(k).or_default() += v;
        }
        self.violation_samples.extend(fleet.violations.samples());
    }

    fn counters(&mut self, c: &Counters) {
        self.figure("connections", Counters::get(&c.connections));
        self.figure("requests", Counters::get(&c.requests));
        self.figure("commands_received", Counters::get(&c.commands));
        self.figure("acknowledged", Counters::get(&c.acknowledged));
        self.figure("errors", Counters::get(&c.errors));
        self.figure("not_now", Counters::get(&c.not_now));
        self.figure(
            "load_generator_signing_cpu_s",
            (Counters::get(&c.sign_nanos) as f64 / 1e9 * 100.0).round() / 100.0,
        );
    }

    pub fn total_violations(&self) -> u64 {
        self.violations.values().sum()
    }

    pub fn measurement(&self, name: &str) -> Option<&Summary> {
        self.measurements
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// A human summary.
    pub fn text(&self) -> String {
        let mut out = format!(
            "== {} on {} ({})\n   params: {}\n",
            self.scenario, self.db, self.server, self.params
        );
        for (name, s) in &self.measurements {
            out.push_str(&format!("   {name}: {}\n", s.line()));
        }
        for (k, v) in &self.figures {
            out.push_str(&format!("   {k}: {v}\n"));
        }
        out.push_str(&format!(
            "   protocol violations: {} {:?}\n",
            self.total_violations(),
            self.violations
        ));
        for s in &self.violation_samples {
            out.push_str(&format!("     {s}\n"));
        }
        out
    }
}

/// The database, the fleet's CA and keys, and the fleet, ready for a server.
struct Setup {
    db: BenchDb,
    /// PEM of the CA that issued the fleet's identities, which the server must trust.
    device_ca: Vec<u8>,
    storage: mdm_server::storage::Storage,
    fleet: Arc<Fleet>,
}

async fn setup(common: &Common, devices: usize, behavior: Behavior) -> Result<Setup, BoxError> {
    let t = Phase::start();
    let pool = KeyPool::load_or_generate(
        common.key_kind,
        common.key_pool.min(devices.max(1)),
        common.cache_dir.as_deref(),
    );
    let prov = Provisioner::new(pool);
    let fleet = Arc::new(Fleet::build(
        FleetConfig {
            devices,
            ios_percent: common.ios_percent,
            behavior,
            ..FleetConfig::default()
        },
        &prov,
    ));
    eprintln!(
        "  built {devices} devices ({:?} keys, unique certificates) in {:.1} s",
        common.key_kind,
        t.elapsed().as_secs_f64()
    );
    let db = BenchDb::create(&common.db).await?;
    let storage = db.storage().await?;
    Ok(Setup {
        db,
        device_ca: prov.ca_pem(),
        storage,
        fleet,
    })
}

fn server_options(common: &Common) -> ServerOptions {
    ServerOptions {
        workers: common.workers,
        ..ServerOptions::default()
    }
}

/// The server's memory after a phase of a run: its RSS and high-water mark so far.
fn memory_after(server: &Server, report: &mut Report, phase: &str) {
    if let Some((rss, hwm)) = server.memory_kib() {
        report.figure(&format!("rss_mib_after_{phase}"), rss / 1024);
        report.figure(&format!("hwm_mib_after_{phase}"), hwm / 1024);
    }
}

/// The server's peak RSS over the run (in process, the simulator's too, as the report says).
fn peak_memory(server: &Server, report: &mut Report) {
    if let Some((_, hwm)) = server.memory_kib() {
        report.figure("server_peak_rss_mib", hwm / 1024);
    }
    if server.in_process {
        report.figure(
            "note",
            "in-process: the RSS is the simulator's and the server's together",
        );
    }
}

/// Seed the fleet through the storage repositories, recording how long it took.
async fn seed(report: &mut Report, s: &Setup) -> Result<(), BoxError> {
    let t = Phase::start();
    s.fleet.seed(&s.storage, 1000).await?;
    let secs = t.elapsed().as_secs_f64();
    report.figure("seeded_devices", s.fleet.len());
    report.figure(
        "seed_devices_per_s",
        (s.fleet.len() as f64 / secs.max(1e-9)).round(),
    );
    Ok(())
}

/// Enroll over HTTP (Authenticate + TokenUpdate, signed live), recording the check-in latencies.
async fn enroll_http(
    report: &mut Report,
    fleet: &Arc<Fleet>,
    transport: &Transport,
    connections: usize,
) -> Result<(), BoxError> {
    let t = Phase::start();
    let rec = fleet.enroll(transport, connections).await?;
    report.measure(
        "enroll (Authenticate + TokenUpdate, signed live)",
        rec.summary(t.elapsed()),
    );
    Ok(())
}

/// How long a closed-loop phase runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Run `warmup` unrecorded, then `seconds` recorded.
    Timed { warmup: Duration, seconds: Duration },
    /// Exactly this many operations, all recorded (the CI smoke: no sleeping).
    Requests(u64),
}

impl Budget {
    fn new(warmup_secs: f64, seconds: f64, requests: Option<u64>) -> Self {
        match requests {
            Some(n) => Budget::Requests(n),
            None => Budget::Timed {
                warmup: Duration::from_secs_f64(warmup_secs),
                seconds: Duration::from_secs_f64(seconds),
            },
        }
    }
}

/// `connections` workers each run `op` on devices round-robin until the budget is spent. Returns the
/// recorded phase.
async fn closed_loop<F, Fut>(
    fleet: &Arc<Fleet>,
    connections: usize,
    budget: Budget,
    op: F,
) -> Result<Summary, BoxError>
where
    F: Fn(Arc<Fleet>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Duration, BoxError>> + Send,
{
    let limit = match budget {
        Budget::Requests(n) => n,
        Budget::Timed { .. } => u64::MAX,
    };
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let recording = Arc::new(AtomicBool::new(matches!(budget, Budget::Requests(_))));
    let stop = Arc::new(AtomicBool::new(false));
    let rec = Arc::new(Recorder::default());
    let mut tasks = tokio::task::JoinSet::new();
    let t = Instant::now();
    for _ in 0..connections.max(1) {
        let (fleet, next, recording, stop, rec, op) = (
            fleet.clone(),
            next.clone(),
            recording.clone(),
            stop.clone(),
            rec.clone(),
            op.clone(),
        );
        tasks.spawn(async move {
            let mut local = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let i = (n % fleet.len() as u64) as usize;
                let d = op(fleet.clone(), i).await?;
                if recording.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    local.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            rec.extend(&local);
            Ok::<(), BoxError>(())
        });
    }
    let mut start = t;
    if let Budget::Timed { warmup, seconds } = budget {
        tokio::time::sleep(warmup).await;
        recording.store(true, Ordering::Relaxed);
        start = Instant::now();
        tokio::time::sleep(seconds).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut elapsed = start.elapsed();
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    if let Budget::Requests(_) = budget {
        elapsed = start.elapsed();
    }
    Ok(rec.summary(elapsed))
}

async fn idle_op(fleet: Arc<Fleet>, transport: Transport, i: usize) -> Result<Duration, BoxError> {
    let t = Instant::now();
    fleet.connection(&transport, i).await?;
    Ok(t.elapsed())
}

// ---------------------------------------------------------------------------------------------------
// 1. Signed Idle check-ins per second.

#[derive(Debug, Clone, Serialize)]
pub struct CheckinParams {
    pub devices: usize,
    pub connections: usize,
    pub warmup_secs: f64,
    pub seconds: f64,
    /// Instead of a timed run: exactly this many check-ins.
    pub requests: Option<u64>,
    /// Seed the devices through storage instead of enrolling over HTTP.
    pub seed: bool,
    /// After the load, time each step of an Idle check-in this many times (0: skip).
    pub breakdown: usize,
}

pub async fn checkins(common: &Common, p: &CheckinParams) -> Result<Report, BoxError> {
    let mut report = Report::new("checkins", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    if p.seed {
        seed(&mut report, &s).await?;
    }
    let mut server = Server::start(
        &s.db,
        &s.storage,
        &s.device_ca,
        &common.mode,
        &server_options(common),
    )
    .await?;
    let transport = Transport::new(&server.base, p.connections);
    if !p.seed {
        enroll_http(&mut report, &s.fleet, &transport, p.connections).await?;
    }
    s.fleet.presign(false);
    let cpu0 = proc_cpu_seconds(server.pid);
    let t = transport.clone();
    let wall = Instant::now();
    let summary = closed_loop(
        &s.fleet,
        p.connections,
        Budget::new(p.warmup_secs, p.seconds, p.requests),
        move |f, i| idle_op(f, t.clone(), i),
    )
    .await?;
    if let (Some(a), Some(b), false) = (cpu0, proc_cpu_seconds(server.pid), server.in_process) {
        report.figure(
            "server_cpu_cores_used",
            ((b - a) / wall.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        );
    }
    report.measure("idle check-ins (signed, presigned bodies)", summary);
    report.counters(&s.fleet.counters);
    if p.breakdown > 0 {
        idle_breakdown(&mut report, &s.storage, &s.fleet, p.breakdown).await?;
    }
    if let Some((rss, hwm)) = server.memory_kib().filter(|_| !server.in_process) {
        report.figure("server_rss_mib", rss / 1024);
        report.figure("server_hwm_mib", hwm / 1024);
    }
    report.violations_of(&s.fleet);
    server.stop();
    s.db.drop_schema().await;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------
// 2. Command throughput: commands queued per device, drained by the devices.

/// The commands queued in order, with their priorities: delivery must be ProfileList, CertificateList
/// (priority 5, in enqueue order), then DeviceInformation, SecurityInfo, InstalledApplicationList.
pub fn command_set() -> Vec<(serde_json::Value, i32)> {
    vec![
        (json!({"RequestType": "DeviceInformation"}), 0),
        (json!({"RequestType": "SecurityInfo"}), 0),
        (json!({"RequestType": "ProfileList"}), 5),
        (json!({"RequestType": "InstalledApplicationList"}), 0),
        (json!({"RequestType": "CertificateList"}), 5),
    ]
}

/// A configuration profile as InstallProfile carries it.
pub fn sample_profile(identifier: &str) -> Vec<u8> {
    let mut wifi = Dictionary::new();
    wifi.insert("PayloadType".into(), "com.apple.wifi.managed".into());
    wifi.insert(
        "PayloadIdentifier".into(),
        format!("{identifier}.wifi").into(),
    );
    wifi.insert(
        "PayloadUUID".into(),
        uuid::Uuid::new_v4().to_string().to_uppercase().into(),
    );
    wifi.insert("PayloadVersion".into(), Value::Integer(1.into()));
    wifi.insert("SSID_STR".into(), "Example".into());
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), "Configuration".into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert(
        "PayloadUUID".into(),
        uuid::Uuid::new_v4().to_string().to_uppercase().into(),
    );
    d.insert("PayloadVersion".into(), Value::Integer(1.into()));
    d.insert("PayloadDisplayName".into(), "Example Wi-Fi".into());
    d.insert(
        "PayloadContent".into(),
        Value::Array(vec![Value::Dictionary(wifi)]),
    );
    crate::device::xml(d)
}

/// Enqueues through the admin API to a whole fleet, telling each device what to expect.
struct Enqueuer<'a> {
    server: &'a Server,
    http: reqwest::Client,
    fleet: &'a Fleet,
    index: std::collections::HashMap<String, usize>,
    udids: Vec<String>,
}

impl<'a> Enqueuer<'a> {
    fn new(server: &'a Server, fleet: &'a Fleet) -> Self {
        Self {
            server,
            http: admin_http(),
            fleet,
            index: fleet.index_of(),
            udids: fleet.udids(),
        }
    }

    /// Enqueue `command` (a typed command, or `{"raw_plist": ...}`) to every device and tell each to
    /// expect it. Returns the request's duration.
    async fn enqueue(
        &self,
        command: serde_json::Value,
        priority: i32,
        no_push: bool,
    ) -> Result<Duration, BoxError> {
        let t = Instant::now();
        let body = if command.get("raw_plist").is_some() {
            let mut b = command;
            b["ids"] = json!(self.udids);
            b["priority"] = json!(priority);
            b["no_push"] = json!(no_push);
            b
        } else {
            json!({"ids": self.udids, "command": command, "priority": priority, "no_push": no_push})
        };
        let (status, out) = self
            .server
            .api(
                &self.http,
                reqwest::Method::POST,
                "/api/v1/commands",
                Some(body),
            )
            .await?;
        let took = t.elapsed();
        if status != 200 {
            return Err(format!("enqueue: HTTP {status}: {out}").into());
        }
        let results = out["results"].as_object().ok_or("no results")?;
        for (id, r) in results {
            if r["status"] != "queued" {
                return Err(format!("enqueue to {id}: {r}").into());
            }
            let uuid = r["command_uuid"].as_str().ok_or("no command_uuid")?;
            self.fleet.expect(self.index[id], uuid, priority).await;
        }
        Ok(took)
    }
}

fn admin_http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandParams {
    pub devices: usize,
    /// Commands queued to each device (cycling through [`command_set`]).
    pub per_device: usize,
    pub connections: usize,
    pub not_now_rate: f64,
    pub error_rate: f64,
    /// Also queue InstallProfile, RemoveProfile and an unknown RequestType (the responder's other paths).
    pub extra_commands: bool,
    /// Poll instead of waiting for pushes (always so with a separate server process).
    pub poll: bool,
    pub seed: bool,
    pub timeout_secs: u64,
}

pub async fn commands(common: &Common, p: &CommandParams) -> Result<Report, BoxError> {
    let mut report = Report::new("commands", common, json!(p));
    let behavior = Behavior {
        not_now_rate: p.not_now_rate,
        error_rate: p.error_rate,
    };
    let s = setup(common, p.devices, behavior).await?;
    if p.seed {
        seed(&mut report, &s).await?;
    }
    let mut opts = server_options(common);
    // Pushing 10k devices at the default 500/s would measure the rate limit, not the server.
    opts.push_max_per_second = 100_000;
    let mut server = Server::start(&s.db, &s.storage, &s.device_ca, &common.mode, &opts).await?;
    let poll = p.poll || server.push.is_none();
    let transport = Transport::new(&server.base, p.connections);
    if !p.seed {
        enroll_http(&mut report, &s.fleet, &transport, p.connections).await?;
    }
    s.fleet.presign(false);
    let enq = Enqueuer::new(&server, &s.fleet);
    let mut plan: Vec<(serde_json::Value, i32)> = command_set()
        .into_iter()
        .cycle()
        .take(p.per_device)
        .collect();
    if p.extra_commands {
        use base64::Engine;
        let profile = base64::engine::general_purpose::STANDARD
            .encode(sample_profile("com.example.sim.wifi"));
        plan.push((
            json!({"RequestType": "InstallProfile", "Payload": profile}),
            0,
        ));
        plan.push((
            json!({"RequestType": "RemoveProfile", "Identifier": "com.example.sim.wifi"}),
            0,
        ));
        plan.push((json!({"RequestType": "ProfileList"}), 0));
        plan.push((
            json!({"raw_plist": "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>RequestType</key><string>SimUnknownCommand</string></dict></plist>"}),
            -1,
        ));
    }
    let listener = (!poll).then(|| {
        s.fleet.listen_for_pushes(
            server.push.as_ref().expect("push sink"),
            &transport,
            p.connections,
        )
    });
    let mut enqueue_times = Vec::new();
    let mut drain_start = Instant::now();
    for (k, (cmd, prio)) in plan.iter().enumerate() {
        let last = k + 1 == plan.len();
        if last {
            drain_start = Instant::now();
        }
        let took = enq.enqueue(cmd.clone(), *prio, poll || !last).await?;
        enqueue_times.push((took.as_secs_f64() * 1000.0).round() / 1000.0);
    }
    report.figure("enqueue_api_seconds", json!(enqueue_times));
    let queued = (plan.len() * p.devices) as u64;
    report.figure("commands_queued", queued);
    if poll {
        drain_start = Instant::now();
        s.fleet
            .drain_by_polling(&transport, p.connections, 1000)
            .await?;
    } else {
        let deadline = Instant::now() + Duration::from_secs(p.timeout_secs);
        super::wait_for(&s.fleet.progress, deadline, || s.fleet.expected_open() == 0).await;
    }
    if let Some(l) = &listener {
        l.quiesce().await;
    }
    let drain = drain_start.elapsed();
    drop(listener);
    s.fleet.flag_undelivered().await;
    let c = &s.fleet.counters;
    let finished = Counters::get(&c.acknowledged) + Counters::get(&c.errors);
    report.figure(
        "drain_seconds",
        (drain.as_secs_f64() * 100.0).round() / 100.0,
    );
    report.figure(
        "commands_finished_per_s",
        (finished as f64 / drain.as_secs_f64()).round(),
    );
    report.measure("all device requests", s.fleet.latency.summary(drain));
    report.measure(
        "requests answered with a command",
        s.fleet.command_latency.summary(drain),
    );
    if let Some(sink) = &server.push {
        report.figure("pushes", sink.pushed());
    }
    report.counters(c);
    if finished != queued {
        report.figure("finished_vs_queued_mismatch", json!([finished, queued]));
        s.fleet.violations.record(
            super::checker::Violation::NotDelivered,
            format!("{finished} commands finished, {queued} queued"),
        );
    }
    report.violations_of(&s.fleet);
    server.stop();
    s.db.drop_schema().await;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------
// 3. Fan-out: one command to every device through the API.

/// A push rate limit no fan-out here reaches: the push worker claims every owed push in one round, so
/// all are sent within the run.
pub const UNLIMITED_PUSH_RATE: u32 = 1_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct FanoutParams {
    pub devices: usize,
    pub repeat: usize,
    /// The push worker's `push.max_per_second`: how many owed pushes one of its rounds claims.
    pub push_per_second: u32,
}

pub async fn fanout(common: &Common, p: &FanoutParams) -> Result<Report, BoxError> {
    let mut report = Report::new("fanout", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    seed(&mut report, &s).await?;
    let mut opts = server_options(common);
    opts.push_max_per_second = p.push_per_second;
    let mut server = Server::start(&s.db, &s.storage, &s.device_ca, &common.mode, &opts).await?;
    let enq = Enqueuer::new(&server, &s.fleet);
    let size0 = s.db.size_bytes(&s.storage).await?;
    report.figure("db_bytes_before", size0);
    let mut times = Vec::new();
    for _ in 0..p.repeat.max(1) {
        let pushed0 = server.push.as_ref().map_or(0, |p| p.pushed());
        let took = enq
            .enqueue(json!({"RequestType": "ProfileList"}), 0, false)
            .await?;
        times.push(took);
        eprintln!(
            "  enqueue to {} devices: {:.3} s",
            p.devices,
            took.as_secs_f64()
        );
        if let Some(sink) = &server.push {
            // The pushes the enqueue owes, sent by the worker after the commit.
            let t = Instant::now();
            let all = pushed0 + p.devices as u64;
            super::wait_for(&sink.progress, t + Duration::from_secs(300), || {
                sink.pushed() >= all
            })
            .await;
            report.figure(
                "pushes_sent_after_enqueue_seconds",
                ((t.elapsed().as_secs_f64() + took.as_secs_f64()) * 100.0).round() / 100.0,
            );
        }
    }
    let mut samples: Vec<u32> = times.iter().map(|d| d.as_micros() as u32).collect();
    let total: Duration = times.iter().sum();
    report.measure(
        "enqueue one command to every device (one API call)",
        Summary::of(&mut samples, total),
    );
    let size1 = s.db.size_bytes(&s.storage).await?;
    report.figure("db_bytes_after", size1);
    fanout_breakdown(&mut report, &s.storage, &s.fleet.udids()).await?;
    report.figure(
        "db_bytes_per_queued_row",
        (size1.saturating_sub(size0)) / (p.devices * p.repeat.max(1)) as u64,
    );
    report.figure(
        "command_queue_rows",
        s.db.count(&s.storage, "command_queue").await?,
    );
    if let Some((_, hwm)) = server.memory_kib().filter(|_| !server.in_process) {
        report.figure("server_hwm_mib", hwm / 1024);
    }
    server.stop();
    s.db.drop_schema().await;
    Ok(report)
}

/// A transaction of the simulator's own beside the running server's, which reads and then writes. On
/// SQLite it takes the write lock from the start: a deferred one reads first, and when the server commits
/// meanwhile (its push worker recording pushes, a check-in's last-seen) its first write fails at once
/// with "database is locked" instead of waiting.
async fn begin_writing(
    db: &sea_orm::DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// The database side of an enqueue to every device, step by step on the simulator's own connection, in a
/// transaction that is rolled back: look up the channels, store the command and queue a row per channel,
/// mark them owed a push.
async fn fanout_breakdown(
    report: &mut Report,
    storage: &mdm_server::storage::Storage,
    ids: &[String],
) -> Result<(), BoxError> {
    use mdm_server::storage::enrollments;
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    let ms = |t: Instant| (t.elapsed().as_secs_f64() * 1000.0).round();
    let txn = begin_writing(mdm_server::storage::testing::db(storage)).await?;
    let t = Instant::now();
    let found = enrollments::eligibility(&txn, ids).await?;
    report.figure("breakdown_find_enrollments_ms", ms(t));
    let mut cmd = Dictionary::new();
    cmd.insert("RequestType".into(), "ProfileList".into());
    let env = CommandEnvelope::new(uuid::Uuid::new_v4().to_string().to_uppercase(), cmd)?;
    let t = Instant::now();
    queue::insert_command(&txn, &env, 0, "mdm-sim", None, now).await?;
    let mut ids: Vec<String> = found.into_iter().map(|(id, _, _)| id).collect();
    ids.sort();
    queue::enqueue(&txn, &env.uuid, 0, None, &ids, now).await?;
    report.figure("breakdown_insert_queue_rows_ms", ms(t));
    let t = Instant::now();
    mdm_server::storage::push::due_for_command(&txn, &env.uuid, now).await?;
    report.figure("breakdown_mark_push_due_ms", ms(t));
    txn.rollback().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// 4. Queue depth: next-command latency with few and with many rows in command_queue.

#[derive(Debug, Clone, Serialize)]
pub struct QueueDepthParams {
    /// Devices that drain their commands while being measured.
    pub probes: usize,
    pub per_probe: usize,
    /// Rows in command_queue in the deep case (the probes' own plus background rows).
    pub deep_rows: usize,
    /// Background channels the deep rows are spread over.
    pub background_channels: usize,
    pub connections: usize,
}

/// Insert `rows` queued rows for `channels` background channels through the queue repository.
async fn background_rows(
    storage: &mdm_server::storage::Storage,
    rows: usize,
    channels: usize,
) -> Result<(), BoxError> {
    use sea_orm::TransactionTrait;
    let channels = channels.max(1);
    let ids: Vec<String> = (0..channels).map(|i| format!("BG-{i:08}")).collect();
    let per_channel = rows.div_ceil(channels);
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    // The channels exist (disabled: never pushed), as every queued row's channel does.
    for chunk in ids.chunks(500) {
        use mdm_server::storage::entities::enrollment;
        use sea_orm::EntityTrait;
        let kind = mdm_server::protocol::EnrollmentKind::Device;
        let rows = chunk
            .iter()
            .map(|id| mdm_server::storage::enrollments::new_channel(id, id, kind, now));
        enrollment::Entity::insert_many(rows)
            .exec_without_returning(mdm_server::storage::testing::db(storage))
            .await?;
    }
    let mut left = rows;
    for _ in 0..per_channel {
        let n = left.min(channels);
        if n == 0 {
            break;
        }
        let mut cmd = Dictionary::new();
        cmd.insert("RequestType".into(), "ProfileList".into());
        let env = CommandEnvelope::new(uuid::Uuid::new_v4().to_string().to_uppercase(), cmd)?;
        let txn = mdm_server::storage::testing::db(storage).begin().await?;
        queue::insert_command(&txn, &env, 0, "mdm-sim", None, now).await?;
        queue::enqueue(&txn, &env.uuid, 0, None, &ids[..n], now).await?;
        txn.commit().await?;
        left -= n;
    }
    Ok(())
}

pub async fn queue_depth(common: &Common, p: &QueueDepthParams) -> Result<Report, BoxError> {
    let mut report = Report::new("queue-depth", common, json!(p));
    let own = p.probes * p.per_probe;
    for (label, background) in [
        ("shallow", 0usize),
        ("deep", p.deep_rows.saturating_sub(own)),
    ] {
        let s = setup(common, p.probes, Behavior::default()).await?;
        seed(&mut report, &s).await?;
        let t = Phase::start();
        background_rows(&s.storage, background, p.background_channels).await?;
        if background > 0 {
            report.figure(
                "background_rows_insert_seconds",
                (t.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            );
        }
        let mut server = Server::start(
            &s.db,
            &s.storage,
            &s.device_ca,
            &common.mode,
            &server_options(common),
        )
        .await?;
        let transport = Transport::new(&server.base, p.connections);
        s.fleet.presign(false);
        let enq = Enqueuer::new(&server, &s.fleet);
        for (cmd, prio) in command_set().into_iter().cycle().take(p.per_probe) {
            enq.enqueue(cmd, prio, true).await?;
        }
        let rows = s.db.count(&s.storage, "command_queue").await?;
        report.figure(&format!("{label}_command_queue_rows"), rows);
        let t = Phase::start();
        s.fleet
            .drain_by_polling(&transport, p.connections, 100)
            .await?;
        let elapsed = t.elapsed();
        s.fleet.flag_undelivered().await;
        report.measure(
            &format!("{label}: requests answered with the next command ({rows} rows)"),
            s.fleet.command_latency.summary(elapsed),
        );
        report.measure(
            &format!("{label}: all requests"),
            s.fleet.latency.summary(elapsed),
        );
        report.violations_of(&s.fleet);
        server.stop();
        s.db.drop_schema().await;
    }
    if let (Some(a), Some(b)) = (
        report
            .measurements
            .iter()
            .find(|(n, _)| n.starts_with("shallow: requests answered")),
        report
            .measurements
            .iter()
            .find(|(n, _)| n.starts_with("deep: requests answered")),
    ) {
        let (a, b) = (a.1.p50_ms, b.1.p50_ms);
        report.figure(
            "deep_vs_shallow_p50_change_percent",
            ((b - a) / a * 1000.0).round() / 10.0,
        );
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------
// 5. Memory: the server process's peak RSS with many enrolled devices under load.

#[derive(Debug, Clone, Serialize)]
pub struct MemoryParams {
    pub devices: usize,
    pub connections: usize,
    /// Devices that send one Idle each while the server holds all of them (None: every device).
    pub sweep_devices: Option<usize>,
    /// Devices that, after the fan-out, fetch and answer the command (signed live).
    pub drain_devices: usize,
}

pub async fn memory(common: &Common, p: &MemoryParams) -> Result<Report, BoxError> {
    let mut report = Report::new("memory", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    seed(&mut report, &s).await?;

    let mut server = Server::start(
        &s.db,
        &s.storage,
        &s.device_ca,
        &common.mode,
        &server_options(common),
    )
    .await?;
    memory_after(&server, &mut report, "start");
    let t = Phase::start();
    s.fleet.presign(false);
    eprintln!(
        "  presigned {} Idle bodies in {:.1} s",
        p.devices,
        t.elapsed().as_secs_f64()
    );
    let transport = Transport::new(&server.base, p.connections);
    let sweep = p.sweep_devices.unwrap_or(p.devices).min(s.fleet.len());
    // Spread over the whole fleet, so the server touches rows everywhere.
    let step = (s.fleet.len() / sweep.max(1)).max(1);
    let all: Vec<usize> = (0..sweep).map(|k| k * step).collect();
    let t = Phase::start();
    s.fleet
        .each(&transport, p.connections, &all, |f, tr, i| async move {
            f.connection(&tr, i).await.map(|_| ())
        })
        .await?;
    report.measure(
        "idle check-in from every device",
        s.fleet.latency.summary(t.elapsed()),
    );
    memory_after(&server, &mut report, "idle_sweep");
    let enq = Enqueuer::new(&server, &s.fleet);
    let took = enq
        .enqueue(json!({"RequestType": "ProfileList"}), 0, true)
        .await?;
    report.figure(
        "fanout_seconds",
        (took.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    memory_after(&server, &mut report, "fanout");
    let drain: Vec<usize> = (0..p.drain_devices.min(s.fleet.len())).collect();
    let t = Phase::start();
    let before = s.fleet.command_latency.len();
    s.fleet
        .each(&transport, p.connections, &drain, |f, tr, i| async move {
            f.connection(&tr, i).await.map(|_| ())
        })
        .await?;
    report.figure(
        "drained_commands",
        s.fleet.command_latency.len().saturating_sub(before),
    );
    report.figure(
        "drain_seconds",
        (t.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    );
    memory_after(&server, &mut report, "drain");
    peak_memory(&server, &mut report);
    report.counters(&s.fleet.counters);
    report.violations_of(&s.fleet);
    server.stop();
    s.db.drop_schema().await;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------
// 6. Plugins: check-ins per second with 0, 1 and 5 example plugins.

/// The example plugins and the configuration each runs with here.
pub fn example_plugins() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("webhook", json!({"sink": "webhook"})),
        ("inventory", json!({"attribute_prefix": "inv."})),
        ("enroll-baseline", json!({"profiles": []})),
        (
            "retry-notnow",
            json!({"max_attempts": 3, "base_delay_seconds": 60, "alert_sink": "alerts"}),
        ),
        ("serial-allowlist", json!({"prefixes": ["C02"]})),
        (
            "compliance",
            json!({"remediation_set": "passcode-remediation", "item": "passcode.is-compliant"}),
        ),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginParams {
    pub devices: usize,
    pub connections: usize,
    pub warmup_secs: f64,
    pub seconds: f64,
    /// Instead of timed runs: exactly this many check-ins per measurement.
    pub requests: Option<u64>,
    /// Plugin sets to measure, each a list of example plugin names (empty: none, the baseline; it
    /// must come first).
    pub sets: Vec<Vec<String>>,
    /// Every set is measured this many times, the sets taking turns, and each cost is the median of
    /// the rounds' costs against the same round's baseline: on shared machines throughput drifts by
    /// tens of percent within a minute, and taking turns keeps that drift out of the comparison.
    pub rounds: usize,
    /// Events per POST to the sinks (`batch_max_events`; 1: one POST per event).
    pub sink_batch: usize,
}

/// One round of one plugin set: check-ins per second, and CPU per check-in (the server's; in-process,
/// the server's and the load generator's together).
#[derive(Default, Clone, Copy)]
struct Rates {
    token_update: f64,
    idle: f64,
    token_update_cpu_us: Option<f64>,
    idle_cpu_us: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `closed_loop` with the CPU the server used per request during it.
async fn timed_phase<F, Fut>(
    fleet: &Arc<Fleet>,
    pid: u32,
    connections: usize,
    budget: Budget,
    op: F,
) -> Result<(Summary, Option<f64>), BoxError>
where
    F: Fn(Arc<Fleet>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Duration, BoxError>> + Send,
{
    let cpu0 = proc_cpu_seconds(pid);
    let s = closed_loop(fleet, connections, budget, op).await?;
    let cpu = match (cpu0, proc_cpu_seconds(pid)) {
        (Some(a), Some(b)) if s.requests > 0 => Some((b - a) * 1e6 / s.requests as f64),
        _ => None,
    };
    Ok((s, cpu))
}

pub async fn plugins(common: &Common, p: &PluginParams) -> Result<Report, BoxError> {
    use base64::Engine;
    let mut report = Report::new("plugins", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    let sink = crate::sink::Sink::start(200).await;
    let mut opts = server_options(common);
    opts.sinks = vec![
        ("webhook".into(), sink.url.clone()),
        ("alerts".into(), sink.url.clone()),
    ];
    opts.sink_batch = p.sink_batch;
    let mut server = Server::start(&s.db, &s.storage, &s.device_ca, &common.mode, &opts).await?;
    let transport = Transport::new(&server.base, p.connections);
    enroll_http(&mut report, &s.fleet, &transport, p.connections).await?;
    s.fleet.presign(true);
    let http = admin_http();
    let catalogue: BTreeMap<&str, serde_json::Value> = example_plugins().into_iter().collect();
    let label_of = |set: &[String]| {
        if set.is_empty() {
            "0 plugins".to_string()
        } else {
            format!("{} plugin(s): {}", set.len(), set.join("+"))
        }
    };
    let rounds = p.rounds.max(1);
    let mut rates: Vec<Vec<Rates>> = vec![Vec::new(); p.sets.len()];
    for round in 1..=rounds {
        for (k, set) in p.sets.iter().enumerate() {
            let mut label = label_of(set);
            if rounds > 1 {
                label = format!("{label} (round {round})");
            }
            for name in set {
                let config = catalogue
                    .get(name.as_str())
                    .ok_or_else(|| format!("unknown example plugin {name}"))?;
                let wasm = std::fs::read(crate::plugins::build(name))?;
                let manifest = crate::plugins::manifest(name);
                let (status, out) = server
                    .api(
                        &http,
                        reqwest::Method::POST,
                        "/api/v1/plugins",
                        Some(json!({
                            "manifest": manifest,
                            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
                            "config": config,
                            "approve_capabilities": manifest["capabilities"],
                        })),
                    )
                    .await?;
                if status != 200 {
                    return Err(format!("uploading {name}: HTTP {status} {out}").into());
                }
            }
            let t = transport.clone();
            let (tu, tu_cpu) = timed_phase(
                &s.fleet,
                server.pid,
                p.connections,
                Budget::new(p.warmup_secs, p.seconds, p.requests),
                move |f, i| {
                    let t = t.clone();
                    async move { f.token_update(&t, i).await }
                },
            )
            .await?;
            let t = transport.clone();
            let (idle, idle_cpu) = timed_phase(
                &s.fleet,
                server.pid,
                p.connections,
                Budget::new(p.warmup_secs, p.seconds, p.requests),
                move |f, i| idle_op(f, t.clone(), i),
            )
            .await?;
            // A phase's events are delivered before the next starts, so no phase pays for an earlier
            // one's.
            let emitted = s.db.count(&s.storage, "event_outbox").await? as usize;
            let waiting = emitted.saturating_sub(sink.count());
            if !sink.wait_for(emitted, Duration::from_secs(120)).await {
                return Err(format!(
                    "{label}: {} of {emitted} events reached the sink within 120 s",
                    sink.count()
                )
                .into());
            }
            report.figure(
                &format!("{label}: events still in the outbox after the load"),
                waiting,
            );
            rates[k].push(Rates {
                token_update: tu.per_second,
                idle: idle.per_second,
                token_update_cpu_us: tu_cpu,
                idle_cpu_us: idle_cpu,
            });
            report.measure(&format!("{label}: TokenUpdate check-ins"), tu);
            report.measure(&format!("{label}: Idle check-ins"), idle);
            for name in set {
                let (status, out) = server
                    .api(
                        &http,
                        reqwest::Method::DELETE,
                        &format!("/api/v1/plugins/{name}"),
                        None,
                    )
                    .await?;
                if status != 200 && status != 204 {
                    return Err(format!("deleting {name}: HTTP {status} {out}").into());
                }
            }
        }
    }
    let cpu_who = if server.in_process {
        "server and load generator"
    } else {
        "server"
    };
    if let Some(base) = p.sets.first().filter(|s| s.is_empty()).map(|_| &rates[0]) {
        for (k, set) in p.sets.iter().enumerate() {
            let label = label_of(set);
            let cpu = |f: fn(&Rates) -> Option<f64>| -> Option<f64> {
                let v: Vec<f64> = rates[k].iter().filter_map(f).collect();
                (!v.is_empty()).then(|| median(v).round())
            };
            if let Some(us) = cpu(|r| r.token_update_cpu_us) {
                report.figure(
                    &format!("{label}: TokenUpdate CPU µs per check-in ({cpu_who}, median)"),
                    us,
                );
            }
            if let Some(us) = cpu(|r| r.idle_cpu_us) {
                report.figure(
                    &format!("{label}: Idle CPU µs per check-in ({cpu_who}, median)"),
                    us,
                );
            }
            if k == 0 {
                continue;
            }
            for (kind, get) in [
                (
                    "TokenUpdate",
                    (|r: &Rates| r.token_update) as fn(&Rates) -> f64,
                ),
                ("Idle", |r: &Rates| r.idle),
            ] {
                let costs: Vec<f64> = rates[k]
                    .iter()
                    .zip(base)
                    .map(|(r, b)| round1((1.0 - get(r) / get(b)) * 100.0))
                    .collect();
                if rounds > 1 {
                    report.figure(
                        &format!("{label}: {kind} throughput cost % per round"),
                        costs.clone(),
                    );
                }
                report.figure(
                    &format!("{label}: {kind} throughput cost %"),
                    round1(median(costs)),
                );
            }
        }
    }
    report.figure("events_received_by_sink", sink.count());
    report.counters(&s.fleet.counters);
    report.figure(
        "plugin_audit_rows",
        s.db.count(&s.storage, "plugin_audit").await?,
    );
    report.violations_of(&s.fleet);
    server.stop();
    s.db.drop_schema().await;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------------
// Where an Idle check-in's time goes, without HTTP: the same steps the server takes, one client.

/// Per-step cost of an Idle check-in, each measured `n` times in a row on one task: signature
/// verification (in full, and answered by the server's cache of verified signatures), plist decoding, one
/// database round trip (`SELECT 1`), the one read an Idle with nothing to do costs
/// (`storage::checkin_state::load`), and the transaction an Idle that has something to do runs (state,
/// next command, the channel's "seen" update, commit) through the same storage repositories.
pub async fn idle_breakdown(
    report: &mut Report,
    storage: &mdm_server::storage::Storage,
    fleet: &Fleet,
    n: usize,
) -> Result<(), BoxError> {
    use mdm_server::protocol::CommandReport;
    use mdm_server::storage::{checkin_state, enrollments};
    use sea_orm::ConnectionTrait;
    let n = n.max(1);
    let dev = &fleet.devices[0].sim;
    let body = dev.idle();
    let sig = dev.sign(&body);
    let per_op = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / n as f64;

    let t = Instant::now();
    for _ in 0..n {
        mdm_server::identity::verify_mdm_signature(&sig, &body)?;
    }
    report.figure("breakdown_verify_signature_us", per_op(t).round());
    let cache = mdm_server::identity::SignatureVerifier::new(16, Default::default());
    // Remembered the second time these bytes verify.
    cache.verify(&sig, &body)?;
    cache.verify(&sig, &body)?;
    let t = Instant::now();
    for _ in 0..n {
        cache.verify(&sig, &body)?;
    }
    report.figure("breakdown_verify_signature_cached_us", per_op(t).round());
    signature_steps(report, &sig, &body, n)?;
    let t = Instant::now();
    for _ in 0..n {
        CommandReport::decode(&body)?;
    }
    report.figure("breakdown_decode_plist_us", per_op(t).round());
    let db = mdm_server::storage::testing::db(storage);
    let t = Instant::now();
    for _ in 0..n {
        db.execute_unprepared("SELECT 1").await?;
    }
    report.figure("breakdown_db_round_trip_us", per_op(t).round());
    let e = CommandReport::decode(&body)?.enrollment;
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    let t = Instant::now();
    for _ in 0..n {
        checkin_state::load(db, &e.device_id, &e.id).await?;
    }
    report.figure("breakdown_idle_state_read_us", per_op(t).round());
    let t = Instant::now();
    for _ in 0..n {
        let txn = begin_writing(db).await?;
        checkin_state::load(&txn, &e.device_id, &e.id).await?;
        queue::next(&txn, &e.id, now).await?;
        enrollments::checked_in(&txn, &e.id, now, now + 600_000).await?;
        txn.commit().await?;
    }
    report.figure("breakdown_idle_transaction_us", per_op(t).round());
    Ok(())
}

/// The steps of `identity::verify_mdm_signature`, each timed `n` times: which part of checking a signature
/// costs what (the RSA-2048 public-key operation itself is ~20 µs; `openssl speed rsa2048`).
fn signature_steps(report: &mut Report, sig: &str, body: &[u8], n: usize) -> Result<(), BoxError> {
    use base64::Engine;
    use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::X509;
    let per_op = |t: Instant| (t.elapsed().as_secs_f64() * 1e6 / n as f64).round();
    let der = base64::engine::general_purpose::STANDARD.decode(sig)?;
    let t = Instant::now();
    for _ in 0..n {
        Pkcs7::from_der(&der)?;
    }
    report.figure("breakdown_sig_parse_pkcs7_us", per_op(t));
    let p7 = Pkcs7::from_der(&der)?;
    let none = Stack::<X509>::new()?;
    let t = Instant::now();
    for _ in 0..n {
        p7.signers(&none, Pkcs7Flags::empty())?;
    }
    report.figure("breakdown_sig_signers_us", per_op(t));
    let t = Instant::now();
    for _ in 0..n {
        X509StoreBuilder::new()?.build();
    }
    report.figure("breakdown_sig_new_store_us", per_op(t));
    let store = X509StoreBuilder::new()?.build();
    let flags = Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY | Pkcs7Flags::NO_DUAL_CONTENT;
    let t = Instant::now();
    for _ in 0..n {
        p7.verify(&none, &store, Some(body), None, flags)?;
    }
    report.figure("breakdown_sig_pkcs7_verify_us", per_op(t));
    let signer = p7
        .signers(&none, Pkcs7Flags::empty())?
        .pop()
        .ok_or("no signer")?;
    let t = Instant::now();
    for _ in 0..n {
        mdm_server::identity::DeviceCert::from_x509(signer.clone())?;
    }
    report.figure("breakdown_sig_device_cert_us", per_op(t));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// 7. Declarative Device Management: full syncs per second, and an edit fanned out to every device.

#[derive(Debug, Clone, Serialize)]
pub struct DdmParams {
    pub devices: usize,
    pub connections: usize,
    /// Declarations in the set every device holds (one of them the activation of the others).
    pub declarations: usize,
    pub warmup_secs: f64,
    pub seconds: f64,
    /// Instead of a timed run: exactly this many syncs.
    pub requests: Option<u64>,
}

/// `n` declarations: n-1 passcode configurations and the activation that refers to them all.
pub fn ddm_declarations(n: usize, min_length: i64) -> Vec<serde_json::Value> {
    let configs: Vec<String> = (1..n.max(2))
        .map(|i| format!("bench.passcode.{i:03}"))
        .collect();
    let mut out: Vec<serde_json::Value> = configs
        .iter()
        .map(|id| {
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": id,
                   "Payload": {"RequirePasscode": true, "MinimumLength": min_length}})
        })
        .collect();
    out.push(
        json!({"Type": "com.apple.activation.simple", "Identifier": "bench.activation",
                    "Payload": {"StandardConfigurations": configs}}),
    );
    out
}

async fn ddm_admin(
    server: &Server,
    http: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, BoxError> {
    let (status, json) = server.api(http, method, path, Some(body)).await?;
    if status != 200 {
        return Err(format!("{path}: HTTP {status}: {json}").into());
    }
    Ok(json)
}

/// Assign the set to every device through the repository (the admin API assigns one enrollment per
/// call; this is setup, not what is measured).
async fn assign_all(
    storage: &mdm_server::storage::Storage,
    udids: &[String],
    set: &str,
) -> Result<(), BoxError> {
    use mdm_server::storage::entities::ddm_assignment;
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    for chunk in udids.chunks(1000) {
        let rows = chunk.iter().map(|id| ddm_assignment::ActiveModel {
            enrollment_id: Set(id.clone()),
            set_name: Set(set.to_string()),
            created_at: Set(now),
        });
        ddm_assignment::Entity::insert_many(rows)
            .exec_without_returning(mdm_server::storage::testing::db(storage))
            .await?;
    }
    Ok(())
}

/// One full sync of device `i` from nothing: tokens, manifest, every declaration, status report.
async fn ddm_sync_op(
    fleet: Arc<Fleet>,
    transport: Transport,
    i: usize,
    expected: usize,
) -> Result<Duration, BoxError> {
    let t = Instant::now();
    let mut client = crate::ddm::DdmClient::default();
    let udid = fleet.devices[i].sim.udid.clone();
    let round = client
        .sync(&udid, |body| {
            let (fleet, transport) = (fleet.clone(), transport.clone());
            async move {
                let sig = fleet.sign_body(i, &body);
                match transport.checkin(body, &sig).await {
                    Ok(r) => (r.status, r.body),
                    Err(e) => (0, e.to_string().into_bytes()),
                }
            }
        })
        .await;
    match round {
        Ok(r) if r.fetched.len() >= expected => {}
        Ok(r) => fleet.violations.record(
            super::checker::Violation::HttpStatus,
            format!(
                "{udid}: synced {} declarations, expected {expected}",
                r.fetched.len()
            ),
        ),
        Err(e) => fleet.violations.record(
            super::checker::Violation::HttpStatus,
            format!("{udid}: {e}"),
        ),
    }
    Ok(t.elapsed())
}

pub async fn ddm(common: &Common, p: &DdmParams) -> Result<Report, BoxError> {
    let mut report = Report::new("ddm", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    seed(&mut report, &s).await?;
    let mut server = Server::start(
        &s.db,
        &s.storage,
        &s.device_ca,
        &common.mode,
        &server_options(common),
    )
    .await?;
    let http = reqwest::Client::new();
    let put = reqwest::Method::PUT;
    let declarations = ddm_declarations(p.declarations, 6);
    let ids: Vec<serde_json::Value> = declarations
        .iter()
        .map(|d| d["Identifier"].clone())
        .collect();
    for d in &declarations {
        ddm_admin(
            &server,
            &http,
            put.clone(),
            "/api/v1/ddm/declarations",
            d.clone(),
        )
        .await?;
    }
    ddm_admin(
        &server,
        &http,
        put.clone(),
        "/api/v1/ddm/sets/bench",
        json!({"declarations": ids}),
    )
    .await?;
    assign_all(&s.storage, &s.fleet.udids(), "bench").await?;

    let transport = Transport::new(&server.base, p.connections);
    let cpu0 = proc_cpu_seconds(server.pid);
    let wall = Instant::now();
    let t = transport.clone();
    let expected = declarations.len();
    let summary = closed_loop(
        &s.fleet,
        p.connections,
        Budget::new(p.warmup_secs, p.seconds, p.requests),
        move |f, i| ddm_sync_op(f, t.clone(), i, expected),
    )
    .await?;
    if let (Some(a), Some(b), false) = (cpu0, proc_cpu_seconds(server.pid), server.in_process) {
        let cores = (b - a) / wall.elapsed().as_secs_f64();
        report.figure(
            "server_cpu_ms_per_sync",
            (cores * 1000.0 / summary.per_second.max(1e-9) * 100.0).round() / 100.0,
        );
        report.figure("server_cpu_cores_used", (cores * 100.0).round() / 100.0);
    }
    report.measure(
        &format!(
            "full syncs ({} declarations + built-ins each)",
            declarations.len()
        ),
        summary,
    );

    // Edit one declaration every device holds: the API answers after every sync command is queued.
    let mut edited = declarations[0].clone();
    edited["Payload"]["MinimumLength"] = json!(8);
    let t = Instant::now();
    let answer = ddm_admin(&server, &http, put, "/api/v1/ddm/declarations", edited).await?;
    let took = t.elapsed();
    report.figure(
        "edit_to_all_syncs_queued_seconds",
        (took.as_secs_f64() * 1000.0).round() / 1000.0,
    );
    report.figure("edit_syncs_queued", answer["synced"]["queued"].clone());
    if answer["synced"]["queued"] != json!(p.devices) {
        s.fleet.violations.record(
            super::checker::Violation::NotDelivered,
            format!(
                "the edit queued {} syncs for {} devices",
                answer["synced"]["queued"], p.devices
            ),
        );
    }
    report.violations_of(&s.fleet);
    // Stopped first: its push worker, sending the pushes the edit owes, would hold the rows measured here.
    server.stop();
    ddm_fanout_breakdown(&mut report, &s.storage, ids[0].as_str().unwrap_or_default()).await?;
    s.db.drop_schema().await;
    Ok(report)
}

/// The database side of that edit's fan-out, on the simulator's own connection in a transaction that is
/// rolled back: read the declaration's holders as a sync finds them, then the whole announcement again,
/// forced (which withdraws the syncs the edit queued, as a second edit would, and queues new ones).
async fn ddm_fanout_breakdown(
    report: &mut Report,
    storage: &mdm_server::storage::Storage,
    identifier: &str,
) -> Result<(), BoxError> {
    use mdm_server::storage::ddm::audience::{self, Audience};
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    let ms = |t: Instant| (t.elapsed().as_secs_f64() * 1000.0).round();
    let txn = begin_writing(mdm_server::storage::testing::db(storage)).await?;
    let t = Instant::now();
    audience::members(&txn, Audience::Holding(identifier)).await?;
    report.figure("breakdown_read_holders_ms", ms(t));
    let t = Instant::now();
    mdm_server::ddm::sync::announce(&txn, Audience::Holding(identifier), true, now).await?;
    report.figure("breakdown_forced_announce_ms", ms(t));
    txn.rollback().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// 8. Policy rollouts: a signed version activated for a group of every device, promoted stage by stage.

#[derive(Debug, Clone, Serialize)]
pub struct RolloutParams {
    pub devices: usize,
}

/// Long enough that no rollout round promotes a stage by itself while the run lasts: every promotion
/// here is the admin's call being measured.
const ROLLOUT_SOAK_SECS: u64 = 3_600;

/// Put every device in one new static group through the repositories (setup: the admin API takes a
/// group's devices in one body). Returns the group's id.
async fn group_of_all(
    storage: &mdm_server::storage::Storage,
    udids: &[String],
) -> Result<i64, BoxError> {
    use mdm_server::storage::groups::{self, members, GroupKind};
    use sea_orm::TransactionTrait;
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    let txn = mdm_server::storage::testing::db(storage).begin().await?;
    let group = groups::insert(&txn, "bench-rollout", GroupKind::Static, None, now).await?;
    members::add(&txn, group.id, udids, now).await?;
    txn.commit().await?;
    Ok(group.id)
}

/// A `SELECT COUNT(*) AS n ...` on the simulator's own connection.
async fn count_rows(storage: &mdm_server::storage::Storage, sql: &str) -> Result<u64, BoxError> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = mdm_server::storage::testing::db(storage)
        .query_one_raw(Statement::from_string(storage.backend(), sql.to_string()))
        .await?
        .ok_or("no count row")?;
    Ok(row.try_get::<i64>("", "n")? as u64)
}

/// DeclarativeManagement syncs waiting in the queue, and the channels holding one that are owed a push
/// (or were pushed already: the push worker moves `next_push_at` on, never back to unset).
async fn syncs_waiting(storage: &mdm_server::storage::Storage) -> Result<(u64, u64), BoxError> {
    let queued = count_rows(
        storage,
        "SELECT COUNT(*) AS n FROM command_queue q JOIN commands c ON c.uuid = q.command_uuid \
         WHERE q.status = 'queued' AND c.request_type = 'DeclarativeManagement'",
    )
    .await?;
    let owed = count_rows(
        storage,
        "SELECT COUNT(*) AS n FROM enrollments e WHERE e.next_push_at IS NOT NULL AND EXISTS \
         (SELECT 1 FROM command_queue q WHERE q.enrollment_id = e.id AND q.status = 'queued')",
    )
    .await?;
    Ok((queued, owed))
}

pub async fn rollout(common: &Common, p: &RolloutParams) -> Result<Report, BoxError> {
    use mdm_server::policies::stages::{Plan, Stage};
    let mut report = Report::new("rollout", common, json!(p));
    let s = setup(common, p.devices, Behavior::default()).await?;
    seed(&mut report, &s).await?;
    let udids = s.fleet.udids();
    let t = Phase::start();
    let group = group_of_all(&s.storage, &udids).await?;
    report.figure(
        "setup_group_seconds",
        (t.elapsed().as_secs_f64() * 100.0).round() / 100.0,
    );

    // A CI signing key; the server trusts its public half.
    let keys = tempfile::tempdir()?;
    let signer = openssl::pkey::PKey::generate_ed25519()?;
    let signer_file = keys.path().join("ci.pem");
    std::fs::write(&signer_file, signer.public_key_to_pem()?)?;
    let mut opts = server_options(common);
    opts.trusted_signers = vec![signer_file];
    let mut server = Server::start(&s.db, &s.storage, &s.device_ca, &common.mode, &opts).await?;
    let http = admin_http();
    let post = reqwest::Method::POST;
    let call = |path: String, body: serde_json::Value, want: u16| {
        let (server, http, post) = (&server, &http, post.clone());
        async move {
            let t = Instant::now();
            let (status, json) = server.api(http, post, &path, Some(body)).await?;
            let took = t.elapsed();
            if status != want {
                return Err::<_, BoxError>(format!("{path}: HTTP {status}: {json}").into());
            }
            Ok((json, took))
        }
    };
    let (policy, _) = call(
        "/api/v1/policies".into(),
        json!({"name": "bench", "target_group": group}),
        201,
    )
    .await?;
    let policy = policy["id"].as_i64().ok_or("no policy id")?;
    let dir = tempfile::tempdir()?;
    crate::policy::folder(dir.path(), "1", 6, false);
    let packed =
        mdm_server::policies::pack::pack(dir.path(), Some(&signer.private_key_to_pem_pkcs8()?))?;
    let res = http
        .post(format!("{}/api/v1/policies/{policy}/versions", server.base))
        .bearer_auth(&server.admin_key)
        .header(reqwest::header::CONTENT_TYPE, "application/zip")
        .body(packed.zip)
        .send()
        .await?;
    if res.status().as_u16() != 201 {
        let status = res.status();
        return Err(format!("upload: HTTP {status}: {}", res.text().await?).into());
    }
    memory_after(&server, &mut report, "upload");

    // Each step answers once every device it newly reaches has its sync queued and a push owed.
    let rollout_path = format!("/api/v1/policies/{policy}/rollout");
    let steps = [
        (
            Stage::Pilot,
            format!("/api/v1/policies/{policy}/activate"),
            json!({"version": "1", "soak_secs": ROLLOUT_SOAK_SECS}),
            201,
            "activate_to_pilot_queued_seconds",
        ),
        (
            Stage::Canary,
            format!("{rollout_path}/promote"),
            json!({}),
            200,
            "promote_to_canary_queued_seconds",
        ),
        (
            Stage::Full,
            format!("{rollout_path}/promote"),
            json!({}),
            200,
            "promote_to_full_queued_seconds",
        ),
    ];
    // The stage that reaches each device, by the plan the rollout says it uses.
    let mut stage_of: Vec<Stage> = Vec::new();
    let mut cumulative = 0u64;
    for (stage, path, body, want, name) in steps {
        let (answer, took) = call(path, body, want).await?;
        report.figure(name, (took.as_secs_f64() * 1000.0).round() / 1000.0);
        memory_after(&server, &mut report, stage.as_str());
        if stage_of.is_empty() {
            let plan = Plan::Shares {
                pilot_percent: answer["plan"]["pilot_percent"]
                    .as_u64()
                    .ok_or("no pilot_percent in the plan")? as u32,
                canary_percent: answer["plan"]["canary_percent"]
                    .as_u64()
                    .ok_or("no canary_percent in the plan")? as u32,
            };
            stage_of = udids
                .iter()
                .map(|d| plan.stage_of(policy, d, |_| false))
                .collect();
        }
        // The same report every step's answer carries, read on its own.
        let t = Instant::now();
        let (status, r) = server
            .api(&http, reqwest::Method::GET, &rollout_path, None)
            .await?;
        report.figure(
            &format!("get_rollout_after_{}_seconds", stage.as_str()),
            (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        );
        if status != 200 {
            return Err(format!("{rollout_path}: HTTP {status}: {r}").into());
        }
        let reached = r["stages"][stage.index() as usize]["devices"]
            .as_u64()
            .unwrap_or(0);
        let want_reached = stage_of.iter().filter(|s| **s == stage).count() as u64;
        cumulative += want_reached;
        report.figure(&format!("{}_devices", stage.as_str()), reached);
        let (queued, owed) = syncs_waiting(&s.storage).await?;
        report.figure(&format!("syncs_queued_after_{}", stage.as_str()), queued);
        report.figure(&format!("owed_push_after_{}", stage.as_str()), owed);
        let problems = [
            (r["stage"] != stage.as_str() || r["state"] != "running").then(|| {
                format!(
                    "the rollout is {} at {}, expected running at {}",
                    r["state"],
                    r["stage"],
                    stage.as_str()
                )
            }),
            (reached != want_reached).then(|| {
                format!(
                    "the {} stage reached {reached} devices, its share of the fleet is {want_reached}",
                    stage.as_str()
                )
            }),
            (queued != cumulative || owed != cumulative).then(|| {
                format!(
                    "at {}: {queued} syncs queued, {owed} channels owed a push, {cumulative} devices reached",
                    stage.as_str()
                )
            }),
        ];
        for p in problems.into_iter().flatten() {
            s.fleet
                .violations
                .record(super::checker::Violation::NotDelivered, p);
        }
    }
    let total: u64 = ["pilot", "canary", "full"]
        .iter()
        .filter_map(|st| report.figures.get(&format!("{st}_devices"))?.as_u64())
        .sum();
    report.figure("devices_reached_total", total);
    if total != p.devices as u64 {
        s.fleet.violations.record(
            super::checker::Violation::NotDelivered,
            format!("the stages reached {total} devices of {}", p.devices),
        );
    }
    peak_memory(&server, &mut report);
    report.violations_of(&s.fleet);
    // Stopped first: the rows measured next are the ones it wrote.
    server.stop();
    let full: Vec<String> = udids
        .iter()
        .zip(&stage_of)
        .filter(|(_, st)| **st == Stage::Full)
        .map(|(d, _)| d.clone())
        .collect();
    rollout_breakdown(&mut report, &s.storage, policy, group, &full).await?;
    s.db.drop_schema().await;
    Ok(report)
}

/// The database side of the promotion to the full stage, step by step on the simulator's own connection
/// in a transaction that is rolled back: the reads it makes of the whole target (its members, the
/// devices reached so far), then, each undone first (untimed), what it wrote for the full stage's
/// devices: their set assignments, their reached rows, and their sync (its read of their enrollments
/// timed apart too) with no sync waiting, no token announced and no push owed, as the promotion found them.
async fn rollout_breakdown(
    report: &mut Report,
    storage: &mdm_server::storage::Storage,
    policy: i64,
    group: i64,
    full: &[String],
) -> Result<(), BoxError> {
    use mdm_server::policies::materialize::set_name;
    use mdm_server::policies::stages::Stage;
    use mdm_server::storage::ddm::audience::{self, Audience};
    use mdm_server::storage::{groups::members, rollouts};
    let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
    let ms = |t: Instant| (t.elapsed().as_secs_f64() * 1000.0).round();
    let mut full = full.to_vec();
    full.sort();
    let set = set_name(policy, "1");
    let held: Vec<(String, String)> = full.iter().map(|d| (d.clone(), set.clone())).collect();
    let reached: Vec<(String, i32)> = full
        .iter()
        .map(|d| (d.clone(), Stage::Full.index()))
        .collect();
    let txn = begin_writing(mdm_server::storage::testing::db(storage)).await?;
    let t = Instant::now();
    members::devices_of(&txn, &[group]).await?;
    report.figure("breakdown_read_target_ms", ms(t));
    let t = Instant::now();
    rollouts::reached(&txn, policy).await?;
    report.figure("breakdown_read_reached_ms", ms(t));
    rollouts::change_holdings(&txn, &held, &[], now).await?;
    rollouts::remove_reached(&txn, policy, &full).await?;
    let t = Instant::now();
    rollouts::change_holdings(&txn, &[], &held, now).await?;
    report.figure("breakdown_write_full_stage_assignments_ms", ms(t));
    let t = Instant::now();
    rollouts::add_reached(&txn, policy, &reached, now).await?;
    report.figure("breakdown_write_full_stage_reached_ms", ms(t));
    let t = Instant::now();
    audience::members(&txn, Audience::Ids(&full)).await?;
    report.figure("breakdown_read_full_stage_audience_ms", ms(t));
    let stage_full = format!(
        "SELECT device_id FROM policy_rollout_devices WHERE policy_id = {policy} AND stage = {}",
        Stage::Full.index()
    );
    for undo in [
        format!("DELETE FROM command_queue WHERE enrollment_id IN ({stage_full})"),
        format!("DELETE FROM ddm_enrollments WHERE enrollment_id IN ({stage_full})"),
        format!("UPDATE enrollments SET next_push_at = NULL WHERE id IN ({stage_full})"),
    ] {
        sea_orm::ConnectionTrait::execute_unprepared(&txn, &undo).await?;
    }
    let t = Instant::now();
    let synced = mdm_server::ddm::sync::announce(&txn, Audience::Ids(&full), false, now).await?;
    report.figure("breakdown_sync_full_stage_ms", ms(t));
    if synced.queued != full.len() {
        report.figure("breakdown_sync_full_stage_queued", synced.queued);
    }
    txn.rollback().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_server::storage::testing::TEST_DATABASE_ENV;

    /// The rollout scenario at toy scale, as `tests/tests/suite/sim_smoke.rs` runs the others: each stage reaches
    /// its share of the fleet, all of it in the end, with every sync queued and owed a push.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rollout_scenario_reaches_every_device_stage_by_stage() {
        let mut dbs = vec![DbChoice::Sqlite];
        dbs.extend(
            std::env::var(TEST_DATABASE_ENV)
                .ok()
                .filter(|u| !u.is_empty())
                .map(DbChoice::Postgres),
        );
        for db in dbs {
            let c = Common {
                db,
                key_pool: 4,
                ..Common::default()
            };
            let r = rollout(&c, &RolloutParams { devices: 40 })
                .await
                .expect("rollout");
            eprintln!("{}", r.text());
            assert_eq!(r.total_violations(), 0, "{}", r.text());
            assert_eq!(r.figures["devices_reached_total"], 40);
            assert_eq!(r.figures["syncs_queued_after_full"], 40);
        }
    }
}
