//! Helpers shared by this module's unit tests: throwaway keys, certificates and CAs, a
//! hand-rolled BER/DER writer for building CMS structures OpenSSL's API cannot produce
//! (SHA-1, indefinite length, several signers), and the location of the peer test data.

use std::path::PathBuf;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn random_serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn name(fields: &[(&str, &str)]) -> openssl::x509::X509Name {
    let mut b = X509NameBuilder::new().unwrap();
    for (k, v) in fields {
        b.append_entry_by_text(k, v).unwrap();
    }
    b.build()
}

fn build(
    subject: &[(&str, &str)],
    issuer: Option<(&X509, &PKey<Private>)>,
    key: &PKey<Private>,
    not_before: i64,
    not_after: i64,
    is_ca: bool,
) -> X509 {
    let subject = name(subject);
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&random_serial()).unwrap();
    b.set_subject_name(&subject).unwrap();
    match issuer {
        Some((ic, _)) => b.set_issuer_name(ic.subject_name()).unwrap(),
        None => b.set_issuer_name(&subject).unwrap(),
    }
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    if is_ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .unwrap(),
        )
        .unwrap();
    } else {
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    let signing_key = issuer.map_or(key, |(_, k)| k);
    b.sign(signing_key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A self-signed end-entity certificate (`CN=cn`, valid for a day) and its key.
pub fn self_signed(cn: &str) -> (X509, PKey<Private>) {
    let key = rsa_key();
    let t = now();
    let cert = build(&[("CN", cn)], None, &key, t - 60, t + 86_400, false);
    (cert, key)
}

/// A self-signed certificate with fixed validity (unix seconds).
pub fn cert_with_validity(not_before: i64, not_after: i64) -> X509 {
    let key = rsa_key();
    build(&[("CN", "fixed")], None, &key, not_before, not_after, false)
}

pub struct TestCa {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl TestCa {
    pub fn new(cn: &str) -> Self {
        let key = rsa_key();
        let t = now();
        let cert = build(&[("CN", cn)], None, &key, t - 60, t + 86_400, true);
        Self { cert, key }
    }

    /// A leaf `CN=cn`, valid for a day, signed by this CA.
    pub fn issue(&self, cn: &str) -> (X509, PKey<Private>) {
        let t = now();
        self.issue_custom(&[("CN", cn)], t - 60, t + 86_400)
    }

    pub fn issue_custom(
        &self,
        subject: &[(&str, &str)],
        not_before: i64,
        not_after: i64,
    ) -> (X509, PKey<Private>) {
        let key = rsa_key();
        let cert = build(
            subject,
            Some((&self.cert, &self.key)),
            &key,
            not_before,
            not_after,
            false,
        );
        (cert, key)
    }

    pub fn pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap()
    }
}

/// `<ancestor>/shared/testdata/peers`, searching upwards from the crate's manifest directory
/// (the project keeps peer test data next to, not inside, the repository).
pub fn peers_dir() -> Option<PathBuf> {
    let start = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    start
        .ancestors()
        .map(|dir| dir.join("shared").join("testdata").join("peers"))
        .find(|p| p.is_dir())
}

/// Read a file below the peers directory, or print the skip notice and return `None`.
pub fn peer_file(rel: &str) -> Option<Vec<u8>> {
    let Some(dir) = peers_dir() else {
        println!("skipping: ../shared/testdata/peers not found");
        return None;
    };
    let path = dir.join(rel);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => panic!(
            "peers directory exists but {} is unreadable: {e}",
            path.display()
        ),
    }
}

/// Minimal ASN.1 writer for tests: definite (DER) or indefinite (BER) length.
pub mod asn1 {
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        push_len(&mut out, content.len());
        out.extend_from_slice(content);
        out
    }

    /// Constructed value; `indefinite` gives the BER `0x80 ... 00 00` form Apple devices use.
    pub fn cons(tag: u8, parts: &[Vec<u8>], indefinite: bool) -> Vec<u8> {
        let content: Vec<u8> = parts.concat();
        if indefinite {
            let mut out = vec![tag, 0x80];
            out.extend_from_slice(&content);
            out.extend_from_slice(&[0, 0]);
            out
        } else {
            tlv(tag, &content)
        }
    }

    pub fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        cons(0x30, parts, false)
    }

    pub fn int_small(v: u8) -> Vec<u8> {
        tlv(0x02, &[v])
    }

    /// INTEGER from unsigned big-endian magnitude.
    pub fn int_unsigned(mag: &[u8]) -> Vec<u8> {
        let mut c: Vec<u8> = mag.iter().copied().skip_while(|b| *b == 0).collect();
        if c.first().is_none_or(|b| b & 0x80 != 0) {
            c.insert(0, 0);
        }
        tlv(0x02, &c)
    }

    pub const NULL: [u8; 2] = [0x05, 0x00];

    // DER-encoded OBJECT IDENTIFIERs (tag + length + value).
    pub const OID_SIGNED_DATA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
    ];
    pub const OID_DATA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
    ];
    pub const OID_SHA1: &[u8] = &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a];
    pub const OID_SHA256: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    pub const OID_SHA1_WITH_RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05,
    ];
    pub const OID_SHA256_WITH_RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
    ];

    pub fn alg(oid: &[u8]) -> Vec<u8> {
        seq(&[oid.to_vec(), NULL.to_vec()])
    }
}
