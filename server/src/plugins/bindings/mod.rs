//! Host bindings generated from `wit/`, one module per WIT version served. The newest is re-exported at the
//! top: the host's event and action model. An older minor version gets its own module (a `bindgen!` over
//! that version's WIT), its own `Prepared` variant (runtime.rs), and conversions to and from the newest
//! types, so plugins built against it keep running after an upgrade.

pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

pub use v0_1::exports::mdm::plugin::hooks;
pub use v0_1::mdm;
pub use v0_1::mdm::plugin::types;

/// The WIT package version of the newest bindings.
pub const WIT_VERSION: &str = "0.1.0";
