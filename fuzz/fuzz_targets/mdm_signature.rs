#![no_main]
//! An Mdm-Signature header, verified over a fixed body (mdm_server::fuzzing::SIGNED_BODY).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::mdm_signature_header(data));
