#![no_main]
//! A signed device-information blob (/enroll).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::machine_info(data));
