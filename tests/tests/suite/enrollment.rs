//! Enrollment end to end: a simulated device downloads the signed profile, gets its identity from our SCEP
//! CA, and checks in with signed messages or over mutual TLS; tokens, refusals, renewal and revocation.

use mdm_tests::device::{Device, Identity, Platform, ReceivedCommand, TOPIC};
use mdm_tests::enrollment::{
    machine_info, mtls_client, open_profile, upload_push_cert, Profile, ScepClient, Transport,
};
use mdm_tests::harness::{each_database, TestServer};
use mdm_tests::shared::shared_path;
use openssl::symm::Cipher;
use openssl::x509::X509;
use plist::Value;
use serde_json::json;

fn scep(s: &TestServer) -> ScepClient {
    ScepClient {
        url: format!("{}/scep", s.base),
        http: s.http.clone(),
    }
}

/// GET `/enroll` (with `query`), returning the status and body.
async fn get_enroll(s: &TestServer, query: &str) -> (u16, String, Vec<u8>) {
    let r = s
        .http
        .get(format!("{}/enroll{query}", s.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

async fn download_profile(s: &TestServer, ca: &X509) -> Profile {
    let (status, ct, body) = get_enroll(s, "").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ct, "application/x-apple-aspen-config");
    open_profile(&body, ca).expect("profile signed by a certificate of our CA")
}

/// A fresh identity from our CA: a profile download and a PKCSReq with its challenge.
async fn new_identity(s: &TestServer, client: &ScepClient, ca: &X509) -> Identity {
    let profile = download_profile(s, ca).await;
    let (rep, identity) = client
        .enroll(
            ca,
            Some(&profile.challenge()),
            Cipher::aes_128_cbc(),
            Transport::Post,
        )
        .await;
    assert_eq!(rep.pki_status, 0, "{rep:?}");
    identity.unwrap()
}

/// A push certificate, and a device enrolled through SCEP that has checked in.
async fn enrolled_device(s: &TestServer) -> (ScepClient, X509, Device) {
    upload_push_cert(s).await;
    let client = scep(s);
    let ca = client.ca_cert().await;
    let mut dev = Device::new(Platform::Ios);
    dev.identity = new_identity(s, &client, &ca).await;
    check_in(s, &dev).await;
    (client, ca, dev)
}

/// Authenticate + TokenUpdate with Mdm-Signature; both must be accepted.
async fn authenticate(s: &TestServer, dev: &Device) {
    for body in [dev.authenticate(), dev.token_update(None)] {
        let r = s.checkin(dev, body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Authenticate, TokenUpdate and an Idle that finds nothing queued.
async fn check_in(s: &TestServer, dev: &Device) {
    authenticate(s, dev).await;
    let r = s.connect(dev, dev.idle(None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty(), "unexpected command: {}", r.text());
}

/// The payload's keys are Apple's, with Apple's types, and every required key is present.
fn assert_matches_apple_schema(payload: &plist::Dictionary, schema_file: &str) {
    let Some(path) = shared_path(&format!(
        "spec/apple-device-management/mdm/profiles/{schema_file}"
    )) else {
        return;
    };
    let yaml: serde_yaml::Value = serde_yaml::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let keys = yaml["payloadkeys"].as_sequence().unwrap();
    let check = |dict: &plist::Dictionary, keys: &Vec<serde_yaml::Value>, at: &str| {
        for (k, v) in dict {
            if at.is_empty() && k.starts_with("Payload") && k != "PayloadContent" {
                continue; // common payload keys, not in the per-payload schema
            }
            let spec = keys
                .iter()
                .find(|s| s["key"].as_str() == Some(k))
                .unwrap_or_else(|| panic!("{schema_file}: key {at}{k} is not Apple's"));
            let ty = spec["type"].as_str().unwrap();
            let ok = match v {
                Value::String(_) => ty == "<string>",
                Value::Integer(_) => ty == "<integer>",
                Value::Boolean(_) => ty == "<boolean>",
                Value::Array(_) => ty == "<array>",
                Value::Data(_) => ty == "<data>",
                Value::Dictionary(_) => ty == "<dictionary>",
                _ => false,
            };
            assert!(ok, "{schema_file}: {at}{k} should be {ty}, is {v:?}");
        }
        for s in keys {
            if s["presence"].as_str() == Some("required") {
                let k = s["key"].as_str().unwrap();
                assert!(
                    dict.contains_key(k),
                    "{schema_file}: required {at}{k} missing"
                );
            }
        }
    };
    check(payload, keys, "");
    if let Some(Value::Dictionary(content)) = payload.get("PayloadContent") {
        let sub = keys
            .iter()
            .find(|s| s["key"].as_str() == Some("PayloadContent"))
            .and_then(|s| s["subkeys"].as_sequence())
            .unwrap();
        check(content, sub, "PayloadContent.");
    }
}

#[tokio::test]
async fn a_device_enrolls_over_scep_and_checks_in_with_signed_messages() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        // No push certificate yet: nothing to enroll into, and the admin is told why.
        let (status, _, body) = get_enroll(&s, "").await;
        assert_eq!(status, 503);
        assert!(String::from_utf8_lossy(&body).contains("push certificate"));
        upload_push_cert(&s).await;

        let client = scep(&s);
        let caps = client.ca_caps().await;
        for cap in [
            "POSTPKIOperation",
            "SHA-256",
            "AES",
            "DES3",
            "SCEPStandard",
            "Renewal",
        ] {
            assert!(
                caps.lines().any(|l| l == cap),
                "GetCACaps lacks {cap}: {caps}"
            );
        }
        let ca = client.ca_cert().await;
        let profile = download_profile(&s, &ca).await;

        // The MDM payload uses the SCEP identity and our push topic and URLs.
        let mdm = &profile.mdm;
        assert_eq!(mdm["Topic"].as_string(), Some(TOPIC));
        assert_eq!(
            mdm["IdentityCertificateUUID"].as_string(),
            profile.scep["PayloadUUID"].as_string()
        );
        assert_eq!(
            mdm["ServerURL"].as_string().unwrap(),
            format!("{}/mdm/connect", s.base)
        );
        assert_eq!(
            mdm["CheckInURL"].as_string().unwrap(),
            format!("{}/mdm/checkin", s.base)
        );
        assert_eq!(mdm["SignMessage"].as_boolean(), Some(true));
        assert_eq!(mdm["AccessRights"].as_signed_integer(), Some(8191));
        assert_eq!(mdm["CheckOutWhenRemoved"].as_boolean(), Some(true));
        assert_eq!(profile.scep_url(), format!("{}/scep", s.base));
        // It pins our CA.
        assert_eq!(
            profile.scep_content()["CAFingerprint"].as_data().unwrap(),
            openssl::sha::sha1(&ca.to_der().unwrap())
        );
        assert_matches_apple_schema(mdm, "com.apple.mdm.yaml");
        assert_matches_apple_schema(&profile.scep, "com.apple.security.scep.yaml");

        // 3DES (older devices) by POST, AES by GET: both get an identity and check in with it.
        let mut enrolled = Vec::new();
        for (cipher, how) in [
            (Cipher::des_ede3_cbc(), Transport::Post),
            (Cipher::aes_128_cbc(), Transport::Get),
        ] {
            let p = download_profile(&s, &ca).await;
            let (rep, identity) = client.enroll(&ca, Some(&p.challenge()), cipher, how).await;
            assert_eq!(rep.pki_status, 0, "{rep:?}");
            let identity = identity.unwrap();
            assert!(identity.cert.verify(&ca.public_key().unwrap()).unwrap());
            let mut dev = Device::new(Platform::Ios);
            dev.identity = identity;
            check_in(&s, &dev).await;
            enrolled.push(dev);
        }

        // The CA recorded both, bound to the devices that authenticated with them.
        let r = s.get("/api/v1/identity-certificates").await;
        assert_eq!(r.status, 200);
        let certs = r.json();
        let certs = certs.as_array().unwrap();
        assert_eq!(certs.len(), 2);
        for dev in &enrolled {
            let c = certs
                .iter()
                .find(|c| c["fingerprint"] == dev.identity.fingerprint())
                .expect("recorded");
            assert_eq!(c["device_id"], dev.udid.as_str());
            assert!(c["revoked_at"].is_null());
        }

        // Each step is in the hash-chained audit log, and the chain holds.
        let audit = s.audit_chain().await;
        let has = |actor: &str, action: &str| {
            audit
                .iter()
                .any(|e| e.actor.starts_with(actor) && e.action == action)
        };
        assert!(has("api-key:", "POST /api/v1/push-certs"));
        assert!(has("scep", "identity.issue"));
        assert!(has("device:", "enrollment.authenticate"));
        assert!(!audit.iter().any(|e| e.detail.contains("PRIVATE KEY")));
        assert!(matches!(
            mdm_server::storage::audit_log::verify(mdm_server::storage::testing::db(&s.storage))
                .await
                .unwrap(),
            mdm_server::storage::audit_log::Verification::Intact { .. }
        ));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn scep_refusals_issue_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        upload_push_cert(&s).await;
        let client = scep(&s);
        let ca = client.ca_cert().await;
        let aes = Cipher::aes_256_cbc();

        // Wrong challenge, and no challenge: CertRep failure, badRequest.
        for challenge in [Some("not-a-challenge"), None] {
            let (rep, id) = client.enroll(&ca, challenge, aes, Transport::Post).await;
            assert_eq!((rep.pki_status, rep.fail_info), (2, Some(2)), "{rep:?}");
            assert!(id.is_none());
        }
        // A challenge works once.
        let challenge = download_profile(&s, &ca).await.challenge();
        let (rep, _) = client
            .enroll(&ca, Some(&challenge), aes, Transport::Post)
            .await;
        assert_eq!(rep.pki_status, 0);
        let (rep, _) = client
            .enroll(&ca, Some(&challenge), aes, Transport::Post)
            .await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(2)), "replayed");

        // An expired challenge (10 minutes by default).
        let late = download_profile(&s, &ca).await.challenge();
        s.clock.advance_ms(601_000);
        let (rep, _) = client.enroll(&ca, Some(&late), aes, Transport::Post).await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(2)), "expired");

        // Renewal signed by a certificate we never issued: badCertId.
        let stranger = Identity::generate("stranger");
        let (rep, _) = client.renew(&ca, &stranger).await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(4)), "{rep:?}");

        // A tampered PKCSReq: the signature no longer verifies (or it no longer parses).
        let fresh = download_profile(&s, &ca).await.challenge();
        let signer = mdm_tests::enrollment::throwaway_signer();
        let csr = mdm_server::scep::csr_with_challenge(
            &signer.key,
            &mdm_server::pki::name("x", "y").unwrap(),
            Some(&fresh),
        )
        .unwrap();
        let mut der = mdm_server::scep::build_request(
            mdm_server::scep::MessageType::PkcsReq,
            &signer,
            &ca,
            &csr.to_der().unwrap(),
            aes,
            "tampered",
            b"0123456789abcdef",
        )
        .unwrap();
        // Inside the signed content (the envelope), which comes first in the SignedData.
        der[300] ^= 0x40;
        let (status, body) = client.pki_operation(&der, Transport::Post).await;
        match status {
            200 => {
                let rep = mdm_server::scep::read_cert_rep(&body, &ca, Some(&signer)).unwrap();
                assert_eq!(rep.pki_status, 2, "tampered request issued a certificate");
            }
            400 => {}
            other => panic!("tampered request answered {other}"),
        }
        // The untampered challenge was not used up by the tampered request.
        let (rep, _) = client.enroll(&ca, Some(&fresh), aes, Transport::Post).await;
        assert_eq!(rep.pki_status, 0);

        // Not SCEP at all: 400, never 5xx.
        for (method, path, body) in [
            ("POST", "/scep?operation=PKIOperation", b"garbage".to_vec()),
            ("GET", "/scep?operation=PKIOperation&message=%%%", vec![]),
            ("GET", "/scep?operation=PKIOperation&message=AAAA", vec![]),
            ("GET", "/scep?operation=Nope", vec![]),
            ("GET", "/scep", vec![]),
            ("POST", "/scep?operation=GetCACert", vec![]),
        ] {
            let req = match method {
                "POST" => s.http.post(format!("{}{path}", s.base)).body(body),
                _ => s.http.get(format!("{}{path}", s.base)),
            };
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400, "{method} {path}");
        }

        // Exactly the two successful requests issued certificates.
        let certs = s.get("/api/v1/identity-certificates").await.json();
        assert_eq!(certs.as_array().unwrap().len(), 2, "{certs}");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn enrollment_tokens_are_one_time_expire_and_can_pin_a_serial() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| c.enroll.require_token = true).await;
        upload_push_cert(&s).await;
        let ca = scep(&s).ca_cert().await;

        let (status, ct, body) = get_enroll(&s, "").await;
        assert_eq!(status, 403);
        assert!(ct.starts_with("text/html"));
        assert!(String::from_utf8_lossy(&body).contains("needs a token"));

        let key = s.key(&[mdm_server::apikeys::Scope::Enroll]).await;
        let create = |body: serde_json::Value| {
            let (http, base, key) = (s.http.clone(), s.base.clone(), key.clone());
            async move {
                let r = http
                    .post(format!("{base}/api/v1/enrollment-tokens"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        let t = create(json!({"label": "alice"})).await;
        let token = t["token"].as_str().unwrap().to_string();
        assert_eq!(
            t["url"].as_str().unwrap(),
            format!("{}/enroll?token={token}", s.base)
        );
        let (status, _, body) = get_enroll(&s, &format!("?token={token}")).await;
        assert_eq!(status, 200);
        open_profile(&body, &ca).unwrap();
        let (status, _, body) = get_enroll(&s, &format!("?token={token}")).await;
        assert_eq!(status, 403);
        assert!(String::from_utf8_lossy(&body).contains("already used"));

        // Expired (5 minutes by default).
        let t = create(json!({})).await;
        s.clock.advance_ms(301_000);
        let expired = format!("?token={}", t["token"].as_str().unwrap());
        let (status, _, body) = get_enroll(&s, &expired).await;
        assert_eq!(status, 403);
        assert!(String::from_utf8_lossy(&body).contains("expired"));

        // Pinned to a serial number: the device must say who it is (signed device information).
        let dev = Device::new(Platform::Ios);
        let t = create(json!({"serial_number": dev.serial, "ttl_seconds": 600})).await;
        let token = t["token"].as_str().unwrap().to_string();
        let post = |info: Vec<u8>| {
            let (http, url) = (s.http.clone(), format!("{}/enroll?token={token}", s.base));
            async move {
                let r = http.post(url).body(info).send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
            }
        };
        assert_eq!(get_enroll(&s, &format!("?token={token}")).await.0, 403);
        assert_eq!(post(machine_info("OTHERSERIAL", &dev.udid)).await.0, 403);
        assert_eq!(post(b"not signed".to_vec()).await.0, 400);
        let (status, body) = post(machine_info(&dev.serial, &dev.udid)).await;
        assert_eq!(status, 200);
        let profile = open_profile(&body, &ca).unwrap();

        // The identity issued against that profile is pinned to the serial too.
        let (rep, identity) = scep(&s)
            .enroll(
                &ca,
                Some(&profile.challenge()),
                Cipher::aes_128_cbc(),
                Transport::Post,
            )
            .await;
        assert_eq!(rep.pki_status, 0);
        let identity = identity.unwrap();
        let mut impostor = Device::new(Platform::Ios);
        impostor.identity = identity.clone();
        let r = s.checkin(&impostor, impostor.authenticate()).await;
        assert_eq!(r.status, 403, "{}", r.text());
        let mut dev = dev;
        dev.identity = identity;
        check_in(&s, &dev).await;

        // Listing shows the tokens without their secrets.
        let r = s.get("/api/v1/enrollment-tokens?all=true").await;
        let list = r.json();
        assert_eq!(list.as_array().unwrap().len(), 3);
        assert!(!r.text().contains(&token));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn over_mutual_tls_only_our_identities_reach_the_mdm_endpoints() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| c.tls.self_signed = true).await;
        assert!(s.base.starts_with("https://"));
        upload_push_cert(&s).await;
        // /scep and /enroll need no client certificate.
        let client = scep(&s);
        let ca = client.ca_cert().await;
        let profile = download_profile(&s, &ca).await;
        let (rep, identity) = client
            .enroll(
                &ca,
                Some(&profile.challenge()),
                Cipher::aes_256_cbc(),
                Transport::Post,
            )
            .await;
        assert_eq!(rep.pki_status, 0);
        let mut dev = Device::new(Platform::MacOs);
        dev.identity = identity.unwrap();

        let put = |http: reqwest::Client, path: &'static str, body: Vec<u8>| {
            let url = format!("{}{path}", s.base);
            async move {
                let r = http
                    .put(url)
                    .header("content-type", "application/x-apple-aspen-mdm-checkin")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        // The device's client certificate is its identity: no Mdm-Signature needed.
        let tls = mtls_client(&dev.identity);
        for body in [dev.authenticate(), dev.token_update(None)] {
            let (status, text) = put(tls.clone(), "/mdm/checkin", body).await;
            assert_eq!(status, 200, "{text}");
        }
        let (status, text) = put(tls.clone(), "/mdm/connect", dev.idle(None)).await;
        assert_eq!(status, 200, "{text}");

        // No client certificate, even with a valid Mdm-Signature: refused (never 401).
        let body = dev.idle(None);
        let r = s
            .http
            .put(format!("{}/mdm/connect", s.base))
            .header("Mdm-Signature", dev.sign(&body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);

        // A certificate from another CA, or self-signed: refused before anything is stored.
        let other_ca = Identity::self_signed("Other CA");
        for foreign in [
            Identity::issued_by(&other_ca, "foreign"),
            Identity::self_signed("self-signed"),
        ] {
            let mut intruder = Device::new(Platform::MacOs);
            intruder.identity = foreign;
            let (status, text) = put(
                mtls_client(&intruder.identity),
                "/mdm/checkin",
                intruder.authenticate(),
            )
            .await;
            assert_eq!(status, 403, "{text}");
            let r = s.get(&format!("/api/v1/devices/{}", intruder.udid)).await;
            assert_eq!(r.status, 404);
        }
        s.stop().await;
    })
    .await;
}

/// The first command the device is given on an Idle, answered Acknowledged.
async fn next_command(s: &TestServer, dev: &Device) -> Option<ReceivedCommand> {
    let r = s.connect(dev, dev.idle(None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    if r.body.is_empty() {
        return None;
    }
    Some(ReceivedCommand::parse(&r.body).unwrap())
}

async fn ack(s: &TestServer, dev: &Device, cmd: &ReceivedCommand) {
    let r = s
        .connect(
            dev,
            dev.report(None, "Acknowledged", &cmd.uuid, Default::default()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn identities_are_renewed_before_expiry_and_keep_the_queue() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.enroll.public_url = Some("https://mdm.example.test".into())
        })
        .await;
        let (client, ca, mut dev) = enrolled_device(&s).await;
        let renew = || s.state.enroll.renew_expiring(&s.state.queue);

        // Nothing to renew while the identity is young.
        assert_eq!(renew().await.unwrap(), 0);
        // 340 days on (the identity is valid 365): inside the 30-day window.
        s.clock.advance_ms(340 * 86_400_000);
        let expiring = s.get("/api/v1/identities/expiring?days=30").await.json();
        assert_eq!(expiring[0]["device_id"], dev.udid.as_str());
        assert_eq!(renew().await.unwrap(), 1);
        assert_eq!(renew().await.unwrap(), 0, "one renewal per device");
        assert!(s
            .get("/metrics")
            .await
            .text()
            .contains("identity_renewals_total 1"));

        // The device receives a fresh, signed enrollment profile with a new challenge.
        let cmd = next_command(&s, &dev).await.expect("renewal queued");
        assert_eq!(cmd.request_type, "InstallProfile");
        let signed = cmd.command["Payload"].as_data().unwrap().to_vec();
        let renewal = open_profile(&signed, &ca).unwrap();
        assert_eq!(renewal.mdm["Topic"].as_string(), Some(TOPIC));
        // Meanwhile an admin queues something.
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;

        // Installing it: a new identity from SCEP, then a new Authenticate with it.
        let (rep, fresh) = client
            .enroll(
                &ca,
                Some(&renewal.challenge()),
                Cipher::aes_128_cbc(),
                Transport::Post,
            )
            .await;
        assert_eq!(rep.pki_status, 0);
        let old_identity = dev.identity.clone();
        dev.identity = fresh.unwrap();
        authenticate(&s, &dev).await;
        // The InstallProfile's acknowledgement is lost: the Authenticate with the identity it brought has
        // completed it, so it is not offered again (its challenge is used up). The queue survived.
        let status = s
            .get(&format!("/api/v1/commands/{}", cmd.uuid))
            .await
            .json();
        assert_eq!(
            status["deliveries"][0]["status"], "acknowledged",
            "{status}"
        );
        let kept = next_command(&s, &dev).await.expect("queue kept");
        assert_eq!(kept.request_type, "ProfileList");
        // A late acknowledgement changes nothing.
        let r = s
            .connect(
                &dev,
                dev.report(None, "Acknowledged", &cmd.uuid, Default::default()),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        ack(&s, &dev, &kept).await;
        // The old identity no longer works.
        let mut old = dev.clone();
        old.identity = old_identity;
        assert_eq!(s.connect(&old, old.idle(None)).await.status, 403);

        // SCEP RenewalReq with the current identity keeps the queue too.
        s.enqueue(&[&dev.udid], json!({"RequestType": "CertificateList"}))
            .await;
        let (rep, renewed) = client.renew(&ca, &dev.identity).await;
        assert_eq!(rep.pki_status, 0, "{rep:?}");
        dev.identity = renewed.unwrap();
        authenticate(&s, &dev).await;
        assert_eq!(
            next_command(&s, &dev)
                .await
                .expect("queue kept")
                .request_type,
            "CertificateList"
        );

        // A plain re-enrollment (not a renewal) needs an admin's allowance, and clears the queue.
        s.enqueue(&[&dev.udid], json!({"RequestType": "ProfileList"}))
            .await;
        let allowed = s
            .post(
                &format!("/api/v1/devices/{}/reenrollment", dev.udid),
                json!({}),
            )
            .await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        dev.identity = new_identity(&s, &client, &ca).await;
        check_in(&s, &dev).await;
        assert!(next_command(&s, &dev).await.is_none());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_revoked_identity_is_refused() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (client, ca, dev) = enrolled_device(&s).await;
        let certs = s.get("/api/v1/identity-certificates").await.json();
        let serial = certs[0]["serial"].as_str().unwrap().to_string();

        // Revoking needs admin.
        let reader = s.key(&[mdm_server::apikeys::Scope::DevicesRead]).await;
        let r = s
            .http
            .post(format!(
                "{}/api/v1/identity-certificates/{serial}/revoke",
                s.base
            ))
            .bearer_auth(reader)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = s
            .post(
                &format!("/api/v1/identity-certificates/{serial}/revoke"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["revoked_at"].is_string());

        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 403);
        assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 403);
        let (rep, _) = client.renew(&ca, &dev.identity).await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(4)));
        s.stop().await;
    })
    .await;
}

/// Revoke `serial` as an admin; the response's status.
async fn revoke(s: &TestServer, serial: &str) -> u16 {
    s.post(
        &format!("/api/v1/identity-certificates/{serial}/revoke"),
        json!({}),
    )
    .await
    .status
}

/// The issued certificate with this fingerprint, as the admin API lists it.
async fn issued(s: &TestServer, identity: &Identity) -> serde_json::Value {
    let certs = s.get("/api/v1/identity-certificates").await.json();
    certs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["fingerprint"] == identity.fingerprint().as_str())
        .cloned()
        .expect("issued by our CA")
}

#[tokio::test]
async fn revoking_an_identity_revokes_what_was_renewed_from_it() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let (client, ca, mut dev) = enrolled_device(&s).await;
        let original = issued(&s, &dev.identity).await;
        // Renewed with RenewalReq before the revocation, and renewed again.
        let (rep, renewed) = client.renew(&ca, &dev.identity).await;
        assert_eq!(rep.pki_status, 0, "{rep:?}");
        dev.identity = renewed.unwrap();
        let (rep, renewed) = client.renew(&ca, &dev.identity).await;
        assert_eq!(rep.pki_status, 0, "{rep:?}");
        dev.identity = renewed.unwrap();
        check_in(&s, &dev).await;

        // Revoking the original covers its descendants.
        assert_eq!(revoke(&s, original["serial"].as_str().unwrap()).await, 200);
        assert!(issued(&s, &dev.identity).await["revoked_at"].is_string());
        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 403);
        assert_eq!(s.checkin(&dev, dev.authenticate()).await.status, 403);
        let (rep, _) = client.renew(&ca, &dev.identity).await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(4)), "badCertId");
        s.stop().await;
    })
    .await;
}

/// Queue the device's identity renewal and take the challenge from the profile it receives.
async fn renewal_challenge(s: &TestServer, dev: &Device, ca: &X509) -> String {
    assert_eq!(
        s.state.enroll.renew_expiring(&s.state.queue).await.unwrap(),
        1
    );
    let cmd = next_command(s, dev).await.expect("renewal queued");
    let signed = cmd.command["Payload"].as_data().unwrap().to_vec();
    open_profile(&signed, ca).unwrap().challenge()
}

#[tokio::test]
async fn revoking_an_identity_covers_its_renewal_challenges() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.enroll.public_url = Some("https://mdm.example.test".into())
        })
        .await;
        let (client, ca, mut dev) = enrolled_device(&s).await;
        let original = issued(&s, &dev.identity).await;
        s.clock.advance_ms(340 * 86_400_000);

        // A renewal through the challenge before the revocation descends from the bound identity.
        let challenge = renewal_challenge(&s, &dev, &ca).await;
        let (rep, fresh) = client
            .enroll(
                &ca,
                Some(&challenge),
                Cipher::aes_128_cbc(),
                Transport::Post,
            )
            .await;
        assert_eq!(rep.pki_status, 0, "{rep:?}");
        let fresh = fresh.unwrap();
        assert_eq!(issued(&s, &fresh).await["renewal_of"], original["serial"]);
        assert_eq!(revoke(&s, original["serial"].as_str().unwrap()).await, 200);
        let mut renewed = dev.clone();
        renewed.identity = fresh;
        assert_eq!(
            s.checkin(&renewed, renewed.authenticate()).await.status,
            403
        );

        // A renewal challenge handed out before a revocation and used after it renews nothing. (The
        // revoked device enrolls again with an admin's allowance first.)
        let allowed = s
            .post(
                &format!("/api/v1/devices/{}/reenrollment", dev.udid),
                json!({}),
            )
            .await;
        assert_eq!(allowed.status, 200, "{}", allowed.text());
        dev.identity = new_identity(&s, &client, &ca).await;
        check_in(&s, &dev).await;
        s.clock.advance_ms(340 * 86_400_000);
        let challenge = renewal_challenge(&s, &dev, &ca).await;
        let bound = issued(&s, &dev.identity).await;
        assert_eq!(revoke(&s, bound["serial"].as_str().unwrap()).await, 200);
        let (rep, fresh) = client
            .enroll(
                &ca,
                Some(&challenge),
                Cipher::aes_128_cbc(),
                Transport::Post,
            )
            .await;
        assert_eq!((rep.pki_status, rep.fail_info), (2, Some(2)), "badRequest");
        assert!(fresh.is_none());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_configured_ca_with_a_chain_is_served_as_pkcs7_and_issues() {
    use mdm_server::pki::{self, Usage};
    let dir = tempfile::tempdir().unwrap();
    // Valid from the tests' clock (the server checks chains with it) to years past today (the test opens
    // the profile with the real time).
    let now = mdm_tests::harness::START_MS / 1000;
    let days = 3650;
    let root = pki::generate_at(
        &pki::name("Root", "org").unwrap(),
        Usage::Ca,
        days,
        None,
        now,
    )
    .unwrap();
    let issuing = pki::generate_at(
        &pki::name("Issuing", "org").unwrap(),
        Usage::Ca,
        days,
        Some(&root),
        now,
    )
    .unwrap();
    let (cert_file, key_file) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    std::fs::write(
        &cert_file,
        [issuing.cert.to_pem().unwrap(), root.cert.to_pem().unwrap()].concat(),
    )
    .unwrap();
    std::fs::write(&key_file, issuing.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    each_database(|db| {
        let (cert_file, key_file, issuing) = (cert_file.clone(), key_file.clone(), issuing.clone());
        async move {
            let s = TestServer::start_with(db, |c| {
                c.scep.ca_cert_file = Some(cert_file);
                c.scep.ca_key_file = Some(key_file);
            })
            .await;
            let r = s
                .http
                .get(format!("{}/scep?operation=GetCACert", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["content-type"], "application/x-x509-ca-ra-cert");
            let p7 = openssl::pkcs7::Pkcs7::from_der(&r.bytes().await.unwrap()).unwrap();
            let certs = p7.signed().unwrap().certificates().unwrap();
            assert_eq!(certs.len(), 2);
            // The issuing CA is the one that signs, and the identities chain to it.
            upload_push_cert(&s).await;
            let client = scep(&s);
            let mut dev = Device::new(Platform::MacOs);
            dev.identity = new_identity(&s, &client, &issuing.cert).await;
            assert!(dev
                .identity
                .cert
                .verify(&issuing.cert.public_key().unwrap())
                .unwrap());
            check_in(&s, &dev).await;
            s.stop().await;
        }
    })
    .await;
}
