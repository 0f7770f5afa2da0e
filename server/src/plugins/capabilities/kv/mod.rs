use crate::plugins::backend::KvFault;
use crate::plugins::bindings::mdm::plugin::kv::{Host, KvError};
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_LIST: u32 = 1000;

fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY
}

fn fault(f: KvFault) -> KvError {
    match f {
        KvFault::QuotaExceeded => KvError::QuotaExceeded,
        KvFault::Unavailable(e) => KvError::Unavailable(e),
    }
}

impl HostState {
    fn expires_at(&self, ttl_seconds: Option<u32>) -> Option<i64> {
        ttl_seconds.map(|t| self.backend.now_ms() + i64::from(t) * 1000)
    }

    fn quota(&self) -> u32 {
        self.call.manifest.limits.kv_max_keys
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        self.require(Capability::Kv)?;
        if !key_ok(&key) {
            return Ok(Err(KvError::TooLarge));
        }
        Ok(self
            .backend
            .kv_get(&self.call.plugin_id, &key)
            .await
            .map_err(KvError::Unavailable))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), KvError>> {
        self.require(Capability::Kv)?;
        if !key_ok(&key) || value.len() > MAX_VALUE {
            return Ok(Err(KvError::TooLarge));
        }
        let exp = self.expires_at(ttl_seconds);
        Ok(self
            .backend
            .kv_set(&self.call.plugin_id, &key, value, exp, self.quota())
            .await
            .map_err(fault))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        self.require(Capability::Kv)?;
        if !key_ok(&key) {
            return Ok(Err(KvError::TooLarge));
        }
        Ok(self
            .backend
            .kv_delete(&self.call.plugin_id, &key)
            .await
            .map_err(KvError::Unavailable))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        self.require(Capability::Kv)?;
        if !key_ok(&key) || new.len() > MAX_VALUE {
            return Ok(Err(KvError::TooLarge));
        }
        let exp = self.expires_at(ttl_seconds);
        Ok(self
            .backend
            .kv_cas(&self.call.plugin_id, &key, expected, new, exp, self.quota())
            .await
            .map_err(fault))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        self.require(Capability::Kv)?;
        if prefix.len() > MAX_KEY {
            return Ok(Err(KvError::TooLarge));
        }
        Ok(self
            .backend
            .kv_list(
                &self.call.plugin_id,
                &prefix,
                start_after.as_deref(),
                limit.min(MAX_LIST),
            )
            .await
            .map_err(KvError::Unavailable))
    }
}
