#![no_main]
//! A check-in body (Authenticate, TokenUpdate, CheckOut, ...).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::checkin(data));
