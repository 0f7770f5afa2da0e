use crate::plugins::bindings::mdm::plugin::config::Host;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;

impl Host for HostState {
    async fn get(&mut self) -> wasmtime::Result<String> {
        self.require(Capability::Config)?;
        Ok(self.call.config.to_string())
    }
}
