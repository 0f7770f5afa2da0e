//! Counters and gauges (capability `metrics`). The server prefixes names with the plugin's id.

use crate::host::metrics as host;

/// Adds `delta` to the counter `name`.
pub fn counter(name: &str, delta: u64) {
    host::counter_add(name, delta);
}

/// Sets the gauge `name` to `value`.
pub fn gauge(name: &str, value: f64) {
    host::gauge_set(name, value);
}

#[cfg(test)]
mod tests {
    #[test]
    fn records() {
        super::counter("denied", 1);
        super::counter("denied", 2);
        super::gauge("devices", 4.0);
        assert_eq!(crate::mock::counters()["denied"], 3);
        assert_eq!(crate::mock::gauges()["devices"], 4.0);
    }
}
