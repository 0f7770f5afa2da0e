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
    let csr = msg.decrypt_csr(&ca).unwrap();
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
    let recip = super::ffi::signed_attribute(&p7, o.recipient_nonce).unwrap();
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
