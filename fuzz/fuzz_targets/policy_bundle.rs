#![no_main]
//! A policy version's bundle as an admin or a CI job uploads it (a zip).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::policy_bundle(data));
