//! Background jobs: every round the server runs on its own, on a timer or when woken. Each job takes the
//! services it works through (never the HTTP state), logs its own failures, and tries again next round.
//!
//! A new background job is a file here with a `spawn` taking its services, started from [`spawn_all`].

mod audit_sealer;
mod fleet_gauges;
mod groups;
pub mod housekeeping;
mod identity_renewal;
mod plugins;
mod profiles;
mod push;
mod rollouts;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::enroll::EnrollService;
use crate::plugins::delivery::Delivery;
use crate::plugins::PluginHost;
use crate::push::service::PushService;
use crate::queue::QueueService;
use crate::storage::Storage;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// What the jobs work through.
pub struct Services {
    pub storage: Storage,
    pub clock: SharedClock,
    pub queue: QueueService,
    pub enroll: Arc<EnrollService>,
    pub push: Arc<PushService>,
    pub plugins: Arc<PluginHost>,
    pub delivery: Delivery,
    pub rollouts: Arc<crate::policies::rollout::Rollouts>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Start every background job `config` turns on.
pub fn spawn_all(s: Services, config: &Config) {
    let housekeeping_every = Duration::from_secs(config.housekeeping_interval_secs);
    housekeeping::spawn(
        s.storage.clone(),
        s.clock.clone(),
        config.retention_days,
        housekeeping_every,
    );
    // Rules on times are as current as this period (housekeeping's: 5 minutes by default).
    groups::spawn(s.storage.clone(), s.clock.clone(), housekeeping_every);
    identity_renewal::spawn(s.enroll, s.queue, housekeeping_every);
    audit_sealer::spawn(s.storage.clone());
    let gauges_every = Duration::from_secs(config.telemetry.gauges_interval_secs);
    fleet_gauges::spawn(s.storage.clone(), s.clock.clone(), s.metrics, gauges_every);
    let rollout_every = Duration::from_secs(config.policies.rollout_interval_secs);
    rollouts::spawn(s.rollouts, s.clock.clone(), rollout_every);
    profiles::spawn(s.storage.clone(), s.clock.clone(), rollout_every);
    if config.push.worker {
        push::spawn(
            s.push,
            Duration::from_millis(config.push.worker_interval_ms),
        );
    }
    plugins::spawn(s.plugins, s.delivery, &config.plugins);
}

/// Run `round` in the background every `period`, the first time one period after start, and at once
/// whenever `wake` is notified (work was just committed; the timer then starts over). Late ticks are
/// delayed, not bunched. A notification that arrives while a round runs is kept (Notify stores one permit),
/// so work committed mid-round is picked up straight after it.
///
/// Not at start: work that reads the clock (housekeeping, renewal) would otherwise race whatever the process
/// does first, and tests that drive it by hand would see it run under them.
fn every<F, Fut>(job: &'static str, period: Duration, wake: Option<Arc<Notify>>, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    use tracing::Instrument;
    let wake = wake.unwrap_or_default();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => tick.reset(),
            }
            // Each round a trace of its own (a root span): its storage and plugin calls are its children.
            let span = tracing::debug_span!(parent: None, "job", job);
            round().instrument(span).await;
        }
    });
}
