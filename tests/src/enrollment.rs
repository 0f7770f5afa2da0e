//! The device side of enrollment: download and open the signed profile, get an identity over SCEP, present
//! it over mutual TLS. What an iPhone does between tapping the enrollment link and its first Authenticate.

use crate::device::Identity;
use mdm_server::pki::{self, KeyPair, Usage};
use mdm_server::scep::{self, CertRep, MessageType};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509NameBuilder, X509};
use plist::{Dictionary, Value};

/// The parts of an enrollment profile a device acts on.
#[derive(Debug, Clone)]
pub struct Profile {
    pub top: Dictionary,
    pub scep: Dictionary,
    pub mdm: Dictionary,
}

impl Profile {
    pub fn scep_content(&self) -> &Dictionary {
        self.scep["PayloadContent"]
            .as_dictionary()
            .expect("SCEP PayloadContent")
    }

    pub fn challenge(&self) -> String {
        self.scep_content()["Challenge"]
            .as_string()
            .expect("Challenge")
            .to_string()
    }

    pub fn scep_url(&self) -> String {
        self.scep_content()["URL"]
            .as_string()
            .expect("URL")
            .to_string()
    }
}

/// Verify a signed profile against `trust` (the CA the signer chains to) and decode it.
pub fn open_profile(signed: &[u8], trust: &X509) -> Result<Profile, String> {
    let p7 = Pkcs7::from_der(signed).map_err(|e| format!("not CMS: {e}"))?;
    let content =
        pki::signed_content(&p7, Some(trust)).map_err(|e| format!("profile signature: {e}"))?;
    let top = Value::from_reader(std::io::Cursor::new(&content))
        .map_err(|e| e.to_string())?
        .into_dictionary()
        .ok_or("profile is not a dictionary")?;
    let payloads = top["PayloadContent"]
        .as_array()
        .ok_or("no PayloadContent")?;
    let find = |t: &str| {
        payloads
            .iter()
            .filter_map(Value::as_dictionary)
            .find(|p| p.get("PayloadType").and_then(Value::as_string) == Some(t))
            .cloned()
            .ok_or(format!("no {t} payload"))
    };
    Ok(Profile {
        scep: find("com.apple.security.scep")?,
        mdm: find("com.apple.mdm")?,
        top,
    })
}

/// How the SCEP client sends PKIOperation.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Post,
    Get,
}

pub struct ScepClient {
    pub url: String,
    pub http: reqwest::Client,
}

impl ScepClient {
    pub async fn ca_caps(&self) -> String {
        let r = self
            .http
            .get(format!("{}?operation=GetCACaps", self.url))
            .send()
            .await
            .expect("GetCACaps");
        assert_eq!(r.status(), 200);
        r.text().await.expect("caps")
    }

    pub async fn ca_cert(&self) -> X509 {
        let r = self
            .http
            .get(format!("{}?operation=GetCACert", self.url))
            .send()
            .await
            .expect("GetCACert");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/x-x509-ca-cert");
        X509::from_der(&r.bytes().await.expect("body")).expect("CA certificate")
    }

    /// Send a PKIOperation; returns the HTTP status and body.
    pub async fn pki_operation(&self, der: &[u8], how: Transport) -> (u16, Vec<u8>) {
        let r = match how {
            Transport::Post => self
                .http
                .post(format!("{}?operation=PKIOperation", self.url))
                .header("content-type", "application/x-pki-message")
                .body(der.to_vec()),
            Transport::Get => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(der);
                let q: String = url_escape(&b64);
                self.http
                    .get(format!("{}?operation=PKIOperation&message={q}", self.url))
            }
        }
        .send()
        .await
        .expect("PKIOperation");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    }

    /// PKCSReq with a fresh key: the new identity on success, the CertRep either way.
    pub async fn enroll(
        &self,
        ca: &X509,
        challenge: Option<&str>,
        cipher: Cipher,
        how: Transport,
    ) -> (CertRep, Option<Identity>) {
        let signer = throwaway_signer();
        let csr = scep::csr_with_challenge(
            &signer.key,
            &pki::name("MDM Identity sim", "sim").expect("name"),
            challenge,
        )
        .expect("csr");
        let der = scep::build_request(
            MessageType::PkcsReq,
            &signer,
            ca,
            &csr.to_der().expect("csr der"),
            cipher,
            &hex::encode(crate::device::random_bytes(16)),
            &crate::device::random_bytes(16),
        )
        .expect("PKCSReq");
        self.send_and_read(ca, &der, &signer, how).await
    }

    /// RenewalReq signed by the current identity, for a new key.
    pub async fn renew(&self, ca: &X509, current: &Identity) -> (CertRep, Option<Identity>) {
        let fresh = throwaway_signer();
        let csr = scep::csr_with_challenge(
            &fresh.key,
            &pki::name("MDM Identity sim", "sim").expect("name"),
            None,
        )
        .expect("csr");
        let signer = KeyPair {
            cert: current.cert.clone(),
            key: current.key.clone(),
        };
        let der = scep::build_request(
            MessageType::RenewalReq,
            &signer,
            ca,
            &csr.to_der().expect("csr der"),
            Cipher::aes_256_cbc(),
            "renewal-1",
            &crate::device::random_bytes(16),
        )
        .expect("RenewalReq");
        let (rep, id) = self.send_and_read(ca, &der, &signer, Transport::Post).await;
        // The certificate is for the fresh key.
        (
            rep,
            id.map(|i| Identity {
                key: fresh.key.clone(),
                cert: i.cert,
            }),
        )
    }

    async fn send_and_read(
        &self,
        ca: &X509,
        der: &[u8],
        signer: &KeyPair,
        how: Transport,
    ) -> (CertRep, Option<Identity>) {
        let (status, body) = self.pki_operation(der, how).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let rep = scep::read_cert_rep(&body, ca, Some(signer)).expect("CertRep");
        let id = rep.certificate.clone().map(|cert| Identity {
            key: signer.key.clone(),
            cert,
        });
        (rep, id)
    }
}

fn url_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '+' => "%2B".to_string(),
            '/' => "%2F".to_string(),
            '=' => "%3D".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The self-signed certificate a device signs its PKCSReq with (its key becomes the identity's key).
pub fn throwaway_signer() -> KeyPair {
    pki::generate(
        &pki::name("MDM SCEP SIGNER", "sim").expect("name"),
        Usage::ClientAuth,
        1,
        None,
    )
    .expect("signer")
}

/// A client that presents `identity` for mutual TLS.
pub fn mtls_client(identity: &Identity) -> reqwest::Client {
    let id = reqwest::Identity::from_pkcs8_pem(
        &identity.cert.to_pem().expect("pem"),
        &identity.key.private_key_to_pem_pkcs8().expect("key pem"),
    )
    .expect("client identity");
    crate::harness::client_builder()
        .identity(id)
        .build()
        .expect("mTLS client")
}

/// The device information a device signs when it fetches a profile during Automated Device Enrollment.
pub fn machine_info(serial: &str, udid: &str) -> Vec<u8> {
    let mut d = Dictionary::new();
    d.insert("SERIAL".into(), serial.into());
    d.insert("UDID".into(), udid.into());
    d.insert("PRODUCT".into(), "iPhone14,2".into());
    d.insert("VERSION".into(), "21F79".into());
    let body = crate::device::xml(d);
    let signer = Identity::generate("Apple iPhone Device");
    Pkcs7::sign(
        &signer.cert,
        &signer.key,
        &Stack::new().expect("stack"),
        &body,
        Pkcs7Flags::BINARY,
    )
    .and_then(|p| p.to_der())
    .expect("signed device information")
}

/// Upload a push certificate for the simulated devices' topic, valid at the server's (test) clock: enrollment
/// profiles take their topic from it.
pub async fn upload_push_cert(s: &crate::harness::TestServer) {
    let (cert, key) = push_cert_at(Some(crate::device::TOPIC), s.clock_now() / 1000, 365);
    let r = s
        .post(
            "/api/v1/push-certs",
            serde_json::json!({"cert_pem": cert, "key_pem": key}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A push certificate like Apple's: subject UID = the topic. `days` from now until it expires.
pub fn push_cert(topic: Option<&str>, days: i64) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    push_cert_at(topic, now, days)
}

/// As [`push_cert`], valid from two days before `now` (Unix seconds).
pub fn push_cert_at(topic: Option<&str>, now: i64, days: i64) -> (String, String) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    if let Some(t) = topic {
        name.append_entry_by_nid(Nid::USERID, t).unwrap();
    }
    name.append_entry_by_text("CN", "APSP:test").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(now - 2 * 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + days * 86_400).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = String::from_utf8(b.build().to_pem().unwrap()).unwrap();
    let key = String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, key)
}
