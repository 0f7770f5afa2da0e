//! `mdm-server plugin run`: one hook of a built plugin, run against the in-memory host of
//! [`super::testing`] on an event made from a device's message as it would arrive (an Authenticate or
//! other check-in plist, a command report plist), and what came of it as JSON: the answer (actions, a
//! decision, a token), the plugin's logs, what it left in its key-value store and the HTTP requests it
//! made. No server, database or network: the release binary is all a plugin author needs.

use super::event::{Action, CommandSpec, Decision, EnrollmentRequest};
use super::manifest::Hook;
use super::testing::{events, Harness, HarnessError};
use crate::protocol::{CheckinMessage, CheckinPayload, CommandReport};
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct TryHook {
    pub wasm: PathBuf,
    pub manifest: PathBuf,
    /// The plugin's configuration (`{}` when none).
    pub config: Value,
    /// `decide-enrollment`, `on-checkin`, `on-command-result`, `on-schedule`, `provide-token` or
    /// `validate-config`.
    pub hook: String,
    /// The device's message: a check-in plist (decide-enrollment: an Authenticate; provide-token: a
    /// GetToken) or a command report plist (on-command-result).
    pub event: Option<Vec<u8>>,
    /// on-command-result: the RequestType of the command the report answers.
    pub request_type: Option<String>,
    /// on-schedule: the schedule's name.
    pub schedule: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TryError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("{0}")]
    Usage(String),
    #[error("the event file: {0}")]
    Event(String),
}

/// Run the hook; the JSON to print. A plugin that fails or traps is reported in it (`fault`), not as an
/// error: that is an answer a plugin author wants to see.
pub async fn run(t: TryHook) -> Result<Value, TryError> {
    let h = Harness::load(&t.wasm, &t.manifest, t.config.clone()).await?;
    let answer = match t.hook.as_str() {
        "validate-config" => h.validate_config(&t.config).await.map(|()| json!("valid")),
        "on-schedule" => {
            let name = t
                .schedule
                .as_deref()
                .ok_or_else(|| usage("on-schedule needs --schedule NAME"))?;
            h.on_schedule(name).await.map(|a| actions_json(&a))
        }
        "decide-enrollment" => {
            let request = enrollment_request(&checkin(&t)?)?;
            h.decide_enrollment(request)
                .await
                .map(|d| decision_json(&d))
        }
        "on-checkin" => {
            let msg = checkin(&t)?;
            let kind = super::convert::checkin_kind(&msg.payload);
            let mut e = events::checkin(kind, super::convert::enrollment(&msg.enrollment));
            e.token_update_count = None;
            e.raw = Some(msg.raw.clone());
            h.on_checkin(e).await.map(|a| actions_json(&a))
        }
        "on-command-result" => {
            let e = command_result(&t)?;
            h.on_command_result(e).await.map(|a| actions_json(&a))
        }
        "provide-token" => {
            let msg = checkin(&t)?;
            let CheckinPayload::GetToken { token_service_type } = &msg.payload else {
                return Err(TryError::Event(
                    "provide-token needs a GetToken check-in".into(),
                ));
            };
            let service = token_service_type.as_deref().unwrap_or_default();
            let r = events::token_request(super::convert::enrollment(&msg.enrollment), service);
            h.provide_token(r).await.map(|t| match t {
                Some(bytes) => json!({"token_base64": b64(&bytes)}),
                None => json!({"token_base64": null}),
            })
        }
        other => {
            let served: Vec<&str> = Hook::ALL
                .iter()
                .map(|h| h.as_str())
                .filter(|h| !matches!(*h, "on-ddm-status" | "decide-promotion" | "on-rollout"))
                .chain(["validate-config"])
                .collect();
            return Err(usage(&format!(
                "cannot run hook {other:?} from a file; these can: {}",
                served.join(", ")
            )));
        }
    };
    let mut out = json!({"hook": t.hook, "wit_version": h.wit_version()});
    match answer {
        Ok(v) => out["answer"] = v,
        Err(fault) => {
            out["fault"] = json!({"outcome": fault.outcome(), "detail": format!("{fault:?}")})
        }
    }
    out["logs"] = h
        .logs()
        .iter()
        .map(|l| json!({"level": l.level, "message": l.message, "fields": l.fields}))
        .collect();
    let mut kv = serde_json::Map::new();
    for key in h.kv_keys() {
        let value = h.kv_get(&key).await.unwrap_or_default();
        let shown = match String::from_utf8(value) {
            Ok(text) => json!(text),
            Err(e) => json!({"base64": b64(e.as_bytes())}),
        };
        kv.insert(key, shown);
    }
    out["kv"] = Value::Object(kv);
    out["http_requests"] = h
        .http_requests()
        .iter()
        .map(|(method, url)| json!({"method": method, "url": url}))
        .collect();
    Ok(out)
}

fn usage(why: &str) -> TryError {
    TryError::Usage(why.to_string())
}

fn event_bytes(t: &TryHook) -> Result<&[u8], TryError> {
    t.event.as_deref().ok_or_else(|| {
        usage(&format!(
            "{} needs --event FILE (the device's message)",
            t.hook
        ))
    })
}

fn checkin(t: &TryHook) -> Result<CheckinMessage, TryError> {
    CheckinMessage::decode(event_bytes(t)?).map_err(|e| TryError::Event(e.to_string()))
}

fn enrollment_request(msg: &CheckinMessage) -> Result<EnrollmentRequest, TryError> {
    let CheckinPayload::Authenticate(a) = &msg.payload else {
        return Err(TryError::Event(
            "decide-enrollment needs an Authenticate check-in".into(),
        ));
    };
    let mut r = events::enrollment_request(&msg.enrollment.device_id, None);
    r.enrollment = super::convert::enrollment(&msg.enrollment);
    r.device = super::convert::facts(&a.facts, a.facts.platform());
    r.raw = Some(msg.raw.clone());
    Ok(r)
}

fn command_result(t: &TryHook) -> Result<super::event::CommandResultEvent, TryError> {
    let report =
        CommandReport::decode(event_bytes(t)?).map_err(|e| TryError::Event(e.to_string()))?;
    let status = super::convert::command_status(report.status)
        .ok_or_else(|| TryError::Event("an Idle is not a command's result".into()))?;
    let request_type = t.request_type.as_deref().ok_or_else(|| {
        usage("on-command-result needs --request-type (the command's RequestType)")
    })?;
    let enrollment = super::convert::enrollment(&report.enrollment);
    let mut e = events::command_result(enrollment, request_type, status, &serde_json::json!({}));
    // The device's own report, its data and dates as they are (JSON has no words for them).
    e.report = super::convert::plist_tree(&plist::Value::Dictionary(report.dict.clone()));
    e.command_uuid = report.command_uuid.clone().unwrap_or_default();
    e.error_chain = super::convert::error_chain(&report.error_chain);
    e.raw = Some(report.raw.clone());
    Ok(e)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decision_json(d: &Decision) -> Value {
    match d {
        Decision::Allow => json!({"decision": "allow"}),
        Decision::Deny(reason) => json!({"decision": "deny", "reason": reason}),
        Decision::Abstain => json!({"decision": "abstain"}),
    }
}

/// Actions as JSON, each with its `kind` (as the plugin audit names it).
fn actions_json(actions: &[Action]) -> Value {
    actions
        .iter()
        .map(|a| match a {
            Action::Enqueue(e) => {
                let command = match &e.command {
                    CommandSpec::TypedJson(j) => {
                        serde_json::from_str(j).unwrap_or_else(|_| json!({"invalid_json": j}))
                    }
                    CommandSpec::RawPlist(p) => json!({"raw_plist_base64": b64(p)}),
                };
                json!({"kind": "enqueue", "enrollment_ids": e.enrollment_ids, "command": command,
                    "priority": e.priority, "ttl_seconds": e.ttl_seconds})
            }
            Action::Retry(r) => json!({"kind": "retry", "enrollment_id": r.enrollment_id,
                "command_uuid": r.command_uuid, "after_seconds": r.after_seconds}),
            Action::Push(ids) => json!({"kind": "push", "enrollment_ids": ids}),
            Action::SetAttribute(s) => json!({"kind": "set-attribute", "device_id": s.device_id,
                "key": s.key, "value": s.value}),
            Action::ClearAttribute(k) => {
                json!({"kind": "clear-attribute", "device_id": k.device_id, "key": k.key})
            }
            Action::Emit(e) => {
                let payload: Value = serde_json::from_str(&e.payload_json)
                    .unwrap_or_else(|_| json!({"invalid_json": e.payload_json}));
                json!({"kind": "emit", "sink": e.sink, "topic": e.topic, "payload": payload})
            }
            Action::AssignSet(a) => json!({"kind": "assign-set", "enrollment_id": a.enrollment_id,
                "set_name": a.set_name}),
            Action::UnassignSet(a) => json!({"kind": "unassign-set",
                "enrollment_id": a.enrollment_id, "set_name": a.set_name}),
        })
        .collect()
}
