//! Device identity: extracting and verifying the certificate a device authenticates with.
//!
//! A device proves its identity in one of two ways:
//! * an `Mdm-Signature` header (detached CMS/PKCS#7 over the request body, made with the
//!   device identity key), see [`verify_mdm_signature`];
//! * mutual TLS, with the client certificate forwarded by a trusted TLS-terminating proxy in a
//!   header, see [`parse_client_cert_header`].
//!
//! Both yield a [`DeviceCert`]; its [`DeviceCert::fingerprint`] is what an enrollment is bound to.
//! [`DeviceTrust`] decides whether a certificate may act as a device: it must chain to our SCEP CA or a
//! configured one ([`CaVerifier`]), verified once per certificate, and be within its validity period.
//!
//! Everything here is pure (no I/O) and must never panic on untrusted input.

mod ca;
mod cert;
mod cms;
mod header;
mod signature_cache;
#[cfg(test)]
pub(crate) mod test_support;
mod trust;

pub use ca::CaVerifier;
pub use cert::DeviceCert;
pub use cms::verify_mdm_signature;
pub use header::parse_client_cert_header;
pub use signature_cache::SignatureVerifier;
pub use trust::{CacheCounters, DeviceTrust, Issuers, Validity};

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Errors from identity extraction and verification.
///
/// Messages may include OpenSSL's reason text but never key material.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed Mdm-Signature: {0}")]
    MalformedSignature(String),
    #[error("Mdm-Signature does not match the request body")]
    SignatureMismatch,
    #[error("no signer certificate in Mdm-Signature")]
    NoSignerCertificate,
    #[error("malformed client certificate: {0}")]
    MalformedCertificate(String),
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    #[error("certificate expired or not yet valid")]
    Expired,
}

/// Upper bound on an encoded header value we are willing to decode. A device signature with
/// its certificate is a few KiB; anything far larger is not a device talking to us, and the
/// cap keeps OpenSSL's ASN.1 parser away from attacker-sized inputs.
pub(crate) const MAX_ENCODED_LEN: usize = 64 * 1024;

/// Standard-alphabet base64 that accepts input with or without `=` padding (RFC 8941 asks
/// parsers not to fail on missing padding; Apple always pads).
const BASE64_LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an encoded header value is not base64 we accept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Base64Error {
    #[error("empty value")]
    Empty,
    #[error("value longer than {MAX_ENCODED_LEN} bytes")]
    TooLong,
    #[error("invalid base64: {0}")]
    Invalid(#[from] base64::DecodeError),
}

/// Decode standard base64; the caller decides what whitespace, if any, is acceptable.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, Base64Error> {
    if s.is_empty() {
        return Err(Base64Error::Empty);
    }
    if s.len() > MAX_ENCODED_LEN {
        return Err(Base64Error::TooLong);
    }
    Ok(BASE64_LENIENT_PADDING.decode(s)?)
}

/// OpenSSL's reasons without source paths and codes: readable in logs and safe to show to a
/// client, e.g. `header too long; nested asn1 error`.
pub(crate) fn openssl_reasons(e: &openssl::error::ErrorStack) -> String {
    let mut reasons: Vec<&str> = e.errors().iter().filter_map(|err| err.reason()).collect();
    reasons.dedup();
    if reasons.is_empty() {
        "unknown OpenSSL error".to_owned()
    } else {
        reasons.join("; ")
    }
}
