//! [`DeviceCert`]: a parsed device identity certificate and its fingerprint.

use std::fmt;
use std::sync::{Arc, OnceLock};

use openssl::nid::Nid;
use openssl::x509::{X509NameRef, X509};

use super::{openssl_reasons, IdentityError};

/// A device identity certificate and its fingerprint. The parsed form is kept when the certificate came
/// from a parse, and is rebuilt on first use otherwise (see [`DeviceCert::unparsed`]).
#[derive(Clone)]
pub struct DeviceCert {
    der: Arc<[u8]>,
    x509: OnceLock<X509>,
    fingerprint: Arc<str>,
}

impl DeviceCert {
    /// Parse a DER certificate.
    ///
    /// The input must be exactly one certificate in canonical DER: trailing bytes or a
    /// non-DER (re-encodable) form are rejected, so one certificate can only ever have one
    /// fingerprint no matter how it reached us.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        if der.is_empty() {
            return Err(malformed("empty certificate"));
        }
        let x509 = X509::from_der(der)
            .map_err(|e| malformed(format!("not a DER X.509: {}", openssl_reasons(&e))))?;
        let cert = Self::from_x509(x509)?;
        if *cert.der != *der {
            return Err(malformed("trailing data or non-canonical DER encoding"));
        }
        Ok(cert)
    }

    /// Parse the first `CERTIFICATE` block of a PEM document.
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdentityError> {
        let x509 = X509::from_pem(pem)
            .map_err(|e| malformed(format!("not a PEM X.509: {}", openssl_reasons(&e))))?;
        Self::from_x509(x509)
    }

    /// Wrap an already parsed certificate. The DER and fingerprint are computed from
    /// OpenSSL's encoding of it (which is the original encoding for a parsed certificate).
    pub fn from_x509(x509: X509) -> Result<Self, IdentityError> {
        let der = x509.to_der().map_err(|e| {
            malformed(format!(
                "cannot encode certificate: {}",
                openssl_reasons(&e)
            ))
        })?;
        let fingerprint = hex::encode(openssl::sha::sha256(&der)).into();
        Ok(Self {
            der: der.into(),
            x509: OnceLock::from(x509),
            fingerprint,
        })
    }

    /// The same certificate without its parsed form, sharing its bytes: for holding many (the signature
    /// cache), since OpenSSL 3's parsed certificate and key take ~5 KiB. Parsed again only if needed.
    pub fn unparsed(&self) -> Self {
        Self {
            der: self.der.clone(),
            x509: OnceLock::new(),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// Lowercase hex SHA-256 of the DER encoding (this is what is bound to an enrollment).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The parsed certificate. Fails only if OpenSSL cannot read back its own encoding of a certificate
    /// it parsed before.
    pub fn x509(&self) -> Result<&X509, IdentityError> {
        if let Some(x) = self.x509.get() {
            return Ok(x);
        }
        let x = X509::from_der(&self.der)
            .map_err(|e| malformed(format!("not a DER X.509: {}", openssl_reasons(&e))))?;
        Ok(self.x509.get_or_init(|| x))
    }

    /// Human-readable subject (e.g. `CN=abc, O=x`), for logs and the admin API.
    ///
    /// Attributes appear in certificate order. Separators and control characters inside values
    /// are escaped so a crafted subject cannot forge extra attributes or log lines. Device
    /// certificates issued by some SCEP servers have an empty subject, giving `""`.
    pub fn subject(&self) -> Result<String, IdentityError> {
        Ok(format_name(self.x509()?.subject_name()))
    }

    /// `notAfter` as unix seconds.
    pub fn not_after_unix(&self) -> Result<i64, IdentityError> {
        crate::pki::unix_time(self.x509()?.not_after()).map_err(|_| malformed("invalid notAfter"))
    }
}

impl fmt::Debug for DeviceCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCert")
            .field("subject", &self.subject().unwrap_or_default())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

fn malformed(msg: impl Into<String>) -> IdentityError {
    IdentityError::MalformedCertificate(msg.into())
}

fn format_name(name: &X509NameRef) -> String {
    let mut out = String::new();
    for entry in name.entries() {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let obj = entry.object();
        match obj.nid() {
            Nid::UNDEF => out.push_str(&obj.to_string()),
            nid => match nid.short_name() {
                Ok(sn) => out.push_str(sn),
                Err(_) => out.push_str(&obj.to_string()),
            },
        }
        out.push('=');
        match entry.data().to_string() {
            Ok(value) => escape_value(&value, &mut out),
            // Not convertible to text: show the raw bytes, RFC 4514 style.
            Err(_) => {
                out.push('#');
                out.push_str(&hex::encode(entry.data().as_slice()));
            }
        }
    }
    out
}

fn escape_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            ',' | '+' | '\\' | '=' | '"' | ';' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cert_with_validity, now, self_signed, TestCa};
    use super::*;

    #[test]
    fn der_roundtrip_and_fingerprint() {
        let (cert, _key) = self_signed("device-1");
        let der = cert.to_der().unwrap();
        let dc = DeviceCert::from_der(&der).unwrap();
        assert_eq!(dc.der(), &der[..]);
        assert_eq!(dc.fingerprint(), hex::encode(openssl::sha::sha256(&der)));
        assert_eq!(dc.fingerprint().len(), 64);
        assert!(dc
            .fingerprint()
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));

        let pem = cert.to_pem().unwrap();
        let from_pem = DeviceCert::from_pem(&pem).unwrap();
        assert_eq!(from_pem.fingerprint(), dc.fingerprint());
        let from_x509 = DeviceCert::from_x509(cert).unwrap();
        assert_eq!(from_x509.fingerprint(), dc.fingerprint());
    }

    #[test]
    fn from_der_rejects_trailing_data_and_garbage() {
        let (cert, _key) = self_signed("device-1");
        let mut der = cert.to_der().unwrap();
        der.push(0);
        assert!(matches!(
            DeviceCert::from_der(&der),
            Err(IdentityError::MalformedCertificate(_))
        ));
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"hello",
            &der[..der.len() / 2],
        ] {
            assert!(matches!(
                DeviceCert::from_der(bad),
                Err(IdentityError::MalformedCertificate(_))
            ));
        }
        assert!(matches!(
            DeviceCert::from_pem(b"not pem"),
            Err(IdentityError::MalformedCertificate(_))
        ));
    }

    #[test]
    fn subject_and_debug() {
        let ca = TestCa::new("Test CA");
        let t = now();
        let (leaf, _) = ca.issue_custom(&[("CN", "abc"), ("O", "x")], t - 60, t + 3600);
        let dc = DeviceCert::from_x509(leaf).unwrap();
        assert_eq!(dc.subject().unwrap(), "CN=abc, O=x");
        let dbg = format!("{dc:?}");
        assert!(dbg.contains("CN=abc, O=x"), "{dbg}");
        assert!(dbg.contains(dc.fingerprint()), "{dbg}");
        assert!(!dbg.contains("der"), "{dbg}");
    }

    #[test]
    fn subject_escapes_separators_and_control_chars() {
        let ca = TestCa::new("Test CA");
        let t = now();
        let (leaf, _) = ca.issue_custom(&[("CN", "a, O=evil\nline")], t - 60, t + 3600);
        let s = DeviceCert::from_x509(leaf).unwrap().subject().unwrap();
        assert_eq!(s, "CN=a\\, O\\=evil\\u{a}line");
    }

    #[test]
    fn not_after_unix_matches_certificate() {
        let dc = DeviceCert::from_x509(cert_with_validity(1_000_000_000, 2_000_000_000)).unwrap();
        assert_eq!(dc.not_after_unix().unwrap(), 2_000_000_000);
        // Before 1970 and after 2050 (GeneralizedTime) both work.
        let dc = DeviceCert::from_x509(cert_with_validity(-86_400, 4_102_444_800)).unwrap();
        assert_eq!(dc.not_after_unix().unwrap(), 4_102_444_800);
        let dc = DeviceCert::from_x509(cert_with_validity(-100_000, -86_399)).unwrap();
        assert_eq!(dc.not_after_unix().unwrap(), -86_399);
    }
}
