//! [`DeviceTrust`]: which identity certificates may act as a device, each certificate's chain verified once.
//!
//! Whether a certificate chains to a trusted issuer depends only on the certificate and the configured
//! issuers, which do not change while the server runs. So a chain is verified the first time its certificate
//! is seen (at enrollment, at renewal, or the first message after a restart) and its fingerprint is
//! remembered with the window in which the whole chain is valid; every message, the first included, checks
//! that window against the server's clock, so expiry takes effect at once. Revocation lives in the database (a revoked certificate is
//! unbound from its device and refused at Authenticate), so it needs nothing here.

use std::fmt;
use std::sync::Arc;

use openssl::x509::X509Ref;
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;

use super::{CaVerifier, DeviceCert, IdentityError};

/// When a certificate and the chain it was verified through are all valid, in unix seconds (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// The intersection of the certificates' validity periods; None if one of them cannot be read.
    pub(crate) fn of_chain<'a>(certs: impl IntoIterator<Item = &'a X509Ref>) -> Option<Self> {
        let mut v = Validity {
            not_before: i64::MIN,
            not_after: i64::MAX,
        };
        for c in certs {
            v.not_before = v
                .not_before
                .max(crate::pki::unix_time(c.not_before()).ok()?);
            v.not_after = v.not_after.min(crate::pki::unix_time(c.not_after()).ok()?);
        }
        Some(v)
    }

    pub fn contains(&self, now_unix: i64) -> bool {
        self.not_before <= now_unix && now_unix <= self.not_after
    }
}

/// Which issuers a device identity may come from.
pub enum Issuers {
    /// Certificates chaining to one of these (our SCEP CA plus `identity.device_ca_file`): the default.
    Chained(CaVerifier),
    /// Any certificate, self-signed included, only checked for its validity period: the explicit, logged
    /// `identity.accept_any_issuer` setting, for migrating devices whose issuer is not at hand.
    Any,
}

/// Hits and misses of one of the identity caches, counted in `/metrics`.
#[derive(Clone, Default)]
pub struct CacheCounters {
    pub hits: Counter,
    pub misses: Counter,
}

pub struct DeviceTrust {
    issuers: Issuers,
    verified: Option<Cache<Arc<str>, Validity>>,
    counters: CacheCounters,
}

impl DeviceTrust {
    /// Remember up to `entries` verified certificates (about a hundred bytes each); 0 verifies every time.
    pub fn new(issuers: Issuers, entries: usize, counters: CacheCounters) -> Self {
        Self {
            issuers,
            verified: (entries > 0).then(|| Cache::new(entries)),
            counters,
        }
    }

    /// The certificate chains to a trusted issuer (verified once, then remembered by fingerprint) and it and
    /// that chain are within their validity period at `now_unix` (checked every time).
    pub fn check(&self, cert: &DeviceCert, now_unix: i64) -> Result<(), IdentityError> {
        if let Some(validity) = self
            .verified
            .as_ref()
            .and_then(|c| c.get(cert.fingerprint()))
        {
            self.counters.hits.inc();
            return in_window(validity, now_unix);
        }
        self.counters.misses.inc();
        let validity = match &self.issuers {
            Issuers::Chained(ca) => ca.verify(cert)?,
            Issuers::Any => Validity::of_chain([cert.x509()?.as_ref()]).ok_or_else(|| {
                IdentityError::MalformedCertificate("unreadable validity period".into())
            })?,
        };
        in_window(validity, now_unix)?;
        if let Some(cache) = &self.verified {
            cache.insert(Arc::from(cert.fingerprint()), validity);
        }
        Ok(())
    }

    /// Whether any issuer is accepted (the explicit migration setting).
    pub fn accepts_any_issuer(&self) -> bool {
        matches!(self.issuers, Issuers::Any)
    }
}

impl fmt::Debug for DeviceTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTrust")
            .field("accepts_any_issuer", &self.accepts_any_issuer())
            .finish()
    }
}

fn in_window(validity: Validity, now_unix: i64) -> Result<(), IdentityError> {
    if validity.contains(now_unix) {
        Ok(())
    } else {
        Err(IdentityError::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{now, self_signed, TestCa};
    use super::*;

    fn chained(ca: &TestCa) -> DeviceTrust {
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        DeviceTrust::new(Issuers::Chained(v), 16, CacheCounters::default())
    }

    fn dc(x: openssl::x509::X509) -> DeviceCert {
        DeviceCert::from_x509(x).unwrap()
    }

    #[test]
    fn a_chain_is_verified_once_and_its_window_every_time() {
        let ca = TestCa::new("Device CA");
        let trust = chained(&ca);
        let t = now();
        let (leaf, _) = ca.issue_custom(&[("CN", "d")], t - 86_400, t + 10 * 86_400);
        let cert = dc(leaf);
        trust.check(&cert, t).unwrap();
        trust.check(&cert, t + 60).unwrap();
        assert_eq!(
            (trust.counters.misses.get(), trust.counters.hits.get()),
            (1, 1)
        );
        // Expiry takes effect at once although the chain is remembered.
        let r = trust.check(&cert, t + 11 * 86_400);
        assert!(matches!(r, Err(IdentityError::Expired)), "{r:?}");
        assert_eq!(trust.counters.hits.get(), 2);
    }

    #[test]
    fn untrusted_certificates_are_refused_every_time_and_never_remembered() {
        let ca = TestCa::new("Device CA");
        let trust = chained(&ca);
        let (stranger, _) = self_signed("device");
        let other = TestCa::new("Device CA"); // same name, another key
        for cert in [dc(stranger), dc(other.issue("device").0)] {
            for _ in 0..2 {
                let r = trust.check(&cert, now());
                assert!(matches!(r, Err(IdentityError::Untrusted(_))), "{r:?}");
            }
        }
        assert_eq!(trust.counters.hits.get(), 0);
    }

    #[test]
    fn the_window_is_the_chains_not_only_the_leafs() {
        let ca = TestCa::new("Device CA");
        let ca_window = Validity::of_chain([ca.cert.as_ref()]).unwrap();
        let t = now();
        // A leaf that outlives its CA is valid only while the CA is.
        let (leaf, _) = ca.issue_custom(&[("CN", "d")], t - 60, ca_window.not_after + 86_400);
        let trust = chained(&ca);
        trust.check(&dc(leaf.clone()), t).unwrap();
        let r = trust.check(&dc(leaf), ca_window.not_after + 1);
        assert!(matches!(r, Err(IdentityError::Expired)), "{r:?}");
    }

    #[test]
    fn any_issuer_is_explicit_and_still_checks_validity() {
        let trust = DeviceTrust::new(Issuers::Any, 16, CacheCounters::default());
        assert!(trust.accepts_any_issuer());
        let (cert, _) = self_signed("device");
        let cert = dc(cert);
        trust.check(&cert, now()).unwrap();
        let r = trust.check(&cert, now() + 400 * 86_400);
        assert!(matches!(r, Err(IdentityError::Expired)), "{r:?}");
    }

    #[test]
    fn a_cache_of_zero_verifies_every_time() {
        let ca = TestCa::new("Device CA");
        let v = CaVerifier::from_pem_bundle(&ca.pem()).unwrap();
        let trust = DeviceTrust::new(Issuers::Chained(v), 0, CacheCounters::default());
        let cert = dc(ca.issue("d").0);
        trust.check(&cert, now()).unwrap();
        trust.check(&cert, now()).unwrap();
        assert_eq!(
            (trust.counters.misses.get(), trust.counters.hits.get()),
            (2, 0)
        );
    }
}
