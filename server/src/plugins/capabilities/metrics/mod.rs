use crate::plugins::bindings::mdm::plugin::metrics::Host;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Host for HostState {
    async fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        self.require(Capability::Metrics)?;
        // Bad names are dropped rather than trapping: a metric is never worth failing a check-in for.
        if valid(&name) {
            self.backend.counter_add(&self.call.plugin_id, &name, delta);
        }
        Ok(())
    }

    async fn gauge_set(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        self.require(Capability::Metrics)?;
        if valid(&name) && value.is_finite() {
            self.backend.gauge_set(&self.call.plugin_id, &name, value);
        }
        Ok(())
    }
}
