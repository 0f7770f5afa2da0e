//! Capability `inventory`: what the server knows of a device.

mod memory;
mod store;

use crate::plugins::bindings::v0_1::mdm::plugin::inventory as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::inventory as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::inventory as v0_3;
use crate::plugins::event::{DeviceFacts, Enrollment};
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use crate::storage::StorageError;
use wasmtime::component::{HasSelf, Linker};

/// A device as `inventory` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub id: String,
    pub facts: DeviceFacts,
    /// Whether the device channel is enabled.
    pub enabled: bool,
    pub channels: Vec<Enrollment>,
    /// Attributes set by plugins.
    pub attributes: Vec<(String, String)>,
    pub last_seen_unix_ms: i64,
}

/// The backend's slice for `inventory`.
#[async_trait::async_trait]
pub trait InventoryBackend {
    async fn device(&self, id: &str) -> Result<Option<DeviceInfo>, StorageError>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

impl HostState {
    async fn inventory_device(&mut self, device_id: &str) -> wasmtime::Result<Option<DeviceInfo>> {
        self.require(Capability::Inventory)?;
        // A database failure reads as "unknown device" to the plugin and is logged here; inventory is advisory.
        match self.backend.device(device_id).await {
            Ok(d) => Ok(d),
            Err(e) => {
                tracing::warn!(plugin = %self.call.plugin_id, error = %e, "inventory lookup failed");
                Ok(None)
            }
        }
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl From<DeviceInfo> for $v::DeviceInfo {
            fn from(d: DeviceInfo) -> Self {
                Self {
                    id: d.id,
                    facts: d.facts.into(),
                    enabled: d.enabled,
                    channels: d.channels.into_iter().map(Into::into).collect(),
                    attributes: d.attributes,
                    last_seen_unix_ms: d.last_seen_unix_ms,
                }
            }
        }

        impl $v::Host for HostState {
            async fn get_device(
                &mut self,
                device_id: String,
            ) -> wasmtime::Result<Option<$v::DeviceInfo>> {
                Ok(self.inventory_device(&device_id).await?.map(Into::into))
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
