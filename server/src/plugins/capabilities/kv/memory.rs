//! `kv` in the plugin-author harness: a map in memory.

use super::{KvBackend, KvFault};
use crate::plugins::testing::{lock, MemoryBackend};
use crate::storage::StorageError;
use std::sync::atomic::Ordering;

impl MemoryBackend {
    fn live(&self, v: &(Vec<u8>, Option<i64>)) -> bool {
        v.1.is_none_or(|t| t > self.now_ms())
    }

    fn count(&self, plugin: &str) -> usize {
        lock(&self.kv)
            .iter()
            .filter(|((p, _), v)| p == plugin && self.live(v))
            .count()
    }
}

#[async_trait::async_trait]
impl KvBackend for MemoryBackend {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(lock(&self.kv)
            .get(&(plugin.to_string(), key.to_string()))
            .filter(|v| self.live(v))
            .map(|v| v.0.clone()))
    }

    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        exp: Option<i64>,
        max: u32,
    ) -> Result<(), KvFault> {
        let k = (plugin.to_string(), key.to_string());
        let exists = self.kv_get(plugin, key).await?.is_some();
        if !exists && self.count(plugin) >= max as usize {
            return Err(KvFault::QuotaExceeded);
        }
        lock(&self.kv).insert(k, (value, exp));
        Ok(())
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        let existed = self.kv_get(plugin, key).await?.is_some();
        lock(&self.kv).remove(&(plugin.to_string(), key.to_string()));
        Ok(existed)
    }

    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        exp: Option<i64>,
        max: u32,
    ) -> Result<bool, KvFault> {
        let current = self.kv_get(plugin, key).await?;
        if current != expected {
            return Ok(false);
        }
        if current.is_none() && self.count(plugin) >= max as usize {
            return Err(KvFault::QuotaExceeded);
        }
        lock(&self.kv).insert((plugin.to_string(), key.to_string()), (new, exp));
        Ok(true)
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        Ok(lock(&self.kv)
            .iter()
            .filter(|((p, k), v)| {
                p == plugin
                    && k.starts_with(prefix)
                    && start_after.is_none_or(|a| k.as_str() > a)
                    && self.live(v)
            })
            .map(|((_, k), _)| k.clone())
            .take(limit as usize)
            .collect())
    }
}
