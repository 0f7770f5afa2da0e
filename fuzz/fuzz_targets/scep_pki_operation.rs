#![no_main]
//! A SCEP PKIOperation body: decoded, decrypted with a fixed CA (`fuzz/scep-ca.pem`, so seed requests
//! enveloped to it decrypt), issued, answered.

use libfuzzer_sys::fuzz_target;
use mdm_server::pki::KeyPair;
use std::sync::LazyLock;

// Loaded once: parsing an RSA key per input would be most of the work.
static CA: LazyLock<KeyPair> =
    LazyLock::new(|| mdm_server::fuzzing::scep_ca(include_bytes!("../scep-ca.pem")));

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::scep_pki_operation(&CA, data));
