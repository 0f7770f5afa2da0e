use crate::plugins::bindings::mdm::plugin::inventory::{DeviceInfo, Host};
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;

impl Host for HostState {
    async fn get_device(&mut self, device_id: String) -> wasmtime::Result<Option<DeviceInfo>> {
        self.require(Capability::Inventory)?;
        // A database failure reads as "unknown device" to the plugin and is logged here; inventory is advisory.
        match self.backend.device(&device_id).await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::warn!(plugin = %self.call.plugin_id, error = %e, "inventory lookup failed");
                Ok(None)
            }
        }
    }
}
