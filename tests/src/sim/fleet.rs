//! A fleet of simulated devices: built with pre-provisioned identities, enrolled over HTTP (Authenticate,
//! TokenUpdate) or seeded into the database through the server's storage repositories, then driven in
//! connections: Idle, answer each command the server returns, until it has nothing more.
//!
//! Devices wake when the server pushes (through [`super::push::PushSink`]) or are polled by workers. A
//! device runs one connection at a time; every command it receives goes through its
//! [`DeviceChecker`], and violations are tallied for the run.

use super::checker::{DeviceChecker, Violation, Violations};
use super::pki::{parallel_map, Provisioner};
use super::profile::{hardware_for, new_udid, InstalledProfile, SimDevice};
use super::push::PushSink;
use super::responder::{self, Behavior, Rng};
use super::stats::Recorder;
use super::target::BoxError;
use super::transport::Transport;
use crate::device::ReceivedCommand;
use mdm_server::protocol::{CheckinMessage, CheckinPayload};
use mdm_server::storage::devices::{self, AuthenticateFacts};
use mdm_server::storage::enrollments::{self, TokenUpdateFacts};
use mdm_server::storage::Storage;
use sea_orm::TransactionTrait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, Semaphore};

/// What a fleet looks like.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub devices: usize,
    /// Share of iPhones/iPads; the rest are Macs.
    pub ios_percent: u8,
    pub behavior: Behavior,
    /// After a connection that left NotNow'd commands, the device comes back this much later (a real one
    /// comes back when it is no longer busy, or when the server pushes again).
    pub not_now_retry: Duration,
    /// Seed for NotNow/Error draws.
    pub seed: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            devices: 100,
            ios_percent: 60,
            behavior: Behavior::default(),
            not_now_retry: Duration::from_millis(50),
            seed: 1,
        }
    }
}

/// A device's mutable side.
pub struct DeviceState {
    pub profiles: Vec<InstalledProfile>,
    pub checker: DeviceChecker,
    rng: Rng,
}

/// One member of the fleet.
pub struct FleetDevice {
    pub sim: SimDevice,
    pub state: Mutex<DeviceState>,
    wake: Notify,
    /// A pre-computed signature of the device's Idle body (constant for a device).
    idle_signature: std::sync::OnceLock<String>,
    token_update_signature: std::sync::OnceLock<String>,
}

/// Run-wide tallies.
#[derive(Default, Debug)]
pub struct Counters {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub commands: AtomicU64,
    pub acknowledged: AtomicU64,
    pub errors: AtomicU64,
    pub not_now: AtomicU64,
    /// Nanoseconds spent signing messages live (the load generator's crypto).
    pub sign_nanos: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct Fleet {
    pub devices: Vec<Arc<FleetDevice>>,
    by_token: HashMap<Vec<u8>, usize>,
    pub violations: Violations,
    pub counters: Counters,
    pub config: FleetConfig,
    /// Latency of every request sent during connections.
    pub latency: Recorder,
    /// Latency of the requests that returned a command (the next-command path).
    pub command_latency: Recorder,
    /// Sequence for expectations (enqueue order as the run saw it).
    seq: AtomicU64,
    expected_added: AtomicU64,
    expected_done: AtomicU64,
    /// Notified whenever an expected command finishes (see [`super::wait_for`]).
    pub progress: Notify,
}

impl Fleet {
    /// Build `config.devices` devices, issuing each its certificate (in parallel).
    pub fn build(config: FleetConfig, provisioner: &Provisioner) -> Self {
        let ios = config.ios_percent;
        let sims: Vec<SimDevice> = parallel_map(config.devices, |i| {
            let hw = hardware_for(i, ios);
            let udid = new_udid(hw.platform);
            let identity = provisioner.identity(i, &udid);
            SimDevice::with_udid(i, hw, identity, udid)
        });
        let devices: Vec<Arc<FleetDevice>> = sims
            .into_iter()
            .map(|sim| {
                let state = DeviceState {
                    profiles: sim.initial_profiles(),
                    checker: DeviceChecker::default(),
                    rng: Rng::new(config.seed.wrapping_mul(1_000_003) ^ sim.index as u64),
                };
                Arc::new(FleetDevice {
                    sim,
                    state: Mutex::new(state),
                    wake: Notify::new(),
                    idle_signature: Default::default(),
                    token_update_signature: Default::default(),
                })
            })
            .collect();
        let by_token = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.sim.token.clone(), i))
            .collect();
        Self {
            devices,
            by_token,
            violations: Violations::default(),
            counters: Counters::default(),
            config,
            latency: Recorder::default(),
            command_latency: Recorder::default(),
            seq: AtomicU64::new(0),
            expected_added: AtomicU64::new(0),
            expected_done: AtomicU64::new(0),
            progress: Notify::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn udids(&self) -> Vec<String> {
        self.devices.iter().map(|d| d.sim.udid.clone()).collect()
    }

    /// Sign each device's Idle (and TokenUpdate) body once, in parallel: their bodies never change, so the
    /// load generator reuses the signature, and the server still verifies every one.
    pub fn presign(&self, token_update: bool) {
        parallel_map(self.devices.len(), |i| {
            let d = &self.devices[i];
            d.idle_signature.get_or_init(|| d.sim.sign(&d.sim.idle()));
            if token_update {
                d.token_update_signature
                    .get_or_init(|| d.sim.sign(&d.sim.token_update()));
            }
        });
    }

    fn sign(&self, dev: &SimDevice, body: &[u8]) -> String {
        let t = Instant::now();
        let s = dev.sign(body);
        self.counters
            .sign_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        s
    }

    /// Enroll every device over HTTP: Authenticate then TokenUpdate, `concurrency` devices at a time.
    /// Returns the latencies of those check-ins.
    pub async fn enroll(
        self: &Arc<Self>,
        transport: &Transport,
        concurrency: usize,
    ) -> Result<Recorder, BoxError> {
        let rec = Arc::new(Recorder::default());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (fleet, t, rec, next) =
                (self.clone(), transport.clone(), rec.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(d) = fleet.devices.get(i) else {
                        return Ok::<(), String>(());
                    };
                    for body in [d.sim.authenticate(), d.sim.token_update()] {
                        let sig = fleet.sign(&d.sim, &body);
                        let r = t.checkin(body, &sig).await.map_err(|e| e.to_string())?;
                        rec.record(r.latency);
                        if r.status != 200 {
                            return Err(format!(
                                "enrolling {}: HTTP {} {}",
                                d.sim.udid,
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            ));
                        }
                    }
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok(Arc::try_unwrap(rec).unwrap_or_default())
    }

    /// Enroll every device by writing what Authenticate and TokenUpdate would store, through the server's
    /// storage repositories (decoded from the same messages the device would send), `batch` devices per
    /// transaction. For fleets too large to enroll over HTTP in reasonable time.
    pub async fn seed(&self, storage: &Storage, batch: usize) -> Result<(), BoxError> {
        // UnlockTokens are stored sealed: under the secret the servers `target` starts are given.
        mdm_server::storage::sealing::install("mdm-sim-secret-of-sufficient-length")?;
        let now = mdm_server::clock::Clock::now_ms(&mdm_server::clock::SystemClock);
        for chunk in self.devices.chunks(batch.max(1)) {
            let txn = mdm_server::storage::testing::db(storage).begin().await?;
            for d in chunk {
                let auth = CheckinMessage::decode(&d.sim.authenticate())?;
                let CheckinPayload::Authenticate(a) = &auth.payload else {
                    return Err("Authenticate did not decode as Authenticate".into());
                };
                let facts = AuthenticateFacts {
                    facts: a.facts.clone(),
                    identity_fingerprint: d.sim.fingerprint.clone(),
                    identity_subject: format!("CN={}", d.sim.udid),
                    identity_not_after: None,
                    raw: auth.raw.clone(),
                    ..Default::default()
                };
                devices::upsert_authenticated(&txn, &auth.enrollment.device_id, facts, now).await?;
                let tu = CheckinMessage::decode(&d.sim.token_update())?;
                let CheckinPayload::TokenUpdate(t) = &tu.payload else {
                    return Err("TokenUpdate did not decode as TokenUpdate".into());
                };
                enrollments::apply_token_update(
                    &txn,
                    &tu.enrollment,
                    TokenUpdateFacts {
                        topic: t.topic.clone(),
                        push_magic: t.push_magic.clone(),
                        token: t.token.clone(),
                        awaiting_configuration: t.awaiting_configuration,
                        raw: tu.raw.clone(),
                    },
                    now,
                    None,
                )
                .await?;
                if let Some(u) = &t.unlock_token {
                    devices::set_unlock_token(&txn, &tu.enrollment.device_id, u.clone(), now)
                        .await?;
                }
            }
            txn.commit().await?;
        }
        Ok(())
    }

    /// The run queued `uuid` to device `i` with `priority` (call in enqueue order, before the device can
    /// receive it).
    pub async fn expect(&self, i: usize, uuid: &str, priority: i32) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let added = self.devices[i]
            .state
            .lock()
            .await
            .checker
            .expect(uuid, priority, seq);
        if added {
            self.expected_added.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Expected commands not finished yet (without locking any device).
    pub fn expected_open(&self) -> u64 {
        self.expected_added
            .load(Ordering::Relaxed)
            .saturating_sub(self.expected_done.load(Ordering::Relaxed))
    }

    /// Index of the device with this UDID.
    pub fn index_of(&self) -> HashMap<String, usize> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.sim.udid.clone(), i))
            .collect()
    }

    /// Commands the run expects and devices have not finished yet.
    pub async fn outstanding(&self) -> usize {
        let mut n = 0;
        for d in &self.devices {
            n += d.state.lock().await.checker.outstanding().len();
        }
        n
    }

    /// Count every still-expected command as not delivered.
    pub async fn flag_undelivered(&self) {
        for d in &self.devices {
            for uuid in d.state.lock().await.checker.outstanding() {
                self.violations.record(
                    Violation::NotDelivered,
                    format!("{uuid} never finished on {}", d.sim.udid),
                );
            }
        }
    }

    /// A TokenUpdate check-in with the pre-computed signature (for load with plugins on on-checkin).
    pub async fn token_update(
        &self,
        transport: &Transport,
        i: usize,
    ) -> Result<Duration, BoxError> {
        let d = &self.devices[i];
        let body = d.sim.token_update();
        let sig = match d.token_update_signature.get() {
            Some(s) => s.clone(),
            None => self.sign(&d.sim, &body),
        };
        let r = transport.checkin(body, &sig).await?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        if r.status != 200 {
            self.violations.record(
                Violation::HttpStatus,
                format!("TokenUpdate from {}: HTTP {}", d.sim.udid, r.status),
            );
        }
        Ok(r.latency)
    }

    /// Device `i`'s signature over `body`, signed live.
    pub fn sign_body(&self, i: usize, body: &[u8]) -> String {
        self.sign(&self.devices[i].sim, body)
    }

    /// One DeclarativeManagement check-in of device `i`, signed live.
    pub async fn declarative(
        &self,
        transport: &Transport,
        i: usize,
        endpoint: &str,
        data: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), BoxError> {
        let d = &self.devices[i];
        let body = crate::ddm::request(&d.sim.udid, endpoint, data);
        let sig = self.sign(&d.sim, &body);
        let r = transport.checkin(body, &sig).await?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.latency.record(r.latency);
        Ok((r.status, r.body))
    }

    /// One connection of device `i`: Idle, then answer each command until the server returns nothing.
    /// Returns whether the device left NotNow'd commands behind.
    pub async fn connection(&self, transport: &Transport, i: usize) -> Result<bool, BoxError> {
        let d = &self.devices[i];
        let mut st = d.state.lock().await;
        let st = &mut *st;
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        st.checker.idle();
        let body = d.sim.idle();
        let sig = match d.idle_signature.get() {
            Some(s) => s.clone(),
            None => self.sign(&d.sim, &body),
        };
        let mut res = transport.connect(body, &sig).await?;
        let mut left_not_now = false;
        // A server that kept answering would otherwise hold the device forever.
        for _ in 0..10_000 {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            self.latency.record(res.latency);
            if res.status != 200 {
                self.violations.record(
                    Violation::HttpStatus,
                    format!(
                        "{}: HTTP {} {}",
                        d.sim.udid,
                        res.status,
                        String::from_utf8_lossy(&res.body)
                    ),
                );
                break;
            }
            if res.body.is_empty() {
                break;
            }
            self.command_latency.record(res.latency);
            self.counters.commands.fetch_add(1, Ordering::Relaxed);
            let cmd = match ReceivedCommand::parse(&res.body) {
                Ok(c) => c,
                Err(e) => {
                    self.violations
                        .record(Violation::InvalidCommand, format!("{}: {e}", d.sim.udid));
                    break;
                }
            };
            if let Err((v, detail)) = st.checker.delivered(&cmd.uuid) {
                self.violations
                    .record(v, format!("{}: {detail}", d.sim.udid));
                if v == Violation::RedeliveredAfterFinal {
                    break;
                }
            }
            let answer = responder::answer(
                &d.sim,
                &mut st.profiles,
                &cmd,
                &self.config.behavior,
                &mut st.rng,
            );
            let finishes_expected = st.checker.answered(&cmd.uuid, answer.status);
            match answer.status {
                "Acknowledged" => &self.counters.acknowledged,
                "NotNow" => {
                    left_not_now = true;
                    &self.counters.not_now
                }
                _ => &self.counters.errors,
            }
            .fetch_add(1, Ordering::Relaxed);
            let body = d.sim.report(answer.status, &cmd.uuid, answer.extra);
            let sig = self.sign(&d.sim, &body);
            res = transport.connect(body, &sig).await?;
            // Finished once the server has taken the report (a run waiting for it may end right after).
            if finishes_expected && res.status == 200 {
                self.expected_done.fetch_add(1, Ordering::Relaxed);
                self.progress.notify_waiters();
            }
        }
        Ok(left_not_now)
    }

    /// Wake devices when the server pushes them: each push starts a connection (at most `concurrency` at
    /// once). Runs until the returned handle is dropped or aborted.
    pub fn listen_for_pushes(
        self: &Arc<Self>,
        sink: &PushSink,
        transport: &Transport,
        concurrency: usize,
    ) -> PushListener {
        let fleet = self.clone();
        sink.listen(move |token| {
            if let Some(&i) = fleet.by_token.get(token) {
                fleet.devices[i].wake.notify_one();
            }
        });
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.devices.len() {
            let (fleet, t, sem, stop) =
                (self.clone(), transport.clone(), sem.clone(), stop.clone());
            tasks.spawn(async move {
                loop {
                    fleet.devices[i].wake.notified().await;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let permit = sem.acquire().await.expect("semaphore");
                    let res = fleet.connection(&t, i).await;
                    drop(permit);
                    match res {
                        Ok(true) => {
                            // Busy now; back a little later, as a device that said NotNow does.
                            let f = fleet.clone();
                            let delay = f.config.not_now_retry;
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                f.devices[i].wake.notify_one();
                            });
                        }
                        Ok(false) => {}
                        Err(e) => fleet.violations.record(
                            Violation::HttpStatus,
                            format!("{}: request failed: {e}", fleet.devices[i].sim.udid),
                        ),
                    }
                }
            });
        }
        PushListener {
            tasks,
            stop,
            sem,
            capacity: concurrency.max(1),
        }
    }

    /// Wake device `i` as a push would.
    pub fn wake(&self, i: usize) {
        self.devices[i].wake.notify_one();
    }

    /// Poll: every device runs connections (`concurrency` at a time) until the run expects nothing more of
    /// it, for at most `rounds` rounds over the fleet.
    pub async fn drain_by_polling(
        self: &Arc<Self>,
        transport: &Transport,
        concurrency: usize,
        rounds: usize,
    ) -> Result<(), BoxError> {
        for _ in 0..rounds.max(1) {
            let mut todo = Vec::new();
            for (i, d) in self.devices.iter().enumerate() {
                if !d.state.lock().await.checker.outstanding().is_empty() {
                    todo.push(i);
                }
            }
            if todo.is_empty() {
                break;
            }
            self.each(transport, concurrency, &todo, |fleet, t, i| async move {
                fleet.connection(&t, i).await.map(|_| ())
            })
            .await?;
        }
        Ok(())
    }

    /// Run `f` for each index in `indices` with `concurrency` workers.
    pub async fn each<F, Fut>(
        self: &Arc<Self>,
        transport: &Transport,
        concurrency: usize,
        indices: &[usize],
        f: F,
    ) -> Result<(), BoxError>
    where
        F: Fn(Arc<Fleet>, Transport, usize) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Result<(), BoxError>> + Send,
    {
        let indices: Arc<Vec<usize>> = Arc::new(indices.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (fleet, t, next, indices, f) = (
                self.clone(),
                transport.clone(),
                next.clone(),
                indices.clone(),
                f.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = indices.get(k) else {
                        return Ok::<(), BoxError>(());
                    };
                    f(fleet.clone(), t.clone(), i).await?;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok(())
    }
}

/// Stops the push listeners when dropped.
pub struct PushListener {
    tasks: tokio::task::JoinSet<()>,
    stop: Arc<AtomicBool>,
    sem: Arc<Semaphore>,
    capacity: usize,
}

impl PushListener {
    /// Wait until no connection is running.
    pub async fn quiesce(&self) {
        // Holding every permit at once means no connection runs; released right away.
        let _all = self.sem.acquire_many(self.capacity as u32).await;
    }
}

impl Drop for PushListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tasks.abort_all();
    }
}
