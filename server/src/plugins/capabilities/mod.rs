//! The host imports of `mdm:plugin`, one module per capability. Each owns its linker registration, its
//! grant check (defence in depth: the upload check refuses components importing what they were not
//! granted) and its slice of the backend, with that slice's implementations in the server (`store.rs`,
//! over [`StoreBackend`](super::store_backend::StoreBackend)) and in the plugin-author harness
//! (`memory.rs`, over [`MemoryBackend`](super::testing::MemoryBackend)).

mod config;
pub mod http;
pub mod inventory;
pub mod kv;
mod log;
pub mod metrics;

use super::host::HostState;
use wasmtime::component::Linker;

/// Where capabilities read and write: every capability's slice.
pub trait HostBackend:
    kv::KvBackend
    + inventory::InventoryBackend
    + http::HttpBackend
    + metrics::MetricsBackend
    + Send
    + Sync
    + 'static
{
}

impl<T> HostBackend for T where
    T: kv::KvBackend
        + inventory::InventoryBackend
        + http::HttpBackend
        + metrics::MetricsBackend
        + Send
        + Sync
        + 'static
{
}

/// Every capability's imports.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    log::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    inventory::add_to_linker(linker)?;
    http::add_to_linker(linker)
}
