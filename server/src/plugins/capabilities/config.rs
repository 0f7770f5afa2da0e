//! Capability `config`: the configuration the admin set for the plugin.

use crate::plugins::bindings::v0_1::mdm::plugin::config as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::config as v0_2;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use wasmtime::component::{HasSelf, Linker};

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    fn config_text(&self) -> wasmtime::Result<String> {
        self.require(Capability::Config)?;
        Ok(self.call.config.to_string())
    }
}

impl v0_1::Host for HostState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        self.config_text()
    }
}

impl v0_2::Host for HostState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        self.config_text()
    }
}
