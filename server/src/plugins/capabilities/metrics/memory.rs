//! `metrics` in the plugin-author harness: counters kept for the test to read (gauges are dropped).

use super::MetricsBackend;
use crate::plugins::testing::{lock, MemoryBackend};

impl MetricsBackend for MemoryBackend {
    fn counter_add(&self, plugin: &str, name: &str, delta: u64) {
        *lock(&self.counters)
            .entry(format!("{plugin}.{name}"))
            .or_default() += delta;
    }

    fn gauge_set(&self, _: &str, _: &str, _: f64) {}
}
