#![no_main]
//! A command report body (Idle, or a command's result).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::report(data));
