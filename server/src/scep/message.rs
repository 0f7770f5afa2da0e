//! SCEP messages (RFC 8894): decoding a PKIOperation request and building the CertRep reply, plus the client
//! side of both (the device simulator and tests enroll through them).

use crate::identity::openssl_reasons;
use crate::openssl_ffi::{self, AttrValue};
use crate::pki::KeyPair;
use openssl::asn1::Asn1Object;
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509Req, X509};
use std::sync::OnceLock;

/// SCEP message types (pkiMessage `messageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    CertRep,
    RenewalReq,
    PkcsReq,
    CertPoll,
    GetCert,
    GetCrl,
}

impl MessageType {
    pub fn code(self) -> u32 {
        match self {
            Self::CertRep => 3,
            Self::RenewalReq => 17,
            Self::PkcsReq => 19,
            Self::CertPoll => 20,
            Self::GetCert => 21,
            Self::GetCrl => 22,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        [
            Self::CertRep,
            Self::RenewalReq,
            Self::PkcsReq,
            Self::CertPoll,
            Self::GetCert,
            Self::GetCrl,
        ]
        .into_iter()
        .find(|t| t.code() == c)
    }
}

/// Why a request failed (`failInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    /// Unrecognised or unsupported algorithm.
    BadAlg = 0,
    /// Integrity check (signature, decryption) failed.
    BadMessageCheck = 1,
    /// Transaction not permitted or supported (e.g. a wrong or used challenge).
    BadRequest = 2,
    BadTime = 3,
    /// No certificate matches (e.g. renewal of a certificate we did not issue).
    BadCertId = 4,
}

/// A request that is not a SCEP message at all: answered 400, no CertRep can be addressed to it.
#[derive(Debug, thiserror::Error)]
#[error("malformed SCEP message: {0}")]
pub struct Malformed(pub String);

/// The SCEP object identifiers (VeriSign's arc), registered with OpenSSL once per process.
pub struct Oids {
    pub message_type: Nid,
    pub pki_status: Nid,
    pub fail_info: Nid,
    pub sender_nonce: Nid,
    pub recipient_nonce: Nid,
    pub transaction_id: Nid,
}

pub fn oids() -> &'static Oids {
    static OIDS: OnceLock<Oids> = OnceLock::new();
    OIDS.get_or_init(|| {
        let nid = |oid: &str, name: &str| {
            // Known already (a newer OpenSSL, or another library in the process)? Use its NID.
            match Asn1Object::from_str(oid).map(|o| o.nid()) {
                Ok(n) if n != Nid::UNDEF => n,
                _ => Nid::create(oid, name, name)
                    .unwrap_or_else(|e| panic!("registering SCEP OID {oid} with OpenSSL: {e}")),
            }
        };
        Oids {
            message_type: nid("2.16.840.1.113733.1.9.2", "scep-messageType"),
            pki_status: nid("2.16.840.1.113733.1.9.3", "scep-pkiStatus"),
            fail_info: nid("2.16.840.1.113733.1.9.4", "scep-failInfo"),
            sender_nonce: nid("2.16.840.1.113733.1.9.5", "scep-senderNonce"),
            recipient_nonce: nid("2.16.840.1.113733.1.9.6", "scep-recipientNonce"),
            transaction_id: nid("2.16.840.1.113733.1.9.7", "scep-transactionID"),
        }
    })
}

/// Largest PKIOperation we decode. A CSR in two layers of PKCS#7 is a few KiB.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// A decoded (but not yet decrypted) PKIOperation request.
pub struct PkiMessage {
    pub message_type: MessageType,
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    /// The certificate the requester signed with: self-signed for PKCSReq, the old identity for RenewalReq.
    pub signer: X509,
    /// Whether the SignedData's signature verifies with `signer`'s key.
    pub signature_valid: bool,
    /// The signed content: a DER EnvelopedData for the CA.
    envelope: Vec<u8>,
}

impl std::fmt::Debug for PkiMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PkiMessage")
            .field("message_type", &self.message_type)
            .field("transaction_id", &self.transaction_id)
            .field("signature_valid", &self.signature_valid)
            .finish_non_exhaustive()
    }
}

/// What the envelope held: the CSR, the cipher it came in (the reply uses the same), and the challenge.
pub struct Csr {
    pub req: X509Req,
    pub cipher: Cipher,
    pub challenge: Option<String>,
}

impl PkiMessage {
    /// Decode a pkiMessage: SignedData (BER accepted) with one signer whose certificate is inside, the SCEP
    /// signed attributes, and embedded content. The signature is checked but a bad one is reported in
    /// `signature_valid`, not as an error: the reply to it is a CertRep failure, which needs the nonce.
    pub fn decode(der: &[u8]) -> Result<Self, Malformed> {
        if der.len() > MAX_MESSAGE_LEN {
            return Err(Malformed(format!(
                "message longer than {MAX_MESSAGE_LEN} bytes"
            )));
        }
        let p7 = Pkcs7::from_der(der)
            .map_err(|e| Malformed(format!("not PKCS#7: {}", openssl_reasons(&e))))?;
        if p7.signed().is_none() {
            return Err(Malformed("not a PKCS#7 SignedData".into()));
        }
        let o = oids();
        let message_type = printable(&p7, o.message_type, "messageType")?;
        let message_type = message_type
            .parse::<u32>()
            .ok()
            .and_then(MessageType::from_code)
            .ok_or_else(|| Malformed(format!("unknown messageType {message_type:?}")))?;
        let transaction_id = printable(&p7, o.transaction_id, "transactionID")?;
        if transaction_id.is_empty() || transaction_id.len() > 256 {
            return Err(Malformed("transactionID empty or too long".into()));
        }
        let sender_nonce = octets(&p7, o.sender_nonce, "senderNonce")?;
        if sender_nonce.is_empty() || sender_nonce.len() > 64 {
            return Err(Malformed("senderNonce empty or too long".into()));
        }
        let none = Stack::new().map_err(internal)?;
        let mut signers = p7
            .signers(&none, Pkcs7Flags::empty())
            .map_err(|e| Malformed(format!("signer certificate: {}", openssl_reasons(&e))))?;
        if signers.len() != 1 {
            return Err(Malformed(format!(
                "expected one signer, found {}",
                signers.len()
            )));
        }
        let signer = signers
            .pop()
            .ok_or_else(|| Malformed("no signer certificate".into()))?;
        // No anchor: the signer's chain is policy (self-signed for PKCSReq, ours for RenewalReq), decided by
        // the caller; here only the signature over the content is checked.
        let verified = crate::pki::signed_content(&p7, None);
        let signature_valid = verified.is_ok();
        let content = verified.unwrap_or_default();
        // A failed verify leaves reasons on the thread's error queue; they are not ours to report later.
        let _ = openssl::error::ErrorStack::get();
        if signature_valid && content.is_empty() {
            return Err(Malformed("SignedData has no content".into()));
        }
        Ok(Self {
            message_type,
            transaction_id,
            sender_nonce,
            signer,
            signature_valid,
            envelope: content,
        })
    }

    /// Decrypt the envelope with the CA's key and decode the CSR inside, refusing a CSR for a key we do not
    /// certify ([`check_csr_key`]). Errors are `failInfo`s.
    pub fn decrypt_csr(&self, ca: &KeyPair) -> Result<Csr, (FailInfo, String)> {
        let csr = self.decrypt_csr_any_key(ca)?;
        // RFC 8894 §3.3.2.2: badAlg is "unrecognized or unsupported algorithm"; a key we will not certify
        // is an algorithm (or size) this CA does not support, not a malformed request.
        let key = csr.req.public_key().map_err(|e| {
            (
                FailInfo::BadRequest,
                format!("CSR key: {}", openssl_reasons(&e)),
            )
        })?;
        check_csr_key(&key).map_err(|why| (FailInfo::BadAlg, why.to_string()))?;
        Ok(csr)
    }

    /// [`Self::decrypt_csr`] without the key policy: for reading captures of older devices' requests.
    pub(crate) fn decrypt_csr_any_key(&self, ca: &KeyPair) -> Result<Csr, (FailInfo, String)> {
        let env = Pkcs7::from_der(&self.envelope).map_err(|e| {
            (
                FailInfo::BadMessageCheck,
                format!("content is not PKCS#7: {}", openssl_reasons(&e)),
            )
        })?;
        let nid = openssl_ffi::envelope_cipher(&env).ok_or((
            FailInfo::BadMessageCheck,
            "content is not an EnvelopedData".to_string(),
        ))?;
        let cipher = cipher_for(nid).ok_or((
            FailInfo::BadAlg,
            format!(
                "unsupported content encryption {}",
                nid.long_name().unwrap_or("?")
            ),
        ))?;
        let csr_der = env
            .decrypt(&ca.key, &ca.cert, Pkcs7Flags::BINARY)
            .map_err(|e| {
                (
                    FailInfo::BadMessageCheck,
                    format!("cannot decrypt: {}", openssl_reasons(&e)),
                )
            })?;
        let req = X509Req::from_der(&csr_der).map_err(|e| {
            (
                FailInfo::BadRequest,
                format!("not a CSR: {}", openssl_reasons(&e)),
            )
        })?;
        let key = req.public_key().map_err(|e| {
            (
                FailInfo::BadRequest,
                format!("CSR key: {}", openssl_reasons(&e)),
            )
        })?;
        if !req.verify(&key).unwrap_or(false) {
            let _ = openssl::error::ErrorStack::get();
            return Err((
                FailInfo::BadMessageCheck,
                "CSR signature does not verify".into(),
            ));
        }
        let challenge = match openssl_ffi::challenge_password(&req) {
            Some(der) => Some(
                der_string(&der)
                    .ok_or((FailInfo::BadRequest, "unreadable challengePassword".into()))?,
            ),
            None => None,
        };
        Ok(Csr {
            req,
            cipher,
            challenge,
        })
    }
}

/// Smallest RSA modulus we certify, in bits (what NIST SP 800-131A allows, and what our profiles ask for).
pub const MIN_RSA_BITS: u32 = 2048;

/// A CSR's key must be one we will vouch for during the certificate's life: RSA of at least
/// [`MIN_RSA_BITS`], or EC on P-256, P-384 or P-521. Everything else (short RSA, DSA, small or unnamed
/// curves, other algorithms) is refused: a device identity on a weak key can be forged by factoring it.
pub fn check_csr_key(
    key: &openssl::pkey::PKeyRef<openssl::pkey::Public>,
) -> Result<(), UnacceptedKey> {
    use openssl::pkey::Id;
    match key.id() {
        Id::RSA => match key.bits() {
            bits if bits >= MIN_RSA_BITS => Ok(()),
            bits => Err(UnacceptedKey::ShortRsa(bits)),
        },
        Id::EC => {
            let curve = key.ec_key().ok().and_then(|ec| ec.group().curve_name());
            match curve {
                Some(Nid::X9_62_PRIME256V1 | Nid::SECP384R1 | Nid::SECP521R1) => Ok(()),
                other => Err(UnacceptedKey::Curve(
                    other
                        .and_then(|n| n.short_name().ok())
                        .unwrap_or("an unnamed curve"),
                )),
            }
        }
        Id::DSA => Err(UnacceptedKey::Dsa),
        other => Err(UnacceptedKey::Algorithm(
            Nid::from_raw(other.as_raw())
                .short_name()
                .unwrap_or("unknown"),
        )),
    }
}

/// A CSR key [`check_csr_key`] refuses, with the name of its size, curve or algorithm.
#[derive(Debug, thiserror::Error)]
pub enum UnacceptedKey {
    #[error("CSR key is RSA-{0}: at least RSA-{MIN_RSA_BITS} is required")]
    ShortRsa(u32),
    #[error("CSR key is EC on {0}: only P-256, P-384 and P-521 are accepted")]
    Curve(&'static str),
    #[error(
        "CSR key is DSA: only RSA (2048 bits or more) and EC (P-256, P-384, P-521) are accepted"
    )]
    Dsa,
    #[error("CSR key algorithm {0} is not accepted: only RSA (2048 bits or more) and EC (P-256, P-384, P-521)")]
    Algorithm(&'static str),
}

/// The CertRep for `request`: success carries `issued` in a certs-only SignedData enveloped to the
/// requester's certificate (in the requester's cipher), failure carries `failInfo`.
pub fn cert_rep(
    ca: &KeyPair,
    request: &PkiMessage,
    outcome: Result<(&X509, Cipher), FailInfo>,
) -> Result<Vec<u8>, ErrorStack> {
    let o = oids();
    let nonce = crate::pki::random_bytes(16);
    let fail;
    let mut attrs = vec![
        (o.message_type, AttrValue::Printable("3")),
        (
            o.transaction_id,
            AttrValue::Printable(&request.transaction_id),
        ),
        (o.recipient_nonce, AttrValue::Octets(&request.sender_nonce)),
        (o.sender_nonce, AttrValue::Octets(&nonce)),
    ];
    let content = match outcome {
        Ok((issued, cipher)) => {
            attrs.push((o.pki_status, AttrValue::Printable("0")));
            let degenerate = openssl_ffi::certs_only(&[issued]).and_then(|p| p.to_der())?;
            let mut to = Stack::new()?;
            to.push(request.signer.clone())?;
            Pkcs7::encrypt(&to, &degenerate, cipher, Pkcs7Flags::BINARY).and_then(|p| p.to_der())?
        }
        Err(info) => {
            fail = (info as u8).to_string();
            attrs.push((o.pki_status, AttrValue::Printable("2")));
            attrs.push((o.fail_info, AttrValue::Printable(&fail)));
            Vec::new()
        }
    };
    openssl_ffi::sign_with_attributes(&ca.cert, &ca.key, &content, &attrs).and_then(|p| p.to_der())
}

fn cipher_for(nid: Nid) -> Option<Cipher> {
    match nid {
        // Single DES: what SCEP clients without capabilities (e.g. micromdm's scepclient) send. It only
        // hides a one-time challenge and, in the reply, a public certificate; OpenSSL 3 keeps it in its
        // legacy provider, loaded on first need.
        Nid::DES_CBC if legacy_provider() => Some(Cipher::des_cbc()),
        Nid::DES_EDE3_CBC => Some(Cipher::des_ede3_cbc()),
        Nid::AES_128_CBC => Some(Cipher::aes_128_cbc()),
        Nid::AES_192_CBC => Some(Cipher::aes_192_cbc()),
        Nid::AES_256_CBC => Some(Cipher::aes_256_cbc()),
        _ => None,
    }
}

/// Load OpenSSL's legacy provider (single DES) once, keeping the default one; false if it is not installed.
fn legacy_provider() -> bool {
    static LEGACY: OnceLock<Option<openssl::provider::Provider>> = OnceLock::new();
    LEGACY
        .get_or_init(|| {
            openssl::provider::Provider::try_load(None, "legacy", true)
                .inspect_err(|e| {
                    tracing::warn!(error = %openssl_reasons(e), "OpenSSL legacy provider unavailable: single-DES SCEP requests will be refused")
                })
                .ok()
        })
        .is_some()
}

fn internal(e: openssl::error::ErrorStack) -> Malformed {
    Malformed(format!("OpenSSL: {}", openssl_reasons(&e)))
}

fn printable(p7: &Pkcs7, nid: Nid, name: &str) -> Result<String, Malformed> {
    let der = openssl_ffi::signed_attribute(p7, nid)
        .ok_or_else(|| Malformed(format!("no {name} attribute")))?;
    der_string(&der).ok_or_else(|| Malformed(format!("{name} is not a string")))
}

fn octets(p7: &Pkcs7, nid: Nid, name: &str) -> Result<Vec<u8>, Malformed> {
    let der = openssl_ffi::signed_attribute(p7, nid)
        .ok_or_else(|| Malformed(format!("no {name} attribute")))?;
    match der_primitive(&der) {
        Some((0x04, v)) => Ok(v.to_vec()),
        _ => Err(Malformed(format!("{name} is not an OCTET STRING"))),
    }
}

/// A DER string value (Printable, UTF8, IA5, T61) as text.
fn der_string(der: &[u8]) -> Option<String> {
    match der_primitive(der)? {
        (0x13 | 0x0c | 0x16 | 0x14, v) => String::from_utf8(v.to_vec()).ok(),
        _ => None,
    }
}

/// Tag and contents of one primitive DER TLV that spans all of `der`.
fn der_primitive(der: &[u8]) -> Option<(u8, &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() == len).then_some((tag, rest))
}

// ---- The client side: what a device sends and how it reads the answer. ----

/// A PKIOperation request: `csr_der` enveloped to `ca` in `cipher`, signed by `signer` (self-signed for
/// PKCSReq, the current identity for RenewalReq).
pub fn build_request(
    message_type: MessageType,
    signer: &KeyPair,
    ca: &X509,
    csr_der: &[u8],
    cipher: Cipher,
    transaction_id: &str,
    sender_nonce: &[u8],
) -> Result<Vec<u8>, ErrorStack> {
    let mut to = Stack::new()?;
    to.push(ca.clone())?;
    let envelope =
        Pkcs7::encrypt(&to, csr_der, cipher, Pkcs7Flags::BINARY).and_then(|p| p.to_der())?;
    let o = oids();
    let code = message_type.code().to_string();
    openssl_ffi::sign_with_attributes(
        &signer.cert,
        &signer.key,
        &envelope,
        &[
            (o.message_type, AttrValue::Printable(&code)),
            (o.transaction_id, AttrValue::Printable(transaction_id)),
            (o.sender_nonce, AttrValue::Octets(sender_nonce)),
        ],
    )
    .and_then(|p| p.to_der())
}

/// A decoded CertRep.
#[derive(Debug)]
pub struct CertRep {
    pub transaction_id: String,
    pub recipient_nonce: Vec<u8>,
    /// 0 success, 2 failure, 3 pending.
    pub pki_status: u32,
    pub fail_info: Option<u32>,
    /// The issued certificate (success only).
    pub certificate: Option<X509>,
}

/// Why a CertRep cannot be read (the client side's error).
#[derive(Debug, thiserror::Error)]
pub enum CertRepError {
    #[error("{}", openssl_reasons(.0))]
    Crypto(#[from] ErrorStack),
    #[error("CertRep signature: {}", openssl_reasons(.0))]
    Signature(ErrorStack),
    #[error("no signer")]
    NoSigner,
    #[error("CertRep not signed by the CA")]
    NotFromCa,
    /// An attribute is missing or of the wrong type; the text names it.
    #[error("{0}")]
    Attribute(String),
    #[error("messageType {0}, expected 3")]
    MessageType(String),
    #[error("{0}")]
    PkiStatus(std::num::ParseIntError),
    #[error("bad failInfo")]
    FailInfo,
    #[error("decrypting CertRep: {}", openssl_reasons(.0))]
    Decrypt(ErrorStack),
    #[error("no certificate in CertRep")]
    NoCertificate,
}

/// Read a CertRep: it must be signed by `ca` (that very certificate); on success the envelope is decrypted with the requester's
/// key when given (else `certificate` stays None).
pub fn read_cert_rep(
    der: &[u8],
    ca: &X509,
    requester: Option<&KeyPair>,
) -> Result<CertRep, CertRepError> {
    let attribute = |e: Malformed| CertRepError::Attribute(e.0);
    let p7 = Pkcs7::from_der(der)?;
    // The signer must be the CA itself (checked below), as GetCACert gave it; its validity period and key
    // usage are not the client's to police here.
    let content = crate::pki::signed_content(&p7, None).map_err(CertRepError::Signature)?;
    let none = Stack::new()?;
    let signer = p7
        .signers(&none, Pkcs7Flags::empty())?
        .pop()
        .ok_or(CertRepError::NoSigner)?;
    if signer.to_der().ok() != ca.to_der().ok() {
        return Err(CertRepError::NotFromCa);
    }
    let o = oids();
    let message_type = printable(&p7, o.message_type, "messageType").map_err(attribute)?;
    if message_type != "3" {
        return Err(CertRepError::MessageType(message_type));
    }
    let pki_status = printable(&p7, o.pki_status, "pkiStatus")
        .map_err(attribute)?
        .parse::<u32>()
        .map_err(CertRepError::PkiStatus)?;
    let fail_info = match openssl_ffi::signed_attribute(&p7, o.fail_info) {
        Some(der) => Some(
            der_string(&der)
                .and_then(|s| s.parse().ok())
                .ok_or(CertRepError::FailInfo)?,
        ),
        None => None,
    };
    let certificate = if let (0, Some(requester)) = (pki_status, requester) {
        let env = Pkcs7::from_der(&content)?;
        let inner = env
            .decrypt(&requester.key, &requester.cert, Pkcs7Flags::BINARY)
            .map_err(CertRepError::Decrypt)?;
        let degenerate = Pkcs7::from_der(&inner)?;
        let cert = degenerate
            .signed()
            .and_then(|s| s.certificates())
            .and_then(|c| c.iter().next().map(|c| c.to_owned()))
            .ok_or(CertRepError::NoCertificate)?;
        Some(cert)
    } else {
        None
    };
    Ok(CertRep {
        transaction_id: printable(&p7, o.transaction_id, "transactionID").map_err(attribute)?,
        recipient_nonce: octets(&p7, o.recipient_nonce, "recipientNonce").map_err(attribute)?,
        pki_status,
        fail_info,
        certificate,
    })
}
