//! Capability `kv`: a key-value store private to each plugin, shared by all its calls and replicas, with a
//! quota of live keys.

mod memory;
mod store;

use crate::plugins::bindings::v0_1::mdm::plugin::kv as v0_1;
use crate::plugins::bindings::v0_2::mdm::plugin::kv as v0_2;
use crate::plugins::bindings::v0_3::mdm::plugin::kv as v0_3;
use crate::plugins::host::HostState;
use crate::plugins::manifest::Capability;
use crate::storage::StorageError;
use wasmtime::component::{HasSelf, Linker};

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_LIST: u32 = 1000;

/// Why a write was not made.
#[derive(Debug, thiserror::Error)]
pub enum KvFault {
    #[error("the plugin's key quota is used up")]
    QuotaExceeded,
    #[error(transparent)]
    Unavailable(#[from] StorageError),
}

/// The backend's slice for `kv`.
#[async_trait::async_trait]
pub trait KvBackend {
    /// The clock key expiry is measured against.
    fn now_ms(&self) -> i64;
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Fails with QuotaExceeded when `key` is new and the plugin already holds `max_keys` live keys.
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<(), KvFault>;
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError>;
    async fn kv_cas(
        &self,
        plugin: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        expires_at: Option<i64>,
        max_keys: u32,
    ) -> Result<bool, KvFault>;
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError>;
}

pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    v0_1::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_2::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    v0_3::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
}

/// Why a call got no answer, as each version's `kv-error` tells the plugin.
pub(crate) enum KvRefusal {
    QuotaExceeded,
    TooLarge,
    Unavailable(String),
}

impl From<KvFault> for KvRefusal {
    fn from(f: KvFault) -> Self {
        match f {
            KvFault::QuotaExceeded => KvRefusal::QuotaExceeded,
            KvFault::Unavailable(e) => e.into(),
        }
    }
}

impl From<StorageError> for KvRefusal {
    fn from(e: StorageError) -> Self {
        KvRefusal::Unavailable(e.to_string())
    }
}

/// What a call answers: a trap (no grant), or the plugin's result.
type KvResult<T> = wasmtime::Result<Result<T, KvRefusal>>;

fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY
}

impl HostState {
    fn expires_at(&self, ttl_seconds: Option<u32>) -> Option<i64> {
        ttl_seconds.map(|t| self.backend.now_ms() + i64::from(t) * 1000)
    }

    fn quota(&self) -> u32 {
        self.call.manifest.limits.kv_max_keys
    }

    async fn kv_get(&mut self, key: &str) -> KvResult<Option<Vec<u8>>> {
        self.require(Capability::Kv)?;
        if !key_ok(key) {
            return Ok(Err(KvRefusal::TooLarge));
        }
        Ok(self
            .backend
            .kv_get(&self.call.plugin_id, key)
            .await
            .map_err(Into::into))
    }

    async fn kv_set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> KvResult<()> {
        self.require(Capability::Kv)?;
        if !key_ok(key) || value.len() > MAX_VALUE {
            return Ok(Err(KvRefusal::TooLarge));
        }
        let exp = self.expires_at(ttl_seconds);
        Ok(self
            .backend
            .kv_set(&self.call.plugin_id, key, value, exp, self.quota())
            .await
            .map_err(Into::into))
    }

    async fn kv_delete(&mut self, key: &str) -> KvResult<bool> {
        self.require(Capability::Kv)?;
        if !key_ok(key) {
            return Ok(Err(KvRefusal::TooLarge));
        }
        Ok(self
            .backend
            .kv_delete(&self.call.plugin_id, key)
            .await
            .map_err(Into::into))
    }

    async fn kv_cas(
        &mut self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> KvResult<bool> {
        self.require(Capability::Kv)?;
        if !key_ok(key) || new.len() > MAX_VALUE {
            return Ok(Err(KvRefusal::TooLarge));
        }
        let exp = self.expires_at(ttl_seconds);
        Ok(self
            .backend
            .kv_cas(&self.call.plugin_id, key, expected, new, exp, self.quota())
            .await
            .map_err(Into::into))
    }

    async fn kv_list(
        &mut self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> KvResult<Vec<String>> {
        self.require(Capability::Kv)?;
        if prefix.len() > MAX_KEY {
            return Ok(Err(KvRefusal::TooLarge));
        }
        Ok(self
            .backend
            .kv_list(
                &self.call.plugin_id,
                prefix,
                start_after,
                limit.min(MAX_LIST),
            )
            .await
            .map_err(Into::into))
    }
}

/// The host imports of each served WIT version: the interface is the same in each.
macro_rules! host_imports {
    ($($v:ident),+) => {$(
        impl From<KvRefusal> for $v::KvError {
            fn from(r: KvRefusal) -> Self {
                match r {
                    KvRefusal::QuotaExceeded => Self::QuotaExceeded,
                    KvRefusal::TooLarge => Self::TooLarge,
                    KvRefusal::Unavailable(why) => Self::Unavailable(why),
                }
            }
        }

        impl $v::Host for HostState {
            async fn get(
                &mut self,
                key: String,
            ) -> wasmtime::Result<Result<Option<Vec<u8>>, $v::KvError>> {
                Ok(self.kv_get(&key).await?.map_err(Into::into))
            }

            async fn set(
                &mut self,
                key: String,
                value: Vec<u8>,
                ttl_seconds: Option<u32>,
            ) -> wasmtime::Result<Result<(), $v::KvError>> {
                Ok(self
                    .kv_set(&key, value, ttl_seconds)
                    .await?
                    .map_err(Into::into))
            }

            async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, $v::KvError>> {
                Ok(self.kv_delete(&key).await?.map_err(Into::into))
            }

            async fn compare_and_swap(
                &mut self,
                key: String,
                expected: Option<Vec<u8>>,
                new: Vec<u8>,
                ttl_seconds: Option<u32>,
            ) -> wasmtime::Result<Result<bool, $v::KvError>> {
                Ok(self
                    .kv_cas(&key, expected, new, ttl_seconds)
                    .await?
                    .map_err(Into::into))
            }

            async fn list_keys(
                &mut self,
                prefix: String,
                start_after: Option<String>,
                limit: u32,
            ) -> wasmtime::Result<Result<Vec<String>, $v::KvError>> {
                Ok(self
                    .kv_list(&prefix, start_after.as_deref(), limit)
                    .await?
                    .map_err(Into::into))
            }
        }
    )+};
}

host_imports!(v0_1, v0_2, v0_3);
