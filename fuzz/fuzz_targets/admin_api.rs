#![no_main]
//! An admin API JSON body (every request type) and query string.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::admin_api(data));
