//! Host bindings generated from `wit/` (mdm:plugin@0.1.0). Imports are async (they reach the database and the
//! network) and may trap (a capability used without its grant).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::mdm::plugin::hooks;
pub use mdm::plugin::types;

/// The WIT package version these bindings serve.
pub const WIT_VERSION: &str = "0.1.0";
