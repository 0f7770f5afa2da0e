#![no_main]
//! An admin's DDM declaration upload.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::ddm_declaration(data));
