//! Secrets encrypted at rest: push certificate keys, and (with a key of their own, see
//! [`KeySealer::for_purpose`]) the escrowed device tokens in `storage::sealing`.
//!
//! Format of a sealed value: `version (1 byte, 0x01) || nonce (12 bytes, random) || ciphertext || tag
//! (16 bytes)`, AES-256-GCM, with the version byte as associated data, followed by the caller's context if
//! it gives one ([`KeySealer::seal_bound`]: a value sealed for one row and column opens for no other).
//!
//! Key derivation: **HKDF-SHA256** (RFC 5869) of the server's configured secret, with a fixed salt and an
//! info string naming this purpose and format version. Why HKDF rather than a bare SHA-256 of the secret:
//! the same configured secret may key other things in the server (API tokens, signed cookies, ...);
//! HKDF's info parameter gives this use its own independent key (domain separation), so no other use of the
//! secret ever handles, or can be made to reveal, the key that seals private keys, and a future format
//! version can derive a fresh key. Neither HKDF nor SHA-256 stretches the input: the secret must be
//! high-entropy (random, 32+ characters recommended; fewer than 16 bytes is refused), not a human password.

use std::fmt;

use openssl::md::Md;
use openssl::pkey::Id;
use openssl::pkey_ctx::PkeyCtx;
use openssl::symm::{Cipher, Crypter, Mode};

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const HKDF_SALT: &[u8] = b"mdm-server key sealing";
const HKDF_INFO: &[u8] = b"mdm-server/push/seal v1 AES-256-GCM";
/// OpenSSL takes lengths as C ints: feed it bounded chunks, so no input size can overflow them.
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the secret is too short: at least {min} bytes are needed (a random 32+ character string is best)")]
    SecretTooShort { min: usize },
    #[error("sealed data is too short ({0} bytes)")]
    Truncated(usize),
    #[error("sealed data has an unknown format version {0}")]
    UnsupportedVersion(u8),
    #[error("cannot decrypt the sealed data: wrong secret, or the data was modified")]
    Decrypt,
    #[error("cryptography failure: {0}")]
    Crypto(String),
}

/// AES-256-GCM with a key derived (HKDF-SHA256) from the server's configured secret.
pub struct KeySealer {
    key: [u8; KEY_LEN],
}

impl fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySealer")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Drop for KeySealer {
    fn drop(&mut self) {
        self.key.fill(0);
        std::hint::black_box(&self.key);
    }
}

fn derive_key(secret: &[u8], info: &[u8]) -> Result<[u8; KEY_LEN], openssl::error::ErrorStack> {
    let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
    ctx.derive_init()?;
    ctx.set_hkdf_md(Md::sha256())?;
    ctx.set_hkdf_salt(HKDF_SALT)?;
    ctx.set_hkdf_key(secret)?;
    ctx.add_hkdf_info(info)?;
    let mut key = [0u8; KEY_LEN];
    ctx.derive(Some(&mut key))?;
    Ok(key)
}

impl KeySealer {
    /// Refuses secrets shorter than [`MIN_SECRET_LEN`] bytes. Also runs a seal/open self-test, so a
    /// crypto library without AES-256-GCM or HKDF fails here, at start-up, rather than later.
    pub fn new(secret: &str) -> Result<Self, SealError> {
        Self::for_purpose(secret, HKDF_INFO)
    }

    /// A sealer for another use of the same secret: `purpose` is the HKDF info, so each purpose gets an
    /// independent key (what one opens, no other can). Same checks as [`Self::new`].
    pub fn for_purpose(secret: &str, purpose: &[u8]) -> Result<Self, SealError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SealError::SecretTooShort {
                min: MIN_SECRET_LEN,
            });
        }
        let key =
            derive_key(secret.as_bytes(), purpose).map_err(|e| SealError::Crypto(e.to_string()))?;
        let sealer = Self { key };
        let probe = sealer.try_seal(b"self-test", b"")?;
        if sealer.open(&probe)? != b"self-test" {
            return Err(SealError::Crypto("AES-256-GCM self-test failed".into()));
        }
        Ok(sealer)
    }

    /// `0x01 || nonce (12) || ciphertext || tag (16)`, with a fresh random nonce each time.
    ///
    /// Panics only if OpenSSL cannot produce random bytes or run AES-GCM (both checked by [`Self::new`]);
    /// no input can cause it.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_bound(plaintext, b"")
    }

    /// [`Self::seal`], bound to `context` (authenticated, not stored): only [`Self::open_bound`] with the
    /// same context opens it. Binding a value to where it is stored stops a database writer from moving
    /// it elsewhere (one device's token to another) unnoticed.
    pub fn seal_bound(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        match self.try_seal(plaintext, context) {
            Ok(sealed) => sealed,
            Err(e) => panic!("KeySealer::seal: OpenSSL failed: {e}"),
        }
    }

    /// Names this sealer's key without revealing it: the first 8 bytes of SHA-256 of the key. Stored beside
    /// sealed values so the key that opens them is found without trying each.
    pub fn key_id(&self) -> [u8; 8] {
        let digest = openssl::sha::sha256(&self.key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        id
    }

    fn try_seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let crypto = |e: openssl::error::ErrorStack| SealError::Crypto(e.to_string());
        let mut nonce = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce).map_err(crypto)?;
        let mut c = Crypter::new(
            Cipher::aes_256_gcm(),
            Mode::Encrypt,
            &self.key,
            Some(&nonce),
        )
        .map_err(crypto)?;
        c.aad_update(&[VERSION]).map_err(crypto)?;
        if !context.is_empty() {
            c.aad_update(context).map_err(crypto)?;
        }
        // Header, then room for the ciphertext (same length as the plaintext) plus one block of slack
        // that OpenSSL's length checks ask for; the tag goes where the slack was.
        let header = 1 + NONCE_LEN;
        let mut out = vec![0u8; header + plaintext.len() + TAG_LEN];
        out[0] = VERSION;
        out[1..header].copy_from_slice(&nonce);
        let mut n = header;
        for chunk in plaintext.chunks(CHUNK) {
            n += c.update(chunk, &mut out[n..]).map_err(crypto)?;
        }
        n += c.finalize(&mut out[n..]).map_err(crypto)?;
        let mut tag = [0u8; TAG_LEN];
        c.get_tag(&mut tag).map_err(crypto)?;
        out.truncate(n);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Decrypt and authenticate. A wrong secret or any modification gives [`SealError::Decrypt`].
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_bound(sealed, b"")
    }

    /// Open what [`Self::seal_bound`] sealed with the same `context`; another context is
    /// [`SealError::Decrypt`].
    pub fn open_bound(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(SealError::Truncated(0));
        };
        if version != VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(SealError::Truncated(sealed.len()));
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let decrypt = |_| SealError::Decrypt;
        let mut c = Crypter::new(Cipher::aes_256_gcm(), Mode::Decrypt, &self.key, Some(nonce))
            .map_err(decrypt)?;
        c.aad_update(&[version]).map_err(decrypt)?;
        if !context.is_empty() {
            c.aad_update(context).map_err(decrypt)?;
        }
        let mut out = vec![0u8; ciphertext.len() + TAG_LEN];
        let mut n = 0;
        for chunk in ciphertext.chunks(CHUNK) {
            n += c.update(chunk, &mut out[n..]).map_err(decrypt)?;
        }
        c.set_tag(tag).map_err(decrypt)?;
        n += c.finalize(&mut out[n..]).map_err(decrypt)?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "correct horse battery staple 42";

    #[test]
    fn round_trip() {
        let s = KeySealer::new(SECRET).unwrap();
        let big = vec![7u8; 3 * CHUNK + 5];
        for msg in [
            &b""[..],
            b"x",
            b"-----BEGIN PRIVATE KEY-----\nMIIE...\n",
            &[0u8; 5000],
            &big,
        ] {
            let sealed = s.seal(msg);
            assert_eq!(sealed.len(), 1 + 12 + msg.len() + 16);
            assert_eq!(sealed[0], 1);
            assert_eq!(s.open(&sealed).unwrap(), msg);
            // Deterministic key derivation: another sealer from the same secret opens it.
            assert_eq!(KeySealer::new(SECRET).unwrap().open(&sealed).unwrap(), msg);
        }
        // The layout is plain AES-256-GCM: version || nonce || ciphertext || tag, version as AAD.
        let sealed = s.seal(b"layout");
        let (nonce, rest) = sealed[1..].split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let plain =
            openssl::symm::decrypt_aead(Cipher::aes_256_gcm(), &s.key, Some(nonce), &[1], ct, tag)
                .unwrap();
        assert_eq!(plain, b"layout");
        // Fresh nonce every time.
        assert_ne!(s.seal(b"same"), s.seal(b"same"));
    }

    #[test]
    fn known_key_derivation() {
        // HKDF-SHA256 is deterministic: pin the derived key so the at-rest format cannot drift.
        let s = KeySealer::new("0123456789abcdef").unwrap();
        assert_eq!(
            hex::encode(s.key),
            hex::encode(derive_key(b"0123456789abcdef", HKDF_INFO).unwrap())
        );
        // Check against a separately computed RFC 5869 HKDF (extract with HMAC-SHA256, expand 1 block).
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::sign::Signer;
        let hmac = |key: &[u8], data: &[u8]| {
            let k = PKey::hmac(key).unwrap();
            let mut signer = Signer::new(MessageDigest::sha256(), &k).unwrap();
            signer.update(data).unwrap();
            signer.sign_to_vec().unwrap()
        };
        let prk = hmac(HKDF_SALT, b"0123456789abcdef");
        let mut t1_input = HKDF_INFO.to_vec();
        t1_input.push(1);
        assert_eq!(s.key.to_vec(), hmac(&prk, &t1_input));
    }

    #[test]
    fn tampering_is_detected() {
        let s = KeySealer::new(SECRET).unwrap();
        let sealed = s.seal(b"private key bytes");
        for i in 1..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(matches!(s.open(&t), Err(SealError::Decrypt)), "byte {i}");
        }
        let mut v = sealed.clone();
        v[0] = 2;
        assert!(matches!(s.open(&v), Err(SealError::UnsupportedVersion(2))));
        for n in 0..29 {
            assert!(s.open(&sealed[..n.min(sealed.len())]).is_err());
        }
        assert!(matches!(
            s.open(&sealed[..sealed.len() - 1]),
            Err(SealError::Decrypt)
        ));
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(s.open(&longer).is_err());
    }

    #[test]
    fn other_secret_cannot_open() {
        let a = KeySealer::new(SECRET).unwrap();
        let b = KeySealer::new("another secret of enough length").unwrap();
        let sealed = a.seal(b"hello");
        assert!(matches!(b.open(&sealed), Err(SealError::Decrypt)));
    }

    #[test]
    fn short_secret_refused() {
        for s in ["", "short", "fifteen bytes!!"] {
            assert!(matches!(
                KeySealer::new(s),
                Err(SealError::SecretTooShort { min: 16 })
            ));
        }
        assert!(KeySealer::new("sixteen bytes!!!").is_ok());
    }

    /// A purpose has its own key, and a bound value opens only with its context; unbound values keep the
    /// format they had (push keys sealed before contexts existed still open).
    #[test]
    fn purposes_and_contexts_separate_sealed_values() {
        let push = KeySealer::new(SECRET).unwrap();
        let tokens = KeySealer::for_purpose(SECRET, b"another purpose").unwrap();
        assert_ne!(push.key_id(), tokens.key_id());
        assert_eq!(push.key_id(), KeySealer::new(SECRET).unwrap().key_id());
        assert!(matches!(
            tokens.open(&push.seal(b"k")),
            Err(SealError::Decrypt)
        ));
        let bound = tokens.seal_bound(b"token", b"devices.unlock_token:A");
        assert_eq!(
            tokens
                .open_bound(&bound, b"devices.unlock_token:A")
                .unwrap(),
            b"token"
        );
        for other in [
            &b"devices.unlock_token:B"[..],
            b"devices.bootstrap_token:A",
            b"",
        ] {
            assert!(matches!(
                tokens.open_bound(&bound, other),
                Err(SealError::Decrypt)
            ));
        }
        assert_eq!(push.open_bound(&push.seal(b"k"), b"").unwrap(), b"k");
    }

    #[test]
    fn debug_hides_the_key() {
        let s = KeySealer::new(SECRET).unwrap();
        let dbg = format!("{s:?}");
        assert_eq!(dbg, "KeySealer { key: \"<redacted>\" }");
        assert!(!dbg.contains(&hex::encode(s.key)));
        assert!(!dbg.contains(SECRET));
        let alt = format!("{s:#?}");
        assert!(!alt.contains(&hex::encode(s.key)));
    }
}
