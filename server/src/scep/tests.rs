//! SCEP messages against real captures (an Apple device's PKCSReq, smallstep's CertRep) and round trips
//! through our own client side.

use super::message::{self, build_request, read_cert_rep, FailInfo, MessageType, PkiMessage};
use crate::identity::test_support::peer_file;
use crate::pki::{self, KeyPair, Usage};
use openssl::pkey::PKey;
use openssl::symm::Cipher;
use openssl::x509::X509;

fn peer_ca(dir: &str, key_passphrase: Option<&str>) -> Option<KeyPair> {
    let cert = peer_file(&format!("{dir}/ca.pem"))?;
    let key = peer_file(&format!("{dir}/ca.key"))?;
    let cert = X509::from_pem(&cert).unwrap();
    let key = match key_passphrase {
        Some(p) => PKey::private_key_from_pem_passphrase(&key, p.as_bytes()).unwrap(),
        None => PKey::private_key_from_pem(&key).unwrap(),
    };
    Some(KeyPair { cert, key })
}

fn ca() -> KeyPair {
    pki::generate(
        &pki::name("Test SCEP CA", "t").unwrap(),
        Usage::Ca,
        30,
        None,
    )
    .unwrap()
}

/// A device's throwaway self-signed signer and the CSR it wants signed.
fn requester(challenge: Option<&str>) -> (KeyPair, Vec<u8>) {
    let signer = pki::generate(
        &pki::name("SCEP SIGNER", "dev").unwrap(),
        Usage::ClientAuth,
        1,
        None,
    )
    .unwrap();
    let csr = super::csr_with_challenge(
        &signer.key,
        &pki::name("device-1", "dev").unwrap(),
        challenge,
    )
    .unwrap();
    (signer, csr.to_der().unwrap())
}

#[test]
fn an_apple_pkcsreq_decodes_verifies_and_yields_its_csr() {
    let Some(der) = peer_file("micromdm-scep/PKCSReq.der") else {
        return;
    };
    let Some(ca) = peer_ca("micromdm-scep/testca", Some("")) else {
        return;
    };
    let msg = PkiMessage::decode(&der).unwrap();
    assert_eq!(msg.message_type, MessageType::PkcsReq);
    assert!(msg.signature_valid, "the device's signature verifies");
    assert_eq!(
        msg.transaction_id,
        "A13090761A30F66664F85D37433D2065E1112BA1"
    );
    assert_eq!(msg.sender_nonce.len(), 8);
    // This (old) capture's key is RSA-1024, which our CA no longer certifies (our profiles ask for 2048).
    let (info, why) = msg.decrypt_csr(&ca).err().unwrap();
    assert_eq!(
        (info, why.as_str()),
        (
            FailInfo::BadAlg,
            "CSR key is RSA-1024: at least RSA-2048 is required"
        )
    );
    let csr = msg.decrypt_csr_any_key(&ca).unwrap();
    // Older devices envelope with 3DES; the reply must use the same.
    assert_eq!(
        csr.cipher.nid(),
        Cipher::des_ede3_cbc().nid(),
        "3DES envelope"
    );
    // This device's profile had no challenge; our CA would refuse it (see the service tests).
    assert_eq!(csr.challenge, None);
    assert!(csr.req.verify(&csr.req.public_key().unwrap()).unwrap());

    // A CertRep to it is readable by a client holding the requester's key; we do not have the device's
    // key, so check what we can: it is a SignedData by the CA carrying the right attributes.
    let issued = pki::build_certificate(
        csr.req.subject_name(),
        &csr.req.public_key().unwrap(),
        Usage::ClientAuth,
        0,
        86_400,
        &pki::random_serial().unwrap(),
        Some(&ca),
        None,
    )
    .unwrap();
    let rep = message::cert_rep(&ca, &msg, Ok((&issued, csr.cipher))).unwrap();
    let p7 = openssl::pkcs7::Pkcs7::from_der(&rep).unwrap();
    let o = message::oids();
    let recip = crate::openssl_ffi::signed_attribute(&p7, o.recipient_nonce).unwrap();
    assert_eq!(&recip[2..], msg.sender_nonce.as_slice());
}

#[test]
fn a_tampered_apple_pkcsreq_fails_its_signature_check() {
    let Some(mut der) = peer_file("micromdm-scep/PKCSReq.der") else {
        return;
    };
    // Flip one byte inside the enveloped content (well before the signer info at the end).
    let i = der.len() / 3;
    der[i] ^= 0x01;
    // Either it no longer parses at all, or its signature fails: both refuse.
    if let Ok(m) = PkiMessage::decode(&der) {
        assert!(!m.signature_valid);
    }
}

#[test]
fn smallsteps_certrep_answers_its_pkcsreq() {
    let Some(rep) = peer_file("smallstep-scep/CertRep.der") else {
        return;
    };
    let ca = X509::from_pem(&peer_file("smallstep-scep/testca/ca.pem").unwrap()).unwrap();
    let req = PkiMessage::decode(&peer_file("smallstep-scep/PKCSReq.der").unwrap()).unwrap();
    assert_eq!(req.message_type, MessageType::PkcsReq);
    assert!(req.signature_valid);
    // The reply is enveloped to the requester's (a device's) key, which the capture does not include: check
    // the signed envelope around it.
    let r = read_cert_rep(&rep, &ca, None).unwrap();
    assert_eq!(r.pki_status, 0);
    assert_eq!(req.transaction_id, r.transaction_id);
    assert_eq!(req.sender_nonce, r.recipient_nonce);
}

#[test]
fn round_trip_with_3des_and_aes() {
    let ca = ca();
    for cipher in [
        Cipher::des_ede3_cbc(),
        Cipher::aes_128_cbc(),
        Cipher::aes_256_cbc(),
    ] {
        let (signer, csr) = requester(Some("s3cret"));
        let nonce = pki::random_bytes(16);
        let der = build_request(
            MessageType::PkcsReq,
            &signer,
            &ca.cert,
            &csr,
            cipher,
            "tx-1",
            &nonce,
        )
        .unwrap();
        let msg = PkiMessage::decode(&der).unwrap();
        assert!(msg.signature_valid);
        let got = msg.decrypt_csr(&ca).unwrap();
        assert_eq!(got.challenge.as_deref(), Some("s3cret"));
        assert_eq!(got.cipher.nid(), cipher.nid());
        let issued = pki::generate(
            &pki::name("device-1", "dev").unwrap(),
            Usage::ClientAuth,
            1,
            Some(&ca),
        )
        .unwrap()
        .cert;
        let rep = message::cert_rep(&ca, &msg, Ok((&issued, got.cipher))).unwrap();
        let r = read_cert_rep(&rep, &ca.cert, Some(&signer)).unwrap();
        assert_eq!(r.pki_status, 0);
        assert_eq!(r.transaction_id, "tx-1");
        assert_eq!(r.recipient_nonce, nonce);
        assert_eq!(
            r.certificate.unwrap().to_der().unwrap(),
            issued.to_der().unwrap()
        );
    }
}

#[test]
fn failure_certrep_carries_fail_info_and_no_certificate() {
    let ca = ca();
    let (signer, csr) = requester(None);
    let der = build_request(
        MessageType::PkcsReq,
        &signer,
        &ca.cert,
        &csr,
        Cipher::aes_128_cbc(),
        "tx-2",
        b"0123456789abcdef",
    )
    .unwrap();
    let msg = PkiMessage::decode(&der).unwrap();
    assert_eq!(msg.decrypt_csr(&ca).unwrap().challenge, None);
    let rep = message::cert_rep(&ca, &msg, Err(FailInfo::BadRequest)).unwrap();
    let r = read_cert_rep(&rep, &ca.cert, Some(&signer)).unwrap();
    assert_eq!((r.pki_status, r.fail_info), (2, Some(2)));
    assert!(r.certificate.is_none());
}

#[test]
fn an_envelope_for_another_ca_does_not_decrypt() {
    let (ours, theirs) = (ca(), ca());
    let (signer, csr) = requester(Some("x"));
    let der = build_request(
        MessageType::PkcsReq,
        &signer,
        &theirs.cert,
        &csr,
        Cipher::aes_256_cbc(),
        "tx-3",
        b"0123456789abcdef",
    )
    .unwrap();
    let msg = PkiMessage::decode(&der).unwrap();
    let err = msg.decrypt_csr(&ours).err().unwrap();
    assert_eq!(err.0, FailInfo::BadMessageCheck);
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for input in [
        &b""[..],
        b"\x30\x80",
        b"not der at all",
        &[0x30, 0x03, 0x02, 0x01, 0x01],
    ] {
        assert!(PkiMessage::decode(input).is_err());
    }
    // A SignedData without SCEP attributes: an Mdm-Signature-like message.
    let ca = ca();
    let plain = openssl::pkcs7::Pkcs7::sign(
        &ca.cert,
        &ca.key,
        &openssl::stack::Stack::new().unwrap(),
        b"hello",
        openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let e = PkiMessage::decode(&plain).unwrap_err();
    assert!(e.0.contains("messageType"), "{e}");
}

/// Keys a CSR may carry, by name: the weak ones this CA refuses and the ones it certifies.
fn csr_key(kind: &str) -> PKey<openssl::pkey::Private> {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    let ec = |nid: Nid| {
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(nid).unwrap()).unwrap())
            .unwrap()
    };
    match kind {
        "RSA-512" => PKey::from_rsa(openssl::rsa::Rsa::generate(512).unwrap()).unwrap(),
        "RSA-1024" => PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap(),
        "RSA-2047" => PKey::from_rsa(openssl::rsa::Rsa::generate(2047).unwrap()).unwrap(),
        "RSA-2048" => PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap(),
        "DSA-2048" => PKey::from_dsa(openssl::dsa::Dsa::generate(2048).unwrap()).unwrap(),
        "P-192" => ec(Nid::X9_62_PRIME192V1),
        "P-224" => ec(Nid::SECP224R1),
        "secp256k1" => ec(Nid::SECP256K1),
        "P-256" => ec(Nid::X9_62_PRIME256V1),
        "P-384" => ec(Nid::SECP384R1),
        other => panic!("no key {other}"),
    }
}

const WEAK_KEYS: &[&str] = &[
    "RSA-512",
    "RSA-1024",
    "RSA-2047",
    "DSA-2048",
    "P-192",
    "P-224",
    "secp256k1",
];
const STRONG_KEYS: &[&str] = &["RSA-2048", "P-256", "P-384"];

/// A PKCSReq whose CSR is for `key`, signed by a throwaway RSA-2048 signer (as devices do).
fn request_for(
    ca: &KeyPair,
    key: &PKey<openssl::pkey::Private>,
    challenge: &str,
) -> (KeyPair, Vec<u8>) {
    let signer = pki::generate(
        &pki::name("SCEP SIGNER", "dev").unwrap(),
        Usage::ClientAuth,
        1,
        None,
    )
    .unwrap();
    let csr =
        super::csr_with_challenge(key, &pki::name("device-1", "dev").unwrap(), Some(challenge))
            .unwrap()
            .to_der()
            .unwrap();
    let der = build_request(
        MessageType::PkcsReq,
        &signer,
        &ca.cert,
        &csr,
        Cipher::aes_256_cbc(),
        "tx-key",
        &pki::random_bytes(16),
    )
    .unwrap();
    (signer, der)
}

/// A CSR for a key that can be forged (short RSA, DSA, small or non-NIST curves) is refused with badAlg
/// and says why; RSA-2048 and P-256/P-384 pass.
#[test]
fn weak_csr_keys_are_refused_with_bad_alg() {
    let ca = ca();
    for kind in WEAK_KEYS {
        let (_, der) = request_for(&ca, &csr_key(kind), "c");
        let msg = PkiMessage::decode(&der).unwrap();
        let Err((info, why)) = msg.decrypt_csr(&ca) else {
            panic!("{kind} accepted");
        };
        assert_eq!(info, FailInfo::BadAlg, "{kind}: {why}");
        assert!(why.starts_with("CSR key is "), "{kind}: {why}");
    }
    for kind in STRONG_KEYS {
        let (_, der) = request_for(&ca, &csr_key(kind), "c");
        let msg = PkiMessage::decode(&der).unwrap();
        assert!(msg.decrypt_csr(&ca).is_ok(), "{kind} refused");
    }
}

/// Through the service, on each database: a weak key gets a failure CertRep (failInfo badAlg, no
/// certificate) and leaves the challenge unused; RSA-2048 and P-256 are still issued.
#[tokio::test]
async fn the_ca_issues_only_for_strong_keys() {
    use crate::storage::secrets::SecretScope;
    for tdb in crate::storage::testing::test_databases().await {
        let storage = tdb.storage().await.unwrap();
        let ca = ca();
        let service = super::ScepService::new(
            ca.clone(),
            storage,
            crate::clock::ManualClock::new(1_700_000_000_000),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
            crate::config::ScepConfig::default(),
        )
        .unwrap();
        for kind in WEAK_KEYS.iter().chain(STRONG_KEYS) {
            let challenge = service.new_challenge(SecretScope::default()).await.unwrap();
            let key = csr_key(kind);
            let (signer, der) = request_for(&ca, &key, &challenge);
            let rep = service.pki_operation(&der).await.unwrap();
            let r = read_cert_rep(&rep, &ca.cert, Some(&signer)).unwrap();
            if STRONG_KEYS.contains(kind) {
                assert_eq!(r.pki_status, 0, "{}: {kind} not issued", tdb.label);
                let cert = r.certificate.unwrap();
                assert!(cert.public_key().unwrap().public_eq(&key), "{kind}");
            } else {
                assert_eq!(
                    (r.pki_status, r.fail_info),
                    (2, Some(FailInfo::BadAlg as u32)),
                    "{}: {kind}",
                    tdb.label
                );
                assert!(r.certificate.is_none());
                // The refusal used nothing up: the same challenge still issues for a strong key.
                let (signer, der) = request_for(&ca, &csr_key("P-256"), &challenge);
                let rep = service.pki_operation(&der).await.unwrap();
                let r = read_cert_rep(&rep, &ca.cert, Some(&signer)).unwrap();
                assert_eq!(r.pki_status, 0, "{}: after {kind}", tdb.label);
            }
        }
        tdb.cleanup().await;
    }
}
