//! An in-memory stand-in for the host, used on targets other than WebAssembly.
//!
//! A plugin's unit tests run natively (`cargo test`), where there is no server to import from. There,
//! every host wrapper of this SDK ([`kv`](crate::kv), [`config`](crate::config),
//! [`log`](crate::log), [`metrics`](crate::metrics), [`inventory`](crate::inventory),
//! [`http`](crate::http)) is served from per-thread state that tests arrange and inspect with the
//! functions here. Each test runs on its own thread, so tests do not see each other's state; call
//! [`reset`] to start over within a test.
//!
//! [`fixtures`] builds every hook's input, status reports ([`fixtures::ddm_status`] with
//! [`fixtures::item_turned`] and [`fixtures::declaration_turned`]) and token requests
//! ([`fixtures::token_request`]) included, so hooks are called directly:
//! `MyPlugin::on_ddm_status(fixtures::ddm_status(...))`.
//!
//! The module exists only on non-WebAssembly targets: in a built component all calls go to the
//! real host.
//!
//! ```
//! use mdm_plugin_sdk::{kv, mock};
//! mock::set_config(&mdm_plugin_sdk::serde_json::json!({"prefixes": ["C02"]}));
//! kv::set("k", b"v").unwrap();
//! assert_eq!(mock::kv_snapshot().get("k").map(Vec::as_slice), Some(&b"v"[..]));
//! ```
//!
//! The stand-in follows the host's rules where they matter to plugins: keys are 1 to 256 bytes,
//! values at most 64 KiB, `list_keys` returns at most 1000 keys in byte order, strictly after
//! `start_after` when given. TTLs are recorded but nothing expires.

#![cfg(not(target_family = "wasm"))]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use serde::Serialize;

use crate::bindings::mdm::plugin::http::{HttpError, Request, Response};
use crate::bindings::mdm::plugin::inventory::DeviceInfo;
use crate::bindings::mdm::plugin::kv::KvError;
use crate::bindings::mdm::plugin::log::Level;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_LIST: u32 = 1000;

/// One line a plugin logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// The level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// Structured fields, in the order given.
    pub fields: Vec<(String, String)>,
}

type HttpHandler = Rc<dyn Fn(&Request) -> Result<Response, HttpError>>;

#[derive(Default)]
struct State {
    config: Option<String>,
    kv: BTreeMap<String, (Vec<u8>, Option<u32>)>,
    kv_fault: Option<KvError>,
    kv_max_keys: Option<usize>,
    kv_writes: u64,
    logs: Vec<LogRecord>,
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, f64>,
    devices: BTreeMap<String, DeviceInfo>,
    http: Option<HttpHandler>,
    http_requests: Vec<Request>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// How many values the plugin stored (`set`, `set_with_ttl`, a successful `compare_and_swap`) since
/// the last [`reset`]: each is a database write on the server, so a plugin can test it does not write on
/// every event.
pub fn kv_writes() -> u64 {
    with(|s| s.kv_writes)
}

/// Forgets everything: configuration, store, logs, metrics, devices, HTTP handler.
pub fn reset() {
    with(|s| *s = State::default());
}

/// Sets the configuration that `config::get` returns (as the host does, `{}` when none is set).
pub fn set_config(config: &impl Serialize) {
    let text = serde_json::to_string(config).expect("configuration serializes to JSON");
    with(|s| s.config = Some(text));
}

/// Sets the configuration text verbatim (for testing how a plugin handles bad JSON).
pub fn set_config_text(text: &str) {
    with(|s| s.config = Some(text.to_owned()));
}

/// Puts a key into the store, as if an earlier call had set it.
pub fn kv_insert(key: &str, value: impl Into<Vec<u8>>) {
    with(|s| s.kv.insert(key.to_owned(), (value.into(), None)));
}

/// The store's contents.
pub fn kv_snapshot() -> BTreeMap<String, Vec<u8>> {
    with(|s| {
        s.kv.iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    })
}

/// The TTL a key was last written with.
pub fn kv_ttl(key: &str) -> Option<u32> {
    with(|s| s.kv.get(key).and_then(|(_, ttl)| *ttl))
}

/// Makes every following `kv` call fail with this error (`None`: work again).
pub fn fail_kv(error: Option<KvError>) {
    with(|s| s.kv_fault = error);
}

/// Caps the number of keys; writes of new keys beyond it fail with `QuotaExceeded`.
pub fn set_kv_max_keys(max: usize) {
    with(|s| s.kv_max_keys = Some(max));
}

/// What the plugin logged so far.
pub fn logs() -> Vec<LogRecord> {
    with(|s| s.logs.clone())
}

/// Counter totals by name.
pub fn counters() -> BTreeMap<String, u64> {
    with(|s| s.counters.clone())
}

/// Last gauge values by name.
pub fn gauges() -> BTreeMap<String, f64> {
    with(|s| s.gauges.clone())
}

/// Makes `inventory::device(&info.id)` return this device.
pub fn add_device(info: DeviceInfo) {
    with(|s| s.devices.insert(info.id.clone(), info));
}

/// Answers `http::fetch` with this function (without one, every fetch fails with `NotAllowed`).
pub fn set_http_handler(handler: impl Fn(&Request) -> Result<Response, HttpError> + 'static) {
    with(|s| s.http = Some(Rc::new(handler)));
}

/// The requests `http::fetch` received.
pub fn http_requests() -> Vec<Request> {
    with(|s| s.http_requests.clone())
}

/// Test fixtures: events with sensible defaults, to adjust field by field.
pub mod fixtures {
    use serde_json::Value;

    use crate::rollout::{
        GateValues, PromotionRequest, RolloutEvent, RolloutInfo, Stage, StageCounts,
    };
    use crate::types::{
        ChannelKind, CheckinEvent, CheckinKind, CommandResultEvent, CommandStatus, DdmStatusEvent,
        DeclarationChange, DeclarationState, DeviceFacts, Enrollment, EnrollmentRequest,
        ScheduleEvent, StatusItemChange, TokenRequest,
    };
    use crate::Plist;

    /// No facts known.
    pub fn no_facts() -> DeviceFacts {
        DeviceFacts {
            serial_number: None,
            platform: None,
            model: None,
            model_name: None,
            product_name: None,
            device_name: None,
            os_version: None,
            build_version: None,
        }
    }

    /// A device channel: queue id and device id are both `udid`.
    pub fn device_enrollment(udid: &str) -> Enrollment {
        Enrollment {
            id: udid.to_owned(),
            device_id: udid.to_owned(),
            kind: ChannelKind::Device,
            user_id: None,
            user_short_name: None,
        }
    }

    /// A macOS user channel `udid:user_id` of device `udid`.
    pub fn user_enrollment(udid: &str, user_id: &str) -> Enrollment {
        Enrollment {
            id: format!("{udid}:{user_id}"),
            device_id: udid.to_owned(),
            kind: ChannelKind::User,
            user_id: Some(user_id.to_owned()),
            user_short_name: None,
        }
    }

    /// An enrollment request for a device channel with this serial number.
    pub fn enrollment_request(udid: &str, serial_number: Option<&str>) -> EnrollmentRequest {
        EnrollmentRequest {
            event_id: format!("evt-enroll-{udid}"),
            enrollment: device_enrollment(udid),
            device: DeviceFacts {
                serial_number: serial_number.map(str::to_owned),
                ..no_facts()
            },
            identity_fingerprint: "00".repeat(32),
            raw: None,
        }
    }

    /// A check-in of this kind on this channel. `token_update_count` is `Some(1)` for a
    /// `TokenUpdate`, `None` otherwise.
    pub fn checkin(kind: CheckinKind, enrollment: Enrollment) -> CheckinEvent {
        CheckinEvent {
            event_id: format!("evt-checkin-{}", enrollment.id),
            kind,
            token_update_count: (kind == CheckinKind::TokenUpdate).then_some(1),
            enrollment,
            device: no_facts(),
            awaiting_configuration: None,
            raw: None,
        }
    }

    /// A command result with this report, JSON with Apple's keys (`json!({"QueryResponses": {...}})`),
    /// for a command queued once (`retry_of` is `None`; see [`retried`] for a copy). The server's
    /// harness (`mdm_server::plugins::testing::events`) has the same fixtures with the same arguments.
    ///
    /// # Panics
    /// When `report` is not a JSON object (or nests deeper than a plist may).
    pub fn command_result(
        enrollment: Enrollment,
        request_type: &str,
        status: CommandStatus,
        report: &Value,
    ) -> CommandResultEvent {
        let report = Plist::from_json(report).expect("a report is a JSON object");
        CommandResultEvent {
            event_id: format!("evt-result-{}", enrollment.id),
            enrollment,
            device: no_facts(),
            command_uuid: "11111111-2222-3333-4444-555555555555".to_owned(),
            request_type: request_type.to_owned(),
            status,
            error_chain: Vec::new(),
            report: report.to_tree(),
            raw: None,
            retry_of: None,
        }
    }

    /// The result of a copy of `original`'s command, queued by a `retry` action after an Error:
    /// a new CommandUUID, and `retry_of` naming the first command of the chain (as the server
    /// does: a copy of a copy keeps the same root).
    pub fn retried(original: &CommandResultEvent, new_command_uuid: &str) -> CommandResultEvent {
        CommandResultEvent {
            event_id: format!("evt-result-{}-{new_command_uuid}", original.enrollment.id),
            command_uuid: new_command_uuid.to_owned(),
            retry_of: Some(original.original_command_uuid().to_owned()),
            ..original.clone()
        }
    }

    /// A declarative management status report from this channel that changed these status items
    /// (build them with [`item_turned`]) and no declaration (push [`declaration_turned`]s onto
    /// `declarations` for those).
    pub fn ddm_status(enrollment: Enrollment, items: Vec<StatusItemChange>) -> DdmStatusEvent {
        DdmStatusEvent {
            event_id: format!("evt-ddm-{}", enrollment.id),
            enrollment,
            declarations: Vec::new(),
            items,
        }
    }

    /// A status item that went from `old` (`None`: first reported) to `new`, as the host sends it.
    pub fn item_turned(name: &str, old: Option<Value>, new: Value) -> StatusItemChange {
        StatusItemChange {
            name: name.to_owned(),
            old_json: old.map(|v| v.to_string()),
            new_json: new.to_string(),
        }
    }

    /// A declaration state with server token `t1` and no reasons; `valid` is `valid`, `invalid` or
    /// `unknown`.
    pub fn declaration_state(active: bool, valid: &str) -> DeclarationState {
        DeclarationState {
            active,
            valid: valid.to_owned(),
            server_token: "t1".to_owned(),
            reasons_json: "[]".to_owned(),
        }
    }

    /// A configuration declaration whose state went from `old` (`None`: first reported) to `new`.
    pub fn declaration_turned(
        identifier: &str,
        old: Option<DeclarationState>,
        new: DeclarationState,
    ) -> DeclarationChange {
        DeclarationChange {
            identifier: identifier.to_owned(),
            category: "configuration".to_owned(),
            old,
            new,
        }
    }

    /// A GetToken check-in's question from this channel.
    pub fn token_request(enrollment: Enrollment, token_service_type: &str) -> TokenRequest {
        TokenRequest {
            event_id: format!("evt-token-{}", enrollment.id),
            enrollment,
            token_service_type: token_service_type.to_owned(),
        }
    }

    /// A tick of the schedule `name`.
    pub fn schedule(name: &str) -> ScheduleEvent {
        ScheduleEvent {
            event_id: format!("evt-schedule-{name}"),
            name: name.to_owned(),
        }
    }

    /// A running rollout of `version` of policy `policy_id` (named `baseline`, started by `ci`),
    /// in `stage`.
    pub fn rollout(policy_id: i64, version: &str, stage: Stage) -> RolloutInfo {
        RolloutInfo {
            policy_id,
            policy_name: "baseline".into(),
            version: version.to_owned(),
            previous: None,
            stage,
            state: "running".into(),
            started_by: "ci".into(),
            started_unix_ms: 0,
            stage_started_unix_ms: 0,
        }
    }

    /// The question before a round promotes `rollout` out of its stage at `now_unix_ms`: every stage
    /// reached so far has 10 devices, all succeeded.
    pub fn promotion(rollout: RolloutInfo, now_unix_ms: i64) -> PromotionRequest {
        let order = [Stage::Pilot, Stage::Canary, Stage::Full];
        let at = order.iter().position(|s| *s == rollout.stage).unwrap_or(0);
        PromotionRequest {
            event_id: format!("evt-promotion-{}", rollout.policy_id),
            next_stage: order.get(at + 1).copied(),
            stages: order[..=at]
                .iter()
                .map(|s| StageCounts {
                    stage: *s,
                    devices: 10,
                    succeeded: 10,
                    failed: 0,
                    pending: 0,
                })
                .collect(),
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

    /// The step `action` (`policy.rollout_promoted`, ...) that left the rollout as `rollout` is,
    /// taken by the server's round.
    pub fn rollout_step(action: &str, rollout: RolloutInfo) -> RolloutEvent {
        RolloutEvent {
            event_id: format!("evt-rollout-{}", rollout.policy_id),
            action: action.to_owned(),
            rollout,
            reason: None,
            actor: "rollout".into(),
            at_unix_ms: 0,
        }
    }
}

/// The stand-in host imports, with the generated functions' signatures.
pub(crate) mod host {
    use super::*;

    pub mod log {
        use super::*;
        pub fn log(level: Level, message: &str, fields: &[(String, String)]) {
            with(|s| {
                s.logs.push(LogRecord {
                    level,
                    message: message.to_owned(),
                    fields: fields.to_vec(),
                })
            });
        }
    }

    pub mod metrics {
        use super::*;
        pub fn counter_add(name: &str, delta: u64) {
            with(|s| *s.counters.entry(name.to_owned()).or_default() += delta);
        }
        pub fn gauge_set(name: &str, value: f64) {
            with(|s| s.gauges.insert(name.to_owned(), value));
        }
    }

    pub mod config {
        use super::*;
        pub fn get() -> String {
            with(|s| s.config.clone().unwrap_or_else(|| "{}".to_owned()))
        }
    }

    pub mod kv {
        use super::*;

        fn check(s: &State, key: &str, value: Option<&[u8]>) -> Result<(), KvError> {
            if let Some(fault) = &s.kv_fault {
                return Err(fault.clone());
            }
            if key.is_empty() || key.len() > MAX_KEY || value.is_some_and(|v| v.len() > MAX_VALUE) {
                return Err(KvError::TooLarge);
            }
            Ok(())
        }

        fn write(s: &mut State, key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), KvError> {
            if !s.kv.contains_key(key) && s.kv_max_keys.is_some_and(|max| s.kv.len() >= max) {
                return Err(KvError::QuotaExceeded);
            }
            s.kv.insert(key.to_owned(), (value.to_vec(), ttl));
            s.kv_writes += 1;
            Ok(())
        }

        pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
            with(|s| {
                check(s, key, None)?;
                Ok(s.kv.get(key).map(|(v, _)| v.clone()))
            })
        }

        pub fn set(key: &str, value: &[u8], ttl: Option<u32>) -> Result<(), KvError> {
            with(|s| {
                check(s, key, Some(value))?;
                write(s, key, value, ttl)
            })
        }

        pub fn delete(key: &str) -> Result<bool, KvError> {
            with(|s| {
                check(s, key, None)?;
                Ok(s.kv.remove(key).is_some())
            })
        }

        pub fn compare_and_swap(
            key: &str,
            expected: Option<&[u8]>,
            new: &[u8],
            ttl: Option<u32>,
        ) -> Result<bool, KvError> {
            with(|s| {
                check(s, key, Some(new))?;
                if s.kv.get(key).map(|(v, _)| v.as_slice()) != expected {
                    return Ok(false);
                }
                write(s, key, new, ttl)?;
                Ok(true)
            })
        }

        pub fn list_keys(
            prefix: &str,
            start_after: Option<&str>,
            limit: u32,
        ) -> Result<Vec<String>, KvError> {
            with(|s| {
                if let Some(fault) = &s.kv_fault {
                    return Err(fault.clone());
                }
                if prefix.len() > MAX_KEY {
                    return Err(KvError::TooLarge);
                }
                // From the prefix, or strictly after `start_after` when that is further on.
                let from = match start_after {
                    Some(after) if after >= prefix => Bound::Excluded(after),
                    _ => Bound::Included(prefix),
                };
                Ok(s.kv
                    .range::<str, _>((from, Bound::Unbounded))
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(prefix))
                    .take(limit.min(MAX_LIST) as usize)
                    .cloned()
                    .collect())
            })
        }
    }

    pub mod inventory {
        use super::*;
        pub fn get_device(device_id: &str) -> Option<DeviceInfo> {
            with(|s| s.devices.get(device_id).cloned())
        }
    }

    pub mod http {
        use super::*;
        pub fn fetch(req: &Request) -> Result<Response, HttpError> {
            let handler = with(|s| {
                s.http_requests.push(req.clone());
                s.http.clone()
            });
            match handler {
                Some(handler) => handler(req),
                None => Err(HttpError::NotAllowed(req.url.clone())),
            }
        }
    }
}
