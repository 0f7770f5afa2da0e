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

use super::capabilities::http::HttpResponse;
use super::capabilities::inventory::DeviceInfo;
use super::capabilities::kv::KvBackend;
use super::engine::PluginEngine;
use super::event::{
    Action, CheckinEvent, CommandResultEvent, DdmStatusEvent, Decision, EnrollmentRequest,
    PromotionDecision, PromotionRequest, RolloutEvent, ScheduleEvent, TokenRequest,
};
use super::host::LogLine;
use super::manifest::{Manifest, ManifestError};
use super::runtime::{Fault, HookInput, HookOutput, LoadedPlugin, Runtime};
use super::LoadError;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// (plugin, key) -> (value, expires at).
type KvMap = BTreeMap<(String, String), (Vec<u8>, Option<i64>)>;

/// The in-memory host. Each capability implements its slice over it in its own `memory.rs`.
#[derive(Default)]
pub struct MemoryBackend {
    pub(super) now: AtomicI64,
    pub(super) kv: Mutex<KvMap>,
    pub(super) devices: Mutex<HashMap<String, DeviceInfo>>,
    pub(super) http_responses: Mutex<HashMap<String, HttpResponse>>,
    pub(super) http_requests: Mutex<Vec<(String, String)>>,
    pub(super) counters: Mutex<BTreeMap<String, u64>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a harness could not load a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("refused: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("the harness's engine: {0:#}")]
    Engine(wasmtime::Error),
}

/// One plugin loaded against the in-memory host.
pub struct Harness {
    runtime: Runtime,
    plugin: Arc<LoadedPlugin>,
    wit_version: String,
    backend: Arc<MemoryBackend>,
    last_logs: Mutex<Vec<LogLine>>,
}

impl Harness {
    /// Load a built component with its manifest file and a configuration.
    pub async fn load(
        wasm: impl AsRef<Path>,
        manifest: impl AsRef<Path>,
        config: serde_json::Value,
    ) -> Result<Self, HarnessError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| HarnessError::Read { path, source }
        };
        let (manifest, wasm) = (manifest.as_ref(), wasm.as_ref());
        let m = std::fs::read_to_string(manifest).map_err(read_err(manifest))?;
        let wasm = std::fs::read(wasm).map_err(read_err(wasm))?;
        Self::from_parts(&wasm, Manifest::parse(&m)?, config).await
    }

    pub async fn from_parts(
        wasm: &[u8],
        manifest: Manifest,
        config: serde_json::Value,
    ) -> Result<Self, HarnessError> {
        let engine = PluginEngine::new(None, 8).map_err(HarnessError::Engine)?;
        let component = engine
            .compile(wasm, "harness")
            .map_err(LoadError::Compile)?;
        let info = super::inspect::inspect(engine.engine(), &component).map_err(LoadError::from)?;
        super::inspect::check_hooks(&info, &manifest).map_err(HarnessError::Refused)?;
        super::inspect::check_capabilities(&info, &manifest, &manifest.capabilities)
            .map_err(HarnessError::Refused)?;
        let pre = engine
            .prepare(&component, &info.wit_version)
            .map_err(LoadError::Link)?;
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
            wit_version: info.wit_version,
            backend,
            last_logs: Mutex::new(Vec::new()),
        })
    }

    async fn call(&self, input: HookInput) -> Result<HookOutput, Fault> {
        let r = self.runtime.call(&self.plugin, &input).await;
        *lock(&self.last_logs) = r.logs;
        r.output
    }

    pub async fn decide_enrollment(&self, r: EnrollmentRequest) -> Result<Decision, Fault> {
        match self.call(HookInput::Enrollment(r)).await? {
            HookOutput::Decision(d) => Ok(d),
            other => Err(Fault::Error(format!("unexpected {other:?}"))),
        }
    }

    pub async fn on_checkin(&self, e: CheckinEvent) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::Checkin(e)).await
    }

    pub async fn on_command_result(&self, e: CommandResultEvent) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::CommandResult(e)).await
    }

    pub async fn on_schedule(&self, name: &str) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::Schedule(ScheduleEvent {
            event_id: super::new_event_id(),
            name: name.to_string(),
        }))
        .await
    }

    pub async fn on_ddm_status(&self, e: DdmStatusEvent) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::DdmStatus(e)).await
    }

    /// The plugin's own answer (the server's size limit is not applied here: see
    /// [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES)).
    pub async fn provide_token(&self, r: TokenRequest) -> Result<Option<Vec<u8>>, Fault> {
        match self.call(HookInput::Token(r)).await? {
            HookOutput::Token(t) => Ok(t),
            other => Err(Fault::Error(format!("unexpected {other:?}"))),
        }
    }

    pub async fn decide_promotion(&self, r: PromotionRequest) -> Result<PromotionDecision, Fault> {
        match self.call(HookInput::Promotion(r)).await? {
            HookOutput::Promotion(d) => Ok(d),
            other => Err(Fault::Error(format!("unexpected {other:?}"))),
        }
    }

    pub async fn on_rollout(&self, e: RolloutEvent) -> Result<Vec<Action>, Fault> {
        self.actions(HookInput::Rollout(e)).await
    }

    /// The WIT version the component was built against (`0.1.0`, `0.2.0`, ...).
    pub fn wit_version(&self) -> &str {
        &self.wit_version
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

    pub fn add_device(&self, d: DeviceInfo) {
        lock(&self.backend.devices).insert(d.id.clone(), d);
    }

    pub fn respond(&self, url: &str, r: HttpResponse) {
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

/// Event builders for tests: the same fixtures, with the same arguments, as the SDK's
/// `mdm_plugin_sdk::mock::fixtures`, so a test of a plugin's native unit tests reads the same against the
/// built component here.
pub mod events {
    use super::super::event::*;
    use serde_json::Value;

    /// A device's own channel: its UDID is the queue id.
    pub fn device_enrollment(udid: &str) -> Enrollment {
        Enrollment {
            id: udid.to_string(),
            device_id: udid.to_string(),
            kind: ChannelKind::Device,
            user_id: None,
            user_short_name: None,
        }
    }

    /// A macOS user channel (`UDID:UserID`).
    pub fn user_enrollment(udid: &str, user_id: &str) -> Enrollment {
        Enrollment {
            id: format!("{udid}:{user_id}"),
            device_id: udid.to_string(),
            kind: ChannelKind::User,
            user_id: Some(user_id.to_string()),
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

    /// An enrollment request for a device channel with this serial number.
    pub fn enrollment_request(udid: &str, serial: Option<&str>) -> EnrollmentRequest {
        EnrollmentRequest {
            event_id: super::super::new_event_id(),
            enrollment: device_enrollment(udid),
            device: facts(serial),
            identity_fingerprint: "0".repeat(64),
            raw: None,
        }
    }

    /// A check-in of this kind on this channel; `token_update_count` is 1 for a TokenUpdate (set it for
    /// a later one).
    pub fn checkin(kind: CheckinKind, enrollment: Enrollment) -> CheckinEvent {
        CheckinEvent {
            event_id: super::super::new_event_id(),
            kind,
            enrollment,
            device: facts(Some("C02TEST")),
            token_update_count: (kind == CheckinKind::TokenUpdate).then_some(1),
            awaiting_configuration: Some(false),
            raw: Some(b"<plist/>".to_vec()),
        }
    }

    /// A command result with this report, JSON with Apple's keys (`json!({"QueryResponses": {...}})`).
    ///
    /// # Panics
    /// When `report` is not a JSON object.
    pub fn command_result(
        enrollment: Enrollment,
        request_type: &str,
        status: CommandStatus,
        report: &Value,
    ) -> CommandResultEvent {
        assert!(report.is_object(), "a report is a JSON object");
        let report = plist::to_value(report).expect("JSON becomes a plist");
        CommandResultEvent {
            event_id: super::super::new_event_id(),
            enrollment,
            device: facts(Some("C02TEST")),
            command_uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
            request_type: request_type.to_string(),
            status,
            error_chain: Vec::new(),
            report: super::super::convert::plist_tree(&report),
            raw: None,
            retry_of: None,
        }
    }

    /// What a status report changed on this channel: these items, no declarations (push
    /// [`DeclarationChange`]s onto `declarations` for those).
    pub fn ddm_status(enrollment: Enrollment, items: Vec<StatusItemChange>) -> DdmStatusEvent {
        DdmStatusEvent {
            event_id: super::super::new_event_id(),
            enrollment,
            declarations: Vec::new(),
            items,
        }
    }

    /// A status item that turned from `old` (none: first reported) to `new`.
    pub fn item_turned(name: &str, old: Option<Value>, new: Value) -> StatusItemChange {
        StatusItemChange {
            name: name.to_string(),
            old_json: old.map(|v| v.to_string()),
            new_json: new.to_string(),
        }
    }

    /// A GetToken check-in's question from this channel.
    pub fn token_request(enrollment: Enrollment, token_service_type: &str) -> TokenRequest {
        TokenRequest {
            event_id: super::super::new_event_id(),
            enrollment,
            token_service_type: token_service_type.to_string(),
        }
    }

    /// A running rollout of `version` of policy `policy_id` (named `baseline`) in `stage`.
    pub fn rollout(policy_id: i64, version: &str, stage: Stage) -> RolloutInfo {
        RolloutInfo {
            policy_id,
            policy_name: "baseline".into(),
            version: version.to_string(),
            previous: None,
            stage,
            state: "running".into(),
            started_by: "ci".into(),
            started_unix_ms: 0,
            stage_started_unix_ms: 0,
        }
    }

    /// The question before promoting `rollout` out of its stage at `now_unix_ms`, every device of
    /// the stages reached (10 each) succeeded.
    pub fn promotion(rollout: RolloutInfo, now_unix_ms: i64) -> PromotionRequest {
        let stages = Stage::ALL
            .iter()
            .filter(|s| **s <= rollout.stage)
            .map(|s| StageCounts {
                stage: *s,
                devices: 10,
                succeeded: 10,
                failed: 0,
                pending: 0,
            })
            .collect();
        PromotionRequest {
            event_id: super::super::new_event_id(),
            next_stage: rollout.stage.next(),
            stages,
            gates: GateValues {
                failure_ratio: 0.0,
                max_failure_ratio: 0.005,
                reported_ratio: 1.0,
                min_reported_ratio: 0.9,
            },
            rollout,
            now_unix_ms,
        }
    }

    /// The step `action` (`policy.rollout_promoted`, ...) that left the rollout as `rollout` is.
    pub fn rollout_step(action: &str, rollout: RolloutInfo) -> RolloutEvent {
        RolloutEvent {
            event_id: super::super::new_event_id(),
            action: action.to_string(),
            rollout,
            reason: None,
            actor: "rollout".into(),
            at_unix_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The harness's fixtures make what the SDK's do from the same arguments.

    use super::events;
    use crate::plugins::event as host;
    use mdm_plugin_sdk::mock::fixtures;
    use mdm_plugin_sdk::types as sdk;
    use serde_json::json;

    /// Debug text without type paths: the SDK's generated enums print as `ChannelKind::User`.
    fn plain(d: impl std::fmt::Debug) -> String {
        let text = format!("{d:?}");
        let mut out = String::new();
        for (i, part) in text.split("::").enumerate() {
            if i == 0 {
                out.push_str(part);
            } else {
                // Drop the type name that preceded this `::`.
                let cut = out
                    .trim_end_matches(|c: char| c.is_ascii_alphanumeric())
                    .len();
                out.truncate(cut);
                out.push_str(part);
            }
        }
        out
    }

    fn sdk_tree(nodes: &[sdk::PlistNode]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| plain((n.parent, &n.key, &n.value)))
            .collect()
    }

    fn host_tree(nodes: &[host::PlistNode]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| plain((n.parent, &n.key, &n.value)))
            .collect()
    }

    fn same_channel(s: &sdk::Enrollment, h: &host::Enrollment) {
        assert_eq!(
            (&s.id, &s.device_id, plain(s.kind), &s.user_id),
            (&h.id, &h.device_id, plain(h.kind), &h.user_id)
        );
    }

    #[test]
    fn the_same_calls_make_the_same_events_in_both() {
        same_channel(
            &fixtures::user_enrollment("U", "501"),
            &events::user_enrollment("U", "501"),
        );
        let report = json!({"QueryResponses": {"OSVersion": "17.5"}, "Items": [1, true, 2.5]});
        let s = fixtures::command_result(
            fixtures::device_enrollment("U"),
            "DeviceInformation",
            sdk::CommandStatus::NotNow,
            &report,
        );
        let h = events::command_result(
            events::device_enrollment("U"),
            "DeviceInformation",
            host::CommandStatus::NotNow,
            &report,
        );
        same_channel(&s.enrollment, &h.enrollment);
        assert_eq!(s.request_type, h.request_type);
        assert_eq!(plain(s.status), plain(h.status));
        assert_eq!(sdk_tree(&s.report), host_tree(&h.report));

        let s = fixtures::checkin(
            sdk::CheckinKind::TokenUpdate,
            fixtures::device_enrollment("U"),
        );
        let h = events::checkin(
            host::CheckinKind::TokenUpdate,
            events::device_enrollment("U"),
        );
        assert_eq!(s.token_update_count, h.token_update_count);
        assert_eq!(plain(s.kind), plain(h.kind));

        let item = |old, new| ("passcode.is-compliant", Some(old), new);
        let (name, old, new) = item(json!(true), json!(false));
        let s = fixtures::ddm_status(
            fixtures::device_enrollment("U"),
            vec![fixtures::item_turned(name, old.clone(), new.clone())],
        );
        let h = events::ddm_status(
            events::device_enrollment("U"),
            vec![events::item_turned(name, old, new)],
        );
        assert_eq!(
            (&s.items[0].name, &s.items[0].old_json, &s.items[0].new_json),
            (&h.items[0].name, &h.items[0].old_json, &h.items[0].new_json)
        );
        let s = fixtures::token_request(fixtures::device_enrollment("U"), "com.apple.maid");
        let h = events::token_request(events::device_enrollment("U"), "com.apple.maid");
        assert_eq!(s.token_service_type, h.token_service_type);
    }
}
