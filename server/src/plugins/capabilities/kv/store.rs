//! `kv` in the server: the `plugin_kv` table.

use super::{KvBackend, KvFault};
use crate::plugins::store_backend::StoreBackend;
use crate::storage::{plugin_kv, StorageError};

impl StoreBackend {
    async fn quota_ok(&self, plugin: &str, key: &str, max: u32) -> Result<(), KvFault> {
        let db = &self.storage.read();
        let now = self.clock.now_ms();
        let exists = plugin_kv::get(&self.storage.read(), plugin, key, now)
            .await?
            .is_some();
        if !exists {
            let n = plugin_kv::count(db, plugin, now).await?;
            if n >= u64::from(max) {
                return Err(KvFault::QuotaExceeded);
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl KvBackend for StoreBackend {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "kv.get")
    )]
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        plugin_kv::get(&self.storage.read(), plugin, key, self.clock.now_ms()).await
    }

    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "kv.set")
    )]
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<(), KvFault> {
        self.quota_ok(plugin, key, max_keys).await?;
        plugin_kv::set(
            &self.storage,
            plugin,
            key,
            value,
            expires_at,
            self.clock.now_ms(),
        )
        .await?;
        Ok(())
    }

    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "kv.delete")
    )]
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        plugin_kv::delete(&self.storage, plugin, key, self.clock.now_ms()).await
    }

    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "kv.compare-and-swap")
    )]
    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<bool, KvFault> {
        if expected.is_none() {
            self.quota_ok(plugin, key, max_keys).await?;
        }
        Ok(plugin_kv::compare_and_swap(
            &self.storage,
            plugin,
            key,
            expected,
            new,
            expires_at,
            self.clock.now_ms(),
        )
        .await?)
    }

    #[tracing::instrument(
        name = "plugin.host",
        level = "debug",
        skip_all,
        fields(call = "kv.list-keys")
    )]
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        plugin_kv::list_keys(
            &self.storage.read(),
            plugin,
            prefix,
            start_after,
            u64::from(limit),
            self.clock.now_ms(),
        )
        .await
    }
}
