#![no_main]
//! An Mdm-Signature header and a body: two bytes of header length (little endian), the header, the body.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::mdm_signature_split(data));
