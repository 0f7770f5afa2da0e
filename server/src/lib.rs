//! mdm-server: an Apple MDM server with sandboxed WebAssembly plugins.
//!
//! Layers, each depending only on those below it: `http` (actix) -> services (`checkin`, `queue`, `apikeys`)
//! -> `storage` (sea-orm) -> `protocol` and `identity` (pure). `startup` wires them into an `Application`;
//! `jobs` runs their background work.

pub mod apikeys;
pub mod checkin;
pub mod clock;
pub mod config;
pub mod ddm;
pub mod enroll;
#[doc(hidden)]
pub mod fuzzing;
pub mod groups;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod metrics;
pub(crate) mod openssl_ffi;
pub mod pki;
pub mod plugins;
pub mod policies;
pub mod protocol;
pub mod push;
pub mod queue;
pub mod scep;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod traces;

pub use config::Config;
pub use startup::Application;
