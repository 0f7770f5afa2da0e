//! Device-facing refusals: each bad request gets its status (never 401) and changes nothing in storage.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mdm_server::config::TrustedProxies;
use mdm_tests::device::{Device, Identity, Platform, User};
use mdm_tests::harness::{each_database, Resp, TestServer};

/// Send, then assert the status, that it is not 401, and that storage did not change.
async fn refused(
    s: &TestServer,
    expected: u16,
    send: impl std::future::Future<Output = Resp>,
) -> Resp {
    let before = s.snapshot().await;
    let r = send.await;
    assert_ne!(r.status, 401, "a device must never be told 401");
    assert_eq!(r.status, expected, "{}", r.text());
    assert_eq!(
        before,
        s.snapshot().await,
        "a refused request changed storage"
    );
    r
}

#[tokio::test]
async fn bad_identity_is_refused_and_changes_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        let other = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.enroll(&other).await;

        // Tampered body: signed one body, sent another.
        let signed = dev.idle(None);
        let mut sent = signed.clone();
        let at = sent.len() - 20;
        sent[at] ^= 0x20;
        let sig = dev.sign(&signed);
        refused(
            &s,
            403,
            s.put("/mdm/connect", sent, &[("Mdm-Signature", sig)]),
        )
        .await;

        // A message for `dev` signed with the other device's certificate.
        let body = dev.token_update(None);
        let sig = other.sign(&body);
        refused(
            &s,
            403,
            s.put("/mdm/checkin", body, &[("Mdm-Signature", sig)]),
        )
        .await;

        // A new device presenting a certificate already bound to another device.
        let mut thief = Device::new(Platform::Ios);
        thief.identity = dev.identity.clone();
        refused(&s, 403, s.checkin(&thief, thief.authenticate())).await;

        // The same UDID re-authenticating with a different serial number (hardware binding).
        let mut swapped = dev.clone();
        swapped.serial = "OTHERSERIAL".into();
        let r = refused(&s, 403, s.checkin(&swapped, swapped.authenticate())).await;
        assert!(!r.text().contains(&dev.serial), "{}", r.text());

        // No signature, a garbage signature, base64 of garbage.
        refused(&s, 400, s.put("/mdm/checkin", dev.token_update(None), &[])).await;
        refused(
            &s,
            400,
            s.put(
                "/mdm/checkin",
                dev.token_update(None),
                &[("Mdm-Signature", "%%%".into())],
            ),
        )
        .await;
        refused(
            &s,
            400,
            s.put(
                "/mdm/connect",
                dev.idle(None),
                &[("Mdm-Signature", STANDARD.encode(b"not cms"))],
            ),
        )
        .await;

        // Unknown devices must Authenticate first.
        let stranger = Device::new(Platform::MacOs);
        refused(&s, 403, s.checkin(&stranger, stranger.token_update(None))).await;
        refused(&s, 403, s.connect(&stranger, stranger.idle(None))).await;
        // A user channel that never sent TokenUpdate has no queue.
        refused(
            &s,
            403,
            s.connect(&dev, dev.idle(Some(&User::new("ghost")))),
        )
        .await;
        // The device answers normally afterwards.
        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 200);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_messages_are_400_and_change_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let signed = |body: Vec<u8>| {
            let sig = dev.sign(&body);
            (body, sig)
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("/mdm/checkin", b"this is not a plist".to_vec()),
            (
                "/mdm/checkin",
                b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>Message".to_vec(),
            ),
            (
                "/mdm/checkin",
                b"<plist version=\"1.0\"><array><string>x</string></array></plist>".to_vec(),
            ),
            ("/mdm/checkin", dev.message("LaunchMissiles")),
            (
                "/mdm/checkin",
                mdm_tests::device::xml(plist::Dictionary::new()),
            ),
            ("/mdm/connect", b"bplist00garbage".to_vec()),
            (
                "/mdm/connect",
                dev.report(None, "Sideways", "X", plist::Dictionary::new()),
            ),
            // Authenticate on a user channel.
            ("/mdm/checkin", {
                let mut d = plist::Value::from_reader(std::io::Cursor::new(dev.authenticate()))
                    .unwrap()
                    .into_dictionary()
                    .unwrap();
                d.insert("UserID".into(), "U1".into());
                mdm_tests::device::xml(d)
            }),
        ];
        for (path, body) in cases {
            let (body, sig) = signed(body);
            let r = refused(&s, 400, s.put(path, body, &[("Mdm-Signature", sig)])).await;
            assert!(!r.text().is_empty(), "a 400 says why");
        }
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| c.max_body_bytes = 64 * 1024).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let mut big = plist::Dictionary::new();
        big.insert("Blob".into(), plist::Value::Data(vec![7; 100 * 1024]));
        let body = dev.report(None, "Acknowledged", "X", big);
        let sig = dev.sign(&body);
        refused(
            &s,
            413,
            s.put("/mdm/connect", body, &[("Mdm-Signature", sig)]),
        )
        .await;
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn trusted_proxy_header_supplies_the_identity_only_when_configured() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.identity.proxy_cert_header = Some("X-Client-Cert".into());
            // The header is believed only from a trusted proxy; here the test client plays it.
            c.http.trusted_proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        })
        .await;
        let dev = Device::new(Platform::MacOs);
        let der = dev.identity.cert.to_der().unwrap();
        let rfc9440 = format!(":{}:", STANDARD.encode(&der));
        for body in [dev.authenticate(), dev.token_update(None)] {
            let r = s
                .put("/mdm/checkin", body, &[("X-Client-Cert", rfc9440.clone())])
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        // URL-escaped PEM (nginx $ssl_client_escaped_cert) works too.
        let pem = String::from_utf8(dev.identity.cert.to_pem().unwrap()).unwrap();
        let escaped: String = percent_encode(&pem);
        assert_eq!(
            s.put(
                "/mdm/connect",
                dev.idle(None),
                &[("X-Client-Cert", escaped)]
            )
            .await
            .status,
            200
        );
        // Another certificate in the header is refused.
        let other = Identity::generate("other");
        let bad = format!(":{}:", STANDARD.encode(other.cert.to_der().unwrap()));
        refused(
            &s,
            403,
            s.put("/mdm/connect", dev.idle(None), &[("X-Client-Cert", bad)]),
        )
        .await;
        s.stop().await;
    })
    .await;

    // Without the setting the header is ignored: the message needs its own signature.
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::MacOs);
        let der = dev.identity.cert.to_der().unwrap();
        let h = format!(":{}:", STANDARD.encode(&der));
        refused(
            &s,
            400,
            s.put("/mdm/checkin", dev.authenticate(), &[("X-Client-Cert", h)]),
        )
        .await;
        s.stop().await;
    })
    .await;
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn device_ca_verification_refuses_foreign_certificates() {
    let ca = Identity::self_signed("Test Device CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.to_pem().unwrap()).unwrap();
    each_database(|db| {
        let ca = ca.clone();
        let ca_file = ca_file.clone();
        async move {
            let s = TestServer::start_with(db, |c| c.identity.device_ca_file = Some(ca_file)).await;
            let mut good = Device::new(Platform::Ios);
            good.identity = Identity::issued_by(&ca, &good.udid);
            s.enroll(&good).await;
            for issuer in ["self-signed", "another CA"] {
                let mut foreign = Device::new(Platform::Ios);
                if issuer == "self-signed" {
                    foreign.identity = Identity::self_signed(&foreign.udid);
                } // else: the tests' own CA, which this server was not told to trust
                refused(&s, 403, s.checkin(&foreign, foreign.authenticate())).await;
            }
            s.stop().await;
        }
    })
    .await;
}

/// What every refusal about who may act for an enrollment says: nothing about what is stored.
const REFUSED: &str = "this identity certificate may not act for this enrollment";

/// `dev`'s Authenticate without its SerialNumber (as User Enrollment and some attackers send it).
fn authenticate_without_serial(dev: &Device) -> Vec<u8> {
    let mut d = plist::Value::from_reader_xml(&dev.authenticate()[..])
        .unwrap()
        .into_dictionary()
        .unwrap();
    d.remove("SerialNumber");
    mdm_tests::device::xml(d)
}

/// Someone who knows a device's UDID (and even its serial number) and holds a certificate the server trusts
/// cannot take the device over: Authenticate with a new identity is refused and nothing changes.
#[tokio::test]
async fn a_known_udid_cannot_be_taken_over_with_a_new_identity() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        s.enqueue(
            &[&dev.udid],
            serde_json::json!({"RequestType": "DeviceInformation"}),
        )
        .await;

        let mut attacker = dev.clone();
        attacker.identity = Identity::generate(&dev.udid);
        for body in [
            authenticate_without_serial(&attacker),
            attacker.authenticate(),
        ] {
            let r = refused(&s, 403, s.checkin(&attacker, body)).await;
            assert_eq!(r.text(), REFUSED);
        }
        // Nor can the attacker act on the device's channels.
        refused(&s, 403, s.connect(&attacker, attacker.idle(None))).await;

        // The device keeps its identity and its queue.
        let r = s.connect(&dev, dev.idle(None)).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("DeviceInformation"), "{}", r.text());
        s.stop().await;
    })
    .await;
}

/// The ways a known device enrolls again with a new identity: an admin's one-time allowance, or the device
/// having checked out itself.
#[tokio::test]
async fn a_known_device_enrolls_again_only_when_allowed_or_checked_out() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let mut dev = Device::new(Platform::MacOs);
        s.enroll(&dev).await;
        let path = format!("/api/v1/devices/{}/reenrollment", dev.udid);

        // Only an admin may allow it, for an existing device, for a bounded time.
        let reader = s.key(&[mdm_server::apikeys::Scope::DevicesRead]).await;
        let body = serde_json::json!({});
        let r = s
            .api(
                reqwest::Method::POST,
                &path,
                Some(&reader),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 403);
        let r = s
            .post("/api/v1/devices/NO-SUCH-DEVICE/reenrollment", body.clone())
            .await;
        assert_eq!(r.status, 404);
        for bad in [
            serde_json::json!({"ttl_seconds": 0}),
            serde_json::json!({"ttl_seconds": 2_592_001}),
            serde_json::json!({"ttl": 5}),
        ] {
            assert_eq!(s.post(&path, bad).await.status, 400);
        }

        // An allowance that has lapsed admits nothing.
        assert_eq!(
            s.post(&path, serde_json::json!({"ttl_seconds": 60}))
                .await
                .status,
            200
        );
        s.clock.advance_ms(61_000);
        let old = dev.clone();
        dev.identity = Identity::generate(&dev.udid);
        refused(&s, 403, s.checkin(&dev, dev.authenticate())).await;

        // Allowed: the new identity enrolls, once; the old one no longer works.
        assert_eq!(s.post(&path, body).await.status, 200);
        s.enroll(&dev).await;
        assert_eq!(s.connect(&old, old.idle(None)).await.status, 403);
        let mut third = dev.clone();
        third.identity = Identity::generate(&dev.udid);
        refused(&s, 403, s.checkin(&third, third.authenticate())).await;

        // A device that checked out (only its bound identity can say so) may enroll again.
        assert_eq!(s.checkin(&dev, dev.checkout()).await.status, 200);
        s.enroll(&third).await;
        assert_eq!(s.connect(&third, third.idle(None)).await.status, 200);
        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 403);
        s.stop().await;
    })
    .await;
}

/// By default a device identity must chain to the SCEP CA or a configured CA; accepting any issuer is an
/// explicit setting.
#[tokio::test]
async fn self_signed_identities_are_refused_unless_any_issuer_is_accepted() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let mut dev = Device::new(Platform::Ios);
        dev.identity = Identity::self_signed(&dev.udid);
        refused(&s, 403, s.checkin(&dev, dev.authenticate())).await;
        s.stop().await;
    })
    .await;
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| c.identity.accept_any_issuer = true).await;
        let mut dev = Device::new(Platform::Ios);
        dev.identity = Identity::self_signed(&dev.udid);
        s.enroll(&dev).await;
        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 200);
        // Never quietly: /readyz says so.
        let ready = s.get("/readyz").await.text();
        assert!(ready.contains("identity.accept_any_issuer"), "{ready}");
        s.stop().await;
    })
    .await;
}

/// A refusal tells a stranger neither whether a UDID is enrolled nor what it is bound to.
#[tokio::test]
async fn refusals_disclose_nothing_stored() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let stranger = Device::new(Platform::Ios);
        let mut impostor = dev.clone();
        impostor.identity = stranger.identity.clone();
        let unknown = refused(&s, 403, s.connect(&stranger, stranger.idle(None))).await;
        let known = refused(&s, 403, s.connect(&impostor, impostor.idle(None))).await;
        assert_eq!(
            unknown.text(),
            known.text(),
            "enrolled or not looks the same"
        );
        let mut swapped = dev.clone();
        swapped.serial = "WRONGSERIAL".into();
        let r = refused(&s, 403, s.checkin(&swapped, swapped.authenticate())).await;
        assert!(!r.text().contains(&dev.serial), "{}", r.text());
        assert_eq!(r.text(), REFUSED);
        s.stop().await;
    })
    .await;
}

/// A certificate's chain is verified once; later messages from it are checked against the remembered chain,
/// and repeated messages against the remembered signature. Both caches count in /metrics.
#[tokio::test]
async fn identity_caches_are_used_and_counted() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        for _ in 0..3 {
            assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 200);
        }
        let m = s
            .api(reqwest::Method::GET, "/metrics", None, None)
            .await
            .text();
        let count = |cache: &str, result: &str| -> u64 {
            let line = format!(
                "mdm_identity_cache_lookups_total{{cache=\"{cache}\",result=\"{result}\"}} "
            );
            m.lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("{line} missing:\n{m}"))
                .trim()
                .parse()
                .unwrap()
        };
        // Authenticate verified the chain; TokenUpdate and three Idles found it.
        assert_eq!(count("certificate", "miss"), 1);
        assert_eq!(count("certificate", "hit"), 4);
        // The second and third identical Idles are signature hits.
        assert_eq!(count("signature", "hit"), 2);
        assert_eq!(count("signature", "miss"), 3);
        s.stop().await;
    })
    .await;
}
