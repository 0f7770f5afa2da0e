//! `metrics` in the server: the Prometheus registry.

use super::MetricsBackend;
use crate::metrics::PluginMetricLabels;
use crate::plugins::store_backend::StoreBackend;

impl MetricsBackend for StoreBackend {
    fn counter_add(&self, plugin: &str, name: &str, delta: u64) {
        self.metrics
            .plugin_custom
            .get_or_create(&PluginMetricLabels {
                plugin: plugin.to_string(),
                name: name.to_string(),
            })
            .inc_by(delta);
    }

    fn gauge_set(&self, plugin: &str, name: &str, value: f64) {
        self.metrics
            .plugin_gauges
            .get_or_create(&PluginMetricLabels {
                plugin: plugin.to_string(),
                name: name.to_string(),
            })
            .set(value);
    }
}
