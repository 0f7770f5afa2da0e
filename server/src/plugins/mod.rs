//! The WebAssembly plugin host. The only module that knows wasmtime.
//!
//! Plugins are stored in the database (so every replica runs the same set), compiled once per revision
//! (and cached on disk), and called through `PluginHost` at each check-in, command result, enrollment
//! decision, schedule tick, declarative management status change, GetToken check-in, rollout promotion
//! and rollout step. Hooks return actions; the caller applies them in its own transaction.

pub mod actions;
pub mod admin;
mod bindings;
mod breaker;
mod capabilities;
pub mod convert;
pub mod delivery;
mod engine;
pub mod event;
mod host;
pub mod inspect;
pub mod manifest;
mod rollouts;
pub mod runtime;
pub mod scaffold;
pub mod sinks;
mod store_backend;
pub mod testing;
mod token;
pub mod try_hook;

pub use bindings::WIT_VERSION;
pub use capabilities::http::{HttpError, HttpResponse};
pub use capabilities::inventory::DeviceInfo;
pub use event::{Action, Decision};
pub use host::LogLine;
pub use manifest::{Capability, CheckinMessageKind, FailurePolicy, Hook, Manifest};
pub use runtime::{Fault, HookInput, HookOutput, LoadedPlugin};
pub use token::MAX_TOKEN_BYTES;

use crate::clock::SharedClock;
use crate::config::PluginsConfig;
use crate::metrics::{Metrics, PluginCallLabels, PluginHookLabels, PluginLabels};
use crate::storage::plugin_audit::AuditRow;
use crate::storage::{plugin_audit, plugins as repo, Storage, StorageError};
use actions::ActionContext;
use breaker::Breaker;
use capabilities::HostBackend;
use engine::PluginEngine;
use runtime::Runtime;
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tracing::Instrument;

/// Why a stored or uploaded plugin could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("not a valid WebAssembly component: {0:#}")]
    Compile(wasmtime::Error),
    #[error(transparent)]
    Inspect(#[from] inspect::InspectError),
    #[error("the component's imports cannot be satisfied: {0:#}")]
    Link(wasmtime::Error),
    #[error("compilation task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What running one hook across plugins produced.
#[derive(Default)]
pub struct HookRun {
    /// Each plugin's actions, in run order.
    pub actions: Vec<(Arc<LoadedPlugin>, Vec<Action>)>,
    /// Decisions and faults, already known before anything is applied.
    pub audit: Vec<AuditRow>,
    /// Set when a plugin with a fail-closed policy failed, or (for enrollment) denied.
    pub refused: Option<String>,
}

/// What a plugin answered a deciding hook (`decide-enrollment`, `decide-promotion`).
pub(crate) enum Verdict {
    Allow,
    /// No, with the plugin's reason.
    Refuse(String),
    Abstain,
}

/// How a deciding hook's refusals read: the audit outcome (`deny`, `hold`) and the start of the reason
/// given (`enrollment denied by plugin`).
pub(crate) struct Words {
    pub refuse: &'static str,
    pub refused_by: &'static str,
}

/// Identifies the event in audit rows.
#[derive(Clone, Copy)]
pub struct EventScope<'a> {
    pub event_id: &'a str,
    pub device_id: Option<&'a str>,
    pub enrollment_id: Option<&'a str>,
}

pub struct PluginHost {
    runtime: Runtime,
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    loaded: RwLock<Arc<Vec<Arc<LoadedPlugin>>>>,
    reload_lock: tokio::sync::Mutex<()>,
    breaker: Breaker,
    sinks: Arc<sinks::Sinks>,
    /// Where committed events go for delivery by this process, when it delivers events
    /// ([`PluginHost::deliver_here`]).
    handoff: std::sync::OnceLock<delivery::Handoff>,
}

/// One plugin audit row: what a plugin decided, asked for or suffered, and what became of it.
pub fn audit_row(
    plugin: &str,
    hook: &str,
    scope: EventScope<'_>,
    kind: &str,
    outcome: &str,
    detail: serde_json::Value,
    now: i64,
) -> AuditRow {
    AuditRow {
        id: 0,
        plugin_id: plugin.to_string(),
        hook: hook.to_string(),
        event_id: scope.event_id.to_string(),
        device_id: scope.device_id.map(str::to_string),
        enrollment_id: scope.enrollment_id.map(str::to_string),
        kind: kind.to_string(),
        outcome: outcome.to_string(),
        detail: detail.to_string(),
        created_at: now,
    }
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl PluginHost {
    /// A host over the database; `cache_dir` keeps compiled components across restarts.
    pub fn new(
        cfg: &PluginsConfig,
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        cache_dir: Option<std::path::PathBuf>,
    ) -> wasmtime::Result<Arc<Self>> {
        let backend = Arc::new(store_backend::StoreBackend::new(
            storage.clone(),
            clock.clone(),
            metrics.clone(),
        ));
        Self::with_backend(cfg, storage, clock, metrics, cache_dir, backend)
    }

    fn with_backend(
        cfg: &PluginsConfig,
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        cache_dir: Option<std::path::PathBuf>,
        backend: Arc<dyn HostBackend>,
    ) -> wasmtime::Result<Arc<Self>> {
        let engine = PluginEngine::new(cache_dir, cfg.max_concurrent)?;
        Ok(Arc::new(Self {
            runtime: Runtime::new(engine, backend, cfg.max_concurrent),
            storage,
            clock,
            metrics,
            loaded: RwLock::new(Arc::new(Vec::new())),
            reload_lock: tokio::sync::Mutex::new(()),
            breaker: Breaker::new(
                cfg.quarantine_after_faults,
                cfg.quarantine_window_secs as i64 * 1000,
            ),
            sinks: Arc::new(sinks::Sinks::new(cfg.sinks.clone())),
            handoff: std::sync::OnceLock::new(),
        }))
    }

    /// From now on this process delivers the events its own check-ins commit, through `handoff`: they
    /// are written held for it ([`delivery::LEASE_MS`]) and handed over on commit, so delivery needs no
    /// lease and no read of what was just written. Without it, events are written due at once for
    /// whichever worker leases them.
    pub fn deliver_here(&self, handoff: delivery::Handoff) {
        let _ = self.handoff.set(handoff);
    }

    /// After the transaction that wrote them commits: hand `events` over for delivery. One that
    /// cannot be handed over stays held in the outbox and any worker delivers it when its hold ends.
    pub fn events_committed(&self, events: Vec<crate::storage::outbox::OutboxEvent>) {
        if let Some(h) = self.handoff.get() {
            // Only those written held for this process: one written due (before the handoff was set)
            // is any worker's, and handing it over too could deliver it twice.
            h.send(
                events
                    .into_iter()
                    .filter(|e| e.next_attempt_at > e.created_at)
                    .collect(),
            );
        }
    }

    fn event_hold_ms(&self) -> i64 {
        if self.handoff.get().is_some() {
            delivery::LEASE_MS
        } else {
            0
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The plugins loaded now (in-flight calls keep the list they started with).
    pub fn loaded(&self) -> Arc<Vec<Arc<LoadedPlugin>>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Active plugins subscribed to `hook`, in run order (priority, then id).
    pub fn subscribed(&self, hook: Hook) -> Vec<Arc<LoadedPlugin>> {
        self.loaded()
            .iter()
            .filter(|p| p.active() && p.manifest.subscribes(hook))
            .cloned()
            .collect()
    }

    /// Active plugins whose `on-checkin` hears this message (their manifests' `checkins`), in run order.
    pub fn hearing_checkin(&self, m: CheckinMessageKind) -> Vec<Arc<LoadedPlugin>> {
        self.loaded()
            .iter()
            .filter(|p| p.active() && p.manifest.hears_checkin(m))
            .cloned()
            .collect()
    }

    /// Bring the loaded set in line with the database: compile what changed, drop what was deleted, swap
    /// atomically. Cheap when nothing changed (one small query).
    pub async fn reload(&self) -> Result<(), StorageError> {
        let _guard = self.reload_lock.lock().await;
        self.sinks.reload(&self.storage).await?;
        let current = self.loaded();
        let revisions = repo::revisions(&self.storage.read()).await?;
        let have: HashMap<&str, i64> = current.iter().map(|p| (&*p.id, p.revision)).collect();
        let unchanged = revisions.len() == current.len()
            && revisions
                .iter()
                .all(|(id, rev)| have.get(id.as_str()) == Some(rev));
        if unchanged {
            return Ok(());
        }
        let mut next: Vec<Arc<LoadedPlugin>> = Vec::with_capacity(revisions.len());
        for (id, rev) in &revisions {
            if let Some(p) = current.iter().find(|p| &*p.id == id && p.revision == *rev) {
                next.push(p.clone());
                continue;
            }
            let Some(row) = repo::find(&self.storage.read(), id).await? else {
                continue;
            };
            self.breaker.reset(id);
            match self.prepare(&row).await {
                Ok(p) => next.push(Arc::new(p)),
                Err(e) => {
                    tracing::error!(plugin = %id, error = %e, "plugin could not be loaded; skipped")
                }
            }
        }
        next.sort_by(|a, b| (a.priority, &*a.id).cmp(&(b.priority, &*b.id)));
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    async fn prepare(&self, row: &repo::Plugin) -> Result<LoadedPlugin, LoadError> {
        let manifest = Manifest::parse(&row.manifest)?;
        let pre = self
            .compile(row.wasm.clone(), row.wasm_sha256.clone())
            .await?
            .1;
        Ok(LoadedPlugin {
            id: row.id.as_str().into(),
            revision: row.revision,
            manifest: Arc::new(manifest),
            config: row.config.as_str().into(),
            enabled: row.enabled,
            priority: row.priority,
            dry_run: row.dry_run,
            quarantined: row.quarantined_at.is_some(),
            pre,
        })
    }

    /// Compile (off the async threads) and link a component.
    async fn compile(
        &self,
        wasm: Vec<u8>,
        sha256: String,
    ) -> Result<(inspect::ComponentInfo, runtime::Prepared), LoadError> {
        let engine = self.runtime.engine.clone();
        // Compiling is CPU-heavy: keep it off the async threads.
        tokio::task::spawn_blocking(move || {
            let component = engine.compile(&wasm, &sha256).map_err(LoadError::Compile)?;
            let info = inspect::inspect(engine.engine(), &component)?;
            let pre = engine
                .prepare(&component, &info.wit_version)
                .map_err(LoadError::Link)?;
            Ok((info, pre))
        })
        .await?
    }

    /// Call one plugin, with metrics and the circuit breaker. A fault is audited (and may quarantine).
    async fn call(
        &self,
        p: &Arc<LoadedPlugin>,
        input: &HookInput,
        scope: EventScope<'_>,
    ) -> (Result<HookOutput, Fault>, Option<AuditRow>) {
        let hook = input.hook_name();
        let span = tracing::debug_span!("plugin.call", plugin = %p.id, hook, outcome = tracing::field::Empty);
        let res = self.runtime.call(p, input).instrument(span.clone()).await;
        let outcome = match &res.output {
            Ok(_) => "ok",
            Err(f) => f.outcome(),
        };
        span.record("outcome", outcome);
        self.metrics
            .plugin_calls
            .get_or_create(&PluginCallLabels {
                plugin: p.id.to_string(),
                hook: hook.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.metrics
            .plugin_duration
            .get_or_create(&PluginHookLabels {
                plugin: p.id.to_string(),
                hook: hook.to_string(),
            })
            .observe(res.elapsed.as_secs_f64());
        let Err(fault) = &res.output else {
            return (res.output, None);
        };
        tracing::warn!(plugin = %p.id, hook, event = scope.event_id, fault = %fault.message(), "plugin call failed");
        let now = self.clock.now_ms();
        let mut detail = json!({"fault": fault.message()});
        if self.breaker.fault(&p.id, now) {
            detail["quarantined"] = json!(true);
            self.quarantine(p, &fault.message()).await;
        }
        let row = self.audit_row(&p.id, hook, scope, "call", fault.outcome(), detail);
        (res.output, Some(row))
    }

    async fn quarantine(&self, p: &LoadedPlugin, why: &str) {
        let reason = format!("quarantined after repeated faults; last: {why}");
        match repo::quarantine(&self.storage, &p.id, &reason, self.clock.now_ms()).await {
            Ok(true) => {
                tracing::error!(plugin = %p.id, %reason, "plugin quarantined");
                self.metrics
                    .plugin_quarantines
                    .get_or_create(&PluginLabels {
                        plugin: p.id.to_string(),
                    })
                    .inc();
            }
            Ok(false) => {}
            Err(e) => tracing::error!(plugin = %p.id, error = %e, "could not record quarantine"),
        }
        if let Err(e) = self.reload().await {
            tracing::error!(error = %e, "reload after quarantine failed");
        }
    }

    fn audit_row(
        &self,
        plugin: &str,
        hook: &str,
        scope: EventScope<'_>,
        kind: &str,
        outcome: &str,
        detail: serde_json::Value,
    ) -> AuditRow {
        audit_row(
            plugin,
            hook,
            scope,
            kind,
            outcome,
            detail,
            self.clock.now_ms(),
        )
    }

    /// Ask every subscribed plugin whether a device may enroll. Deny overrides; abstentions do not count;
    /// a failing plugin denies when its policy is fail-closed (the default for this hook). Dry-run plugins
    /// are asked and audited but not obeyed.
    pub async fn decide_enrollment(&self, input: HookInput, scope: EventScope<'_>) -> HookRun {
        let words = Words {
            refuse: "deny",
            refused_by: "enrollment denied by plugin",
        };
        self.decide(
            Hook::DecideEnrollment,
            &input,
            scope,
            words,
            |out| match out {
                HookOutput::Decision(Decision::Allow) => Verdict::Allow,
                HookOutput::Decision(Decision::Deny(r)) => Verdict::Refuse(r),
                _ => Verdict::Abstain,
            },
        )
        .await
    }

    /// Ask every plugin subscribed to a deciding hook, in order. A refusal overrides; abstentions do not
    /// count; a failing plugin refuses when its policy is fail-closed. Dry-run plugins are asked and audited
    /// but not obeyed. `refused` is set to the first refusal.
    pub(crate) async fn decide(
        &self,
        hook: Hook,
        input: &HookInput,
        scope: EventScope<'_>,
        words: Words,
        verdict: impl Fn(HookOutput) -> Verdict,
    ) -> HookRun {
        let mut run = HookRun::default();
        for p in self.subscribed(hook) {
            let (out, fault_row) = self.call(&p, input, scope).await;
            run.audit.extend(fault_row);
            let reason = match out.map(&verdict) {
                Ok(Verdict::Abstain) => continue,
                Ok(Verdict::Allow) => None,
                Ok(Verdict::Refuse(r)) => Some(runtime::truncate(r)),
                Err(f) => {
                    if p.manifest.policy(hook) == FailurePolicy::FailClosed && !p.dry_run {
                        run.refused.get_or_insert(format!(
                            "plugin {} failed (fail-closed): {}",
                            p.id,
                            f.message()
                        ));
                    }
                    continue;
                }
            };
            let decision = if reason.is_some() {
                words.refuse
            } else {
                "allow"
            };
            let enforced = !p.dry_run;
            run.audit.push(self.audit_row(
                &p.id,
                hook.as_str(),
                scope,
                "decision",
                if enforced { decision } else { "dry-run" },
                json!({"decision": decision, "reason": reason}),
            ));
            if let (Some(r), true) = (reason, enforced) {
                run.refused
                    .get_or_insert(format!("{} {}: {r}", words.refused_by, p.id));
            }
        }
        run
    }

    /// Run a notification hook (on-checkin, on-command-result, on-schedule) on every subscribed plugin.
    pub async fn run_hook(&self, hook: Hook, input: HookInput, scope: EventScope<'_>) -> HookRun {
        let plugins = self.subscribed(hook);
        self.run_on(&plugins, hook, input, scope).await
    }

    /// Run `on-ddm-status` on every plugin subscribed to it, for what a declarative management status report
    /// changed. As with a check-in: call it outside any transaction (plugins use the database), stop on
    /// `refused` (a fail-closed plugin failed), then [`PluginHost::apply`] the run as
    /// `Hook::OnDdmStatus.as_str()` in the transaction that stores the status, and hand the events it
    /// returns to [`PluginHost::events_committed`] after commit. `self.subscribed(Hook::OnDdmStatus)`
    /// empty: nobody listens, no need to build the event.
    pub async fn on_ddm_status(
        &self,
        event: event::DdmStatusEvent,
        scope: EventScope<'_>,
    ) -> HookRun {
        self.run_hook(Hook::OnDdmStatus, HookInput::DdmStatus(event), scope)
            .await
    }

    /// Run a notification hook on these plugins (from [`PluginHost::subscribed`] or
    /// [`PluginHost::hearing_checkin`]), in their order.
    pub async fn run_on(
        &self,
        plugins: &[Arc<LoadedPlugin>],
        hook: Hook,
        input: HookInput,
        scope: EventScope<'_>,
    ) -> HookRun {
        let mut run = HookRun::default();
        for p in plugins {
            let (out, fault_row) = self.call(p, &input, scope).await;
            run.audit.extend(fault_row);
            match out {
                Ok(HookOutput::Actions(a)) => {
                    if !a.is_empty() {
                        run.actions.push((p.clone(), a));
                    }
                }
                Ok(_) => {}
                Err(f) => {
                    if p.manifest.policy(hook) == FailurePolicy::FailClosed && !p.dry_run {
                        run.refused.get_or_insert(format!(
                            "plugin {} failed (fail-closed): {}",
                            p.id,
                            f.message()
                        ));
                    }
                }
            }
        }
        run
    }

    /// Apply a run's actions and write its audit rows, in the caller's transaction. Returns the events
    /// it wrote, for [`PluginHost::events_committed`] once the caller has committed.
    pub async fn apply<C: ConnectionTrait + sea_orm::TransactionTrait>(
        &self,
        c: &C,
        run: HookRun,
        hook: &'static str,
        scope: EventScope<'_>,
        now: i64,
    ) -> Result<Vec<crate::storage::outbox::OutboxEvent>, StorageError> {
        let sinks = self.sinks.names();
        let ctx = ActionContext {
            hook,
            scope,
            now,
            sinks: &sinks,
            metrics: &self.metrics,
            event_hold_ms: self.event_hold_ms(),
        };
        let mut rows = run.audit;
        let mut deferred = actions::Deferred::default();
        for (p, a) in run.actions {
            rows.extend(actions::apply(c, &p, a, &ctx, &mut deferred).await?);
        }
        // The run's events and its audit rows: one trip to the database.
        let mut statements = deferred.statements;
        statements.extend(plugin_audit::insert_statements(
            c.get_database_backend(),
            rows,
        ));
        let returned = crate::storage::batch::query(c, statements).await?;
        let mut events = deferred.events;
        if returned.len() != events.len() {
            return Err(StorageError::Corrupt(format!(
                "{} event inserts returned {} ids",
                events.len(),
                returned.len()
            )));
        }
        for (e, row) in events.iter_mut().zip(returned) {
            e.id = row.try_get("", "id")?;
        }
        Ok(events)
    }

    /// Run due schedules once. Each tick is claimed in the database, so one replica runs it.
    pub async fn run_schedules(self: &Arc<Self>) -> Result<usize, StorageError> {
        let now = self.clock.now_ms();
        let storage = &self.storage;
        let scheduled = self.subscribed(Hook::OnSchedule);
        for p in &scheduled {
            for s in &p.manifest.schedules {
                repo::ensure_schedule(storage, &p.id, &s.name, now + s.every_seconds as i64 * 1000)
                    .await?;
            }
        }
        let mut ran = 0;
        for due in repo::due_schedules(&storage.read(), now).await? {
            let Some(p) = scheduled.iter().find(|p| *p.id == *due.plugin_id) else {
                continue;
            };
            let Some(s) = p.manifest.schedules.iter().find(|s| s.name == due.name) else {
                continue;
            };
            let next = now + s.every_seconds as i64 * 1000;
            if !repo::claim_schedule(storage, &due.plugin_id, &due.name, due.next_run_at, next)
                .await?
            {
                continue;
            }
            let event_id = new_event_id();
            let scope = EventScope {
                event_id: &event_id,
                device_id: None,
                enrollment_id: None,
            };
            let input = HookInput::Schedule(event::ScheduleEvent {
                event_id: event_id.clone(),
                name: s.name.clone(),
            });
            let run = self
                .run_on(std::slice::from_ref(p), Hook::OnSchedule, input, scope)
                .await;
            self.commit(run, Hook::OnSchedule, &event_id).await?;
            ran += 1;
        }
        Ok(ran)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The event sinks: the configuration's and the API's.
    pub fn sinks(&self) -> &Arc<sinks::Sinks> {
        &self.sinks
    }
}
