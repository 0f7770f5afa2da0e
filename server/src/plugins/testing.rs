//! A harness for plugin authors: load a built component against an in-memory host (key-value store,
//! inventory fixtures, canned HTTP, captured logs and metrics) and call its hooks, without a server.
//!
//! ```no_run
//! # async fn t() {
//! use mdm_server::plugins::testing::{Harness, events};
//! let h = Harness::load("target/wasm32-wasip2/plugin/my_plugin.wasm", "plugin.json", serde_json::json!({}))
//!     .await
//!     .unwrap();
//! let decision = h.decide_enrollment(events::enrollment_request("UDID-1", Some("C02XYZ"))).await;
//! # }
//! ```

use super::backend::{HostBackend, HttpRequest, KvFault};
use super::bindings::hooks::{Action, Decision};
use super::bindings::mdm::plugin::{http, inventory};
use super::engine::PluginEngine;
use super::host::LogLine;
use super::manifest::Manifest;
use super::runtime::{Fault, HookInput, HookOutput, LoadedPlugin, Runtime};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// (plugin, key) -> (value, expires at).
type KvMap = BTreeMap<(String, String), (Vec<u8>, Option<i64>)>;

/// The in-memory host.
#[derive(Default)]
pub struct MemoryBackend {
    now: AtomicI64,
    kv: Mutex<KvMap>,
    devices: Mutex<HashMap<String, inventory::DeviceInfo>>,
    http_responses: Mutex<HashMap<String, http::Response>>,
    http_requests: Mutex<Vec<(String, String)>>,
    counters: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBackend {
    fn live(&self, v: &(Vec<u8>, Option<i64>)) -> bool {
        v.1.is_none_or(|t| t > self.now_ms())
    }

    fn count(&self, plugin: &str) -> usize {
        lock(&self.kv)
            .iter()
            .filter(|((p, _), v)| p == plugin && self.live(v))
            .count()
    }
}

#[async_trait::async_trait]
impl HostBackend for MemoryBackend {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(lock(&self.kv)
            .get(&(plugin.to_string(), key.to_string()))
            .filter(|v| self.live(v))
            .map(|v| v.0.clone()))
    }

    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        exp: Option<i64>,
        max: u32,
    ) -> Result<(), KvFault> {
        let k = (plugin.to_string(), key.to_string());
        let exists = self.kv_get(plugin, key).await.ok().flatten().is_some();
        if !exists && self.count(plugin) >= max as usize {
            return Err(KvFault::QuotaExceeded);
        }
        lock(&self.kv).insert(k, (value, exp));
        Ok(())
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, String> {
        let existed = self.kv_get(plugin, key).await?.is_some();
        lock(&self.kv).remove(&(plugin.to_string(), key.to_string()));
        Ok(existed)
    }

    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        exp: Option<i64>,
        max: u32,
    ) -> Result<bool, KvFault> {
        let current = self
            .kv_get(plugin, key)
            .await
            .map_err(KvFault::Unavailable)?;
        if current != expected {
            return Ok(false);
        }
        if current.is_none() && self.count(plugin) >= max as usize {
            return Err(KvFault::QuotaExceeded);
        }
        lock(&self.kv).insert((plugin.to_string(), key.to_string()), (new, exp));
        Ok(true)
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, String> {
        Ok(lock(&self.kv)
            .iter()
            .filter(|((p, k), v)| {
                p == plugin
                    && k.starts_with(prefix)
                    && start_after.is_none_or(|a| k.as_str() > a)
                    && self.live(v)
            })
            .map(|((_, k), _)| k.clone())
            .take(limit as usize)
            .collect())
    }

    async fn device(&self, id: &str) -> Result<Option<inventory::DeviceInfo>, String> {
        Ok(lock(&self.devices).get(id).cloned())
    }

    async fn http(&self, req: HttpRequest) -> Result<http::Response, http::HttpError> {
        lock(&self.http_requests).push((req.method.clone(), req.url.to_string()));
        lock(&self.http_responses)
            .get(req.url.as_str())
            .cloned()
            .ok_or_else(|| http::HttpError::Failed(format!("no canned response for {}", req.url)))
    }

    fn counter_add(&self, plugin: &str, name: &str, delta: u64) {
        *lock(&self.counters)
            .entry(format!("{plugin}.{name}"))
            .or_default() += delta;
    }

    fn gauge_set(&self, _: &str, _: &str, _: f64) {}
}

/// One plugin loaded against the in-memory host.
pub struct Harness {
    runtime: Runtime,
    plugin: Arc<LoadedPlugin>,
    backend: Arc<MemoryBackend>,
    last_logs: Mutex<Vec<LogLine>>,
}

impl Harness {
    /// Load a built component with its manifest file and a configuration.
    pub async fn load(
        wasm: impl AsRef<Path>,
        manifest: impl AsRef<Path>,
        config: serde_json::Value,
    ) -> Result<Self, String> {
        let m = std::fs::read_to_string(manifest.as_ref()).map_err(|e| e.to_string())?;
        let wasm = std::fs::read(wasm.as_ref()).map_err(|e| e.to_string())?;
        Self::from_parts(&wasm, Manifest::parse(&m)?, config).await
    }

    pub async fn from_parts(
        wasm: &[u8],
        manifest: Manifest,
        config: serde_json::Value,
    ) -> Result<Self, String> {
        let engine = PluginEngine::new(None, 8).map_err(|e| e.to_string())?;
        let component = engine
            .compile(wasm, "harness")
            .map_err(|e| format!("{e:#}"))?;
        let info = super::inspect::inspect(engine.engine(), &component)?;
        super::inspect::check_capabilities(&info, &manifest, &manifest.capabilities)
            .map_err(|p| p.join("; "))?;
        let pre = engine
            .prepare(&component, &info.wit_version)
            .map_err(|e| format!("{e:#}"))?;
        let backend = Arc::new(MemoryBackend::default());
        backend.now.store(1_767_225_600_000, Ordering::SeqCst);
        Ok(Self {
            runtime: Runtime::new(engine, backend.clone(), 8),
            plugin: Arc::new(LoadedPlugin {
                id: manifest.id.as_str().into(),
                revision: 1,
                config: config.to_string().into(),
                manifest: Arc::new(manifest),
                enabled: true,
                priority: 0,
                dry_run: false,
                quarantined: false,
                pre,
            }),
            backend,
            last_logs: Mutex::new(Vec::new()),
        })
    }

    async fn call(&self, input: HookInput) -> Result<HookOutput, Fault> {
        let r = self.runtime.call(&self.plugin, &input).await;
        *lock(&self.last_logs) = r.logs;
        r.output
    }

    pub async fn decide_enrollment(
        &self,
        r: super::types::EnrollmentRequest,
    ) -> Result<Decision, Fault> {
        match self.call(HookInput::Enrollment(r)).await? {
            HookOutput::Decision(d) => Ok(d),
            other => Err(Fault::Error(format!("unexpected {other:?}"))),
        }
    }

    pub async fn on_checkin(&self, e: super::types::CheckinEvent) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::Checkin(e)).await
    }

    pub async fn on_command_result(
        &self,
        e: super::types::CommandResultEvent,
    ) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::CommandResult(e)).await
    }

    pub async fn on_schedule(&self, name: &str) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::Schedule(super::types::ScheduleEvent {
            event_id: super::new_event_id(),
            name: name.to_string(),
        }))
        .await
    }

    pub async fn validate_config(&self, config: &serde_json::Value) -> Result<(), Fault> {
        self.call(HookInput::ValidateConfig(config.to_string()))
            .await
            .map(|_| ())
    }

    async fn actions(&self, input: HookInput) -> Result<Vec<Action>, Fault> {
        match self.call(input).await? {
            HookOutput::Actions(a) => Ok(a),
            other => Err(Fault::Error(format!("unexpected {other:?}"))),
        }
    }

    /// What the last call logged.
    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.last_logs).clone()
    }

    pub async fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.backend
            .kv_get(&self.plugin.id, key)
            .await
            .ok()
            .flatten()
    }

    pub fn kv_keys(&self) -> Vec<String> {
        lock(&self.backend.kv)
            .keys()
            .filter(|(p, _)| *p == *self.plugin.id)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub fn add_device(&self, d: inventory::DeviceInfo) {
        lock(&self.backend.devices).insert(d.id.clone(), d);
    }

    pub fn respond(&self, url: &str, r: http::Response) {
        lock(&self.backend.http_responses).insert(url.to_string(), r);
    }

    /// (method, url) of every outbound request that passed the allow-list.
    pub fn http_requests(&self) -> Vec<(String, String)> {
        lock(&self.backend.http_requests).clone()
    }

    pub fn counter(&self, name: &str) -> u64 {
        lock(&self.backend.counters)
            .get(&format!("{}.{name}", self.plugin.id))
            .copied()
            .unwrap_or(0)
    }

    pub fn advance_ms(&self, ms: i64) {
        self.backend.now.fetch_add(ms, Ordering::SeqCst);
    }
}

/// Event builders for tests.
pub mod events {
    use super::super::bindings::types::*;

    pub fn enrollment(udid: &str) -> Enrollment {
        Enrollment {
            id: udid.to_string(),
            device_id: udid.to_string(),
            kind: ChannelKind::Device,
            user_id: None,
            user_short_name: None,
        }
    }

    pub fn facts(serial: Option<&str>) -> DeviceFacts {
        DeviceFacts {
            serial_number: serial.map(str::to_string),
            platform: Some("iOS".into()),
            model: None,
            model_name: Some("iPhone".into()),
            product_name: Some("iPhone14,2".into()),
            device_name: None,
            os_version: Some("17.5".into()),
            build_version: None,
        }
    }

    pub fn enrollment_request(udid: &str, serial: Option<&str>) -> EnrollmentRequest {
        EnrollmentRequest {
            event_id: super::super::new_event_id(),
            enrollment: enrollment(udid),
            device: facts(serial),
            identity_fingerprint: "0".repeat(64),
            raw: None,
        }
    }

    pub fn checkin(udid: &str, kind: CheckinKind, token_update_count: Option<u32>) -> CheckinEvent {
        CheckinEvent {
            event_id: super::super::new_event_id(),
            kind,
            enrollment: enrollment(udid),
            device: facts(Some("C02TEST")),
            token_update_count,
            awaiting_configuration: Some(false),
            raw: Some(b"<plist/>".to_vec()),
        }
    }

    pub fn command_result(
        udid: &str,
        request_type: &str,
        status: CommandStatus,
        report: &plist::Value,
    ) -> CommandResultEvent {
        CommandResultEvent {
            event_id: super::super::new_event_id(),
            enrollment: enrollment(udid),
            device: facts(Some("C02TEST")),
            command_uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
            request_type: request_type.to_string(),
            status,
            error_chain: Vec::new(),
            report: super::super::convert::plist_tree(report),
            raw: None,
            retry_of: None,
        }
    }
}
