//! Capability `metrics`: counters and gauges, labelled with the plugin's id.

mod memory;
mod store;

use crate::plugins::bindings::v0_1::mdm::plugin::metrics as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::metrics as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::metrics as v0_3;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use wasmtime::component::{HasSelf, Linker};

/// The backend's slice for `metrics`.
pub trait MetricsBackend {
    fn counter_add(&self, plugin: &str, name: &str, delta: u64);
    fn gauge_set(&self, plugin: &str, name: &str, value: f64);
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl HostState {
    fn metric_counter_add(&self, name: &str, delta: u64) -> wasmtime::Result<()> {
        let _span = tracing::debug_span!("plugin.host", call = "metrics.counter-add").entered();
        self.require(Capability::Metrics)?;
        // Bad names are dropped rather than trapping: a metric is never worth failing a check-in for.
        if valid(name) {
            self.backend.counter_add(&self.call.plugin_id, name, delta);
        }
        Ok(())
    }

    fn metric_gauge_set(&self, name: &str, value: f64) -> wasmtime::Result<()> {
        let _span = tracing::debug_span!("plugin.host", call = "metrics.gauge-set").entered();
        self.require(Capability::Metrics)?;
        if valid(name) && value.is_finite() {
            self.backend.gauge_set(&self.call.plugin_id, name, value);
        }
        Ok(())
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl $v::Host for HostState {
            async fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
                self.metric_counter_add(&name, delta)
            }

            async fn gauge_set(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
                self.metric_gauge_set(&name, value)
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
