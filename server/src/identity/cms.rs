//! `Mdm-Signature` verification: a detached CMS/PKCS#7 SignedData over the request body.

use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

use super::{decode_base64, openssl_reasons, DeviceCert, IdentityError, MAX_ENCODED_LEN};

// OpenSSL error codes (stable ABI values from err.h / pkcs7err.h), used to tell a signature
// that does not match the body apart from one we could not process at all.
const ERR_LIB_PKCS7: i32 = 33;
const PKCS7_R_DIGEST_FAILURE: i32 = 101;
const PKCS7_R_SIGNATURE_FAILURE: i32 = 105;
const PKCS7_R_SIGNER_CERTIFICATE_NOT_FOUND: i32 = 128;
const PKCS7_R_NO_SIGNERS: i32 = 142;

/// Digest algorithms accepted in an `Mdm-Signature` (devices use SHA-1 or SHA-256).
const SIGNER_DIGESTS: [Nid; 5] = [
    Nid::SHA1,
    Nid::SHA224,
    Nid::SHA256,
    Nid::SHA384,
    Nid::SHA512,
];

/// Verify an `Mdm-Signature` header: base64 of a *detached* CMS/PKCS#7 SignedData over the
/// exact body bytes, and return the signer's certificate.
///
/// Accepts what real Apple devices send: BER with indefinite lengths, SHA-1 digests, no signed
/// attributes, the device certificate embedded. ASCII whitespace anywhere in the base64 is
/// ignored (folded or line-wrapped headers). Exactly one SignerInfo is required, and its
/// certificate must be inside the SignedData.
///
/// Only the cryptographic binding of body and signer key is checked. The signer's chain,
/// validity period and key usage are *not* (that is [`super::CaVerifier`]'s job), so the caller
/// must compare the returned fingerprint with the one bound to the enrollment.
pub fn verify_mdm_signature(header_value: &str, body: &[u8]) -> Result<DeviceCert, IdentityError> {
    // Checked before copying anything, whitespace included.
    if header_value.len() > MAX_ENCODED_LEN {
        return Err(malformed(format!(
            "header longer than {MAX_ENCODED_LEN} bytes"
        )));
    }
    let compact: String = header_value
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = decode_base64(&compact).map_err(|e| malformed(e.to_string()))?;

    // d2i accepts BER, including the indefinite-length form devices produce.
    let p7 = Pkcs7::from_der(&der)
        .map_err(|e| malformed(format!("not PKCS#7: {}", openssl_reasons(&e))))?;
    if p7.signed().is_none() {
        return Err(malformed("PKCS#7 content is not SignedData"));
    }
    // Only the digests devices use. Checked before PKCS7_verify, which (OpenSSL 3.0) leaks a BIO for every
    // signature whose digest it cannot set up: unchecked, anyone could leak server memory per request.
    let digests = crate::openssl_ffi::signer_digest_algorithms(&p7)
        .ok_or_else(|| malformed("unreadable SignerInfo digest algorithm"))?;
    if let Some(d) = digests.iter().find(|d| !SIGNER_DIGESTS.contains(d)) {
        return Err(malformed(format!(
            "unsupported digest algorithm {}",
            d.short_name().unwrap_or("(unknown)")
        )));
    }

    // Signers are resolved from the certificates inside the SignedData only; PKCS7_verify
    // below resolves them the same way, so the certificate we return is the one whose key
    // the signature was checked against.
    let no_extra_certs = Stack::<X509>::new().map_err(internal)?;
    let mut signers = p7
        .signers(&no_extra_certs, Pkcs7Flags::empty())
        .map_err(classify_signers_error)?;
    if signers.len() != 1 {
        return Err(malformed(format!(
            "expected exactly one signer, found {}",
            signers.len()
        )));
    }
    let signer = signers.pop().ok_or(IdentityError::NoSignerCertificate)?;

    // An empty store: with NOVERIFY it is never consulted (chain trust is CaVerifier's job).
    let store = X509StoreBuilder::new().map_err(internal)?.build();
    // BINARY: the body is hashed byte-for-byte, no MIME canonicalisation.
    // NO_DUAL_CONTENT: a signature carrying its own content is not a detached signature of
    // this body, so refuse it instead of guessing which content was meant.
    let flags = Pkcs7Flags::NOVERIFY | Pkcs7Flags::BINARY | Pkcs7Flags::NO_DUAL_CONTENT;
    p7.verify(&no_extra_certs, &store, Some(body), None, flags)
        .map_err(classify_verify_error)?;

    DeviceCert::from_x509(signer).map_err(|e| malformed(format!("signer certificate: {e}")))
}

fn malformed(msg: impl Into<String>) -> IdentityError {
    IdentityError::MalformedSignature(msg.into())
}

fn internal(e: ErrorStack) -> IdentityError {
    malformed(format!("OpenSSL error: {}", openssl_reasons(&e)))
}

fn has_pkcs7_reason(e: &ErrorStack, reasons: &[i32]) -> bool {
    e.errors()
        .iter()
        .any(|err| err.library_code() == ERR_LIB_PKCS7 && reasons.contains(&err.reason_code()))
}

fn classify_signers_error(e: ErrorStack) -> IdentityError {
    if has_pkcs7_reason(&e, &[PKCS7_R_SIGNER_CERTIFICATE_NOT_FOUND]) {
        IdentityError::NoSignerCertificate
    } else if has_pkcs7_reason(&e, &[PKCS7_R_NO_SIGNERS]) {
        malformed("expected exactly one signer, found 0")
    } else {
        malformed(format!("cannot read signers: {}", openssl_reasons(&e)))
    }
}

fn classify_verify_error(e: ErrorStack) -> IdentityError {
    if has_pkcs7_reason(&e, &[PKCS7_R_DIGEST_FAILURE, PKCS7_R_SIGNATURE_FAILURE]) {
        IdentityError::SignatureMismatch
    } else {
        malformed(format!("cannot verify: {}", openssl_reasons(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::asn1::{self, alg, cons, int_small, int_unsigned, seq, tlv};
    use super::super::test_support::{peer_file, self_signed, TestCa};
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::sign::Signer;

    const BODY: &[u8] = b"<?xml version=\"1.0\"?><plist><dict><key>Status</key><string>Idle</string></dict></plist>";

    /// What `Pkcs7::sign` produces: DER, SHA-256, with signed attributes.
    fn openssl_sign(cert: &X509, key: &PKey<Private>, body: &[u8]) -> String {
        let certs = Stack::new().unwrap();
        let p7 = Pkcs7::sign(
            cert,
            key,
            &certs,
            body,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
        )
        .unwrap();
        STANDARD.encode(p7.to_der().unwrap())
    }

    fn sign_raw(key: &PKey<Private>, md: MessageDigest, body: &[u8]) -> Vec<u8> {
        let mut s = Signer::new(md, key).unwrap();
        s.update(body).unwrap();
        s.sign_to_vec().unwrap()
    }

    /// One SignerInfo without signed attributes (the form Apple devices send).
    fn signer_info(signer_cert: &X509, sha1: bool, signature: &[u8]) -> Vec<u8> {
        let (digest, sig_alg) = if sha1 {
            (asn1::OID_SHA1, asn1::OID_SHA1_WITH_RSA)
        } else {
            (asn1::OID_SHA256, asn1::OID_SHA256_WITH_RSA)
        };
        signer_info_with(signer_cert, digest, sig_alg, signature)
    }

    /// The same with any digest and signature algorithm OIDs.
    fn signer_info_with(
        signer_cert: &X509,
        digest: &[u8],
        sig_alg: &[u8],
        signature: &[u8],
    ) -> Vec<u8> {
        let issuer = signer_cert.issuer_name().to_der().unwrap();
        let serial = signer_cert.serial_number().to_bn().unwrap().to_vec();
        seq(&[
            int_small(1),
            seq(&[issuer, int_unsigned(&serial)]),
            alg(digest),
            alg(sig_alg),
            tlv(0x04, signature),
        ])
    }

    struct Hand<'a> {
        certs: Vec<&'a X509>,
        signer_infos: Vec<Vec<u8>>,
        sha1: bool,
        indefinite: bool,
        embedded_content: Option<&'a [u8]>,
    }

    /// Assemble a ContentInfo/SignedData by hand, shaped like a device's Mdm-Signature.
    fn hand_built(h: Hand<'_>) -> Vec<u8> {
        let ind = h.indefinite;
        let digest = if h.sha1 {
            asn1::OID_SHA1
        } else {
            asn1::OID_SHA256
        };
        let mut content_info = vec![asn1::OID_DATA.to_vec()];
        if let Some(c) = h.embedded_content {
            content_info.push(cons(0xa0, &[tlv(0x04, c)], ind));
        }
        let mut signed_data = vec![
            int_small(1),
            cons(0x31, &[alg(digest)], false),
            cons(0x30, &content_info, ind),
        ];
        if !h.certs.is_empty() {
            let ders: Vec<Vec<u8>> = h.certs.iter().map(|c| c.to_der().unwrap()).collect();
            signed_data.push(cons(0xa0, &ders, false));
        }
        signed_data.push(cons(0x31, &h.signer_infos, false));
        cons(
            0x30,
            &[
                asn1::OID_SIGNED_DATA.to_vec(),
                cons(0xa0, &[cons(0x30, &signed_data, ind)], ind),
            ],
            ind,
        )
    }

    /// Device-style signature: BER indefinite length, SHA-1, no signed attributes.
    fn device_style(cert: &X509, key: &PKey<Private>, body: &[u8]) -> String {
        let sig = sign_raw(key, MessageDigest::sha1(), body);
        STANDARD.encode(hand_built(Hand {
            certs: vec![cert],
            signer_infos: vec![signer_info(cert, true, &sig)],
            sha1: true,
            indefinite: true,
            embedded_content: None,
        }))
    }

    fn assert_malformed(r: Result<DeviceCert, IdentityError>) {
        assert!(
            matches!(r, Err(IdentityError::MalformedSignature(_))),
            "expected MalformedSignature, got {r:?}"
        );
    }

    #[test]
    fn openssl_signature_verifies_and_returns_signer() {
        let (cert, key) = self_signed("device");
        let hdr = openssl_sign(&cert, &key, BODY);
        let dc = verify_mdm_signature(&hdr, BODY).unwrap();
        assert_eq!(
            dc.fingerprint(),
            DeviceCert::from_x509(cert).unwrap().fingerprint()
        );
    }

    #[test]
    fn one_changed_body_byte_is_a_mismatch() {
        let (cert, key) = self_signed("device");
        for hdr in [
            openssl_sign(&cert, &key, BODY),
            device_style(&cert, &key, BODY),
        ] {
            for i in [0, BODY.len() / 2, BODY.len() - 1] {
                let mut body = BODY.to_vec();
                body[i] ^= 0x01;
                let r = verify_mdm_signature(&hdr, &body);
                assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
            }
            let r = verify_mdm_signature(&hdr, &BODY[..BODY.len() - 1]);
            assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
            let r = verify_mdm_signature(&hdr, b"");
            assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
        }
    }

    #[test]
    fn other_signer_verifies_with_its_own_fingerprint() {
        let (cert_a, key_a) = self_signed("device-a");
        let (cert_b, key_b) = self_signed("device-b");
        let a = verify_mdm_signature(&openssl_sign(&cert_a, &key_a, BODY), BODY).unwrap();
        let b = verify_mdm_signature(&openssl_sign(&cert_b, &key_b, BODY), BODY).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            b.fingerprint(),
            DeviceCert::from_x509(cert_b).unwrap().fingerprint()
        );
    }

    #[test]
    fn claiming_someone_elses_certificate_fails() {
        // Attacker B signs with its own key but names A's (public) certificate as signer.
        let (cert_a, _key_a) = self_signed("victim");
        let (_cert_b, key_b) = self_signed("attacker");
        let sig = sign_raw(&key_b, MessageDigest::sha1(), BODY);
        let der = hand_built(Hand {
            certs: vec![&cert_a],
            signer_infos: vec![signer_info(&cert_a, true, &sig)],
            sha1: true,
            indefinite: true,
            embedded_content: None,
        });
        let r = verify_mdm_signature(&STANDARD.encode(der), BODY);
        assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
    }

    #[test]
    fn device_style_sha1_ber_indefinite_verifies() {
        let (cert, key) = self_signed("device");
        let hdr = device_style(&cert, &key, BODY);
        // Sanity-check the fixture really is BER indefinite-length.
        let der = STANDARD.decode(&hdr).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x80]);
        let dc = verify_mdm_signature(&hdr, BODY).unwrap();
        assert_eq!(
            dc.fingerprint(),
            DeviceCert::from_x509(cert).unwrap().fingerprint()
        );
    }

    #[test]
    fn hand_built_sha256_der_verifies() {
        let (cert, key) = self_signed("device");
        let sig = sign_raw(&key, MessageDigest::sha256(), BODY);
        let der = hand_built(Hand {
            certs: vec![&cert],
            signer_infos: vec![signer_info(&cert, false, &sig)],
            sha1: false,
            indefinite: false,
            embedded_content: None,
        });
        let dc = verify_mdm_signature(&STANDARD.encode(der), BODY).unwrap();
        assert_eq!(
            dc.fingerprint(),
            DeviceCert::from_x509(cert).unwrap().fingerprint()
        );
    }

    /// Refused before PKCS7_verify, which leaks memory on digests it cannot set up (found by fuzzing).
    #[test]
    fn digests_other_than_sha_are_refused_before_verification() {
        let (cert, key) = self_signed("device");
        let sig = sign_raw(&key, MessageDigest::sha256(), BODY);
        let md5: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05];
        let unknown: &[u8] = &[0x06, 0x03, 0x2a, 0x03, 0x04];
        for digest in [md5, unknown] {
            let si = signer_info_with(&cert, digest, asn1::OID_SHA256_WITH_RSA, &sig);
            let der = hand_built(Hand {
                certs: vec![&cert],
                signer_infos: vec![si],
                sha1: false,
                indefinite: false,
                embedded_content: None,
            });
            let err = verify_mdm_signature(&STANDARD.encode(der), BODY).unwrap_err();
            assert!(
                err.to_string().contains("unsupported digest algorithm"),
                "{err}"
            );
        }
    }

    /// The SignedData's own digestAlgorithms set is what PKCS7_verify sets digests up from: an unknown one
    /// there leaked too, whatever the SignerInfo says (the input the fuzz smoke found).
    #[test]
    fn an_unknown_digest_in_the_signed_data_set_is_refused() {
        let (cert, key) = self_signed("device");
        let sig = sign_raw(&key, MessageDigest::sha256(), BODY);
        let der = hand_built(Hand {
            certs: vec![&cert],
            signer_infos: vec![signer_info(&cert, false, &sig)],
            sha1: false,
            indefinite: false,
            embedded_content: None,
        });
        // The first SHA-256 AlgorithmIdentifier is the SignedData's digestAlgorithms entry.
        let sha256 = alg(asn1::OID_SHA256);
        let at = der.windows(sha256.len()).position(|w| w == sha256).unwrap();
        let mut bad = der.clone();
        // Same length, other arc: 2.16.840.1.101.3.4.2.1 -> 2.16.840.1.101.3.4.2.99.
        bad[at + sha256.len() - 3] = 99;
        assert_ne!(bad, der);
        let err = verify_mdm_signature(&STANDARD.encode(&bad), BODY).unwrap_err();
        assert!(
            err.to_string().contains("unsupported digest algorithm"),
            "{err}"
        );
        verify_mdm_signature(&STANDARD.encode(&der), BODY).expect("the unaltered one verifies");
    }

    #[test]
    fn signer_picked_from_several_embedded_certificates() {
        let ca = TestCa::new("CA");
        let (leaf, key) = ca.issue("device");
        let (other, _) = self_signed("other");
        let sig = sign_raw(&key, MessageDigest::sha1(), BODY);
        let der = hand_built(Hand {
            certs: vec![&ca.cert, &other, &leaf],
            signer_infos: vec![signer_info(&leaf, true, &sig)],
            sha1: true,
            indefinite: true,
            embedded_content: None,
        });
        let dc = verify_mdm_signature(&STANDARD.encode(der), BODY).unwrap();
        assert_eq!(
            dc.fingerprint(),
            DeviceCert::from_x509(leaf).unwrap().fingerprint()
        );
    }

    #[test]
    fn zero_or_two_signers_are_rejected() {
        let (cert, key) = self_signed("device");
        let sig = sign_raw(&key, MessageDigest::sha1(), BODY);
        let si = signer_info(&cert, true, &sig);
        for infos in [vec![], vec![si.clone(), si]] {
            let der = hand_built(Hand {
                certs: vec![&cert],
                signer_infos: infos,
                sha1: true,
                indefinite: true,
                embedded_content: None,
            });
            assert_malformed(verify_mdm_signature(&STANDARD.encode(der), BODY));
        }
    }

    #[test]
    fn missing_signer_certificate() {
        let (cert, key) = self_signed("device");
        let (unrelated, _) = self_signed("unrelated");
        let sig = sign_raw(&key, MessageDigest::sha1(), BODY);
        for certs in [vec![], vec![&unrelated]] {
            let der = hand_built(Hand {
                certs,
                signer_infos: vec![signer_info(&cert, true, &sig)],
                sha1: true,
                indefinite: true,
                embedded_content: None,
            });
            let r = verify_mdm_signature(&STANDARD.encode(der), BODY);
            assert!(
                matches!(r, Err(IdentityError::NoSignerCertificate)),
                "{r:?}"
            );
        }
        // Pkcs7::sign with NOCERTS leaves the certificate out as well.
        let p7 = Pkcs7::sign(
            &cert,
            &key,
            &Stack::new().unwrap(),
            BODY,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | Pkcs7Flags::NOCERTS,
        )
        .unwrap();
        let r = verify_mdm_signature(&STANDARD.encode(p7.to_der().unwrap()), BODY);
        assert!(
            matches!(r, Err(IdentityError::NoSignerCertificate)),
            "{r:?}"
        );
    }

    #[test]
    fn attached_content_is_rejected() {
        // Valid signature over embedded content: it is not a detached signature of the body.
        let (cert, key) = self_signed("device");
        let sig = sign_raw(&key, MessageDigest::sha1(), BODY);
        let der = hand_built(Hand {
            certs: vec![&cert],
            signer_infos: vec![signer_info(&cert, true, &sig)],
            sha1: true,
            indefinite: true,
            embedded_content: Some(BODY),
        });
        assert_malformed(verify_mdm_signature(&STANDARD.encode(&der), BODY));
        assert_malformed(verify_mdm_signature(&STANDARD.encode(&der), b"other"));
    }

    #[test]
    fn non_signed_data_is_rejected() {
        // A PKCS#7 "data" ContentInfo.
        let der = seq(&[
            asn1::OID_DATA.to_vec(),
            cons(0xa0, &[tlv(0x04, b"x")], false),
        ]);
        assert_malformed(verify_mdm_signature(&STANDARD.encode(der), BODY));
    }

    #[test]
    fn garbage_is_malformed() {
        for hdr in [
            "",
            "   \n\t ",
            "!!!not base64!!!",
            "%%%%",
            "YQ",               // "a": not PKCS#7
            "AAAA",             // zero bytes
            "aGVsbG8gd29ybGQ=", // "hello world"
            "MIA=",             // truncated indefinite SEQUENCE
            "MIAGCSqGSIb3DQEHAqCAMIACAQExCzAJBgUrDgMCGgUAMIAGCSqGSIb3DQEHAQAA", // cut short
        ] {
            assert_malformed(verify_mdm_signature(hdr, BODY));
        }
        let huge = "A".repeat(10 * 1024 * 1024);
        assert_malformed(verify_mdm_signature(&huge, BODY));
    }

    #[test]
    fn whitespace_in_base64_is_tolerated() {
        let (cert, key) = self_signed("device");
        let hdr = device_style(&cert, &key, BODY);
        let wrapped: String = hdr
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n ");
        let padded = format!("  {wrapped}\n");
        assert!(verify_mdm_signature(&padded, BODY).is_ok());
        let unpadded = hdr.trim_end_matches('=');
        assert!(verify_mdm_signature(unpadded, BODY).is_ok());
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let (cert, key) = self_signed("device");
        let der = STANDARD.decode(device_style(&cert, &key, BODY)).unwrap();
        for len in 0..der.len() {
            let r = verify_mdm_signature(&STANDARD.encode(&der[..len]), BODY);
            assert!(r.is_err(), "prefix of {len} bytes accepted");
        }
        for i in 0..der.len() {
            let mut d = der.clone();
            d[i] ^= 0x80;
            // Flips inside the embedded certificate's own signature can still verify (its chain
            // is not checked here), so only absence of panics is asserted.
            let _ = verify_mdm_signature(&STANDARD.encode(&d), BODY);
        }
    }

    // --- Real device signatures (nanomdm test vectors) ---

    fn real(name: &str) -> Option<String> {
        peer_file(&format!("nanomdm/cms/{name}"))
            .map(|b| String::from_utf8(b).expect("header file is ASCII"))
    }

    #[test]
    fn real_device_signature_verifies() {
        let Some(hdr) = real("mdm-signature-2.header.b64") else {
            return;
        };
        let Some(body) = peer_file("nanomdm/cms/mdm-signature-2.body.plist") else {
            return;
        };
        // The file ends with a newline; the raw content must verify as is.
        assert!(hdr.ends_with('\n'));
        let dc = verify_mdm_signature(&hdr, &body).unwrap();

        let p7s = peer_file("nanomdm/cms/mdm-signature-2.p7s.der").unwrap();
        assert_eq!(&p7s[..2], &[0x30, 0x80], "expected BER indefinite length");
        assert_eq!(STANDARD.decode(hdr.trim()).unwrap(), p7s);

        // Device certificate from micromdm/scep: empty subject, valid until 2031-05-26 05:09:23Z.
        assert_eq!(dc.subject().unwrap(), "");
        assert_eq!(dc.not_after_unix().unwrap(), 1_937_538_563);
        assert_eq!(
            dc.x509().unwrap().issuer_name().entries().count(),
            4,
            "C=US, O=scep, OU=SCEP CA, CN=ca"
        );
        assert_eq!(
            dc.fingerprint(),
            hex::encode(openssl::sha::sha256(dc.der()))
        );
        // The fingerprint is stable and equals a fresh DER parse of the embedded certificate.
        assert_eq!(
            DeviceCert::from_der(dc.der()).unwrap().fingerprint(),
            dc.fingerprint()
        );

        // Same signature, line-wrapped like a folded header.
        let wrapped: String = hdr
            .trim()
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        assert!(verify_mdm_signature(&wrapped, &body).is_ok());
    }

    #[test]
    fn real_device_signature_rejects_modified_body() {
        let Some(hdr) = real("mdm-signature-2.header.b64") else {
            return;
        };
        let Some(body) = peer_file("nanomdm/cms/mdm-signature-2.body.plist") else {
            return;
        };
        for i in [0, body.len() / 2, body.len() - 1] {
            let mut b = body.clone();
            b[i] ^= 0x20;
            let r = verify_mdm_signature(&hdr, &b);
            assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
        }
        // The body includes its final newline; dropping it must fail too.
        assert_eq!(body.last(), Some(&b'\n'));
        let r = verify_mdm_signature(&hdr, &body[..body.len() - 1]);
        assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
    }

    #[test]
    fn real_signature_without_known_body() {
        let Some(hdr) = real("mdm-signature-1.header.b64") else {
            return;
        };
        for body in [&b""[..], b"x", BODY] {
            let r = verify_mdm_signature(&hdr, body);
            assert!(matches!(r, Err(IdentityError::SignatureMismatch)), "{r:?}");
        }
        // Truncations of a real signature: never Ok, never a panic.
        let der = STANDARD.decode(hdr.trim()).unwrap();
        for len in 0..der.len() {
            assert!(verify_mdm_signature(&STANDARD.encode(&der[..len]), BODY).is_err());
        }
    }
}
