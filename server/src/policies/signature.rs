//! Detached signatures over a bundle's digest. The signed message is `mdm-policy-bundle/1 sha256:<digest>`
//! (the digest in lowercase hex), so a signature over anything else never verifies as one over a bundle;
//! `policy.sig` holds the signature, base64. Keys are Ed25519 (a raw 64-byte signature) or ECDSA P-256
//! (DER, over SHA-256 of the message): what `openssl pkeyutl -sign -rawin` and `openssl dgst -sha256 -sign`
//! make, so a CI job can sign without this server's tools.
//!
//! `policy.sig` may instead be a detached CMS SignedData over the same message (base64 DER, or PEM), as
//! `openssl cms -sign -binary -noattr`-style tooling or an enterprise signing service makes it, with the
//! signer's certificate inside; it verifies when that certificate is one of the trusted signers' (any key
//! type: CMS signers are often RSA).
//!
//! Trusted signers are PEM files, each a public key or an X.509 certificate. A public key that is not
//! Ed25519 or P-256 is refused when the signers are loaded, not when a bundle arrives.

use super::bundle::FORMAT;
use base64::Engine;
use openssl::ec::EcKey;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKey, PKeyRef, Private, Public};
use openssl::sign::{Signer, Verifier};
use openssl::x509::X509;
use std::path::Path;

/// The most bytes of `policy.sig` (base64 of a DER P-256 signature is about 100; a CMS one carries its
/// signer's certificate, and perhaps its chain).
pub const MAX_SIGNATURE: usize = 32 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("{0}: not a PEM public key or certificate")]
    NotAKey(String),
    #[error(
        "{0}: only Ed25519 and ECDSA P-256 keys sign bundles (or any certificate's, with CMS)"
    )]
    UnsupportedKey(String),
    #[error("policy.sig is not base64 of at most {MAX_SIGNATURE} bytes")]
    Malformed,
    #[error("the signature does not verify with any trusted signer")]
    NoTrustedSigner,
    #[error("no trusted signers are configured (policies.trusted_signers)")]
    NoSigners,
    #[error("signing: {0}")]
    Signing(String),
}

/// What a signature covers.
pub fn message(digest: &str) -> Vec<u8> {
    format!("{FORMAT} sha256:{digest}").into_bytes()
}

/// A key a bundle may be signed by, with the name of the file it came from.
#[derive(Clone)]
pub struct TrustedSigner {
    pub name: String,
    /// What verifies a raw signature (an Ed25519 or P-256 key).
    key: Option<PKey<Public>>,
    /// SHA-256 of the certificate a CMS signature must be made with (a file holding a certificate).
    certificate: Option<String>,
}

/// The trusted signers (`policies.trusted_signers`).
#[derive(Clone, Default)]
pub struct TrustedSigners {
    signers: Vec<TrustedSigner>,
}

impl std::fmt::Debug for TrustedSigners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.signers.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("TrustedSigners")
            .field("signers", &names)
            .finish()
    }
}

impl TrustedSigners {
    /// Load PEM files. A file that holds no usable key fails the whole load, naming it.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, SignatureError> {
        let mut signers = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let name = path.display().to_string();
            let pem = std::fs::read(path).map_err(|_| SignatureError::NotAKey(name.clone()))?;
            signers.push(Self::signer(name, &pem)?);
        }
        Ok(Self { signers })
    }

    /// One signer from PEM text: a public key, or a certificate (its key signs raw signatures when it
    /// is Ed25519 or P-256; the certificate itself makes CMS signatures).
    pub fn signer(name: String, pem: &[u8]) -> Result<TrustedSigner, SignatureError> {
        if let Ok(key) = PKey::public_key_from_pem(pem) {
            if !supported(&key) {
                return Err(SignatureError::UnsupportedKey(name));
            }
            return Ok(TrustedSigner {
                name,
                key: Some(key),
                certificate: None,
            });
        }
        let cert = X509::from_pem(pem).map_err(|_| SignatureError::NotAKey(name.clone()))?;
        let certificate =
            crate::pki::fingerprint(&cert).map_err(|_| SignatureError::NotAKey(name.clone()))?;
        let key = cert.public_key().ok().filter(|k| supported(k));
        Ok(TrustedSigner {
            name,
            key,
            certificate: Some(certificate),
        })
    }

    pub fn with(mut self, s: TrustedSigner) -> Self {
        self.signers.push(s);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.signers.is_empty()
    }

    /// The name of the first trusted signer whose key verifies `signature` (policy.sig's bytes) over
    /// the bundle `digest`.
    pub fn verify(&self, digest: &str, signature: &[u8]) -> Result<&str, SignatureError> {
        if self.signers.is_empty() {
            return Err(SignatureError::NoSigners);
        }
        let text = base64_text(signature)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|_| SignatureError::Malformed)?;
        let msg = message(digest);
        let found = if openssl::pkcs7::Pkcs7::from_der(&raw).is_ok() {
            // Only the signer's certificate is taken from the signature; it must be a trusted one.
            let signer = crate::identity::verify_mdm_signature(&text, &msg)
                .map_err(|_| SignatureError::NoTrustedSigner)?;
            self.signers
                .iter()
                .find(|s| s.certificate.as_deref() == Some(signer.fingerprint()))
        } else {
            self.signers
                .iter()
                .find(|s| s.key.as_ref().is_some_and(|k| verifies(k, &msg, &raw)))
        };
        found
            .map(|s| s.name.as_str())
            .ok_or(SignatureError::NoTrustedSigner)
    }
}

fn supported<T: HasPublic>(key: &PKeyRef<T>) -> bool {
    match key.id() {
        Id::ED25519 => true,
        Id::EC => {
            key.ec_key()
                .ok()
                .and_then(|k: EcKey<T>| k.group().curve_name())
                == Some(Nid::X9_62_PRIME256V1)
        }
        _ => false,
    }
}

/// `policy.sig`'s base64, without whitespace and without PEM armour (`-----BEGIN ...-----` lines).
fn base64_text(signature: &[u8]) -> Result<String, SignatureError> {
    if signature.len() > MAX_SIGNATURE {
        return Err(SignatureError::Malformed);
    }
    let text = std::str::from_utf8(signature).map_err(|_| SignatureError::Malformed)?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(str::chars)
        .filter(|c| !c.is_ascii_whitespace())
        .collect())
}

fn verifies(key: &PKey<Public>, msg: &[u8], raw: &[u8]) -> bool {
    let verifier = match key.id() {
        Id::ED25519 => Verifier::new_without_digest(key),
        _ => Verifier::new(MessageDigest::sha256(), key),
    };
    verifier
        .and_then(|mut v| v.verify_oneshot(raw, msg))
        .unwrap_or(false)
}

/// Sign a bundle's digest with a private key (Ed25519 or P-256, PEM): `policy.sig`'s content.
pub fn sign(key_pem: &[u8], digest: &str) -> Result<String, SignatureError> {
    let key: PKey<Private> = PKey::private_key_from_pem(key_pem)
        .map_err(|_| SignatureError::NotAKey("the signing key".into()))?;
    if !supported(&key) {
        return Err(SignatureError::UnsupportedKey("the signing key".into()));
    }
    let msg = message(digest);
    let signer = match key.id() {
        Id::ED25519 => Signer::new_without_digest(&key),
        _ => Signer::new(MessageDigest::sha256(), &key),
    };
    let raw = signer
        .and_then(|mut s| s.sign_oneshot_to_vec(&msg))
        .map_err(|e| SignatureError::Signing(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw) + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::EcGroup;

    fn ed25519() -> (Vec<u8>, Vec<u8>) {
        let k = PKey::generate_ed25519().unwrap();
        (
            k.private_key_to_pem_pkcs8().unwrap(),
            k.public_key_to_pem().unwrap(),
        )
    }

    fn p256() -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let k = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        (
            k.private_key_to_pem_pkcs8().unwrap(),
            k.public_key_to_pem().unwrap(),
        )
    }

    const DIGEST: &str = "ab12";

    #[test]
    fn ed25519_and_p256_signatures_verify_with_their_key_only() {
        let (ed_private, ed_public) = ed25519();
        let (ec_private, ec_public) = p256();
        let (_, other_public) = ed25519();
        let trusted = TrustedSigners::default()
            .with(TrustedSigners::signer("ci-ed".into(), &ed_public).unwrap())
            .with(TrustedSigners::signer("ci-ec".into(), &ec_public).unwrap());
        let by_ed = sign(&ed_private, DIGEST).unwrap();
        let by_ec = sign(&ec_private, DIGEST).unwrap();
        assert_eq!(trusted.verify(DIGEST, by_ed.as_bytes()), Ok("ci-ed"));
        assert_eq!(trusted.verify(DIGEST, by_ec.as_bytes()), Ok("ci-ec"));
        // Another digest, another key, or a flipped byte: refused.
        assert_eq!(
            trusted.verify("ab13", by_ed.as_bytes()),
            Err(SignatureError::NoTrustedSigner)
        );
        let other = TrustedSigners::default()
            .with(TrustedSigners::signer("other".into(), &other_public).unwrap());
        assert_eq!(
            other.verify(DIGEST, by_ed.as_bytes()),
            Err(SignatureError::NoTrustedSigner)
        );
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(by_ed.trim())
            .unwrap();
        raw[0] ^= 1;
        let flipped = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(
            trusted.verify(DIGEST, flipped.as_bytes()),
            Err(SignatureError::NoTrustedSigner)
        );
        assert_eq!(
            trusted.verify(DIGEST, b"!!"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            trusted.verify(DIGEST, &[b'A'; MAX_SIGNATURE + 1]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            TrustedSigners::default().verify(DIGEST, by_ed.as_bytes()),
            Err(SignatureError::NoSigners)
        );
    }

    /// openssl's command line makes signatures the server takes: what a CI job without this binary runs
    /// (`docs/POLICIES.md`).
    #[test]
    fn signatures_made_by_the_openssl_command_line_verify() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let msg = dir.path().join("msg");
        std::fs::write(&msg, message(DIGEST)).unwrap();
        for (name, (private, public), command) in [
            (
                "ed25519",
                ed25519(),
                "pkeyutl -sign -rawin -inkey KEY -in MSG",
            ),
            ("p256", p256(), "dgst -sha256 -sign KEY MSG"),
        ] {
            let key = dir.path().join(format!("{name}.pem"));
            std::fs::write(&key, private).unwrap();
            let args = command.split(' ').map(|a| match a {
                "KEY" => key.as_os_str(),
                "MSG" => msg.as_os_str(),
                other => std::ffi::OsStr::new(other),
            });
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("the openssl command line (Debian package openssl)");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let sig = base64::engine::general_purpose::STANDARD.encode(out.stdout);
            let trusted = TrustedSigners::default()
                .with(TrustedSigners::signer(name.into(), &public).unwrap());
            assert_eq!(trusted.verify(DIGEST, sig.as_bytes()), Ok(name), "{name}");
        }
        assert_eq!(message("ab12"), b"mdm-policy-bundle/1 sha256:ab12");
    }

    #[test]
    fn certificates_sign_with_their_key_and_other_key_types_are_refused() {
        let (private, _) = ed25519();
        let key = PKey::private_key_from_pem(&private).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "policy signer").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::null()).unwrap();
        let cert = b.build().to_pem().unwrap();
        let trusted =
            TrustedSigners::default().with(TrustedSigners::signer("cert".into(), &cert).unwrap());
        let sig = sign(&private, DIGEST).unwrap();
        assert_eq!(trusted.verify(DIGEST, sig.as_bytes()), Ok("cert"));

        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let rsa_public = rsa.public_key_to_pem().unwrap();
        assert_eq!(
            TrustedSigners::signer("rsa".into(), &rsa_public).err(),
            Some(SignatureError::UnsupportedKey("rsa".into()))
        );
        let rsa_private = rsa.private_key_to_pem_pkcs8().unwrap();
        assert!(matches!(
            sign(&rsa_private, DIGEST),
            Err(SignatureError::UnsupportedKey(_))
        ));
        let p384 = EcGroup::from_curve_name(Nid::SECP384R1).unwrap();
        let k = PKey::from_ec_key(EcKey::generate(&p384).unwrap()).unwrap();
        assert!(TrustedSigners::signer("p384".into(), &k.public_key_to_pem().unwrap()).is_err());
        assert_eq!(
            TrustedSigners::signer("junk".into(), b"junk").err(),
            Some(SignatureError::NotAKey("junk".into()))
        );
    }

    /// A detached CMS signature over the message, made by openssl's `cms -sign` with an RSA certificate
    /// (the signer's certificate inside), verifies when that certificate is trusted, and only then.
    #[test]
    fn cms_signatures_verify_with_a_trusted_certificate_of_any_key_type() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = crate::identity::test_support::self_signed("ci signing service");
        let (cert_file, key_file, msg) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("msg"),
        );
        std::fs::write(&cert_file, cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(&msg, message(DIGEST)).unwrap();
        let out = Command::new("openssl")
            .args(["cms", "-sign", "-binary", "-outform", "PEM", "-in"])
            .arg(&msg)
            .arg("-signer")
            .arg(&cert_file)
            .arg("-inkey")
            .arg(&key_file)
            .output()
            .expect("the openssl command line (Debian package openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem_sig = out.stdout;
        assert!(pem_sig.starts_with(b"-----BEGIN CMS-----"));
        let trusted = TrustedSigners::default()
            .with(TrustedSigners::signer("service".into(), &cert.to_pem().unwrap()).unwrap());
        assert_eq!(trusted.verify(DIGEST, &pem_sig), Ok("service"));
        assert_eq!(
            trusted.verify("ab13", &pem_sig),
            Err(SignatureError::NoTrustedSigner),
            "over another bundle"
        );
        let (other, _) = crate::identity::test_support::self_signed("someone else");
        let untrusted = TrustedSigners::default()
            .with(TrustedSigners::signer("other".into(), &other.to_pem().unwrap()).unwrap());
        assert_eq!(
            untrusted.verify(DIGEST, &pem_sig),
            Err(SignatureError::NoTrustedSigner),
            "signed, but not by a trusted certificate"
        );
        // A raw-key signer never accepts a CMS signature, whatever key made it.
        let (_, ed_public) = ed25519();
        let raw_only = TrustedSigners::default()
            .with(TrustedSigners::signer("ed".into(), &ed_public).unwrap());
        assert_eq!(
            raw_only.verify(DIGEST, &pem_sig),
            Err(SignatureError::NoTrustedSigner)
        );
    }
}
