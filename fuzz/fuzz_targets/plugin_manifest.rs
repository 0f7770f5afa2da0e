#![no_main]
//! A plugin manifest (JSON).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::plugin_manifest(data));
