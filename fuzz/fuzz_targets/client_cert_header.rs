#![no_main]
//! A client certificate header from a TLS-terminating proxy (RFC 9440, escaped PEM, PEM).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mdm_server::fuzzing::client_cert_header(data));
