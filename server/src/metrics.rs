//! Prometheus metrics, exposed at `/metrics` in the text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckinLabels {
    pub message_type: String,
    /// `ok` or the HTTP status class of the refusal (`400`, `403`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    pub plugin: String,
    pub hook: String,
    /// `ok`, `error`, `timeout` or `trap`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginHookLabels {
    pub plugin: String,
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginActionLabels {
    pub plugin: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginMetricLabels {
    pub plugin: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `signature` (verified `Mdm-Signature`s) or `certificate` (certificates whose chain was verified).
    pub cache: String,
    /// `hit` or `miss`.
    pub result: String,
}

/// A command as latency is counted: its type (known types only, else `other`) and its priority class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub request_type: String,
    /// `high` (above 0), `normal` (0) or `low` (below 0): the priority itself is admin input, -1000..=1000.
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandResultLabels {
    pub request_type: String,
    pub priority: String,
    /// The final status: `Acknowledged`, `Error` or `CommandFormatError`.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageTypeLabels {
    pub message_type: String,
}

/// One step of enrolling a device: `profile` (the enrollment profile), `scep` (its identity certificate),
/// `authenticate` (the first check-in).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepReasonLabels {
    pub step: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WithinLabels {
    /// `1h`, `24h`, `7d`, `30d`, `older` or `never`: disjoint buckets of the time since last seen.
    pub within: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `tls`, `scep_ca`, `profile_signer` or `push`.
    pub kind: String,
    /// The push topic for `push`; the kind again for the server's own certificates.
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    families: Vec<String>,
    pub checkins: Family<CheckinLabels, Counter>,
    pub reports: Family<StatusLabels, Counter>,
    pub commands_enqueued: Counter,
    pub commands_delivered: Counter,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub plugin_calls: Family<PluginCallLabels, Counter>,
    pub plugin_duration: Family<PluginHookLabels, Histogram>,
    pub plugin_actions: Family<PluginActionLabels, Counter>,
    pub plugin_quarantines: Family<PluginLabels, Counter>,
    pub plugin_custom: Family<PluginMetricLabels, Counter>,
    pub plugin_gauges: Family<PluginMetricLabels, Gauge<f64, AtomicU64>>,
    pub events_delivered: Family<SinkLabels, Counter>,
    pub pushes: Family<StatusLabels, Counter>,
    pub certificate_not_after: Family<CertificateLabels, Gauge>,
    pub scep_requests: Family<StatusLabels, Counter>,
    pub enrollment_profiles: Family<StatusLabels, Counter>,
    /// Devices whose identity certificate expires within the renewal window (set by the renewal worker).
    pub identities_expiring: Gauge,
    pub identity_renewals: Counter,
    pub identity_cache: Family<CacheLabels, Counter>,
    /// Stored policy versions found not to match their digest (at activation or a rollout step).
    pub policy_versions_tampered: Counter,
    /// The service levels operators alert on.
    pub service: ServiceLevels,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Families::new();
        let checkins = Family::<CheckinLabels, Counter>::default();
        let reports = Family::<StatusLabels, Counter>::default();
        let commands_enqueued = Counter::default();
        let commands_delivered = Counter::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 100 µs .. ~6.5 s
            Histogram::new(exponential_buckets(0.0001, 2.0, 17))
        });
        registry.register(
            "checkins",
            "Check-in messages by MessageType and outcome",
            checkins.clone(),
        );
        registry.register(
            "command_reports",
            "Command reports (Idle and results) by Status",
            reports.clone(),
        );
        registry.register(
            "commands_enqueued",
            "Commands queued to a channel",
            commands_enqueued.clone(),
        );
        registry.register(
            "commands_delivered",
            "Commands sent to devices",
            commands_delivered.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_duration.clone(),
        );
        let plugin_calls = Family::<PluginCallLabels, Counter>::default();
        let plugin_duration = Family::<PluginHookLabels, Histogram>::new_with_constructor(|| {
            // 10 µs .. ~1.3 s
            Histogram::new(exponential_buckets(0.00001, 2.0, 18))
        });
        let plugin_actions = Family::<PluginActionLabels, Counter>::default();
        let plugin_quarantines = Family::<PluginLabels, Counter>::default();
        let plugin_custom = Family::<PluginMetricLabels, Counter>::default();
        let plugin_gauges = Family::<PluginMetricLabels, Gauge<f64, AtomicU64>>::default();
        let events_delivered = Family::<SinkLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin hook calls by outcome",
            plugin_calls.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin hook call latency (instantiate, call, drop)",
            plugin_duration.clone(),
        );
        registry.register(
            "plugin_actions",
            "Actions plugins returned, by kind and outcome",
            plugin_actions.clone(),
        );
        registry.register(
            "plugin_quarantines",
            "Times a plugin was quarantined by the circuit breaker",
            plugin_quarantines.clone(),
        );
        registry.register(
            "plugin_custom",
            "Counters plugins maintain through the metrics capability",
            plugin_custom.clone(),
        );
        registry.register(
            "plugin_gauge",
            "Gauges plugins set through the metrics capability",
            plugin_gauges.clone(),
        );
        registry.register(
            "events_delivered",
            "Plugin events delivered to sinks, by outcome",
            events_delivered.clone(),
        );
        let pushes = Family::<StatusLabels, Counter>::default();
        let certificate_not_after = Family::<CertificateLabels, Gauge>::default();
        registry.register("pushes", "APNs pushes by outcome", pushes.clone());
        registry.register(
            "certificate_not_after_seconds",
            "When each certificate the server depends on expires (Unix seconds), by kind and name",
            certificate_not_after.clone(),
        );
        let scep_requests = Family::<StatusLabels, Counter>::default();
        let enrollment_profiles = Family::<StatusLabels, Counter>::default();
        let identities_expiring = Gauge::default();
        let identity_renewals = Counter::default();
        let identity_cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "identity_cache_lookups",
            "Lookups in the device identity caches by cache and result (hit or miss)",
            identity_cache.clone(),
        );
        registry.register(
            "scep_requests",
            "SCEP PKIOperation requests by outcome (issued, failed, malformed)",
            scep_requests.clone(),
        );
        registry.register(
            "enrollment_profiles",
            "Enrollment profile downloads by outcome",
            enrollment_profiles.clone(),
        );
        registry.register(
            "identity_certificates_expiring",
            "Devices whose identity certificate expires within the renewal window",
            identities_expiring.clone(),
        );
        registry.register(
            "identity_renewals",
            "Identity renewals queued (a fresh enrollment profile sent to the device)",
            identity_renewals.clone(),
        );
        let policy_versions_tampered = Counter::default();
        registry.register(
            "policy_versions_tampered",
            "Stored policy versions found not to match their digest at activation or a rollout step",
            policy_versions_tampered.clone(),
        );
        let service = ServiceLevels::register(&mut registry);
        Self {
            registry: registry.registry,
            families: registry.names,
            service,
            policy_versions_tampered,
            scep_requests,
            enrollment_profiles,
            identities_expiring,
            identity_renewals,
            identity_cache,
            pushes,
            certificate_not_after,
            plugin_calls,
            plugin_duration,
            plugin_actions,
            plugin_quarantines,
            plugin_custom,
            plugin_gauges,
            events_delivered,
            checkins,
            reports,
            commands_enqueued,
            commands_delivered,
            http_duration,
        }
    }

    pub fn checkin(&self, message_type: &str, outcome: &str) {
        self.checkins
            .get_or_create(&CheckinLabels {
                message_type: message_type.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn report(&self, status: &str) {
        inc(&self.reports, status);
    }

    /// A SCEP PKIOperation's outcome (`issued`, `failed`, `malformed`), which is also the `scep` enrollment
    /// step's: a CertRep failure counts as `refused`.
    pub fn scep(&self, outcome: &str) {
        inc(&self.scep_requests, outcome);
        let failure = match outcome {
            "issued" => None,
            "failed" => Some("refused"),
            other => Some(other),
        };
        self.enrollment_step("scep", failure);
    }

    /// An enrollment profile download's outcome (`served`, `refused`, `failed`), which is also the
    /// `profile` enrollment step's.
    pub fn enrollment_profile(&self, outcome: &str) {
        inc(&self.enrollment_profiles, outcome);
        self.enrollment_step("profile", (outcome != "served").then_some(outcome));
    }

    pub fn observe_request(&self, route: &str, seconds: f64) {
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// The hit and miss counters of one identity cache (`signature` or `certificate`).
    pub fn identity_cache_counters(&self, cache: &str) -> crate::identity::CacheCounters {
        let counter = |result: &str| {
            (self.identity_cache)
                .get_or_create(&CacheLabels {
                    cache: cache.into(),
                    result: result.into(),
                })
                .clone()
        };
        crate::identity::CacheCounters {
            hits: counter("hit"),
            misses: counter("miss"),
        }
    }

    /// The name of every metric family, as exposed (without a counter's `_total`).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

/// The registry, and the name of every family registered in it (a family appears in `/metrics` only once
/// it has a series, so the documented list is checked against these names).
struct Families {
    registry: Registry,
    names: Vec<String>,
}

impl Families {
    fn new() -> Self {
        Self {
            registry: Registry::with_prefix("mdm"),
            names: Vec::new(),
        }
    }

    fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.names.push(format!("mdm_{name}"));
        self.registry.register(name, help, metric);
    }
}

/// The service-level series operators alert on (docs/OPERATIONS.md), registered together.
pub struct ServiceLevels {
    pub command_delivery: Family<CommandLabels, Histogram>,
    pub command_completion: Family<CommandResultLabels, Histogram>,
    pub checkin_duration: Family<MessageTypeLabels, Histogram>,
    pub enrollment_attempts: Family<StepLabels, Counter>,
    pub enrollment_failures: Family<StepReasonLabels, Counter>,
    pub ddm_status_errors: Counter,
    pub rollout_steps: Family<ActionLabels, Counter>,
    pub policy_devices: Family<StateLabels, Gauge>,
    pub commands_pending: Gauge,
    pub commands_pending_over_1h: Gauge,
    pub devices_by_last_seen: Family<WithinLabels, Gauge>,
}

/// Queue latency buckets, in seconds: from a device that was online (under a second) to one that was off
/// for a day. The 30 s service level is a bucket boundary.
const QUEUE_LATENCY_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

impl ServiceLevels {
    fn register(registry: &mut Families) -> Self {
        let queue_latency = || Histogram::new(QUEUE_LATENCY_BUCKETS);
        let s = Self {
            command_delivery: Family::new_with_constructor(queue_latency),
            command_completion: Family::new_with_constructor(queue_latency),
            // 500 µs .. ~16 s
            checkin_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            enrollment_attempts: Family::default(),
            enrollment_failures: Family::default(),
            ddm_status_errors: Counter::default(),
            rollout_steps: Family::default(),
            policy_devices: Family::default(),
            commands_pending: Gauge::default(),
            commands_pending_over_1h: Gauge::default(),
            devices_by_last_seen: Family::default(),
        };
        registry.register(
            "command_delivery_seconds",
            "From a command's enqueue to its first delivery to the device",
            s.command_delivery.clone(),
        );
        registry.register(
            "command_completion_seconds",
            "From a command's enqueue to the device's final result",
            s.command_completion.clone(),
        );
        registry.register(
            "checkin_duration_seconds",
            "Time to handle one check-in message or command report, by message type",
            s.checkin_duration.clone(),
        );
        registry.register(
            "enrollment_attempts",
            "Enrollment steps attempted (profile, scep, authenticate)",
            s.enrollment_attempts.clone(),
        );
        registry.register(
            "enrollment_failures",
            "Enrollment steps that failed, by step and reason",
            s.enrollment_failures.clone(),
        );
        registry.register(
            "ddm_status_errors",
            "Declarations devices reported invalid in their status reports",
            s.ddm_status_errors.clone(),
        );
        registry.register(
            "policy_rollout_steps",
            "Committed policy rollout steps, by action",
            s.rollout_steps.clone(),
        );
        registry.register(
            "policy_devices",
            "Devices reached by running rollouts, by state (succeeded, failed, pending)",
            s.policy_devices.clone(),
        );
        registry.register(
            "commands_pending",
            "Commands queued to a channel and not finished",
            s.commands_pending.clone(),
        );
        registry.register(
            "commands_pending_over_1h",
            "Pending commands enqueued more than an hour ago",
            s.commands_pending_over_1h.clone(),
        );
        registry.register(
            "devices_by_last_seen",
            "Devices by how long ago they were last seen (disjoint buckets)",
            s.devices_by_last_seen.clone(),
        );
        s
    }
}

/// Request types that name a series of their own; any other (a raw command of another type) is `other`,
/// so a plugin or admin inventing types cannot grow the number of series.
fn request_type_label(request_type: &str) -> String {
    let known = crate::protocol::commands::REQUEST_TYPES.contains(&request_type)
        || request_type == "DeclarativeManagement";
    if known { request_type } else { "other" }.to_string()
}

fn priority_label(priority: i32) -> String {
    match priority {
        p if p > 0 => "high",
        0 => "normal",
        _ => "low",
    }
    .to_string()
}

/// Milliseconds between two Unix times, in seconds (never negative: clocks of replicas differ).
fn elapsed_seconds(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1000.0
}

impl Metrics {
    /// A command sent to a device for the first time, enqueued at `enqueued_at_ms`.
    pub fn command_delivered(
        &self,
        request_type: &str,
        priority: i32,
        enqueued_at_ms: i64,
        now_ms: i64,
    ) {
        let labels = CommandLabels {
            request_type: request_type_label(request_type),
            priority: priority_label(priority),
        };
        let seconds = elapsed_seconds(enqueued_at_ms, now_ms);
        self.service
            .command_delivery
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A command's final result recorded, the command enqueued at `enqueued_at_ms`.
    pub fn command_finished(&self, finished: &crate::storage::queue::Finished, now_ms: i64) {
        let labels = CommandResultLabels {
            request_type: request_type_label(&finished.request_type),
            priority: priority_label(finished.priority),
            status: finished.status.as_str().to_string(),
        };
        let seconds = elapsed_seconds(finished.enqueued_at, now_ms);
        self.service
            .command_completion
            .get_or_create(&labels)
            .observe(seconds);
    }

    pub fn checkin_handled(&self, message_type: &str, seconds: f64) {
        let labels = MessageTypeLabels {
            message_type: message_type.to_string(),
        };
        self.service
            .checkin_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// One enrollment step attempted, and why it failed if it did.
    pub fn enrollment_step(&self, step: &str, failure: Option<&str>) {
        let labels = StepLabels { step: step.into() };
        self.service
            .enrollment_attempts
            .get_or_create(&labels)
            .inc();
        if let Some(reason) = failure {
            let labels = StepReasonLabels {
                step: step.into(),
                reason: reason.into(),
            };
            self.service
                .enrollment_failures
                .get_or_create(&labels)
                .inc();
        }
    }

    pub fn rollout_step(&self, action: &str) {
        let action = action.strip_prefix("policy.").unwrap_or(action);
        let labels = ActionLabels {
            action: action.strip_prefix("rollout_").unwrap_or(action).into(),
        };
        self.service.rollout_steps.get_or_create(&labels).inc();
    }

    /// The devices of every running rollout, as the last rollout round counted them.
    pub fn policy_devices(&self, succeeded: u64, failed: u64, pending: u64) {
        for (state, n) in [
            ("succeeded", succeeded),
            ("failed", failed),
            ("pending", pending),
        ] {
            let labels = StateLabels {
                state: state.into(),
            };
            self.service
                .policy_devices
                .get_or_create(&labels)
                .set(n as i64);
        }
    }

    pub fn certificate(&self, kind: &str, name: &str, not_after_unix: i64) {
        let labels = CertificateLabels {
            kind: kind.into(),
            name: name.into(),
        };
        self.certificate_not_after
            .get_or_create(&labels)
            .set(not_after_unix);
    }

    pub fn fleet(&self, f: &crate::storage::fleet::FleetFigures) {
        self.service.commands_pending.set(f.commands_pending);
        self.service
            .commands_pending_over_1h
            .set(f.commands_pending_over_1h);
        for (within, n) in &f.devices_by_last_seen {
            let labels = WithinLabels {
                within: within.to_string(),
            };
            self.service
                .devices_by_last_seen
                .get_or_create(&labels)
                .set(*n);
        }
    }
}

fn inc(family: &Family<StatusLabels, Counter>, status: &str) {
    family
        .get_or_create(&StatusLabels {
            status: status.to_string(),
        })
        .inc();
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels an admin or a plugin chooses cannot grow the number of series: unknown request types are
    /// `other`, priorities three classes, and a latency is never negative.
    #[test]
    fn labels_from_outside_are_bounded() {
        assert_eq!(request_type_label("DeviceLock"), "DeviceLock");
        assert_eq!(
            request_type_label("DeclarativeManagement"),
            "DeclarativeManagement"
        );
        for invented in ["Evil", "DeviceLock2", "", "device_lock", "x\ny"] {
            assert_eq!(request_type_label(invented), "other", "{invented:?}");
        }
        let classes: Vec<String> = [1000, 1, 0, -1, -1000, i32::MIN, i32::MAX]
            .into_iter()
            .map(priority_label)
            .collect();
        assert_eq!(
            classes,
            ["high", "high", "normal", "low", "low", "low", "high"]
        );
        assert_eq!(
            elapsed_seconds(5_000, 2_000),
            0.0,
            "a replica's clock behind"
        );
        assert_eq!(elapsed_seconds(2_000, 14_500), 12.5);
    }
}
