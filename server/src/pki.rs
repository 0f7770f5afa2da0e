//! Certificates and keys the server makes or loads for itself: the SCEP CA, the profile-signing identity and
//! the development TLS certificate. Generated material lives in the data dir; private keys are written as
//! encrypted PKCS#8 (AES-256) under the server's sealing secret, never in the clear.

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::symm::Cipher;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509NameRef, X509};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{context}: {reason}")]
    Crypto { context: String, reason: String },
}

impl PkiError {
    pub(crate) fn crypto(context: impl Into<String>, e: openssl::error::ErrorStack) -> Self {
        Self::Crypto {
            context: context.into(),
            reason: crate::identity::openssl_reasons(&e),
        }
    }
}

/// A certificate with its private key.
#[derive(Clone)]
pub struct KeyPair {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for KeyPair {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("subject", &self.cert.subject_name())
            .finish_non_exhaustive()
    }
}

/// What a certificate is for; decides its extensions.
pub enum Usage<'a> {
    /// A CA that signs device identities (and our own signing certificate).
    Ca,
    /// A device identity: TLS client auth, and signing (Mdm-Signature) and key encipherment (SCEP replies).
    ClientAuth,
    /// Signs enrollment profiles.
    ProfileSigning,
    /// A TLS server certificate for these DNS names / IP addresses.
    TlsServer(&'a [String]),
}

pub fn generate_rsa(bits: u32) -> Result<PKey<Private>, PkiError> {
    let rsa = Rsa::generate(bits).map_err(|e| PkiError::crypto("RSA key generation", e))?;
    PKey::from_rsa(rsa).map_err(|e| PkiError::crypto("RSA key", e))
}

/// A random positive 127-bit serial number (RFC 5280: unique per CA, at most 20 octets).
pub fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut bn = BigNum::new().map_err(|e| PkiError::crypto("serial", e))?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)
        .and_then(|_| bn.to_asn1_integer())
        .map_err(|e| PkiError::crypto("serial", e))
}

/// `n` bytes from OpenSSL's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // Fails only if the CSPRNG cannot be seeded, when nothing else here could work either.
    openssl::rand::rand_bytes(&mut b).expect("OpenSSL CSPRNG");
    b
}

/// `CN=<cn>, O=<org>`.
pub fn name(common_name: &str, organization: &str) -> Result<X509Name, PkiError> {
    let mut b = X509Name::builder().map_err(|e| PkiError::crypto("name", e))?;
    b.append_entry_by_text("CN", common_name)
        .and_then(|_| b.append_entry_by_text("O", organization))
        .map_err(|e| PkiError::crypto("name", e))?;
    Ok(b.build())
}

/// Build and sign a certificate. `issuer` None makes it self-signed with `subject_key`.
#[allow(clippy::too_many_arguments)]
pub fn build_certificate<T: HasPublic>(
    subject: &X509NameRef,
    public_key: &PKeyRef<T>,
    usage: Usage<'_>,
    not_before_unix: i64,
    not_after_unix: i64,
    serial: &Asn1Integer,
    issuer: Option<&KeyPair>,
    self_key: Option<&PKeyRef<Private>>,
) -> Result<X509, PkiError> {
    let e = |e| PkiError::crypto("building certificate", e);
    let mut b = X509::builder().map_err(e)?;
    b.set_version(2).map_err(e)?;
    b.set_serial_number(serial).map_err(e)?;
    b.set_subject_name(subject).map_err(e)?;
    b.set_issuer_name(issuer.map(|i| i.cert.subject_name()).unwrap_or(subject))
        .map_err(e)?;
    b.set_pubkey(public_key).map_err(e)?;
    let not_before = Asn1Time::from_unix(not_before_unix).map_err(e)?;
    let not_after = Asn1Time::from_unix(not_after_unix).map_err(e)?;
    b.set_not_before(&not_before).map_err(e)?;
    b.set_not_after(&not_after).map_err(e)?;
    match usage {
        Usage::Ca => {
            b.append_extension(BasicConstraints::new().critical().ca().build().map_err(e)?)
                .map_err(e)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .digital_signature()
                    .build()
                    .map_err(e)?,
            )
            .map_err(e)?;
        }
        Usage::ClientAuth => {
            b.append_extension(BasicConstraints::new().critical().build().map_err(e)?)
                .map_err(e)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_encipherment()
                    .build()
                    .map_err(e)?,
            )
            .map_err(e)?;
            b.append_extension(ExtendedKeyUsage::new().client_auth().build().map_err(e)?)
                .map_err(e)?;
        }
        Usage::ProfileSigning => {
            b.append_extension(BasicConstraints::new().critical().build().map_err(e)?)
                .map_err(e)?;
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .build()
                    .map_err(e)?,
            )
            .map_err(e)?;
            b.append_extension(
                ExtendedKeyUsage::new()
                    .email_protection()
                    .code_signing()
                    .build()
                    .map_err(e)?,
            )
            .map_err(e)?;
        }
        Usage::TlsServer(names) => {
            b.append_extension(BasicConstraints::new().critical().build().map_err(e)?)
                .map_err(e)?;
            b.append_extension(ExtendedKeyUsage::new().server_auth().build().map_err(e)?)
                .map_err(e)?;
            let mut san = SubjectAlternativeName::new();
            for n in names {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(n);
                } else {
                    san.dns(n);
                }
            }
            let ext = san
                .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
                .map_err(e)?;
            b.append_extension(ext).map_err(e)?;
        }
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
        .map_err(e)?;
    b.append_extension(ski).map_err(e)?;
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&i.cert), None))
            .map_err(e)?;
        b.append_extension(aki).map_err(e)?;
    }
    let signing_key = match (issuer, self_key) {
        (Some(i), _) => &i.key,
        (None, Some(k)) => k,
        (None, None) => {
            return Err(PkiError::Crypto {
                context: "building certificate".into(),
                reason: "a self-signed certificate needs its own key".into(),
            })
        }
    };
    b.sign(signing_key, MessageDigest::sha256()).map_err(e)?;
    Ok(b.build())
}

/// A new key and a certificate for it, valid from an hour ago (clock skew) for `days`.
pub fn generate(
    subject: &X509NameRef,
    usage: Usage<'_>,
    days: i64,
    issuer: Option<&KeyPair>,
) -> Result<KeyPair, PkiError> {
    generate_at(subject, usage, days, issuer, chrono::Utc::now().timestamp())
}

/// [`generate`], valid from an hour before `now` (unix seconds): the server's clock, for certificates whose
/// validity the server checks against it.
pub fn generate_at(
    subject: &X509NameRef,
    usage: Usage<'_>,
    days: i64,
    issuer: Option<&KeyPair>,
    now: i64,
) -> Result<KeyPair, PkiError> {
    let key = generate_rsa(2048)?;
    let cert = build_certificate(
        subject,
        &key,
        usage,
        now - 3600,
        now + days * 86_400,
        &random_serial()?,
        issuer,
        Some(&key),
    )?;
    Ok(KeyPair { cert, key })
}

/// Load `cert` (PEM) and `key` (PEM, encrypted with `passphrase` when given) from files.
pub fn load(cert: &Path, key: &Path, passphrase: Option<&str>) -> Result<KeyPair, PkiError> {
    let cert_pem = std::fs::read(cert).map_err(|e| PkiError::Io(cert.to_owned(), e))?;
    let key_pem = std::fs::read(key).map_err(|e| PkiError::Io(key.to_owned(), e))?;
    let cert = X509::from_pem(&cert_pem)
        .map_err(|e| PkiError::crypto(format!("certificate {}", cert.display()), e))?;
    let key = match passphrase {
        Some(p) => PKey::private_key_from_pem_passphrase(&key_pem, p.as_bytes()),
        None => PKey::private_key_from_pem(&key_pem),
    }
    .map_err(|e| PkiError::crypto(format!("private key {}", key.display()), e))?;
    let matches = cert
        .public_key()
        .map(|p| p.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(PkiError::Crypto {
            context: "key pair".into(),
            reason: "the private key does not belong to the certificate".into(),
        });
    }
    Ok(KeyPair { cert, key })
}

/// `<dir>/<stem>.pem` and `<dir>/<stem>.key` (encrypted with `passphrase`): loaded when present, else made
/// by `make` and written (the key 0600, created exclusively so two processes cannot both write one).
pub fn load_or_create(
    dir: &Path,
    stem: &str,
    passphrase: &str,
    make: impl FnOnce() -> Result<KeyPair, PkiError>,
) -> Result<KeyPair, PkiError> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    if cert_path.exists() && key_path.exists() {
        return load(&cert_path, &key_path, Some(passphrase));
    }
    // Owner-only: the data dir also holds the sealing secret and the database.
    crate::storage::private_files::create_private_dir(dir)
        .map_err(|e| PkiError::Io(dir.to_owned(), e))?;
    let pair = make()?;
    let key_pem = pair
        .key
        .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), passphrase.as_bytes())
        .map_err(|e| PkiError::crypto("encrypting private key", e))?;
    let cert_pem = pair
        .cert
        .to_pem()
        .map_err(|e| PkiError::crypto("encoding certificate", e))?;
    write_new(&key_path, &key_pem, true)?;
    write_new(&cert_path, &cert_pem, false)?;
    tracing::info!(cert = %cert_path.display(), "generated {stem} certificate");
    Ok(pair)
}

/// Create `path` exclusively; `private` makes it 0600.
pub fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| PkiError::Io(path.to_owned(), e))
}

/// The embedded content of a SignedData whose signature verifies with its signer's key. With `anchor`, the
/// signer must also chain to it; without, the signer's chain is the caller's business.
pub fn signed_content(
    p7: &openssl::pkcs7::Pkcs7Ref,
    anchor: Option<&X509>,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    use openssl::pkcs7::Pkcs7Flags;
    let mut store = openssl::x509::store::X509StoreBuilder::new()?;
    let mut flags = Pkcs7Flags::BINARY;
    match anchor {
        Some(a) => {
            store.add_cert(a.clone())?;
            // The anchor may be an intermediate (our issuing CA) rather than a root.
            store.set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)?;
        }
        None => flags |= Pkcs7Flags::NOVERIFY,
    }
    let none = openssl::stack::Stack::new()?;
    let mut content = Vec::new();
    p7.verify(&none, &store.build(), None, Some(&mut content), flags)?;
    Ok(content)
}

/// Configured certificate and key files when given (the key encrypted with `passphrase`, if any), else
/// [`load_or_create`] in `dir`.
pub fn configured_or_generated(
    files: (Option<&Path>, Option<&Path>),
    passphrase: Option<&str>,
    dir: &Path,
    stem: &str,
    secret: &str,
    make: impl FnOnce() -> Result<KeyPair, PkiError>,
) -> Result<KeyPair, PkiError> {
    match files {
        (Some(cert), Some(key)) => load(cert, key, passphrase),
        _ => load_or_create(dir, stem, secret, make),
    }
}

/// Lowercase hex SHA-256 of a certificate's DER (the fingerprint enrollments are bound to).
pub fn fingerprint(cert: &X509) -> Result<String, PkiError> {
    let der = cert
        .to_der()
        .map_err(|e| PkiError::crypto("encoding certificate", e))?;
    Ok(hex::encode(openssl::sha::sha256(&der)))
}

/// Serial number as uppercase hex (how certificates are listed and revoked).
pub fn serial_hex(cert: &X509) -> Result<String, PkiError> {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .map_err(|e| PkiError::crypto("serial", e))
}

/// Unix seconds of an `Asn1Time`.
pub fn unix_time(t: &openssl::asn1::Asn1TimeRef) -> Result<i64, PkiError> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| PkiError::crypto("time", e))?;
    let d = epoch.diff(t).map_err(|e| PkiError::crypto("time", e))?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_issues_a_client_certificate_that_verifies() {
        let ca = generate(&name("Test CA", "t").unwrap(), Usage::Ca, 10, None).unwrap();
        let leaf = generate(
            &name("device", "t").unwrap(),
            Usage::ClientAuth,
            1,
            Some(&ca),
        )
        .unwrap();
        assert!(leaf.cert.verify(&ca.cert.public_key().unwrap()).unwrap());
        assert_eq!(
            leaf.cert.issuer_name().to_der().unwrap(),
            ca.cert.subject_name().to_der().unwrap()
        );
        let nb = unix_time(leaf.cert.not_before()).unwrap();
        let na = unix_time(leaf.cert.not_after()).unwrap();
        assert_eq!(na - nb, 86_400 + 3600);
    }

    #[test]
    fn keys_are_written_encrypted_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create(dir.path(), "ca", "secret", || {
            generate(&name("CA", "t").unwrap(), Usage::Ca, 1, None)
        })
        .unwrap();
        let key_pem = std::fs::read_to_string(dir.path().join("ca.key")).unwrap();
        assert!(key_pem.contains("ENCRYPTED PRIVATE KEY"), "{key_pem}");
        let again = load_or_create(dir.path(), "ca", "secret", || panic!("must load")).unwrap();
        assert_eq!(made.cert.to_der().unwrap(), again.cert.to_der().unwrap());
        assert!(load_or_create(dir.path(), "ca", "wrong", || panic!("must load")).is_err());
    }
}
