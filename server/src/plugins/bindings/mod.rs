//! Host bindings generated from `wit/`, one module per WIT version served. The generated types stay in
//! here and in the capabilities' host imports: each version converts to and from the host's own model
//! ([`super::event`]) where a call crosses into wasm, so the core never sees them. Serving another version
//! means a `bindgen!` over its WIT in a module of its own with its conversions and call dispatch, a
//! `Prepared` variant (runtime.rs), its `Served` entry (engine.rs), and its host imports in each
//! capability it serves.

pub mod v0_1;

/// The WIT package version of the newest bindings.
pub const WIT_VERSION: &str = "0.1.0";
