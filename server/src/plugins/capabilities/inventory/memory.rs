//! `inventory` in the plugin-author harness: the devices a test added.

use super::{DeviceInfo, InventoryBackend};
use crate::plugins::testing::{lock, MemoryBackend};
use crate::storage::StorageError;

#[async_trait::async_trait]
impl InventoryBackend for MemoryBackend {
    async fn device(&self, id: &str) -> Result<Option<DeviceInfo>, StorageError> {
        Ok(lock(&self.devices).get(id).cloned())
    }
}
