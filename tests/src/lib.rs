//! Test support for mdm-server: a simulated Apple device that signs every message like a real one, and a
//! harness that starts the real server on an ephemeral port over a fresh database.

pub mod ddm;
pub mod device;
pub mod enrollment;
pub mod harness;
pub mod languages;
pub mod otlp;
pub mod plugins;
pub mod policy;
pub mod process;
pub mod profiles;
pub mod shared;
pub mod sim;
pub mod sink;
