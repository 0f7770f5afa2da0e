//! [`CaVerifier`]: optional chain verification of device certificates.

use std::fmt;

use openssl::error::ErrorStack;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509StoreContext, X509};

use super::{openssl_reasons, DeviceCert, IdentityError, Validity};

// X509_V_ERR_* values from x509_vfy.h (stable ABI).
const X509_V_ERR_CERT_NOT_YET_VALID: i32 = 9;
const X509_V_ERR_CERT_HAS_EXPIRED: i32 = 10;

/// Chain verification of device certificates against configured root/intermediate CAs.
///
/// Every configured certificate is a trust anchor: a chain may end at a configured
/// intermediate (OpenSSL's `PARTIAL_CHAIN`), so an operator can pin the issuing CA without
/// its root. Time is left out of the verification (`NO_CHECK_TIME`): it returns the window in
/// which the whole chain is valid, which the caller checks against the server's clock on every
/// use ([`super::DeviceTrust`]). No purpose/EKU or revocation checks are made.
pub struct CaVerifier {
    store: X509Store,
    anchors: usize,
}

impl CaVerifier {
    /// One or more PEM certificates concatenated. Non-certificate PEM blocks and text between
    /// blocks are ignored; a bundle without any certificate is an error.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Self, IdentityError> {
        let certs = X509::stack_from_pem(pem)
            .map_err(|e| malformed(format!("invalid CA bundle: {}", openssl_reasons(&e))))?;
        if certs.is_empty() {
            return Err(malformed("CA bundle contains no certificates"));
        }
        let anchors = certs.len();
        let mut builder = X509StoreBuilder::new().map_err(internal)?;
        for cert in certs {
            builder.add_cert(cert).map_err(|e| {
                malformed(format!(
                    "cannot add CA certificate: {}",
                    openssl_reasons(&e)
                ))
            })?;
        }
        builder
            .set_flags(X509VerifyFlags::PARTIAL_CHAIN | X509VerifyFlags::NO_CHECK_TIME)
            .map_err(internal)?;
        Ok(Self {
            store: builder.build(),
            anchors,
        })
    }

    /// Verify `cert` chains to a configured CA, whatever the time. Returns when the chain it verified is
    /// valid (the intersection of its certificates' validity periods).
    pub fn verify(&self, cert: &DeviceCert) -> Result<Validity, IdentityError> {
        let untrusted_chain = Stack::<X509>::new().map_err(internal_untrusted)?;
        let mut ctx = X509StoreContext::new().map_err(internal_untrusted)?;
        let outcome = ctx.init(&self.store, cert.x509()?, &untrusted_chain, |c| {
            let ok = c.verify_cert()?;
            let validity = match c.chain() {
                Some(chain) if ok => Validity::of_chain(chain.iter()),
                _ => None,
            };
            Ok((ok, c.error(), validity))
        });
        // Failed verification may leave entries on the thread's OpenSSL error queue; drop them
        // so they cannot be mistaken for the cause of a later, unrelated failure.
        let _ = ErrorStack::get();
        match outcome {
            Ok((true, _, Some(validity))) => Ok(validity),
            Ok((true, _, None)) => Err(IdentityError::Untrusted(
                "the verified chain has an unreadable validity period".into(),
            )),
            Ok((false, err, _)) => match err.as_raw() {
                X509_V_ERR_CERT_NOT_YET_VALID | X509_V_ERR_CERT_HAS_EXPIRED => {
                    Err(IdentityError::Expired)
                }
                _ => Err(IdentityError::Untrusted(err.error_string().to_owned())),
            },
            Err(e) => Err(internal_untrusted(e)),
        }
    }
}

impl fmt::Debug for CaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaVerifier")
            .field("anchors", &self.anchors)
            .finish()
    }
}

fn malformed(msg: impl Into<String>) -> IdentityError {
    IdentityError::MalformedCertificate(msg.into())
}

fn internal(e: ErrorStack) -> IdentityError {
    malformed(format!("OpenSSL error: {}", openssl_reasons(&e)))
}

fn internal_untrusted(e: ErrorStack) -> IdentityError {
    IdentityError::Untrusted(format!("verification failed: {}", openssl_reasons(&e)))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{now, self_signed, TestCa};
    use super::*;

    fn dc(x: X509) -> DeviceCert {
        DeviceCert::from_x509(x).unwrap()
    }

    #[test]
    fn leaf_of_configured_ca_verifies() {
        let ca = TestCa::new("Device CA");
        let (leaf, _) = ca.issue("device");
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        v.verify(&dc(leaf)).unwrap();
        assert!(ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn leaf_of_other_ca_is_untrusted() {
        let ca = TestCa::new("Device CA");
        let other = TestCa::new("Device CA"); // same name, different key
        let (leaf, _) = other.issue("device");
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        let r = v.verify(&dc(leaf));
        assert!(matches!(r, Err(IdentityError::Untrusted(_))), "{r:?}");
        assert!(ErrorStack::get().errors().is_empty());
    }

    #[test]
    fn self_signed_leaf_is_untrusted() {
        let ca = TestCa::new("Device CA");
        let (leaf, _) = self_signed("device");
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        let r = v.verify(&dc(leaf));
        assert!(matches!(r, Err(IdentityError::Untrusted(_))), "{r:?}");
    }

    #[test]
    fn bundle_with_several_cas() {
        let a = TestCa::new("CA A");
        let b = TestCa::new("CA B");
        let c = TestCa::new("CA C");
        let bundle = [&b"# operator comment\n"[..], &a.pem(), b"\n", &b.pem()].concat();
        let v = CaVerifier::from_pem_bundle(&bundle).unwrap();
        assert!(format!("{v:?}").contains("anchors: 2"));
        v.verify(&dc(a.issue("x").0)).unwrap();
        v.verify(&dc(b.issue("y").0)).unwrap();
        assert!(matches!(
            v.verify(&dc(c.issue("z").0)),
            Err(IdentityError::Untrusted(_))
        ));
    }

    #[test]
    fn the_chains_validity_window_is_returned_not_judged() {
        let ca = TestCa::new("Device CA");
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        let t = now();
        let (expired, _) = ca.issue_custom(&[("CN", "old")], t - 10 * 86_400, t - 86_400);
        let window = v.verify(&dc(expired)).unwrap();
        assert_eq!(window.not_after, t - 86_400);
        assert!(!window.contains(t));
        // The CA's own period bounds the window.
        let (long, _) = ca.issue_custom(&[("CN", "long")], t - 86_400, t + 100 * 86_400);
        let window = v.verify(&dc(long)).unwrap();
        let ca_window = Validity::of_chain([ca.cert.as_ref()]).unwrap();
        assert_eq!(window, ca_window, "the CA's period lies within the leaf's");
    }

    #[test]
    fn empty_or_garbage_bundle_is_rejected() {
        for bundle in [
            &b""[..],
            b"hello",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(matches!(
                CaVerifier::from_pem_bundle(bundle),
                Err(IdentityError::MalformedCertificate(_))
            ));
        }
    }

    #[test]
    fn verifier_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CaVerifier>();
        assert_send_sync::<DeviceCert>();
    }
}
