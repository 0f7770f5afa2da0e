//! The SDK for mdm-server plugins.
//!
//! A plugin is a WebAssembly component (`wasm32-wasip2`) that the server calls at each enrollment
//! decision, check-in, command result, scheduled tick, declarative management status change, GetToken
//! check-in, policy rollout promotion and rollout step. This crate is the only dependency a plugin needs: it
//! holds the bindings for the WIT contract (`wit/v0.3/mdm-plugin.wit`, `mdm:plugin@0.3.0`), the [`Plugin`] trait with a default for every hook,
//! the [`export_plugin!`] macro, typed command and action builders, a [`Plist`] value rebuilt from the
//! flat `plist-tree`, accessors for status reports ([`types::DdmStatusEvent::item_turned`]), and thin
//! wrappers over the host imports (`kv`, `config`, `log`, `metrics`, `inventory`, `http`).
//!
//! ```ignore
//! use mdm_plugin_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn decide_enrollment(req: EnrollmentRequest) -> PluginResult<Decision> {
//!         info!("enrollment of {}", req.enrollment.device_id);
//!         Ok(Decision::Abstain)
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! Host imports are capabilities: a call to `kv::get` makes the component import `mdm:plugin/kv`,
//! which the plugin's manifest must declare. Imports a plugin never calls are left out of the
//! built component.
//!
//! On targets other than WebAssembly (unit tests with `cargo test`), the host functions are served
//! by an in-memory stand-in, [`mock`], so hooks can be tested natively.

#![warn(missing_docs)]

/// The bindings generated from `wit/mdm-plugin.wit` (world `plugin`): the repository's `wit/v0.3`, linked into
/// the crate so it travels with it when packaged.
///
/// Everything here is also reachable through friendlier paths ([`prelude`], [`kv`], [`http`], ...);
/// use these when you need the raw host functions.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_hooks",
        default_bindings_module: "::mdm_plugin_sdk::bindings",
        additional_derives: [Clone, PartialEq],
        additional_type_attributes: {
            "mdm:plugin/types@0.3.0/enrollment": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/device-facts": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/error-chain-item": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/declaration-state": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/declaration-change": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/status-item-change": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/ddm-status-event": [#[derive(serde::Serialize)]],
            "mdm:plugin/types@0.3.0/channel-kind": [
                #[derive(serde::Serialize)]
                #[serde(rename_all = "kebab-case")]
            ],
            "mdm:plugin/types@0.3.0/checkin-kind": [
                #[derive(serde::Serialize)]
                #[serde(rename_all = "kebab-case")]
            ],
            "mdm:plugin/types@0.3.0/command-status": [
                #[derive(serde::Serialize)]
                #[serde(rename_all = "kebab-case")]
            ],
        },
    });
}

pub mod actions;
pub mod b64;
pub mod commands;
pub mod config;
mod error;
mod events;
pub mod http;
pub mod inventory;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod mock;
mod plist;
mod plugin;

// The host imports: the real ones in a component, the in-memory stand-in elsewhere (unit tests).
#[cfg(target_family = "wasm")]
pub(crate) use bindings::mdm::plugin as host;
#[cfg(not(target_family = "wasm"))]
pub(crate) use mock::host;

pub use error::{PluginError, PluginResult};
pub use plist::{Plist, PlistError, MAX_PLIST_DEPTH};
pub use plugin::{Plugin, MAX_TOKEN_BYTES};

/// Re-exported so plugins can use `serde_json::Value` and `json!` without their own dependency.
pub use serde_json;

/// The WIT types (`mdm:plugin/types`) at a short path.
pub mod types {
    pub use crate::bindings::mdm::plugin::types::*;
}

/// The rollout types (`mdm:plugin/rollout`, since 0.3) at a short path: what `decide-promotion` and
/// `on-rollout` are given and answer.
pub mod rollout {
    pub use crate::bindings::mdm::plugin::rollout::*;
}

/// Everything a plugin usually needs: `use mdm_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::rollout::{
        PromotionDecision, PromotionRequest, RolloutEvent, RolloutInfo, Stage, StageCounts,
    };
    pub use crate::types::{
        Action, ChannelKind, CheckinEvent, CheckinKind, CommandResultEvent, CommandSpec,
        CommandStatus, DdmStatusEvent, Decision, DeclarationChange, DeclarationState,
        DeviceAttribute, DeviceAttributeKey, DeviceFacts, EnqueueCommand, Enrollment,
        EnrollmentRequest, ErrorChainItem, Event, PlistNode, PlistTree, PlistValue, RetryCommand,
        ScheduleEvent, SetAssignment, StatusItemChange, TokenRequest,
    };
    pub use crate::{actions, commands, config, http, inventory, kv, metrics};
    pub use crate::{debug, error, info, trace, warn};
    pub use crate::{export_plugin, Plist, PlistError, Plugin, PluginError, PluginResult};
    pub use serde_json::json;
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::Exports;
}

/// Exports a type implementing [`Plugin`] as the component's `mdm:plugin/hooks` interface.
///
/// Use it once per plugin crate, at the top level:
///
/// ```ignore
/// struct MyPlugin;
/// impl mdm_plugin_sdk::Plugin for MyPlugin {}
/// mdm_plugin_sdk::export_plugin!(MyPlugin);
/// ```
///
/// The plugin crate does not need `wit-bindgen` itself.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            type __MdmPluginExports = $crate::__private::Exports<$plugin>;
    $crate::bindings::__export_hooks!(__MdmPluginExports with_types_in $crate::bindings);
        };
    };
}
