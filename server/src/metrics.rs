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
pub struct TopicLabels {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `signature` (verified `Mdm-Signature`s) or `certificate` (certificates whose chain was verified).
    pub cache: String,
    /// `hit` or `miss`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
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
    pub push_cert_expiry: Family<TopicLabels, Gauge>,
    pub scep_requests: Family<StatusLabels, Counter>,
    pub enrollment_profiles: Family<StatusLabels, Counter>,
    /// Devices whose identity certificate expires within the renewal window (set by the renewal worker).
    pub identities_expiring: Gauge,
    pub identity_renewals: Counter,
    pub identity_cache: Family<CacheLabels, Counter>,
    /// Stored policy versions found not to match their digest (at activation or a rollout step).
    pub policy_versions_tampered: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mdm");
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
        let push_cert_expiry = Family::<TopicLabels, Gauge>::default();
        registry.register("pushes", "APNs pushes by outcome", pushes.clone());
        registry.register(
            "push_certificate_not_after_seconds",
            "When each push certificate expires (Unix seconds)",
            push_cert_expiry.clone(),
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
        Self {
            registry,
            policy_versions_tampered,
            scep_requests,
            enrollment_profiles,
            identities_expiring,
            identity_renewals,
            identity_cache,
            pushes,
            push_cert_expiry,
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

    pub fn scep(&self, outcome: &str) {
        inc(&self.scep_requests, outcome);
    }

    pub fn enrollment_profile(&self, outcome: &str) {
        inc(&self.enrollment_profiles, outcome);
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

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
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
