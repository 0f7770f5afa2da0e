//! One wasmtime engine for all plugins: the pooling allocator (instances are cheap to create and recycle),
//! epoch interruption (a ticker thread bumps the epoch; a call's deadline is a number of ticks), and one
//! linker with WASI (sandboxed by each call's context) and the `mdm:plugin` imports.

use super::bindings::{v0_1, v0_2, v0_3};
use super::capabilities;
use super::host::HostState;
use super::manifest::Hook;
use super::runtime::Prepared;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The WIT versions this build has bindings for (one `bindings` module and `Prepared` variant each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    V0_1,
    V0_2,
    V0_3,
}

impl Served {
    /// Which bindings serve a component built against `wit_version` (0.x versions match on the minor).
    pub fn of(wit_version: &str) -> Option<Served> {
        let mut parts = wit_version.split('.');
        match (parts.next(), parts.next()) {
            (Some("0"), Some("1")) => Some(Served::V0_1),
            (Some("0"), Some("2")) => Some(Served::V0_2),
            (Some("0"), Some("3")) => Some(Served::V0_3),
            _ => None,
        }
    }

    /// The hooks a component built against this version exports.
    pub fn hooks(self) -> &'static [Hook] {
        match self {
            Served::V0_1 => v0_1::HOOKS,
            Served::V0_2 => v0_2::HOOKS,
            Served::V0_3 => v0_3::HOOKS,
        }
    }
}

/// How often the epoch advances. A call's deadline is rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per component: enough for the interpreters of componentize-py and componentize-js.
pub(super) const MAX_CORE_INSTANCES: u32 = 64;
pub(super) const MAX_MEMORIES: u32 = 8;
pub(super) const MAX_TABLES: u32 = 64;

/// The largest linear memory a plugin may ask for in its manifest.
const MAX_MEMORY: usize = 256 * 1024 * 1024;

/// Of each pooled linear memory, how much is reset in place (only the pages a call dirtied, found with
/// `PAGEMAP_SCAN` on Linux 6.7+) and left resident when an instance is dropped, instead of released with
/// `madvise`. Releasing costs a TLB shoot-down across cores and the next call faults every page back in;
/// a call to one of our Rust plugins dirties well under this. Resident memory is bounded by the slots
/// ever in use at once: `max_concurrent` x this, at most.
const MEMORY_KEEP_RESIDENT: usize = 1024 * 1024;
/// The same for tables (a Rust component's tables are a few pages).
const TABLE_KEEP_RESIDENT: usize = 64 * 1024;

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
}

impl PluginEngine {
    /// `max_concurrent` instances can be live at once (the pool's size; callers hold a semaphore permit).
    pub fn new(cache_dir: Option<PathBuf>, max_concurrent: u32) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        let n = max_concurrent.max(1);
        // A Rust wasip2 component holds a handful of core instances, memories and tables; one built by
        // componentize-py or componentize-js (an interpreter and its adapters) several dozen instances.
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 4)
            .total_tables(n * 8)
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            .max_memories_per_component(MAX_MEMORIES)
            .max_tables_per_component(MAX_TABLES)
            .max_memory_size(MAX_MEMORY)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut cfg = Config::new();
        cfg.epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                // Ends with the engine.
                while let Some(e) = weak.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(wasmtime::Error::from)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Every served version's imports, side by side (their names carry the version).
        v0_1::add_types_to_linker(&mut linker)?;
        v0_2::add_types_to_linker(&mut linker)?;
        v0_3::add_types_to_linker(&mut linker)?;
        capabilities::add_to_linker(&mut linker)?;
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Self {
            engine,
            linker,
            cache_dir,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    }

    /// Compile a component, or load it from the on-disk cache (keyed by content hash and engine settings).
    /// CPU-heavy: call from a blocking thread.
    pub fn compile(&self, wasm: &[u8], sha256: &str) -> wasmtime::Result<Component> {
        if let Some(path) = self.cache_path(sha256) {
            if path.exists() {
                // SAFETY: the file was written by `Component::serialize` of this engine configuration (its
                // name carries the engine's compatibility hash) into our own data directory.
                match unsafe { Component::deserialize_file(&self.engine, &path) } {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "plugin cache unusable; recompiling")
                    }
                }
            }
            let component = Component::new(&self.engine, wasm)?;
            if let Ok(bytes) = component.serialize() {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            return Ok(component);
        }
        Component::new(&self.engine, wasm)
    }

    /// Resolve imports once, with the bindings of the WIT version the component was built against; each call
    /// then only instantiates.
    pub fn prepare(&self, component: &Component, wit_version: &str) -> wasmtime::Result<Prepared> {
        let pre = self.linker.instantiate_pre(component)?;
        match Served::of(wit_version) {
            Some(Served::V0_1) => Ok(Prepared::V0_1(v0_1::PluginPre::new(pre)?)),
            Some(Served::V0_2) => Ok(Prepared::V0_2(v0_2::PluginPre::new(pre)?)),
            Some(Served::V0_3) => Ok(Prepared::V0_3(v0_3::PluginPre::new(pre)?)),
            None => Err(wasmtime::Error::msg(format!(
                "no bindings for mdm:plugin@{wit_version}"
            ))),
        }
    }

    /// Whether a compiled form of this component is in the on-disk cache.
    pub fn is_cached(&self, sha256: &str) -> bool {
        self.cache_path(sha256).is_some_and(|p| p.exists())
    }

    /// Ticks for a deadline of `ms` milliseconds.
    pub fn ticks_for(ms: u32) -> u64 {
        let tick = EPOCH_TICK.as_millis() as u64;
        (u64::from(ms)).div_ceil(tick).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_the_upload_check_accepts_has_bindings() {
        // Listing a version as supported without bindings would pass the upload check, then fail to link.
        for (major, minor) in crate::plugins::inspect::SUPPORTED_VERSIONS {
            let v = format!("{major}.{minor}.3");
            assert!(Served::of(&v).is_some(), "no bindings for {v}");
        }
        assert_eq!(Served::of("0.1.0"), Some(Served::V0_1));
        assert_eq!(Served::of("0.2.0"), Some(Served::V0_2));
        assert_eq!(Served::of("0.3.1"), Some(Served::V0_3));
        assert_eq!(Served::of("0.4.0"), None);
        assert_eq!(Served::of("1.1.0"), None);
    }

    #[test]
    fn each_version_has_the_hooks_its_wit_has() {
        assert!(!Served::V0_1.hooks().contains(&Hook::OnDdmStatus));
        assert!(!Served::V0_1.hooks().contains(&Hook::ProvideToken));
        assert!(Served::V0_1.hooks().contains(&Hook::OnSchedule));
        assert!(Served::V0_2.hooks().contains(&Hook::ProvideToken));
        assert!(!Served::V0_2.hooks().contains(&Hook::DecidePromotion));
        assert!(!Served::V0_2.hooks().contains(&Hook::OnRollout));
        assert_eq!(Served::V0_3.hooks(), &Hook::ALL[..]);
    }

    #[test]
    fn deadlines_round_up_to_whole_ticks() {
        assert_eq!(PluginEngine::ticks_for(200), 40);
        assert_eq!(PluginEngine::ticks_for(1), 1);
        assert_eq!(PluginEngine::ticks_for(7), 2);
    }

    #[test]
    fn garbage_is_not_a_component_and_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let e = PluginEngine::new(Some(dir.path().to_path_buf()), 2).unwrap();
        assert!(e.compile(b"\0asm\x0d\0\x01\0garbage", "abc").is_err());
        assert!(!e.is_cached("abc"));
    }
}
