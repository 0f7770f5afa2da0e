//! The device-information a device sends when it fetches an enrollment profile during Automated Device
//! Enrollment (or any client that supplies it): a CMS SignedData around a plist with `SERIAL`, `UDID`,
//! `PRODUCT`, `VERSION`, either as the POST body or base64 in the `x-apple-aspen-deviceinfo` header.
//!
//! The signature over the plist is verified, so the content is exactly what the signer sent. Its chain
//! (Apple's device attestation CA) is not: Apple does not publish that root for servers, so a serial number
//! read from here identifies a device only as far as its sender is trusted. Serial-pinned enrollment tokens
//! rely on it together with the one-time token itself.

use crate::identity::openssl_reasons;
use crate::protocol::ProtocolError;
use openssl::error::ErrorStack;
use openssl::pkcs7::Pkcs7;

pub const HEADER: &str = "x-apple-aspen-deviceinfo";
const MAX_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub serial_number: Option<String>,
    pub udid: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
}

/// Why device information is refused. Messages carry OpenSSL's reasons, never key material.
#[derive(Debug, thiserror::Error)]
pub enum MachineInfoError {
    #[error("header is not base64")]
    HeaderNotBase64,
    #[error("device information longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("not CMS: {}", openssl_reasons(.0))]
    NotCms(ErrorStack),
    #[error("not a CMS SignedData")]
    NotSignedData,
    #[error("signature: {}", openssl_reasons(.0))]
    Signature(ErrorStack),
    #[error(transparent)]
    Content(#[from] ProtocolError),
}

/// Decode and verify a signed device-information blob (DER/BER CMS).
pub fn decode(der: &[u8]) -> Result<MachineInfo, MachineInfoError> {
    if der.len() > MAX_LEN {
        return Err(MachineInfoError::TooLong);
    }
    let p7 = Pkcs7::from_der(der).map_err(MachineInfoError::NotCms)?;
    if p7.signed().is_none() {
        return Err(MachineInfoError::NotSignedData);
    }
    let content = crate::pki::signed_content(&p7, None).map_err(MachineInfoError::Signature)?;
    let dict = crate::protocol::parse_dictionary(&content)?;
    let get = |k: &str| dict.get(k).and_then(|v| v.as_string()).map(str::to_owned);
    Ok(MachineInfo {
        serial_number: get("SERIAL"),
        udid: get("UDID"),
        product: get("PRODUCT"),
        version: get("VERSION"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Usage};
    use openssl::pkcs7::Pkcs7Flags;
    use openssl::stack::Stack;

    fn signed(content: &[u8]) -> Vec<u8> {
        // Anyone can sign: the signer's chain is not checked (see the module's comment).
        let signer = pki::generate(
            &pki::name("Anyone", "test").unwrap(),
            Usage::ClientAuth,
            1,
            None,
        )
        .unwrap();
        Pkcs7::sign(
            &signer.cert,
            &signer.key,
            &Stack::new().unwrap(),
            content,
            Pkcs7Flags::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap()
    }

    // `POST /enroll` needs no credentials: 61 KB of signed device information expanded to 950 MiB.
    #[test]
    fn an_expansion_bomb_is_refused() {
        for (name, bomb) in crate::protocol::bombs::expansion_bombs(6 * 1024, 4096) {
            let der = signed(&bomb);
            assert!(der.len() <= MAX_LEN, "{name}: {} bytes", der.len());
            let started = std::time::Instant::now();
            let err = decode(&der).unwrap_err().to_string();
            assert!(err.contains("expands"), "{name}: {err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(2),
                "{name}"
            );
        }
    }

    #[test]
    fn signed_device_information_is_read() {
        let mut d = plist::Dictionary::new();
        d.insert("SERIAL".into(), "C02TEST".into());
        d.insert("UDID".into(), "00008030-001A2C3E0E38802E".into());
        let info = decode(&signed(&crate::protocol::to_xml(&d))).unwrap();
        assert_eq!(info.serial_number.as_deref(), Some("C02TEST"));
        assert_eq!(info.udid.as_deref(), Some("00008030-001A2C3E0E38802E"));
    }
}
