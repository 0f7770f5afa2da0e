//! Host bindings generated from `wit/`, one module per WIT version served (`wit/v0.N/` → `v0_N.rs`). The
//! generated types stay in here and in the capabilities' host imports: each version converts to and from
//! the host's own model ([`super::event`]) where a call crosses into wasm, so the core never sees them.
//! Serving another version means a `bindgen!` over its WIT in a module of its own with its conversions,
//! call dispatch and the hooks it has (`HOOKS`), a `Prepared` variant (runtime.rs), its `Served` entry
//! (engine.rs), `inspect::SUPPORTED_VERSIONS`, and its host imports in each capability (one line each:
//! every capability implements its `Host` through a macro over the version's module). A version whose
//! `types` interface is unchanged maps it to the previous version's with bindgen's `with`, and so shares
//! its conversions.

pub mod v0_1;
pub mod v0_2;
pub mod v0_3;

/// The WIT package version of the newest bindings (what the SDK builds against).
pub const WIT_VERSION: &str = "0.3.0";
