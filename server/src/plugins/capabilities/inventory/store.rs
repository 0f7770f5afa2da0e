//! `inventory` in the server: the device, its channels and attributes as stored.

use super::{DeviceInfo, InventoryBackend};
use crate::plugins::convert;
use crate::plugins::store_backend::StoreBackend;
use crate::storage::{attributes, devices, enrollments, StorageError};

#[async_trait::async_trait]
impl InventoryBackend for StoreBackend {
    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "inventory.device")
    )]
    async fn device(&self, id: &str) -> Result<Option<DeviceInfo>, StorageError> {
        let db = &self.storage.read();
        let Some(d) = devices::find(db, id).await? else {
            return Ok(None);
        };
        let channels = enrollments::for_device(db, id).await?;
        let attrs = attributes::for_device(db, id).await?;
        Ok(Some(DeviceInfo {
            id: d.id.clone(),
            facts: convert::device_facts((&d).into()),
            enabled: channels.iter().any(|c| c.id == d.id && c.enabled),
            channels: channels.iter().map(convert::stored_enrollment).collect(),
            attributes: attrs.into_iter().map(|a| (a.key, a.value)).collect(),
            last_seen_unix_ms: d.last_seen_at,
        }))
    }
}
