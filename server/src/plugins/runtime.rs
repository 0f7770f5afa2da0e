//! Running hooks: a fresh instance per call from the plugin's prepared `InstancePre`, with a deadline
//! (epochs for guest code, a tokio timeout for everything, since epochs do not interrupt host calls), a
//! memory cap, and a semaphore bounding live instances to the pool's size.

use super::bindings::{v0_1, v0_2, v0_3};
use super::capabilities::HostBackend;
use super::engine::PluginEngine;
use super::event::{
    Action, CheckinEvent, CommandResultEvent, DdmStatusEvent, Decision, EnrollmentRequest,
    PromotionDecision, PromotionRequest, RolloutEvent, ScheduleEvent, TokenRequest,
};
use super::host::{CallContext, HostState, LogLine};
use super::manifest::{Capability, Manifest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::Store;

/// A linked component, by the WIT version it was built against (read at upload). Each served version has a
/// variant; `Runtime::call` dispatches on it.
pub enum Prepared {
    V0_1(v0_1::PluginPre<HostState>),
    V0_2(v0_2::PluginPre<HostState>),
    V0_3(v0_3::PluginPre<HostState>),
}

/// A plugin ready to run: one revision of it, compiled and linked.
pub struct LoadedPlugin {
    pub id: Arc<str>,
    pub revision: i64,
    pub manifest: Arc<Manifest>,
    pub config: Arc<str>,
    pub enabled: bool,
    pub priority: i32,
    pub dry_run: bool,
    pub quarantined: bool,
    pub(crate) pre: Prepared,
}

impl LoadedPlugin {
    pub fn active(&self) -> bool {
        self.enabled && !self.quarantined
    }
}

#[derive(Clone)]
pub enum HookInput {
    Enrollment(EnrollmentRequest),
    Checkin(CheckinEvent),
    CommandResult(CommandResultEvent),
    Schedule(ScheduleEvent),
    DdmStatus(DdmStatusEvent),
    Token(TokenRequest),
    Promotion(PromotionRequest),
    Rollout(RolloutEvent),
    ValidateConfig(String),
}

impl HookInput {
    pub fn hook_name(&self) -> &'static str {
        match self {
            HookInput::Enrollment(_) => "decide-enrollment",
            HookInput::Checkin(_) => "on-checkin",
            HookInput::CommandResult(_) => "on-command-result",
            HookInput::Schedule(_) => "on-schedule",
            HookInput::DdmStatus(_) => "on-ddm-status",
            HookInput::Token(_) => "provide-token",
            HookInput::Promotion(_) => "decide-promotion",
            HookInput::Rollout(_) => "on-rollout",
            HookInput::ValidateConfig(_) => "validate-config",
        }
    }

    pub fn event_id(&self) -> String {
        match self {
            HookInput::Enrollment(e) => e.event_id.clone(),
            HookInput::Checkin(e) => e.event_id.clone(),
            HookInput::CommandResult(e) => e.event_id.clone(),
            HookInput::Schedule(e) => e.event_id.clone(),
            HookInput::DdmStatus(e) => e.event_id.clone(),
            HookInput::Token(r) => r.event_id.clone(),
            HookInput::Promotion(r) => r.event_id.clone(),
            HookInput::Rollout(e) => e.event_id.clone(),
            HookInput::ValidateConfig(_) => "validate-config".into(),
        }
    }
}

#[derive(Debug)]
pub enum HookOutput {
    Decision(Decision),
    Actions(Vec<Action>),
    /// `provide-token`'s answer: a token, or none when it is not the plugin's to give.
    Token(Option<Vec<u8>>),
    /// `decide-promotion`'s answer.
    Promotion(PromotionDecision),
    Valid,
}

/// Why a call produced nothing usable.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The plugin returned an error.
    Error(String),
    /// It ran past its deadline.
    Timeout,
    /// It trapped (panic, memory limit, capability used without a grant, ...).
    Trap(String),
}

impl Fault {
    pub fn outcome(&self) -> &'static str {
        match self {
            Fault::Error(_) => "error",
            Fault::Timeout => "timeout",
            Fault::Trap(_) => "trap",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Fault::Error(e) => format!("the plugin returned an error: {e}"),
            Fault::Timeout => "the plugin ran past its deadline".into(),
            Fault::Trap(t) => format!("the plugin trapped: {t}"),
        }
    }
}

pub struct CallResult {
    pub output: Result<HookOutput, Fault>,
    pub logs: Vec<LogLine>,
    pub elapsed: Duration,
}

pub struct Runtime {
    pub engine: Arc<PluginEngine>,
    pub backend: Arc<dyn HostBackend>,
    permits: Arc<Semaphore>,
}

/// Slack past the guest deadline before the whole call is abandoned (host calls in flight).
const GRACE: Duration = Duration::from_millis(100);

impl Runtime {
    pub fn new(engine: PluginEngine, backend: Arc<dyn HostBackend>, max_concurrent: u32) -> Self {
        Self {
            engine: Arc::new(engine),
            backend,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
        }
    }

    pub async fn call(&self, p: &LoadedPlugin, input: &HookInput) -> CallResult {
        let started = Instant::now();
        let Ok(_permit) = self.permits.acquire().await else {
            return CallResult {
                output: Err(Fault::Trap("plugin runtime is shutting down".into())),
                logs: Vec::new(),
                elapsed: started.elapsed(),
            };
        };
        let ctx = CallContext {
            plugin_id: p.id.clone(),
            hook: input.hook_name(),
            event_id: input.event_id(),
            manifest: p.manifest.clone(),
            config: p.config.clone(),
        };
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(ctx, self.backend.clone()),
        );
        store.limiter(|s| &mut s.limits);
        let budget = p.manifest.limits.timeout_ms;
        store.set_epoch_deadline(PluginEngine::ticks_for(budget));
        store.epoch_deadline_trap();

        // Exact payloads go only to plugins granted `raw-payloads`.
        let raw = p.manifest.has(Capability::RawPayloads);
        let run = async {
            match &p.pre {
                Prepared::V0_1(pre) => v0_1::call(pre, &mut store, input, raw).await,
                Prepared::V0_2(pre) => v0_2::call(pre, &mut store, input, raw).await,
                Prepared::V0_3(pre) => v0_3::call(pre, &mut store, input, raw).await,
            }
        };
        let deadline = Duration::from_millis(u64::from(budget)) + GRACE;
        let output = match tokio::time::timeout(deadline, run).await {
            Err(_) => Err(Fault::Timeout),
            Ok(Err(e)) => Err(classify(e)),
            Ok(Ok(Err(msg))) => Err(Fault::Error(truncate(msg))),
            Ok(Ok(Ok(out))) => Ok(out),
        };
        let state = store.into_data();
        let (stdout, stderr) = state.stdio();
        for (stream, text) in [("stdout", stdout), ("stderr", stderr)] {
            for line in text.lines().filter(|l| !l.trim().is_empty()).take(100) {
                tracing::info!(plugin = %p.id, stream, "{line}");
            }
        }
        CallResult {
            output,
            logs: state.logs,
            elapsed: started.elapsed(),
        }
    }
}

fn classify(e: wasmtime::Error) -> Fault {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return Fault::Timeout;
        }
    }
    Fault::Trap(truncate(format!("{e:#}")))
}

/// Plugin-supplied text kept in logs and the audit log is bounded.
pub fn truncate(mut s: String) -> String {
    const MAX: usize = 2048;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}
