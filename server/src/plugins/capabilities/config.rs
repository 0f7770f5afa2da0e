//! Capability `config`: the configuration the admin set for the plugin.

use crate::plugins::bindings::v0_1::mdm::plugin::config as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::config as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::config as v0_3;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use wasmtime::component::{HasSelf, Linker};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    fn config_text(&self) -> wasmtime::Result<String> {
        let _span = tracing::debug_span!("plugin.host", call = "config.get").entered();
        self.require(Capability::Config)?;
        Ok(self.call.config.to_string())
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl $v::Host for HostState {
            async fn get(&mut self) -> wasmtime::Result<String> {
                self.config_text()
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
