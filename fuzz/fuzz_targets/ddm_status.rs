#![no_main]
//! A DDM status report (the `Data` of a DeclarativeManagement check-in).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::ddm_status(data));
