//! The host imports of `mdm:plugin`, one module per capability. Each checks its grant (defence in depth:
//! the upload check refuses components importing what they were not granted) and goes through the backend.

mod config;
mod http;
mod inventory;
mod kv;
mod log;
mod metrics;

use super::bindings::mdm::plugin::types;
use super::host::HostState;

impl types::Host for HostState {}
