//! Prometheus metrics, exposed at `/metrics` in the text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    registry: Registry,
    pub checkins: Family<CheckinLabels, Counter>,
    pub reports: Family<StatusLabels, Counter>,
    pub commands_enqueued: Counter,
    pub commands_delivered: Counter,
    pub http_duration: Family<RouteLabels, Histogram>,
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
        Self {
            registry,
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
        self.reports
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
    }

    pub fn observe_request(&self, route: &str, seconds: f64) {
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encode metrics");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
