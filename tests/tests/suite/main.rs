//! The black-box suite, one test binary: each module was a test target of its own, and each linked the whole
//! server (about 270 MB in a debug build), so CI spent its disk and its link time on copies of one program.
//! Filter by module as before: `cargo test -p mdm-tests --test suite plugin_flow::`.
//!
//! `tests/tests/secrets.rs` stays a binary of its own: it installs a process-wide tracing subscriber at trace
//! level to read everything the server logs, which would capture (and slow) every other test here.

mod admin_api;
mod api_contract;
mod checkin_service;
mod cli;
mod config_reference;
mod conformance;
mod crash_safety;
mod ddm;
mod ddm_schemas;
mod device_security;
mod enrollment;
mod groups;
mod hostile_input;
mod http_hardening;
mod mdm_flow;
mod metrics;
mod plugin_flow;
mod plugin_harness;
mod plugin_languages;
mod plugin_sandbox;
mod plugin_versions;
mod policies;
mod policy_rollout;
mod profile_platforms;
mod push;
mod races;
mod replicas;
mod robustness;
mod scep_interop;
mod sim_smoke;
mod traces;
