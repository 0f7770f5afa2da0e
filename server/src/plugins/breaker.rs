//! The circuit breaker: a plugin that faults `threshold` times within `window_ms` is quarantined.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

pub struct Breaker {
    threshold: usize,
    window_ms: i64,
    faults: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl Breaker {
    pub fn new(threshold: u32, window_ms: i64) -> Self {
        Self {
            threshold: threshold.max(1) as usize,
            window_ms,
            faults: Mutex::new(HashMap::new()),
        }
    }

    /// Record a fault; true when this one trips the breaker.
    pub fn fault(&self, plugin: &str, now: i64) -> bool {
        let mut all = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let q = all.entry(plugin.to_string()).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now - t > self.window_ms) {
            q.pop_front();
        }
        if q.len() >= self.threshold {
            q.clear();
            true
        } else {
            false
        }
    }

    /// Forget a plugin's faults (a new revision or re-enable starts clean).
    pub fn reset(&self, plugin: &str) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(plugin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_on_threshold_within_window_only() {
        let b = Breaker::new(3, 1000);
        assert!(!b.fault("p", 0));
        assert!(!b.fault("p", 10));
        assert!(!b.fault("p", 2000), "older faults fell out of the window");
        assert!(!b.fault("p", 2100));
        assert!(b.fault("p", 2200));
        assert!(!b.fault("q", 2200), "per plugin");
    }
}
