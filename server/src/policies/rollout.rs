//! Rolling a policy's version out in stages: activation, the promotions a round makes while the gates
//! hold, the halt and rollback when one breaks, and what admins do by hand (pause, resume, promote, roll
//! back). Every step checks the version's stored bundle against its digest first, and is audited; the
//! devices it gives or takes the version are settled ([`super::holdings`]) in the step's transaction.
//! Plugins are asked before a round promotes (`decide-promotion`) and told of each step once it
//! committed (`on-rollout`).

use super::admin::{audit, verify_stored, Actor, PolicyError};
use super::gates::{self, Counts, Decision, Figures, Gates};
use super::holdings::{plan_of, settle, stage_of, state_of, State};
use super::materialize::{self, set_name, set_prefix};
use super::reconciler;
use super::stages::{check_shares, Plan, Stage};
use crate::clock::to_rfc3339;
use crate::config::PoliciesConfig;
use crate::ddm::views::{ReasonCount, ReasonTally};
use crate::metrics::Metrics;
use crate::plugins::event::{GateValues, PromotionRequest, RolloutEvent, RolloutInfo, StageCounts};
use crate::plugins::{new_event_id, Hook, PluginHost};
use crate::protocol::ddm::Category;
use crate::storage::ddm::declarations::{self, Owner};
use crate::storage::ddm::sets;
use crate::storage::profiles::{self as store_profiles, DeviceProfile, VersionProfile};
use crate::storage::rollouts::{self, Rollout};
use crate::storage::{groups, outbox, policies, Storage, StorageError};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// Who acts when a round moves a rollout on by itself, in the audit log.
pub const ROUND_ACTOR: &str = "rollout";

/// What `POST /api/v1/policies/{id}/activate` takes.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// The version to roll out (a label uploaded before).
    #[schema(min_length = 1, max_length = 64)]
    pub version: String,
    /// How long each stage runs before it may be promoted (default `policies.default_soak_secs`).
    #[schema(minimum = 0, maximum = 31_536_000)]
    pub soak_secs: Option<u64>,
    /// The pilot's share of the target group in percent (default `policies.pilot_percent`).
    #[schema(minimum = 1, maximum = 100)]
    pub pilot_percent: Option<u32>,
    /// The pilot's and canary's share together (default `policies.canary_percent`).
    #[schema(minimum = 1, maximum = 100)]
    pub canary_percent: Option<u32>,
    /// Explicit stages instead of shares: this group's members are the pilot (with `canary_group`).
    #[schema(minimum = 1)]
    pub pilot_group: Option<i64>,
    /// This group's members are the canary (with `pilot_group`).
    #[schema(minimum = 1)]
    pub canary_group: Option<i64>,
}

/// The longest soak an activation may ask for: a year.
const MAX_SOAK_SECS: u64 = 31_536_000;

/// What an admin does to a rollout by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// No promotion until resumed (a broken gate still halts it).
    Pause,
    Resume,
    /// Enter the next stage now, whatever the gates and soak say.
    Promote,
    /// Give every device the version before this one back.
    Rollback,
}

impl Control {
    pub fn parse(s: &str) -> Option<Control> {
        match s {
            "pause" => Some(Control::Pause),
            "resume" => Some(Control::Resume),
            "promote" => Some(Control::Promote),
            "rollback" => Some(Control::Rollback),
            _ => None,
        }
    }
}

/// Rollouts, as the API and the background round drive them.
pub struct Rollouts {
    storage: Storage,
    config: PoliciesConfig,
    metrics: Arc<Metrics>,
    plugins: Arc<PluginHost>,
}

/// What an activation did.
#[derive(Debug, Clone)]
pub struct Activated {
    pub rollout: Rollout,
    /// False: the version was the one already rolling out (or rolled out); nothing changed.
    pub started: bool,
}

impl Rollouts {
    pub fn new(
        storage: Storage,
        config: PoliciesConfig,
        metrics: Arc<Metrics>,
        plugins: Arc<PluginHost>,
    ) -> Self {
        Self {
            storage,
            config,
            metrics,
            plugins,
        }
    }

    /// Start rolling a version out: its declarations stored as the policy's, its pilot reached. Activating
    /// the version already rolling out, or rolled out, changes nothing; another while one is under way
    /// is refused.
    pub async fn activate(
        &self,
        policy_id: i64,
        a: Activation,
        actor: Actor,
        now: i64,
    ) -> Result<Activated, PolicyError> {
        let read = self.storage.read();
        let policy = policies::find(&read, policy_id)
            .await?
            .ok_or(PolicyError::NotFound(policy_id))?;
        let current = rollouts::find(&read, policy_id).await?;
        if let Some(c) = &current {
            let state = state_of(c);
            if c.version == a.version && state != State::RolledBack {
                return Ok(Activated {
                    rollout: c.clone(),
                    started: false,
                });
            }
            if !state.is_over() {
                return Err(PolicyError::Busy(format!(
                    "version {} is rolling out ({}): roll it back or let it complete first",
                    c.version,
                    state.as_str()
                )));
            }
        }
        let row = self.new_rollout(policy_id, &a, &current, &actor, now)?;
        let bundle = self.checked(policy_id, &a.version, None, now).await?;
        let profiles = version_profiles(policy_id, &a.version, &bundle, now)?;
        let decls = materialize::declarations(policy_id, &bundle.declarations)
            .map_err(|e| PolicyError::Invalid(e.to_string()))?;
        let target = policy.target_group;
        let digest = bundle.digest.clone();
        let sinks = self.config.event_sinks.clone();
        let by = actor.clone();
        let activated = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    for g in [row.pilot_group, row.canary_group].into_iter().flatten() {
                        if groups::find(txn, g).await?.is_none() {
                            return Err(PolicyError::UnknownGroup(g));
                        }
                    }
                    let mut ids = Vec::with_capacity(decls.len());
                    for m in &decls {
                        own(txn, policy_id, &m.declaration, now).await?;
                        ids.push(m.declaration.identifier.clone());
                    }
                    let new_set = set_name(policy_id, &row.version);
                    sets::put(txn, &new_set, &ids, now).await?;
                    let mut keep = vec![new_set];
                    keep.extend(row.previous.as_deref().map(|v| set_name(policy_id, v)));
                    rollouts::prune(txn, policy_id, &set_prefix(policy_id), &keep).await?;
                    store_profiles::prune_versions(txn, policy_id, &keep).await?;
                    store_profiles::put_version(txn, profiles).await?;
                    if !rollouts::start(txn, row.clone(), current.as_ref()).await? {
                        return Err(PolicyError::Busy(
                            "the policy's rollout changed meanwhile: read it again".into(),
                        ));
                    }
                    let synced = settle(txn, &row, target, None, now).await?;
                    let detail = json!({"version": row.version, "previous": row.previous, "sha256": digest,
                        "soak_secs": row.soak_secs, "plan": plan_json(&row), "synced": synced.queued});
                    record(txn, &sinks, now, actor, "policy.activated", policy_id, detail).await?;
                    Ok(Activated {
                        rollout: row,
                        started: true,
                    })
                })
            })
            .await?;
        self.after_step("policy.activated", &activated.rollout, None, by, now)
            .await;
        Ok(activated)
    }

    /// The rollout an activation starts, checked.
    fn new_rollout(
        &self,
        policy_id: i64,
        a: &Activation,
        current: &Option<Rollout>,
        actor: &str,
        now: i64,
    ) -> Result<Rollout, PolicyError> {
        let cfg = &self.config;
        let soak_secs = a.soak_secs.unwrap_or(cfg.default_soak_secs);
        if soak_secs > MAX_SOAK_SECS {
            return Err(PolicyError::Invalid(format!(
                "soak_secs is at most {MAX_SOAK_SECS}"
            )));
        }
        let pilot_percent = a.pilot_percent.unwrap_or(cfg.pilot_percent);
        let canary_percent = a.canary_percent.unwrap_or(cfg.canary_percent);
        check_shares(pilot_percent, canary_percent).map_err(PolicyError::Invalid)?;
        let (pilot_group, canary_group) = match (a.pilot_group, a.canary_group) {
            (Some(p), Some(c)) if p > 0 && c > 0 => (Some(p), Some(c)),
            (None, None) => (None, None),
            _ => {
                return Err(PolicyError::Invalid(
                    "pilot_group and canary_group are given together (positive group ids)".into(),
                ))
            }
        };
        let previous = current.as_ref().and_then(|c| match state_of(c) {
            State::Completed => Some(c.version.clone()),
            _ => c.previous.clone(),
        });
        Ok(Rollout {
            policy_id,
            version: a.version.clone(),
            previous,
            stage: Stage::Pilot.index(),
            state: State::Running.as_str().into(),
            reason: None,
            stage_started_at: now,
            soak_secs: soak_secs as i64,
            max_failure_ratio: cfg.max_failure_ratio,
            min_reported_ratio: cfg.min_reported_ratio,
            pilot_percent: pilot_percent as i32,
            canary_percent: canary_percent as i32,
            pilot_group,
            canary_group,
            started_by: actor.to_string(),
            started_at: now,
            updated_at: now,
        })
    }

    /// A version's bundle, read back and checked against its digest. A mismatch (the stored bytes
    /// changed under the database's refusal) is counted, audited and halts `halting` if given.
    async fn checked(
        &self,
        policy_id: i64,
        version: &str,
        halting: Option<&Rollout>,
        now: i64,
    ) -> Result<super::bundle::Bundle, PolicyError> {
        let v = policies::find_version(&self.storage.read(), policy_id, version)
            .await?
            .ok_or_else(|| PolicyError::UnknownVersion(version.to_string()))?;
        let why = match verify_stored(v).await {
            Ok((_, bundle)) => return Ok(bundle),
            Err(PolicyError::Storage(StorageError::Corrupt(why))) => why,
            Err(PolicyError::Bundle(e)) => format!("the stored bundle no longer reads: {e}"),
            Err(other) => return Err(other),
        };
        self.metrics.policy_versions_tampered.inc();
        tracing::error!(policy_id, version, error = %why, "policy version does not match its digest");
        let version = version.to_string();
        let halting = halting.cloned();
        let reason = format!("version {version} failed its digest check: {why}");
        let detail = json!({"version": version, "error": why});
        let stopped = reason.clone();
        let sinks = self.config.event_sinks.clone();
        let action = "policy.version_tampered";
        let halted = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let mut halted = None;
                    if let Some(from) = halting {
                        let to = Rollout {
                            state: State::Halted.as_str().into(),
                            reason: Some(stopped),
                            updated_at: now,
                            ..from.clone()
                        };
                        if rollouts::move_on(txn, &from, &to).await? {
                            halted = Some(to);
                        }
                    }
                    let actor = ROUND_ACTOR.to_string();
                    record(txn, &sinks, now, actor, action, policy_id, detail).await?;
                    Ok::<_, PolicyError>(halted)
                })
            })
            .await?;
        if let Some(to) = halted {
            let why = Some(reason.clone());
            self.after_step(action, &to, why, ROUND_ACTOR.into(), now)
                .await;
        }
        Err(PolicyError::Tampered(reason))
    }

    /// One look at every running rollout: each is promoted, halted or left as its gates say. Returns
    /// the steps taken, by policy.
    pub async fn round(&self, now: i64) -> Result<Vec<(i64, Step)>, PolicyError> {
        let running = rollouts::in_state(&self.storage.read(), State::Running.as_str()).await?;
        let mut steps = Vec::new();
        let mut devices = Counts::default();
        for r in running {
            match self.advance(r, &mut devices, now).await {
                Ok(Some(step)) => steps.push((step.policy_id, step)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "a rollout round failed for one policy");
                }
            }
        }
        let m = &self.metrics;
        m.policy_devices(devices.succeeded, devices.failed, devices.pending);
        Ok(steps)
    }

    /// Move one running rollout on if its gates, then the plugins, say so; its devices are added to
    /// `devices`.
    async fn advance(
        &self,
        r: Rollout,
        devices: &mut Counts,
        now: i64,
    ) -> Result<Option<Step>, PolicyError> {
        let figures = figures(&self.storage.read(), &r).await?.0;
        figures.stages.values().for_each(|c| devices.add(*c));
        match gates::decide(
            &gates_of(&r),
            &figures,
            stage_of(&r),
            r.stage_started_at,
            now,
        ) {
            Decision::Wait(_) => Ok(None),
            Decision::Halt(why) => self
                .roll_back(&r, Some(why), ROUND_ACTOR.into(), now)
                .await
                .map(Some),
            Decision::Promote => match self.plugins_hold(&r, &figures, now).await? {
                Some(why) => self.hold(&r, why, now).await,
                None => self.promote(&r, ROUND_ACTOR.into(), now).await.map(Some),
            },
        }
    }

    /// Why the plugins subscribed to `decide-promotion` hold this rollout's promotion, if they do.
    async fn plugins_hold(
        &self,
        r: &Rollout,
        figures: &Figures,
        now: i64,
    ) -> Result<Option<String>, PolicyError> {
        if self.plugins.subscribed(Hook::DecidePromotion).is_empty() {
            return Ok(None);
        }
        let stage = stage_of(r);
        let request = PromotionRequest {
            event_id: new_event_id(),
            rollout: self.info(r).await?,
            next_stage: stage.next(),
            stages: Stage::ALL
                .iter()
                .filter(|s| **s <= stage)
                .map(|s| stage_counts(*s, figures.of(*s)))
                .collect(),
            gates: gate_values(r, figures),
            now_unix_ms: now,
        };
        Ok(self.plugins.decide_promotion(request).await?)
    }

    /// Keep a rollout in its stage for the plugins' reason: written, audited and told to plugins when
    /// the reason is new; nothing when the last round held it for the same one.
    async fn hold(
        &self,
        from: &Rollout,
        why: String,
        now: i64,
    ) -> Result<Option<Step>, PolicyError> {
        if from.reason.as_deref() == Some(why.as_str()) {
            return Ok(None);
        }
        let to = Rollout {
            reason: Some(why.clone()),
            updated_at: now,
            ..from.clone()
        };
        let detail = json!({"version": from.version, "reason": why});
        let action = "policy.rollout_held";
        self.step(from, to, action, detail, ROUND_ACTOR.into(), None, now)
            .await
            .map(Some)
    }

    /// A rollout as plugins see it.
    async fn info(&self, r: &Rollout) -> Result<RolloutInfo, PolicyError> {
        let policy = policies::find(&self.storage.read(), r.policy_id)
            .await?
            .ok_or(PolicyError::NotFound(r.policy_id))?;
        Ok(RolloutInfo {
            policy_id: r.policy_id,
            policy_name: policy.name,
            version: r.version.clone(),
            previous: r.previous.clone(),
            stage: stage_of(r),
            state: state_of(r).as_str().into(),
            started_by: r.started_by.clone(),
            started_unix_ms: r.started_at,
            stage_started_unix_ms: r.stage_started_at,
        })
    }

    /// Count a step that committed and tell the plugins subscribed to `on-rollout`. The step stands
    /// whatever becomes of this: a failure is logged (sinks get every step durably through the outbox).
    async fn after_step(
        &self,
        action: &str,
        to: &Rollout,
        reason: Option<String>,
        actor: Actor,
        now: i64,
    ) {
        self.metrics.rollout_step(action);
        if self.plugins.subscribed(Hook::OnRollout).is_empty() {
            return;
        }
        let told = async {
            let event = RolloutEvent {
                event_id: new_event_id(),
                action: action.to_string(),
                rollout: self.info(to).await?,
                reason,
                actor,
                at_unix_ms: now,
            };
            self.plugins.on_rollout(event).await?;
            Ok::<_, PolicyError>(())
        };
        if let Err(e) = told.await {
            tracing::error!(policy_id = to.policy_id, action, error = %e, "telling plugins of a rollout step failed");
        }
    }

    /// An admin's action on a policy's rollout.
    pub async fn control(
        &self,
        policy_id: i64,
        what: Control,
        actor: Actor,
        now: i64,
    ) -> Result<Step, PolicyError> {
        let r = rollouts::find(&self.storage.read(), policy_id)
            .await?
            .ok_or(PolicyError::NoRollout(policy_id))?;
        let state = state_of(&r);
        let refuse = |why: &str| {
            Err(PolicyError::Busy(format!(
                "the rollout of version {} is {}: {why}",
                r.version,
                state.as_str()
            )))
        };
        match what {
            Control::Pause if state == State::Running => {
                self.set_state(&r, State::Paused, "policy.rollout_paused", actor, now)
                    .await
            }
            Control::Pause => refuse("only a running rollout can be paused"),
            Control::Resume if state == State::Paused => {
                self.set_state(&r, State::Running, "policy.rollout_resumed", actor, now)
                    .await
            }
            Control::Resume => refuse("only a paused rollout can be resumed"),
            Control::Promote if !state.is_over() => self.promote(&r, actor, now).await,
            Control::Promote => refuse("it is over"),
            Control::Rollback if state != State::RolledBack => {
                self.roll_back(&r, None, actor, now).await
            }
            Control::Rollback => refuse("it was rolled back already"),
        }
    }

    async fn set_state(
        &self,
        from: &Rollout,
        state: State,
        action: &'static str,
        actor: Actor,
        now: i64,
    ) -> Result<Step, PolicyError> {
        let to = Rollout {
            state: state.as_str().into(),
            reason: None,
            updated_at: now,
            ..from.clone()
        };
        self.step(from, to, action, json!({}), actor, None, now)
            .await
    }

    /// Enter the next stage (or, at the full stage, complete), the version checked first.
    async fn promote(&self, from: &Rollout, actor: Actor, now: i64) -> Result<Step, PolicyError> {
        self.checked(from.policy_id, &from.version, Some(from), now)
            .await?;
        let (to, action) = match stage_of(from).next() {
            Some(next) => (
                Rollout {
                    stage: next.index(),
                    stage_started_at: now,
                    reason: None,
                    updated_at: now,
                    ..from.clone()
                },
                "policy.rollout_promoted",
            ),
            None => (
                Rollout {
                    state: State::Completed.as_str().into(),
                    reason: None,
                    updated_at: now,
                    ..from.clone()
                },
                "policy.rollout_completed",
            ),
        };
        let detail = json!({"version": from.version, "from": stage_of(from), "to": stage_of(&to)});
        let target = self.target_of(from.policy_id).await?;
        self.step(from, to, action, detail, actor, Some(target), now)
            .await
    }

    /// Give every device the previous version back (none, if this was the first), the previous version
    /// checked first. `why`: the gate that broke, when a round does it.
    async fn roll_back(
        &self,
        from: &Rollout,
        why: Option<String>,
        actor: Actor,
        now: i64,
    ) -> Result<Step, PolicyError> {
        if let Some(previous) = &from.previous {
            self.checked(from.policy_id, previous, Some(from), now)
                .await?;
        }
        if let Some(why) = &why {
            tracing::warn!(policy_id = from.policy_id, version = %from.version, reason = %why, "rollout halted and rolled back");
        }
        let to = Rollout {
            state: State::RolledBack.as_str().into(),
            reason: why.clone(),
            updated_at: now,
            ..from.clone()
        };
        let detail = json!({"version": from.version, "previous": from.previous, "stage": stage_of(from), "reason": why});
        let target = self.target_of(from.policy_id).await?;
        self.step(
            from,
            to,
            "policy.rollout_rolled_back",
            detail,
            actor,
            Some(target),
            now,
        )
        .await
    }

    async fn target_of(&self, policy_id: i64) -> Result<i64, PolicyError> {
        Ok(policies::find(&self.storage.read(), policy_id)
            .await?
            .ok_or(PolicyError::NotFound(policy_id))?
            .target_group)
    }

    /// Write a rollout's move from `from` to `to` if no one moved it first, settle the target group's
    /// devices (`settling`: the target group, when the move changes who holds what), and audit it.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        from: &Rollout,
        to: Rollout,
        action: &'static str,
        mut detail: serde_json::Value,
        actor: Actor,
        settling: Option<i64>,
        now: i64,
    ) -> Result<Step, PolicyError> {
        let from = from.clone();
        let sinks = self.config.event_sinks.clone();
        let (by, moved) = (actor.clone(), to.clone());
        let step = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    if !rollouts::move_on(txn, &from, &to).await? {
                        return Err(PolicyError::Busy(
                            "the rollout moved on meanwhile: read it again".into(),
                        ));
                    }
                    let queued = match settling {
                        Some(target) => settle(txn, &to, target, None, now).await?.queued,
                        None => 0,
                    };
                    detail["synced"] = json!(queued);
                    detail["state"] = json!(state_of(&to));
                    detail["stage"] = json!(stage_of(&to));
                    record(txn, &sinks, now, actor, action, to.policy_id, detail).await?;
                    Ok(Step {
                        policy_id: to.policy_id,
                        action,
                        state: state_of(&to),
                        stage: stage_of(&to),
                        synced: queued,
                    })
                })
            })
            .await?;
        self.after_step(action, &moved, moved.reason.clone(), by, now)
            .await;
        Ok(step)
    }

    /// A policy's rollout as the API shows it.
    pub async fn report(&self, policy_id: i64, now: i64) -> Result<Report, PolicyError> {
        let read = self.storage.read();
        let r = rollouts::find(&read, policy_id)
            .await?
            .ok_or(PolicyError::NoRollout(policy_id))?;
        let (figures, top_failure_reasons) = figures(&read, &r).await?;
        Ok(report(&r, &figures, top_failure_reasons, now))
    }
}

/// The `X-MDM-Plugin` of the events the server emits itself: no plugin can have it (plugin ids are
/// `[a-z0-9-]`).
pub const SERVER_EMITTER: &str = "mdm.server";

/// A rollout's step, in the audit log and, as an event whose topic is the audit action, to each of
/// `policies.event_sinks` (delivered after the step commits, like plugins' events). The event carries
/// the audit detail with the policy, the actor and the time.
#[allow(clippy::too_many_arguments)]
async fn record<C: ConnectionTrait>(
    c: &C,
    sinks: &[String],
    now: i64,
    actor: Actor,
    action: &str,
    policy_id: i64,
    detail: serde_json::Value,
) -> Result<(), PolicyError> {
    if !sinks.is_empty() {
        let mut payload = detail.clone();
        payload["policy_id"] = json!(policy_id);
        payload["actor"] = json!(actor);
        payload["at"] = json!(to_rfc3339(now));
        let payload = payload.to_string();
        let ordering = format!("policy:{policy_id}");
        for sink in sinks {
            let event_id = outbox::new_event_id();
            let event = outbox::NewEvent {
                event_id: &event_id,
                plugin_id: SERVER_EMITTER,
                sink,
                topic: action,
                payload: &payload,
                ordering_key: Some(&ordering),
                now,
                due_at: now,
            };
            c.execute_raw(event.insert_statement(c.get_database_backend()))
                .await?;
        }
    }
    audit(c, now, actor, action, policy_id, detail).await
}

/// A version's profiles as its devices are sent them ([`super::profile::delivered`]).
fn version_profiles(
    policy_id: i64,
    version: &str,
    bundle: &super::bundle::Bundle,
    now: i64,
) -> Result<Vec<VersionProfile>, PolicyError> {
    let set_name = set_name(policy_id, version);
    bundle
        .profiles
        .iter()
        .map(|p| {
            let bytes = bundle.files.get(&p.path).ok_or_else(|| {
                PolicyError::Invalid(format!("the bundle lost its profile {}", p.path))
            })?;
            let d = super::profile::delivered(bytes, p)
                .map_err(|e| PolicyError::Invalid(format!("profile {}: {e}", p.path)))?;
            Ok(VersionProfile {
                set_name: set_name.clone(),
                identifier: p.identifier.clone(),
                policy_id,
                payload_uuid: d.payload_uuid,
                sha256: p.sha256.clone(),
                platforms: p.platforms.join(","),
                content: d.content,
                created_at: now,
            })
        })
        .collect()
}

/// A declaration of a policy's version stored as the policy's. An identifier an admin (or another
/// policy) holds is a conflict: the digest in it makes that all but impossible except on purpose.
async fn own<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    d: &crate::protocol::ddm::Declaration,
    now: i64,
) -> Result<(), PolicyError> {
    if let Some(existing) = declarations::get(c, &d.identifier).await? {
        if Owner::of(&existing) != Owner::Policy(policy_id) {
            return Err(PolicyError::Busy(format!(
                "declaration identifier {} is taken by another owner",
                d.identifier
            )));
        }
    }
    declarations::put(c, d, Owner::Policy(policy_id), now).await?;
    Ok(())
}

fn gates_of(r: &Rollout) -> Gates {
    Gates {
        max_failure_ratio: r.max_failure_ratio,
        min_reported_ratio: r.min_reported_ratio,
        soak_ms: r.soak_secs.saturating_mul(1000),
    }
}

fn stage_counts(stage: Stage, c: Counts) -> StageCounts {
    StageCounts {
        stage,
        devices: c.devices,
        succeeded: c.succeeded,
        failed: c.failed,
        pending: c.pending,
    }
}

/// The gate values now against their thresholds, as the API and plugins see them.
fn gate_values(r: &Rollout, figures: &Figures) -> GateValues {
    GateValues {
        failure_ratio: figures.total().failure_ratio(),
        max_failure_ratio: r.max_failure_ratio,
        reported_ratio: figures.of(stage_of(r)).reported_ratio(),
        min_reported_ratio: r.min_reported_ratio,
    }
}

fn plan_json(r: &Rollout) -> serde_json::Value {
    match plan_of(r) {
        Plan::Shares {
            pilot_percent,
            canary_percent,
        } => json!({"pilot_percent": pilot_percent, "canary_percent": canary_percent}),
        Plan::Groups { pilot, canary } => json!({"pilot_group": pilot, "canary_group": canary}),
    }
}

/// A step a rollout took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Step {
    pub policy_id: i64,
    /// The audit action: `policy.rollout_promoted`, `policy.rollout_completed`,
    /// `policy.rollout_rolled_back`, `policy.rollout_paused`, `policy.rollout_resumed`,
    /// `policy.rollout_held`.
    pub action: &'static str,
    pub state: State,
    pub stage: Stage,
    /// Devices queued a DDM sync by the step.
    pub synced: usize,
}

/// Why a device failed a version.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// A declaration reported invalid, with its reasons (the JSON array the device gave).
    Declaration(String),
    /// A profile failed, with its reason code.
    Profile(String),
}

/// How a device stands with a version: every declaration verified (`valid`, the current ServerToken,
/// and active where a device activates it) and every profile verified, any declaration reported invalid
/// or any profile failed, or neither yet.
fn classify(
    items: &[(String, Category, String)],
    reported: &HashMap<&str, &rollouts::Reported>,
    profiles: &[(String, String)],
    tracked: &HashMap<&str, &DeviceProfile>,
) -> (Counts, Option<Failure>) {
    let mut failed_with = None;
    let mut verified = true;
    for (identifier, category, token) in items {
        match reported.get(identifier.as_str()) {
            Some(r) if r.server_token == *token && r.valid == "invalid" => {
                failed_with.get_or_insert(Failure::Declaration(r.reasons.clone()));
            }
            Some(r) if r.server_token == *token && r.valid == "valid" => {
                let activated = matches!(category, Category::Activation | Category::Configuration);
                verified &= r.active || !activated;
            }
            _ => verified = false,
        }
    }
    for (identifier, payload_uuid) in profiles {
        match tracked.get(identifier.as_str()) {
            Some(t) if t.payload_uuid != *payload_uuid => verified = false,
            Some(t) => match reconciler::State::of(t) {
                reconciler::State::Verified | reconciler::State::Skipped => {}
                reconciler::State::Failed => {
                    let code = reconciler::reason_code(t.error.as_deref());
                    failed_with.get_or_insert(Failure::Profile(code));
                }
                _ => verified = false,
            },
            None => verified = false,
        }
    }
    let mut c = Counts {
        devices: 1,
        ..Counts::default()
    };
    match (&failed_with, verified) {
        (Some(_), _) => c.failed = 1,
        (None, true) => c.succeeded = 1,
        (None, false) => c.pending = 1,
    }
    (c, failed_with)
}

/// Where the devices a rollout reached stand, by stage, and the most frequent reasons of failures.
async fn figures<C: ConnectionTrait>(
    c: &C,
    r: &Rollout,
) -> Result<(Figures, Vec<ReasonCount>), PolicyError> {
    let set = set_name(r.policy_id, &r.version);
    let items: Vec<(String, Category, String)> =
        sets::declarations_of(c, std::slice::from_ref(&set))
            .await?
            .into_iter()
            .map(|m| (m.identifier, m.category, m.server_token))
            .collect();
    let identifiers: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    let reports = rollouts::reports(c, r.policy_id, &identifiers).await?;
    let mut by_device: HashMap<&str, HashMap<&str, &rollouts::Reported>> = HashMap::new();
    for rep in &reports {
        by_device
            .entry(rep.device_id.as_str())
            .or_default()
            .insert(rep.identifier.as_str(), rep);
    }
    let profiles = store_profiles::of_version(c, &set).await?;
    let tracked = if profiles.is_empty() {
        Vec::new()
    } else {
        store_profiles::of_set(c, &set).await?
    };
    let mut tracked_by: HashMap<&str, HashMap<&str, &DeviceProfile>> = HashMap::new();
    for t in &tracked {
        tracked_by
            .entry(t.device_id.as_str())
            .or_default()
            .insert(t.identifier.as_str(), t);
    }
    let mut figures = Figures::default();
    let mut tally = ReasonTally::default();
    let (none, untracked) = (HashMap::new(), HashMap::new());
    for (device, stage) in rollouts::reached(c, r.policy_id).await? {
        let stage = Stage::from_index(stage).unwrap_or(Stage::Full);
        let (counts, failed) = classify(
            &items,
            by_device.get(device.as_str()).unwrap_or(&none),
            &profiles,
            tracked_by.get(device.as_str()).unwrap_or(&untracked),
        );
        figures.stages.entry(stage).or_default().add(counts);
        match failed {
            Some(Failure::Declaration(reasons)) if reasons == "[]" => tally.count("unknown"),
            Some(Failure::Declaration(reasons)) => tally.add(&reasons),
            Some(Failure::Profile(code)) => tally.count(&code),
            None => {}
        }
    }
    Ok((figures, tally.top(10)))
}

/// A rollout as `GET /api/v1/policies/{id}/rollout` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub policy_id: i64,
    pub version: String,
    /// What the devices not reached hold (and get back on rollback); null for a first version.
    pub previous: Option<String>,
    pub state: State,
    /// The stage entered last.
    pub stage: Stage,
    /// Why it halted or was rolled back by a round (a broken gate, a failed digest check), or, while
    /// running, why a plugin holds its promotion.
    pub reason: Option<String>,
    /// While running: what a promotion waits for now, if anything.
    pub waiting_for: Option<String>,
    /// While running or paused, before completion: when the current stage's soak ends (the earliest
    /// promotion).
    pub next_promotion_at: Option<String>,
    /// The stages: devices reached by each, and how they stand.
    pub stages: Vec<StageReport>,
    pub gates: GateReport,
    /// The most frequent reason codes among failed devices, most frequent first (at most 10).
    pub top_failure_reasons: Vec<ReasonCount>,
    /// `{"pilot_percent", "canary_percent"}` or `{"pilot_group", "canary_group"}`.
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
    pub soak_secs: i64,
    pub started_by: String,
    pub started_at: String,
    pub stage_started_at: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StageReport {
    pub stage: Stage,
    /// Whether the rollout entered it.
    pub entered: bool,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GateReport {
    /// Failed among reporting devices, over every stage reached.
    pub failure_ratio: f64,
    /// It halts the rollout when reached.
    pub max_failure_ratio: f64,
    /// Reporting among the current stage's devices.
    pub reported_ratio: f64,
    /// Promotion waits for it.
    pub min_reported_ratio: f64,
}

impl From<GateValues> for GateReport {
    fn from(g: GateValues) -> Self {
        Self {
            failure_ratio: g.failure_ratio,
            max_failure_ratio: g.max_failure_ratio,
            reported_ratio: g.reported_ratio,
            min_reported_ratio: g.min_reported_ratio,
        }
    }
}

fn report(r: &Rollout, figures: &Figures, top: Vec<ReasonCount>, now: i64) -> Report {
    let state = state_of(r);
    let stage = stage_of(r);
    let waiting_for = match state {
        State::Running => {
            match gates::decide(&gates_of(r), figures, stage, r.stage_started_at, now) {
                Decision::Wait(w) => Some(w),
                // The gates hold; a plugin may not (its reason, kept by the round).
                Decision::Promote => r.reason.clone(),
                Decision::Halt(_) => None,
            }
        }
        _ => None,
    };
    let next_promotion_at = matches!(state, State::Running | State::Paused)
        .then(|| to_rfc3339(r.stage_started_at.saturating_add(r.soak_secs * 1000)));
    Report {
        policy_id: r.policy_id,
        version: r.version.clone(),
        previous: r.previous.clone(),
        state,
        stage,
        reason: r.reason.clone(),
        waiting_for,
        next_promotion_at,
        stages: Stage::ALL
            .iter()
            .map(|s| StageReport {
                stage: *s,
                entered: *s <= stage,
                counts: figures.of(*s),
            })
            .collect(),
        gates: gate_values(r, figures).into(),
        top_failure_reasons: top,
        plan: plan_json(r),
        soak_secs: r.soak_secs,
        started_by: r.started_by.clone(),
        started_at: to_rfc3339(r.started_at),
        stage_started_at: to_rfc3339(r.stage_started_at),
    }
}
