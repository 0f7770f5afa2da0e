//! APNs MDM push certificates: loading (PEM or PKCS#12), validation and topic extraction.
//!
//! An MDM push certificate is issued by Apple (identity.apple.com) for a CSR signed by the MDM vendor.
//! Its subject carries the push *topic* in the UID attribute (`com.apple.mgmt.External.<uuid>`); devices
//! enrolled with that topic can only be woken by pushes sent with this certificate. The certificate is
//! renewed yearly with the same Apple ID, which keeps the topic.
//!
//! Checks done on load, in this order (the first failure is reported):
//! 1. the certificate and the key parse (`Malformed`, `BadPassword`);
//! 2. the certificate is valid at `now_unix` (`Expired`, `NotYetValid`): an expired certificate is useless
//!    whatever else is wrong with the upload, and "renew it" is the most useful thing to tell the admin;
//! 3. the private key belongs to the certificate (`KeyMismatch`);
//! 4. the subject has a UID topic starting with `com.apple.mgmt.` (`NoTopic`, `NotMdmTopic`).

use std::fmt;
use std::sync::OnceLock;

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::x509::X509;

/// The prefix every MDM push topic has.
pub const MDM_TOPIC_PREFIX: &str = "com.apple.mgmt.";

/// Largest certificate, key or PKCS#12 input accepted (real ones are a few KB). OpenSSL's memory BIOs
/// take C-int lengths, and rust-openssl asserts on more.
const MAX_INPUT: usize = 1 << 20;

fn check_size(what: &str, data: &[u8]) -> Result<(), PushCertError> {
    if data.len() > MAX_INPUT {
        return Err(PushCertError::Malformed(format!(
            "the {what} is too large ({} bytes; at most {MAX_INPUT})",
            data.len()
        )));
    }
    Ok(())
}

/// A validated push certificate with its private key.
#[derive(Clone)]
pub struct PushCertificate {
    /// The APNs topic: the certificate subject's UID (`com.apple.mgmt.External.<uuid>`).
    pub topic: String,
    pub not_after_unix: i64,
    pub not_before_unix: i64,
    /// PEM: the push certificate first, then any chain certificates that came with it.
    pub cert_pem: Vec<u8>,
    /// Unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Keep it in memory only; seal it at rest
    /// (see `push::seal`).
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for PushCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushCertificate")
            .field("topic", &self.topic)
            .field("not_before_unix", &self.not_before_unix)
            .field("not_after_unix", &self.not_after_unix)
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Why a push certificate upload was refused. Every variant is a client error (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum PushCertError {
    #[error("malformed push certificate or key: {0}")]
    Malformed(String),
    #[error("the private key does not belong to the push certificate")]
    KeyMismatch,
    #[error(
        "the certificate's subject has no UID (push topic); an APNs MDM push certificate from identity.apple.com is needed"
    )]
    NoTopic,
    #[error("the certificate's topic {0:?} is not an MDM push topic (it must start with \"com.apple.mgmt.\")")]
    NotMdmTopic(String),
    #[error(
        "the push certificate expired on {not_after}; renew it at identity.apple.com with the same Apple ID (a new topic would force every device to re-enroll)"
    )]
    Expired { not_after: String },
    #[error("the push certificate is not valid yet (check the server clock)")]
    NotYetValid,
    #[error("wrong password, or a password is needed, for the private key or PKCS#12 file")]
    BadPassword,
}

impl PushCertificate {
    /// PEM certificate + PEM private key (PKCS#1 or PKCS#8; encrypted keys need `key_password`).
    ///
    /// `cert_pem` may hold a chain; the certificate matching the key is the push certificate (the first one
    /// if none matches). A DER certificate (`.cer`) is accepted too. `key_pem` may be the same combined
    /// file as `cert_pem`.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        key_password: Option<&str>,
        now_unix: i64,
    ) -> Result<Self, PushCertError> {
        check_size("certificate", cert_pem)?;
        check_size("private key", key_pem)?;
        let certs = parse_certs(cert_pem)?;
        let key = parse_key(key_pem, key_password)?;
        let (leaf, chain) = pick_leaf(certs, &key)?;
        Self::validate(leaf, chain, key, now_unix)
    }

    /// PKCS#12 (.p12) with its password.
    ///
    /// Files from Keychain Access, Apple's tools and old servers are encrypted with legacy ciphers
    /// (RC2-40 for the certificates, 3DES for the key) that OpenSSL 3 only has in its "legacy" provider.
    /// When decryption fails for that reason, the legacy provider is loaded once into the process's
    /// default OpenSSL context (alongside the default provider) and the file is parsed again. If the
    /// provider is not installed (`ossl-modules/legacy.so` missing), the answer is
    /// [`PushCertError::Malformed`] explaining that, and suggesting a PEM upload or a re-export with AES.
    pub fn from_pkcs12(der: &[u8], password: &str, now_unix: i64) -> Result<Self, PushCertError> {
        let (leaf, chain, key) = parse_pkcs12(der, password)?;
        Self::validate(leaf, chain, key, now_unix)
    }

    /// Whole days until `not_after` (rounded down; negative once expired).
    pub fn days_left(&self, now_unix: i64) -> i64 {
        self.not_after_unix
            .saturating_sub(now_unix)
            .div_euclid(86_400)
    }

    fn validate(
        leaf: X509,
        chain: Vec<X509>,
        key: PKey<Private>,
        now_unix: i64,
    ) -> Result<Self, PushCertError> {
        let not_before_unix = asn1_to_unix(leaf.not_before())?;
        let not_after_unix = asn1_to_unix(leaf.not_after())?;
        if now_unix > not_after_unix {
            return Err(PushCertError::Expired {
                not_after: rfc3339(not_after_unix),
            });
        }
        if now_unix < not_before_unix {
            return Err(PushCertError::NotYetValid);
        }
        if !key_matches(&leaf, &key) {
            return Err(PushCertError::KeyMismatch);
        }
        let topic = topic_of(&leaf)?;

        let mut cert_pem = leaf
            .to_pem()
            .map_err(malformed("encoding the certificate"))?;
        for c in &chain {
            cert_pem.extend(c.to_pem().map_err(malformed("encoding the chain"))?);
        }
        let key_pem = key
            .private_key_to_pem_pkcs8()
            .map_err(malformed("encoding the private key"))?;
        Ok(Self {
            topic,
            not_after_unix,
            not_before_unix,
            cert_pem,
            key_pem,
        })
    }
}

/// The topic: the certificate subject's UID attribute (OID 0.9.2342.19200300.100.1.1), which must start
/// with "com.apple.mgmt.".
pub fn topic_of(cert: &X509) -> Result<String, PushCertError> {
    let entry = cert
        .subject_name()
        .entries_by_nid(Nid::USERID)
        .next()
        .ok_or(PushCertError::NoTopic)?;
    let uid = entry
        .data()
        .to_string()
        .map_err(|e| PushCertError::Malformed(format!("the subject UID is not a string: {e}")))?;
    // The topic becomes the `apns-topic` HTTP header: visible ASCII only.
    let well_formed =
        uid.len() > MDM_TOPIC_PREFIX.len() && uid.bytes().all(|b| b.is_ascii_graphic());
    if !uid.starts_with(MDM_TOPIC_PREFIX) || !well_formed {
        return Err(PushCertError::NotMdmTopic(uid));
    }
    Ok(uid)
}

/// OpenSSL's reasons without its source paths, for messages an admin reads.
fn brief(e: &ErrorStack) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for r in e.errors().iter().filter_map(|e| e.reason()) {
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }
    if reasons.is_empty() {
        "unknown OpenSSL error".to_string()
    } else {
        reasons.join("; ")
    }
}

fn malformed(what: &'static str) -> impl Fn(ErrorStack) -> PushCertError {
    move |e| PushCertError::Malformed(format!("{what} ({})", brief(&e)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every certificate in `data` (PEM, possibly several; or one DER certificate).
fn parse_certs(data: &[u8]) -> Result<Vec<X509>, PushCertError> {
    if data.is_empty() {
        return Err(PushCertError::Malformed("the certificate is empty".into()));
    }
    if contains(data, b"-----BEGIN") {
        let certs = X509::stack_from_pem(data).map_err(malformed("reading the PEM certificate"))?;
        if certs.is_empty() {
            return Err(PushCertError::Malformed(
                "no \"-----BEGIN CERTIFICATE-----\" block found".into(),
            ));
        }
        Ok(certs)
    } else {
        X509::from_der(data)
            .map(|c| vec![c])
            .map_err(malformed("the certificate is neither PEM nor DER"))
    }
}

/// A PEM private key: PKCS#1 (`RSA PRIVATE KEY`, optionally with legacy PEM encryption), SEC1
/// (`EC PRIVATE KEY`), PKCS#8 (`PRIVATE KEY`) or encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`).
fn parse_key(data: &[u8], password: Option<&str>) -> Result<PKey<Private>, PushCertError> {
    if data.is_empty() {
        return Err(PushCertError::Malformed("the private key is empty".into()));
    }
    if !contains(data, b"-----BEGIN") {
        // Unencrypted DER (PKCS#8 or PKCS#1), as a courtesy.
        return PKey::private_key_from_der(data)
            .map_err(malformed("the private key is neither PEM nor DER"));
    }
    let password = password.unwrap_or("");
    if password.contains('\0') {
        return Err(PushCertError::BadPassword);
    }
    // Always pass a passphrase (possibly empty): with none, OpenSSL's default callback would prompt on
    // the controlling terminal for an encrypted key.
    match PKey::private_key_from_pem_passphrase(data, password.as_bytes()) {
        Ok(key) => Ok(key),
        Err(_) if contains(data, b"ENCRYPTED") => Err(PushCertError::BadPassword),
        Err(e) => Err(malformed("reading the PEM private key")(e)),
    }
}

fn key_matches(cert: &X509, key: &PKey<Private>) -> bool {
    cert.public_key().is_ok_and(|public| public.public_eq(key))
}

/// The certificate that matches the key is the leaf; the others are its chain.
fn pick_leaf(
    mut certs: Vec<X509>,
    key: &PKey<Private>,
) -> Result<(X509, Vec<X509>), PushCertError> {
    let idx = certs.iter().position(|c| key_matches(c, key)).unwrap_or(0);
    if idx >= certs.len() {
        return Err(PushCertError::Malformed("no certificate found".into()));
    }
    let leaf = certs.remove(idx);
    Ok((leaf, certs))
}

fn is_mac_failure(e: &ErrorStack) -> bool {
    e.errors()
        .iter()
        .any(|e| e.reason().is_some_and(|r| r.contains("mac verify failure")))
}

/// The OpenSSL legacy provider, loaded at most once per process and kept loaded.
fn legacy_provider() -> Result<(), &'static ErrorStack> {
    static LEGACY: OnceLock<Result<Provider, ErrorStack>> = OnceLock::new();
    LEGACY
        .get_or_init(|| {
            let loaded = Provider::try_load(None, "legacy", true);
            match &loaded {
                Ok(_) => {
                    tracing::info!("loaded OpenSSL's legacy provider to read a legacy PKCS#12 file")
                }
                Err(e) => tracing::warn!(error = %e, "OpenSSL's legacy provider is not available"),
            }
            loaded
        })
        .as_ref()
        .map(|_| ())
}

/// Decrypt a PKCS#12 file: (certificate, chain, key).
fn parse_pkcs12(
    der: &[u8],
    password: &str,
) -> Result<(X509, Vec<X509>, PKey<Private>), PushCertError> {
    if password.contains('\0') {
        return Err(PushCertError::BadPassword);
    }
    check_size("PKCS#12 file", der)?;
    let p12 = Pkcs12::from_der(der).map_err(malformed("not a PKCS#12 (.p12) file"))?;
    let parsed = match p12.parse2(password) {
        Ok(parsed) => parsed,
        Err(e) if is_mac_failure(&e) => return Err(PushCertError::BadPassword),
        Err(first) => {
            // The password is right (the MAC verified) but something could not be decrypted: most
            // likely RC2/3DES, which OpenSSL 3 keeps in its legacy provider.
            if let Err(why) = legacy_provider() {
                tracing::warn!(parse_error = %first, provider_error = %why, "cannot decrypt a PKCS#12 file");
                return Err(PushCertError::Malformed(
                    "this PKCS#12 file uses a legacy cipher (RC2/3DES) that needs OpenSSL's legacy \
                     provider, which is not available on this server; upload the certificate and key as \
                     PEM instead, or re-export the .p12 with AES (the default of OpenSSL 3's \
                     `openssl pkcs12 -export`)"
                        .into(),
                ));
            }
            match p12.parse2(password) {
                Ok(parsed) => parsed,
                Err(e) if is_mac_failure(&e) => return Err(PushCertError::BadPassword),
                Err(e) => return Err(malformed("decrypting the PKCS#12 file")(e)),
            }
        }
    };
    let key = parsed
        .pkey
        .ok_or_else(|| PushCertError::Malformed("the PKCS#12 file has no private key".into()))?;
    let chain: Vec<X509> = parsed
        .ca
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();
    let cert = match parsed.cert {
        Some(cert) => cert,
        // Some exporters leave the identity certificate among the "CA" certificates.
        None => {
            let (leaf, rest) = pick_leaf(chain, &key).map_err(|_| {
                PushCertError::Malformed("the PKCS#12 file has no certificate".into())
            })?;
            return Ok((leaf, rest, key));
        }
    };
    Ok((cert, chain, key))
}

fn asn1_to_unix(t: &Asn1TimeRef) -> Result<i64, PushCertError> {
    let epoch = Asn1Time::from_unix(0).map_err(malformed("time conversion"))?;
    let diff = epoch
        .diff(t)
        .map_err(malformed("the certificate's validity dates"))?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (proleptic Gregorian, UTC).
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Integer;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::symm::Cipher;
    use openssl::x509::{X509Builder, X509NameBuilder};
    use std::path::{Path, PathBuf};

    const NOT_BEFORE: i64 = 1_700_000_000; // 2023-11-14
    const NOT_AFTER: i64 = NOT_BEFORE + 365 * 86_400;
    const NOW: i64 = NOT_BEFORE + 100 * 86_400;

    fn rsa_key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }

    fn random_uuid() -> String {
        let mut b = [0u8; 16];
        openssl::rand::rand_bytes(&mut b).unwrap();
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// A self-signed certificate shaped like Apple's: UID=<uid>, CN=APSP:<uuid>, C=US.
    fn make_cert(uid: Option<&str>, key: &PKey<Private>) -> X509 {
        let mut name = X509NameBuilder::new().unwrap();
        if let Some(uid) = uid {
            name.append_entry_by_nid(Nid::USERID, uid).unwrap();
        }
        name.append_entry_by_nid(Nid::COMMONNAME, "APSP:test")
            .unwrap();
        name.append_entry_by_nid(Nid::COUNTRYNAME, "US").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        let serial = Asn1Integer::from_bn(&BigNum::from_u32(42).unwrap()).unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(NOT_BEFORE).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(NOT_AFTER).unwrap())
            .unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build()
    }

    fn mdm_topic() -> String {
        format!("com.apple.mgmt.External.{}", random_uuid())
    }

    #[test]
    fn from_pem_pkcs8_and_pkcs1() {
        let key = rsa_key();
        let topic = mdm_topic();
        let cert = make_cert(Some(&topic), &key);
        let cert_pem = cert.to_pem().unwrap();

        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let pc = PushCertificate::from_pem(&cert_pem, &pkcs8, None, NOW).unwrap();
        assert_eq!(pc.topic, topic);
        assert_eq!(pc.not_before_unix, NOT_BEFORE);
        assert_eq!(pc.not_after_unix, NOT_AFTER);
        assert_eq!(pc.days_left(NOW), 265);
        assert_eq!(pc.days_left(NOT_AFTER - 1), 0);
        assert_eq!(pc.days_left(NOT_AFTER + 1), -1);
        assert_eq!(pc.cert_pem, cert_pem);
        assert!(pc.key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let back = PKey::private_key_from_pem(&pc.key_pem).unwrap();
        assert!(back.public_eq(&key));

        let pkcs1 = key.rsa().unwrap().private_key_to_pem().unwrap();
        assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
        let pc1 = PushCertificate::from_pem(&cert_pem, &pkcs1, None, NOW).unwrap();
        assert_eq!(pc1.topic, topic);
        assert!(pc1.key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));

        // Combined file (key + cert in one PEM) passed as both arguments; DER certificate.
        let mut combined = pkcs1.clone();
        combined.extend(&cert_pem);
        PushCertificate::from_pem(&combined, &combined, None, NOW).unwrap();
        let der = cert.to_der().unwrap();
        PushCertificate::from_pem(&der, &pkcs8, None, NOW).unwrap();

        // Debug never shows the key.
        let dbg = format!("{pc:?}");
        assert!(dbg.contains(&topic) && dbg.contains("<redacted>"));
        assert!(!dbg.contains("PRIVATE"));
    }

    #[test]
    fn chain_order_does_not_matter() {
        let key = rsa_key();
        let other = rsa_key();
        let topic = mdm_topic();
        let cert = make_cert(Some(&topic), &key);
        let ca = make_cert(None, &other);
        let mut bundle = ca.to_pem().unwrap();
        bundle.extend(cert.to_pem().unwrap());
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let pc = PushCertificate::from_pem(&bundle, &pkcs8, None, NOW).unwrap();
        assert_eq!(pc.topic, topic);
        // Leaf first, then the chain.
        let stored = X509::stack_from_pem(&pc.cert_pem).unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].to_der().unwrap(), cert.to_der().unwrap());
    }

    #[test]
    fn encrypted_keys() {
        let key = rsa_key();
        let cert_pem = make_cert(Some(&mdm_topic()), &key).to_pem().unwrap();
        let pkcs8_enc = key
            .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), b"hunter2")
            .unwrap();
        assert!(pkcs8_enc.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        let pkcs1_enc = key
            .rsa()
            .unwrap()
            .private_key_to_pem_passphrase(Cipher::des_ede3_cbc(), b"hunter2")
            .unwrap();
        for enc in [&pkcs8_enc, &pkcs1_enc] {
            let pc = PushCertificate::from_pem(&cert_pem, enc, Some("hunter2"), NOW).unwrap();
            assert!(pc.key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
            for bad in [None, Some("wrong"), Some(""), Some("hun\0ter2")] {
                let err = PushCertificate::from_pem(&cert_pem, enc, bad, NOW).unwrap_err();
                assert!(matches!(err, PushCertError::BadPassword), "{bad:?}: {err}");
            }
        }
        // A password given for an unencrypted key is ignored.
        let plain = key.private_key_to_pem_pkcs8().unwrap();
        PushCertificate::from_pem(&cert_pem, &plain, Some("unused"), NOW).unwrap();
    }

    #[test]
    fn wrong_key_is_key_mismatch() {
        let key = rsa_key();
        let cert_pem = make_cert(Some(&mdm_topic()), &key).to_pem().unwrap();
        let other = rsa_key().private_key_to_pem_pkcs8().unwrap();
        let err = PushCertificate::from_pem(&cert_pem, &other, None, NOW).unwrap_err();
        assert!(matches!(err, PushCertError::KeyMismatch), "{err}");
        // A key of another type, too.
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let ec_pem = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let err = PushCertificate::from_pem(&cert_pem, &ec_pem, None, NOW).unwrap_err();
        assert!(matches!(err, PushCertError::KeyMismatch), "{err}");
    }

    #[test]
    fn topic_errors() {
        let key = rsa_key();
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();

        let no_uid = make_cert(None, &key);
        assert!(matches!(topic_of(&no_uid), Err(PushCertError::NoTopic)));
        let err =
            PushCertificate::from_pem(&no_uid.to_pem().unwrap(), &pkcs8, None, NOW).unwrap_err();
        assert!(matches!(err, PushCertError::NoTopic), "{err}");

        for bad in [
            "com.apple.foo.bar",
            "com.apple.mgmt.",
            "com.apple.mgmt.Ext ernal",
            "x",
        ] {
            let cert = make_cert(Some(bad), &key);
            let err =
                PushCertificate::from_pem(&cert.to_pem().unwrap(), &pkcs8, None, NOW).unwrap_err();
            assert!(
                matches!(&err, PushCertError::NotMdmTopic(t) if t == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn validity_window() {
        let key = rsa_key();
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let cert_pem = make_cert(Some(&mdm_topic()), &key).to_pem().unwrap();

        let err = PushCertificate::from_pem(&cert_pem, &pkcs8, None, NOT_AFTER + 1).unwrap_err();
        match err {
            PushCertError::Expired { not_after } => assert_eq!(not_after, "2024-11-13T22:13:20Z"),
            other => panic!("{other}"),
        }
        let err = PushCertificate::from_pem(&cert_pem, &pkcs8, None, NOT_BEFORE - 1).unwrap_err();
        assert!(matches!(err, PushCertError::NotYetValid), "{err}");
        // Both ends are inclusive.
        PushCertificate::from_pem(&cert_pem, &pkcs8, None, NOT_AFTER).unwrap();
        PushCertificate::from_pem(&cert_pem, &pkcs8, None, NOT_BEFORE).unwrap();

        // Expired wins over a key mismatch: "renew it" is the useful answer.
        let other = rsa_key().private_key_to_pem_pkcs8().unwrap();
        let err = PushCertificate::from_pem(&cert_pem, &other, None, NOT_AFTER + 1).unwrap_err();
        assert!(matches!(err, PushCertError::Expired { .. }), "{err}");
    }

    #[test]
    fn pkcs12_round_trip() {
        let key = rsa_key();
        let topic = mdm_topic();
        let cert = make_cert(Some(&topic), &key);
        let p12 = Pkcs12::builder()
            .name("MDM push")
            .pkey(&key)
            .cert(&cert)
            .build2("p12 password")
            .unwrap()
            .to_der()
            .unwrap();
        let pc = PushCertificate::from_pkcs12(&p12, "p12 password", NOW).unwrap();
        assert_eq!(pc.topic, topic);
        assert_eq!(pc.not_after_unix, NOT_AFTER);
        assert_eq!(pc.cert_pem, cert.to_pem().unwrap());
        assert!(pc.key_pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));

        for bad in ["wrong", "", "p12\0password"] {
            let err = PushCertificate::from_pkcs12(&p12, bad, NOW).unwrap_err();
            assert!(matches!(err, PushCertError::BadPassword), "{bad:?}: {err}");
        }
        let err = PushCertificate::from_pkcs12(&p12, "p12 password", NOT_AFTER + 1).unwrap_err();
        assert!(matches!(err, PushCertError::Expired { .. }), "{err}");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = rsa_key();
        let pkcs8 = key.private_key_to_pem_pkcs8().unwrap();
        let cert_pem = make_cert(Some(&mdm_topic()), &key).to_pem().unwrap();
        let garbage: [&[u8]; 5] = [
            b"",
            b"\0\xff\x01",
            b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            &[0x30, 0x82, 0xff, 0xff],
        ];
        for g in garbage {
            let e1 = PushCertificate::from_pem(g, &pkcs8, None, NOW).unwrap_err();
            assert!(matches!(e1, PushCertError::Malformed(_)), "{e1}");
            let e2 = PushCertificate::from_pem(&cert_pem, g, Some("x"), NOW).unwrap_err();
            assert!(matches!(e2, PushCertError::Malformed(_)), "{e2}");
            let e3 = PushCertificate::from_pkcs12(g, "x", NOW).unwrap_err();
            assert!(matches!(e3, PushCertError::Malformed(_)), "{e3}");
        }
        // Corrupted real inputs: any error, never a panic.
        let p12 = Pkcs12::builder()
            .pkey(&key)
            .cert(&X509::from_pem(&cert_pem).unwrap())
            .build2("pw")
            .unwrap()
            .to_der()
            .unwrap();
        let der = X509::from_pem(&cert_pem).unwrap().to_der().unwrap();
        for i in (0..p12.len()).step_by(7) {
            let mut bad = p12.clone();
            bad[i] ^= 0x5a;
            let _ = PushCertificate::from_pkcs12(&bad, "pw", NOW);
            let _ = PushCertificate::from_pkcs12(&p12[..i], "pw", NOW);
        }
        for i in (0..der.len()).step_by(3) {
            let mut bad = der.clone();
            bad[i] ^= 0x5a;
            let _ = PushCertificate::from_pem(&bad, &pkcs8, None, NOW);
            let _ = PushCertificate::from_pem(&der[..i], &pkcs8, None, NOW);
        }
        for i in (0..pkcs8.len()).step_by(5) {
            let mut bad = pkcs8.clone();
            bad[i] ^= 0x01;
            let _ = PushCertificate::from_pem(&cert_pem, &bad, Some("x"), NOW);
        }
        // Oversized input.
        let huge = vec![b'A'; MAX_INPUT + 1];
        let e = PushCertificate::from_pem(&huge, &pkcs8, None, NOW).unwrap_err();
        assert!(
            matches!(&e, PushCertError::Malformed(m) if m.contains("too large")),
            "{e}"
        );
        let e = PushCertificate::from_pem(&cert_pem, &huge, None, NOW).unwrap_err();
        assert!(
            matches!(&e, PushCertError::Malformed(m) if m.contains("too large")),
            "{e}"
        );
        let e = PushCertificate::from_pkcs12(&huge, "x", NOW).unwrap_err();
        assert!(
            matches!(&e, PushCertError::Malformed(m) if m.contains("too large")),
            "{e}"
        );
        // A private key where the certificate should be.
        let e = PushCertificate::from_pem(&pkcs8, &pkcs8, None, NOW).unwrap_err();
        assert!(matches!(e, PushCertError::Malformed(_)), "{e}");
        // Extreme clocks.
        PushCertificate::from_pem(&cert_pem, &pkcs8, None, i64::MIN).unwrap_err();
        let e = PushCertificate::from_pem(&cert_pem, &pkcs8, None, i64::MAX).unwrap_err();
        assert!(matches!(e, PushCertError::Expired { .. }));
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_644_515_087), "2022-02-10T17:44:47Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    // ---- Real files from peer projects (read in place, never copied). ----

    fn peers_dir() -> Option<PathBuf> {
        let mut dir: &Path = Path::new(env!("CARGO_MANIFEST_DIR"));
        loop {
            let candidate = dir.join("shared/testdata/peers");
            if candidate.is_dir() {
                return Some(candidate);
            }
            dir = dir.parent()?;
        }
    }

    fn peer_file(rel: &str) -> Option<Vec<u8>> {
        let Some(dir) = peers_dir() else {
            eprintln!("skipping: ../shared/testdata/peers not found");
            return None;
        };
        Some(std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
    }

    /// 2021-06-01, inside the real Apple certificate's validity.
    const IN_2021: i64 = 1_622_505_600;

    #[test]
    fn real_apple_push_certificate() {
        let Some(pem) = peer_file("nanomdm/certs/apns-push-cert.public.pem") else {
            return;
        };
        let cert = X509::from_pem(&pem).unwrap();
        assert_eq!(
            topic_of(&cert).unwrap(),
            "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
        );
        // We do not have its key. Today it is expired, and that is what the admin hears first.
        let some_key = rsa_key().private_key_to_pem_pkcs8().unwrap();
        let now = 1_780_000_000; // 2026
        match PushCertificate::from_pem(&pem, &some_key, None, now).unwrap_err() {
            PushCertError::Expired { not_after } => assert_eq!(not_after, "2022-02-10T17:44:47Z"),
            other => panic!("{other}"),
        }
        // While it was valid, the same upload is a key mismatch.
        let err = PushCertificate::from_pem(&pem, &some_key, None, IN_2021).unwrap_err();
        assert!(matches!(err, PushCertError::KeyMismatch), "{err}");
    }

    #[test]
    fn micromdm_mock_push_certs() {
        let Some(ok) = peer_file("micromdm/pkg-crypto/mock_push_cert.pem") else {
            return;
        };
        let cert = X509::from_pem(&ok).unwrap();
        assert_eq!(
            topic_of(&cert).unwrap(),
            "com.apple.mgmt.External.18a16429-886b-41f1-9c30-2bd04ae4fc37"
        );

        let no_uid = peer_file("micromdm/pkg-crypto/mock_push_cert_no_uid.pem").unwrap();
        let cert = X509::from_pem(&no_uid).unwrap();
        assert!(matches!(topic_of(&cert), Err(PushCertError::NoTopic)));

        let wrong = peer_file("micromdm/pkg-crypto/mock_push_cert_wrong_uid_prefix.pem").unwrap();
        let cert = X509::from_pem(&wrong).unwrap();
        match topic_of(&cert) {
            Err(PushCertError::NotMdmTopic(t)) => {
                assert_eq!(t, "wrong.prefix.18a16429-886b-41f1-9c30-2bd04ae4fc37")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn micromdm_legacy_pkcs12() {
        let Some(p12) = peer_file("micromdm/push-test/pushcert.selfsigned.p12") else {
            return;
        };
        let pem = peer_file("micromdm/push-test/pushcert.selfsigned.pem").unwrap();
        let expected = X509::from_pem(&pem).unwrap();

        let err = PushCertificate::from_pkcs12(&p12, "wrong", IN_2021).unwrap_err();
        assert!(matches!(err, PushCertError::BadPassword), "{err}");

        match parse_pkcs12(&p12, "secret") {
            Ok((cert, _chain, key)) => {
                assert_eq!(cert.to_der().unwrap(), expected.to_der().unwrap());
                assert!(key_matches(&cert, &key));
            }
            Err(PushCertError::Malformed(msg)) if msg.contains("legacy cipher") => {
                eprintln!("skipping legacy PKCS#12 decryption: {msg}");
                return;
            }
            Err(e) => panic!("{e}"),
        }
        // Decrypts, the key matches, but CN=mdmpush has no UID: not an MDM push certificate.
        let err = PushCertificate::from_pkcs12(&p12, "secret", IN_2021).unwrap_err();
        assert!(matches!(err, PushCertError::NoTopic), "{err}");
    }

    #[test]
    fn micromdm_encrypted_pkcs1_key() {
        let Some(key) = peer_file("micromdm/push-test/ProviderPrivateKey.key") else {
            return;
        };
        let pem = peer_file("micromdm/push-test/pushcert.selfsigned.pem").unwrap();
        assert!(parse_key(&key, Some("secret")).is_ok());
        let err = PushCertificate::from_pem(&pem, &key, Some("secret"), IN_2021).unwrap_err();
        assert!(matches!(err, PushCertError::KeyMismatch), "{err}");
        for bad in [None, Some("wrong")] {
            let err = PushCertificate::from_pem(&pem, &key, bad, IN_2021).unwrap_err();
            assert!(matches!(err, PushCertError::BadPassword), "{bad:?}: {err}");
        }
    }
}
