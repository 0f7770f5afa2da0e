//! Applying what plugins asked for: each action checked against the plugin's grants and limits, applied in
//! the caller's transaction (or only recorded, in dry-run), and audited either way. A call's actions apply
//! all or nothing: one refused, and none of them is (an event must never tell a sink of a change that was
//! not made).

use super::event::{Action, CommandSpec, SetAssignment};
use super::manifest::Capability;
use super::runtime::LoadedPlugin;
use super::EventScope;
use crate::metrics::{Metrics, PluginActionLabels};
use crate::protocol::commands::TypedCommand;
use crate::storage::enqueue::{self, CommandSpec as QueueCommand, EnqueueRequest, QueueError};
use crate::storage::plugin_audit::AuditRow;
use crate::storage::queue::{self as q, QueueStatus};
use crate::storage::{attributes, devices, outbox, StorageError};
use sea_orm::{ConnectionTrait, Statement, TransactionSession, TransactionTrait};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Ids one enqueue action may name, and all enqueues of one call together: a plugin fans out over many
/// calls (schedules), not in one flood.
pub const MAX_IDS_PER_ACTION: usize = 1000;
pub const MAX_IDS_PER_CALL: usize = 1000;
/// Attribute keys plugins set: 1 to this many bytes.
pub const MAX_ATTRIBUTE_KEY: usize = 128;
const MAX_ATTRIBUTE_VALUE: usize = 4096;
const MAX_EVENT_PAYLOAD: usize = 256 * 1024;

/// Where the actions come from.
pub struct ActionContext<'a> {
    pub hook: &'static str,
    pub scope: EventScope<'a>,
    pub now: i64,
    pub sinks: &'a BTreeSet<String>,
    pub metrics: &'a Metrics,
    /// How long past `now` a new event is held for this process's own delivery (0: due at once, for
    /// whichever worker leases it).
    pub event_hold_ms: i64,
}

/// Writes no later action reads, sent in one batch with the run's audit rows: the events' inserts (each
/// returning its id, in the order of `events`) among them.
#[derive(Default)]
pub struct Deferred {
    pub statements: Vec<Statement>,
    pub events: Vec<outbox::OutboxEvent>,
}

impl ActionContext<'_> {
    pub fn audit(
        &self,
        plugin: &str,
        kind: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> AuditRow {
        super::audit_row(
            plugin, self.hook, self.scope, kind, outcome, detail, self.now,
        )
    }
}

fn kind(a: &Action) -> &'static str {
    match a {
        Action::Enqueue(_) => "enqueue",
        Action::Retry(_) => "retry",
        Action::Push(_) => "push",
        Action::SetAttribute(_) => "set-attribute",
        Action::ClearAttribute(_) => "clear-attribute",
        Action::Emit(_) => "emit",
        Action::AssignSet(_) => "assign-set",
        Action::UnassignSet(_) => "unassign-set",
    }
}

fn needs(a: &Action) -> Capability {
    match a {
        Action::Enqueue(_) => Capability::Commands,
        Action::Retry(_) => Capability::Retry,
        Action::Push(_) => Capability::Push,
        Action::SetAttribute(_) | Action::ClearAttribute(_) => Capability::Attributes,
        Action::Emit(_) => Capability::Events,
        Action::AssignSet(_) | Action::UnassignSet(_) => Capability::DdmAssign,
    }
}

/// Apply one plugin's actions, all or nothing: each is checked first, then all are applied inside a
/// savepoint; one refused at either step (an unknown sink, an unknown device, a command the queue refuses)
/// and none is applied. Every action is audited with its outcome, and a refusal logged at WARN. Only a
/// storage failure is an error (and then the caller's whole transaction rolls back). Writes nothing later
/// in the call reads (an event for the outbox) are left in `deferred`, for the caller to send with its
/// audit rows; the events are stored there with id 0 until the batch returns theirs.
pub async fn apply<C: ConnectionTrait + TransactionTrait>(
    c: &C,
    plugin: &Arc<LoadedPlugin>,
    actions: Vec<Action>,
    ctx: &ActionContext<'_>,
    deferred: &mut Deferred,
) -> Result<Vec<AuditRow>, StorageError> {
    let id = &*plugin.id;
    if let Some(row) = over_limits(plugin, &actions, ctx) {
        return Ok(vec![row]);
    }
    let checked: Vec<(Action, Result<serde_json::Value, String>)> = actions
        .into_iter()
        .map(|a| {
            let checked = if plugin.manifest.has(needs(&a)) {
                check(&a, &plugin.manifest.sinks, ctx)
            } else {
                Err(format!("needs capability {}", needs(&a).as_str()))
            };
            (a, checked)
        })
        .collect();
    let mut outcomes = Vec::with_capacity(checked.len());
    let mut applying = Vec::with_capacity(checked.len());
    for (a, checked) in checked {
        let k = kind(&a);
        match checked {
            Err(reason) => outcomes.push((k, "rejected", json!({"reason": reason}))),
            Ok(desc) => {
                outcomes.push((k, "checked", desc.clone()));
                applying.push((a, desc));
            }
        }
    }
    if !outcomes.iter().any(|o| o.1 == "rejected") {
        outcomes = if plugin.dry_run {
            outcomes
                .into_iter()
                .map(|(k, _, d)| (k, "dry-run", d))
                .collect()
        } else {
            perform_all(c, id, applying, ctx, deferred).await?
        };
    }
    Ok(audit_all(ctx, id, outcomes))
}

/// A call over the plugin's limits (too many actions, too many enrollments across its enqueues) is
/// refused whole, in one audit row.
fn over_limits(
    plugin: &LoadedPlugin,
    actions: &[Action],
    ctx: &ActionContext<'_>,
) -> Option<AuditRow> {
    let id = &*plugin.id;
    let max = plugin.manifest.limits.max_actions as usize;
    let reason = if actions.len() > max {
        count(ctx, id, "all", "rejected");
        format!(
            "{} actions exceed the limit of {max}; none applied",
            actions.len()
        )
    } else {
        let total_ids: usize = actions
            .iter()
            .map(|a| match a {
                Action::Enqueue(e) => e.enrollment_ids.len(),
                _ => 0,
            })
            .sum();
        if total_ids <= MAX_IDS_PER_CALL {
            return None;
        }
        count(ctx, id, "enqueue", "rejected");
        format!("the enqueues of one call name {total_ids} enrollments, more than {MAX_IDS_PER_CALL}; none applied")
    };
    tracing::warn!(plugin = id, hook = ctx.hook, event_id = ctx.scope.event_id, %reason, "plugin actions refused");
    Some(ctx.audit(id, "actions", "rejected", json!({"reason": reason})))
}

/// Apply checked actions inside a savepoint: every outcome, or, when one was refused, the savepoint
/// rolled back and that refusal with the others not applied.
async fn perform_all<C: ConnectionTrait + TransactionTrait>(
    c: &C,
    plugin: &str,
    applying: Vec<(Action, serde_json::Value)>,
    ctx: &ActionContext<'_>,
    deferred: &mut Deferred,
) -> Result<Vec<(&'static str, &'static str, serde_json::Value)>, StorageError> {
    let savepoint = c.begin().await?;
    let mut local = Deferred::default();
    let mut outcomes = Vec::with_capacity(applying.len());
    for (a, desc) in applying {
        let k = kind(&a);
        let (outcome, detail) = perform(&savepoint, plugin, a, desc, ctx, &mut local).await?;
        outcomes.push((k, outcome, detail));
    }
    if outcomes.iter().any(|o| o.1 == "rejected") {
        savepoint.rollback().await?;
    } else {
        savepoint.commit().await?;
        deferred.statements.extend(local.statements);
        deferred.events.extend(local.events);
    }
    Ok(outcomes)
}

/// The audit rows (and metrics) of a call's outcomes. When one was refused, the others were not applied:
/// they are audited refused too, naming the one that was, and each refusal is logged.
fn audit_all(
    ctx: &ActionContext<'_>,
    plugin: &str,
    outcomes: Vec<(&'static str, &'static str, serde_json::Value)>,
) -> Vec<AuditRow> {
    let refused = outcomes.iter().position(|o| o.1 == "rejected");
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, (k, outcome, mut detail))| {
            let outcome = match refused {
                Some(r) if r == i => {
                    let reason = detail["reason"].as_str().unwrap_or_default().to_string();
                    tracing::warn!(plugin, hook = ctx.hook, event_id = ctx.scope.event_id, action = k, %reason,
                        "plugin action refused; none of the call's actions applied");
                    "rejected"
                }
                Some(r) => {
                    detail["reason"] = json!(format!(
                        "not applied: action {r} of the same call was refused, and a call's actions apply \
                         all or nothing"
                    ));
                    "rejected"
                }
                None => outcome,
            };
            count(ctx, plugin, k, outcome);
            ctx.audit(plugin, k, outcome, detail)
        })
        .collect()
}

fn count(ctx: &ActionContext<'_>, plugin: &str, kind: &str, outcome: &str) {
    ctx.metrics
        .plugin_actions
        .get_or_create(&PluginActionLabels {
            plugin: plugin.to_string(),
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Validate without touching storage; returns the audit description. `declared_sinks`: the manifest's.
fn check(
    a: &Action,
    declared_sinks: &[String],
    ctx: &ActionContext<'_>,
) -> Result<serde_json::Value, String> {
    Ok(match a {
        Action::Enqueue(e) => {
            if e.enrollment_ids.is_empty() || e.enrollment_ids.len() > MAX_IDS_PER_ACTION {
                return Err(format!(
                    "an enqueue names 1 to {MAX_IDS_PER_ACTION} enrollments, not {}",
                    e.enrollment_ids.len()
                ));
            }
            let request = match &e.command {
                CommandSpec::TypedJson(j) => serde_json::from_str::<serde_json::Value>(j)
                    .ok()
                    .and_then(|v| {
                        v.get("RequestType")
                            .and_then(|r| r.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or_default(),
                CommandSpec::RawPlist(_) => "raw".into(),
            };
            json!({"ids": e.enrollment_ids.len(), "request_type": request, "priority": e.priority})
        }
        Action::Retry(r) => {
            json!({"enrollment_id": r.enrollment_id, "command_uuid": r.command_uuid, "after_seconds": r.after_seconds})
        }
        Action::Push(ids) => {
            if ids.is_empty() || ids.len() > MAX_IDS_PER_ACTION {
                return Err(format!(
                    "a push names 1 to {MAX_IDS_PER_ACTION} enrollments"
                ));
            }
            json!({"ids": ids.len()})
        }
        Action::SetAttribute(s) => {
            if s.key.is_empty()
                || s.key.len() > MAX_ATTRIBUTE_KEY
                || s.value.len() > MAX_ATTRIBUTE_VALUE
            {
                return Err(format!(
                    "attribute keys are 1 to {MAX_ATTRIBUTE_KEY} bytes and values at most {MAX_ATTRIBUTE_VALUE}"
                ));
            }
            json!({"device_id": s.device_id, "key": s.key})
        }
        Action::ClearAttribute(k) => json!({"device_id": k.device_id, "key": k.key}),
        Action::Emit(e) => {
            if !declared_sinks.contains(&e.sink) {
                return Err(format!(
                    "{:?} is not one of the sinks the manifest names ({})",
                    e.sink,
                    declared_sinks.join(", ")
                ));
            }
            if !ctx.sinks.contains(&e.sink) {
                return Err(format!("no event sink named {:?} is configured", e.sink));
            }
            if e.payload_json.len() > MAX_EVENT_PAYLOAD {
                return Err(format!(
                    "event payloads are at most {MAX_EVENT_PAYLOAD} bytes"
                ));
            }
            // Checked, not kept: the payload is stored and sent as the plugin wrote it.
            if serde_json::from_str::<serde::de::IgnoredAny>(&e.payload_json).is_err() {
                return Err("payload-json is not JSON".into());
            }
            json!({"sink": e.sink, "topic": e.topic})
        }
        Action::AssignSet(a) | Action::UnassignSet(a) => check_assignment(a)?,
    })
}

/// An assignment names a channel id as the admin API takes one and a set name as an admin would
/// (`ddm::check_set_name`); both are checked before the audit row names them, neither against storage
/// until it is applied.
fn check_assignment(a: &SetAssignment) -> Result<serde_json::Value, String> {
    if crate::protocol::enrollment::check_channel_id(&a.enrollment_id).is_err() {
        return Err("enrollment-id is not an enrollment id".into());
    }
    crate::ddm::check_set_name(&a.set_name).map_err(|e| format!("set-name: {e}"))?;
    Ok(json!({"enrollment_id": a.enrollment_id, "set_name": a.set_name}))
}

async fn perform<C: ConnectionTrait>(
    c: &C,
    plugin: &str,
    a: Action,
    mut desc: serde_json::Value,
    ctx: &ActionContext<'_>,
    deferred: &mut Deferred,
) -> Result<(&'static str, serde_json::Value), StorageError> {
    let outcome = match a {
        Action::Enqueue(e) => {
            let command = match e.command {
                CommandSpec::TypedJson(j) => match serde_json::from_str::<TypedCommand>(&j) {
                    Ok(t) => QueueCommand::Typed(t),
                    Err(err) => {
                        desc["reason"] = json!(format!("invalid typed command: {err}"));
                        return Ok(("rejected", desc));
                    }
                },
                CommandSpec::RawPlist(p) => QueueCommand::Raw(p),
            };
            let req = EnqueueRequest {
                ids: e.enrollment_ids,
                groups: Vec::new(),
                command,
                priority: e.priority,
                ttl_seconds: e.ttl_seconds.map(u64::from),
                source: format!("plugin:{plugin}"),
                no_push: false,
            };
            match enqueue::enqueue_in(c, req, ctx.now).await {
                Ok(o) => {
                    let queued = o.queued_ids().count();
                    ctx.metrics.commands_enqueued.inc_by(queued as u64);
                    desc["queued"] = json!(queued);
                    desc["command_uuids"] = json!(o.command_uuids);
                    desc["results"] = json!(o.results);
                    "applied"
                }
                Err(QueueError::Storage(s)) => return Err(s),
                Err(other) => {
                    desc["reason"] = json!(other.to_string());
                    "rejected"
                }
            }
        }
        Action::Retry(r) => {
            let not_before = ctx.now + i64::from(r.after_seconds) * 1000;
            match q::find_item(c, &r.enrollment_id, &r.command_uuid).await? {
                None => {
                    desc["reason"] = json!("no such command for that enrollment");
                    "rejected"
                }
                Some(item) => match QueueStatus::parse(&item.status)? {
                    s if s.is_pending() => {
                        q::defer(c, &r.enrollment_id, &r.command_uuid, not_before, ctx.now).await?;
                        desc["retry"] = json!("deferred");
                        "applied"
                    }
                    QueueStatus::Error | QueueStatus::CommandFormatError => {
                        let new_uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
                        q::requeue_copy(
                            c,
                            &r.enrollment_id,
                            &r.command_uuid,
                            &new_uuid,
                            not_before,
                            ctx.now,
                        )
                        .await?;
                        desc["retry"] = json!("requeued");
                        desc["new_command_uuid"] = json!(new_uuid);
                        "applied"
                    }
                    other => {
                        desc["reason"] = json!(format!("the command is {}", other.as_str()));
                        "rejected"
                    }
                },
            }
        }
        Action::Push(ids) => {
            // Owed as of now: the push worker sends it once this transaction commits.
            crate::storage::push::due_now(c, &ids, ctx.now).await?;
            "applied"
        }
        Action::SetAttribute(s) => {
            if devices::find(c, &s.device_id).await?.is_none() {
                desc["reason"] = json!("unknown device");
                "rejected"
            } else {
                attributes::set(c, &s.device_id, &s.key, &s.value, plugin, ctx.now).await?;
                crate::groups::follow_facts(c, &s.device_id, ctx.now).await?;
                "applied"
            }
        }
        Action::ClearAttribute(k) => {
            let existed = attributes::clear(c, &k.device_id, &k.key).await?;
            if existed {
                crate::groups::follow_facts(c, &k.device_id, ctx.now).await?;
            }
            desc["existed"] = json!(existed);
            "applied"
        }
        Action::Emit(e) => {
            let event_id = outbox::new_event_id();
            let event = outbox::NewEvent {
                event_id: &event_id,
                plugin_id: plugin,
                sink: &e.sink,
                topic: &e.topic,
                payload: &e.payload_json,
                ordering_key: ctx.scope.device_id,
                now: ctx.now,
                due_at: ctx.now + ctx.event_hold_ms,
            };
            deferred
                .statements
                .push(event.insert_statement(c.get_database_backend()));
            deferred.events.push(event.stored(0));
            "applied"
        }
        Action::AssignSet(a) => {
            let r = crate::ddm::assign_set(c, &a.enrollment_id, &a.set_name, ctx.now).await;
            assignment_outcome(r, &mut desc)?
        }
        Action::UnassignSet(a) => {
            let r = crate::ddm::unassign_set(c, &a.enrollment_id, &a.set_name, ctx.now).await;
            assignment_outcome(r, &mut desc)?
        }
    };
    Ok((outcome, desc))
}

/// What an (un)assignment came to: `changed` false when it was already so; an unknown set or enrollment is
/// refused; a storage failure fails the caller's transaction.
fn assignment_outcome(
    r: Result<bool, crate::ddm::DdmError>,
    desc: &mut serde_json::Value,
) -> Result<&'static str, StorageError> {
    match r {
        Ok(changed) => {
            desc["changed"] = json!(changed);
            Ok("applied")
        }
        Err(crate::ddm::DdmError::Storage(e)) => Err(e),
        Err(other) => {
            desc["reason"] = json!(other.to_string());
            Ok("rejected")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::event::Event;

    /// An emit checked for a plugin whose manifest names `webhook` and `audit`, on a server with the
    /// sinks `webhook` and `other`.
    fn emit(sink: &str, payload: &str) -> Result<serde_json::Value, String> {
        let sinks = BTreeSet::from(["webhook".to_string(), "other".to_string()]);
        let declared = ["webhook".to_string(), "audit".to_string()];
        let metrics = Metrics::new();
        let ctx = ActionContext {
            hook: "on-checkin",
            scope: EventScope {
                event_id: "E1",
                device_id: None,
                enrollment_id: None,
            },
            now: 0,
            sinks: &sinks,
            metrics: &metrics,
            event_hold_ms: 0,
        };
        check(
            &Action::Emit(Event {
                sink: sink.into(),
                topic: "t".into(),
                payload_json: payload.into(),
            }),
            &declared,
            &ctx,
        )
    }

    #[test]
    fn an_event_needs_a_configured_sink_and_one_json_value_within_the_size_limit() {
        assert!(emit("webhook", r#"{"a": [1, "x", null]}"#).is_ok());
        assert!(emit("elsewhere", "{}").is_err());
        let undeclared = emit("other", "{}").unwrap_err();
        assert!(
            undeclared.contains("not one of the sinks the manifest names"),
            "{undeclared}"
        );
        let unconfigured = emit("audit", "{}").unwrap_err();
        assert!(
            unconfigured.contains("no event sink named"),
            "{unconfigured}"
        );
        for bad in ["", "{", r#"{"a": 1} {"b": 2}"#, "{} trailing", "not json"] {
            assert!(emit("webhook", bad).is_err(), "{bad:?}");
        }
        let big = format!(r#""{}""#, "x".repeat(MAX_EVENT_PAYLOAD));
        assert!(emit("webhook", &big).is_err());
    }

    fn assignment(enrollment_id: &str, set_name: &str) -> SetAssignment {
        SetAssignment {
            enrollment_id: enrollment_id.into(),
            set_name: set_name.into(),
        }
    }

    #[test]
    fn an_assignment_names_a_channel_id_and_a_bounded_set_name() {
        for (id, set) in [
            ("00008030-001A2C3E0E38802E", "remediation"),
            (
                "A1B2C3D4-0000-1111-2222-333344445555:501",
                "com.example.passcode-v2_1",
            ),
            ("ENROLLMENT-ID", "s".repeat(128).as_str()),
        ] {
            let desc = check_assignment(&assignment(id, set)).unwrap();
            assert_eq!(desc, json!({"enrollment_id": id, "set_name": set}));
        }
        for (id, set) in [
            ("", "remediation"),
            ("has space", "remediation"),
            ("a/b", "remediation"),
            ("D:u:v", "remediation"),
            ("D".repeat(200).as_str(), "remediation"),
            ("D", ""),
            ("D", "two words"),
            ("D", "a/b"),
            ("D", "caf\u{e9}"),
            ("D", "s".repeat(129).as_str()),
            // A policy version's set is the policy's to assign, never a plugin's.
            ("D", "mdm.policy.1.2026.05"),
        ] {
            assert!(
                check_assignment(&assignment(id, set)).is_err(),
                "{id:?} {set:?}"
            );
        }
    }

    #[test]
    fn assignments_are_their_own_kinds_and_need_ddm_assign() {
        let assign = Action::AssignSet(assignment("D", "s"));
        let unassign = Action::UnassignSet(assignment("D", "s"));
        assert_eq!(
            (kind(&assign), kind(&unassign)),
            ("assign-set", "unassign-set")
        );
        assert_eq!(needs(&assign), Capability::DdmAssign);
        assert_eq!(needs(&unassign), Capability::DdmAssign);
    }
}
