//! Verified `Mdm-Signature`s, remembered by the exact bytes they covered.
//!
//! Apple devices sign without signed attributes, so the same message from the same device carries the same
//! signature: an Idle, above all, is byte-identical each time. Verifying is a pure function of (header,
//! body), so a hit on the SHA-256 of both returns what verification returned before; only successes are
//! stored, so a forged or garbled request is always verified in full and can evict nothing it could reuse.

use super::trust::CacheCounters;
use super::{verify_mdm_signature, DeviceCert, IdentityError};
use openssl::sha::Sha256;
use quick_cache::sync::Cache;

pub struct SignatureVerifier {
    cache: Option<Admitted>,
    counters: CacheCounters,
}

/// The cache proper, and the keys seen once. While the cache is less than half full a verified message is
/// remembered at once; past that, only the second time its exact bytes verify: an Idle repeats for as long
/// as the device is enrolled, while an Authenticate, a TokenUpdate or a command result is sent once, and
/// remembering those would push the Idles out of a fleet-sized cache.
struct Admitted {
    verified: Cache<[u8; 32], DeviceCert>,
    seen_once: Cache<[u8; 32], ()>,
    /// Below this many entries, everything verified is remembered.
    room: usize,
}

impl SignatureVerifier {
    /// Remember up to `entries` verified signatures; 0 verifies every time.
    pub fn new(entries: usize, counters: CacheCounters) -> Self {
        Self {
            cache: (entries > 0).then(|| Admitted {
                verified: Cache::new(entries),
                seen_once: Cache::new(entries),
                room: entries / 2,
            }),
            counters,
        }
    }

    /// [`verify_mdm_signature`], answered from the cache when these exact bytes verified before.
    pub fn verify(&self, header_value: &str, body: &[u8]) -> Result<DeviceCert, IdentityError> {
        let span = tracing::debug_span!("identity.verify", cache = tracing::field::Empty).entered();
        let Some(cache) = &self.cache else {
            span.record("cache", "off");
            return verify_mdm_signature(header_value, body);
        };
        let key = key(header_value, body);
        if let Some(cert) = cache.verified.get(&key) {
            span.record("cache", "hit");
            self.counters.hits.inc();
            return Ok(cert);
        }
        span.record("cache", "miss");
        self.counters.misses.inc();
        let cert = verify_mdm_signature(header_value, body)?;
        let admit = cache.verified.len() < cache.room || cache.seen_once.remove(&key).is_some();
        if admit {
            cache.verified.insert(key, cert.unparsed());
        } else {
            cache.seen_once.insert(key, ());
        }
        Ok(cert)
    }
}

fn key(header_value: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // The length first, so no (header, body) split of the same bytes shares a key.
    h.update(&(header_value.len() as u64).to_be_bytes());
    h.update(header_value.as_bytes());
    h.update(body);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::TestCa;
    use super::*;

    type Signer = (
        openssl::x509::X509,
        openssl::pkey::PKey<openssl::pkey::Private>,
    );

    fn signed((cert, key): &Signer, body: &[u8]) -> String {
        use base64::Engine as _;
        use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
        let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
        let p7 = Pkcs7::sign(
            cert,
            key,
            &openssl::stack::Stack::new().unwrap(),
            body,
            flags,
        );
        base64::engine::general_purpose::STANDARD.encode(p7.unwrap().to_der().unwrap())
    }

    /// Messages sent once (Authenticate, TokenUpdate, results) never push out the ones that repeat: past half
    /// full, a message is remembered only at its second sighting.
    #[test]
    fn one_off_messages_do_not_crowd_out_repeated_ones() {
        let device = TestCa::new("ca").issue("device");
        let v = SignatureVerifier::new(256, CacheCounters::default());
        let idles: Vec<(Vec<u8>, String)> = (0..100)
            .map(|i| {
                let body = format!("<plist>idle {i}</plist>").into_bytes();
                let h = signed(&device, &body);
                (body, h)
            })
            .collect();
        for _ in 0..2 {
            for (body, h) in &idles {
                v.verify(h, body).unwrap();
            }
        }
        for i in 0..500 {
            let body = format!("<plist>one-off {i}</plist>").into_bytes();
            v.verify(&signed(&device, &body), &body).unwrap();
        }
        let hits = v.counters.hits.get();
        for (body, h) in &idles {
            v.verify(h, body).unwrap();
        }
        assert_eq!(
            v.counters.hits.get() - hits,
            100,
            "every Idle is still remembered"
        );
        let kept = v.cache.as_ref().unwrap().verified.len();
        assert!(kept <= 129, "one-offs past half full stay out: {kept}");
    }

    #[test]
    fn a_hit_returns_the_same_signer_and_anything_else_is_verified() {
        use base64::Engine as _;
        use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
        let (cert, key) = TestCa::new("ca").issue("device-1");
        let body = b"<plist><dict><key>Status</key><string>Idle</string></dict></plist>";
        let flags = Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY;
        let p7 = Pkcs7::sign(
            &cert,
            &key,
            &openssl::stack::Stack::new().unwrap(),
            body,
            flags,
        );
        let header =
            base64::engine::general_purpose::STANDARD.encode(p7.unwrap().to_der().unwrap());
        let v = SignatureVerifier::new(16, CacheCounters::default());
        let first = v.verify(&header, body).unwrap();
        let again = v.verify(&header, body).unwrap();
        assert_eq!((v.counters.misses.get(), v.counters.hits.get()), (1, 1));
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(first.der(), again.der());
        assert_eq!(
            again.subject().unwrap(),
            first.subject().unwrap(),
            "a cached certificate is parsed again on demand"
        );
        // The same signature over other bytes, or garbage, is never a hit.
        assert!(matches!(
            v.verify(&header, b"<plist>other</plist>"),
            Err(IdentityError::SignatureMismatch)
        ));
        assert!(v.verify("AAAA", body).is_err());
        // A cache of 0 verifies every time and still works.
        let off = SignatureVerifier::new(0, CacheCounters::default());
        assert_eq!(
            off.verify(&header, body).unwrap().fingerprint(),
            first.fingerprint()
        );
        assert!(off.verify(&header, b"x").is_err());
    }
}
