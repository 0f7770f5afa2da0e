//! The attacks of the security report, end to end: binary plists that expand far beyond their size, and
//! identifiers that collide with another channel's id or are kilobytes long. Each is refused with a 400,
//! quickly, stores nothing, and the server goes on serving.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mdm_tests::device::{Device, Identity, Platform, User};
use mdm_tests::harness::{each_database, TestServer};
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use std::time::{Duration, Instant};

/// Far more than a refusal takes (milliseconds), far less than the expansion took (seconds, or the OOM
/// killer).
const QUICK: Duration = Duration::from_secs(5);

/// A binary plist dictionary `{UDID, MessageType: Authenticate, Status: Idle, CommandUUID, k: [s, s, …]}`
/// whose array holds `refs` references to one `len`-byte string: about 4 × `refs` + `len` bytes that
/// decode to `refs` × `len`.
fn bomb(udid: &str, refs: usize, len: usize) -> Vec<u8> {
    fn ascii(s: &[u8]) -> Vec<u8> {
        let mut o = marker(0x50, s.len());
        o.extend_from_slice(s);
        o
    }
    fn marker(kind: u8, len: usize) -> Vec<u8> {
        if len < 15 {
            vec![kind | len as u8]
        } else {
            let mut o = vec![kind | 0x0F, 0x12];
            o.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            o
        }
    }
    let mut objects = vec![
        ascii(b"UDID"),
        ascii(udid.as_bytes()),
        ascii(b"MessageType"),
        ascii(b"Authenticate"),
        ascii(b"Status"),
        ascii(b"Idle"),
        ascii(b"CommandUUID"),
        ascii(b"C-1"),
        ascii(b"k"),
        ascii(&vec![b'A'; len]),
    ];
    let mut array = marker(0xA0, refs);
    for _ in 0..refs {
        array.extend_from_slice(&9u32.to_be_bytes());
    }
    objects.push(array);
    let mut root = marker(0xD0, 5);
    for k in [0u32, 2, 4, 6, 8] {
        root.extend_from_slice(&k.to_be_bytes());
    }
    for v in [1u32, 3, 5, 7, 10] {
        root.extend_from_slice(&v.to_be_bytes());
    }
    objects.push(root);

    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for o in &objects {
        offsets.push(u32::try_from(out.len()).unwrap());
        out.extend_from_slice(o);
    }
    let table = out.len() as u64;
    for o in offsets {
        out.extend_from_slice(&o.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 4, 4]);
    out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
    out.extend_from_slice(&(objects.len() as u64 - 1).to_be_bytes());
    out.extend_from_slice(&table.to_be_bytes());
    out
}

/// Signed device information around `content`, as POST /enroll takes it (anyone can sign it).
fn signed_device_information(content: &[u8]) -> Vec<u8> {
    let signer = Identity::generate("Anyone");
    Pkcs7::sign(
        &signer.cert,
        &signer.key,
        &Stack::new().unwrap(),
        content,
        Pkcs7Flags::BINARY,
    )
    .and_then(|p| p.to_der())
    .unwrap()
}

/// A bare `Command` dictionary, as NanoMDM's enqueue takes it.
fn profile_list() -> Vec<u8> {
    let mut command = plist::Dictionary::new();
    command.insert("RequestType".into(), "ProfileList".into());
    let mut d = plist::Dictionary::new();
    d.insert("Command".into(), plist::Value::Dictionary(command));
    mdm_tests::device::xml(d)
}

/// Send and time a request; the status, body and how long it took.
async fn timed(req: reqwest::RequestBuilder) -> (u16, String, Duration) {
    let started = Instant::now();
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap_or_default();
    (status, body, started.elapsed())
}

fn assert_refused(what: &str, (status, body, took): (u16, String, Duration)) {
    assert_eq!(status, 400, "{what}: {body}");
    assert!(took < QUICK, "{what} took {took:?}");
}

#[tokio::test]
async fn expansion_bombs_are_refused_quickly_everywhere() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        mdm_tests::enrollment::upload_push_cert(&s).await;
        let enrolled = Device::new(Platform::Ios);
        s.enroll(&enrolled).await;
        let stranger = Device::new(Platform::MacOs);
        let before = s.snapshot().await;

        // 32768 references to one 4 KiB string: 132 KiB that decoded to 128 MiB.
        let device_bomb = |dev: &Device| bomb(&dev.udid, 32 * 1024, 4096);
        for (who, dev) in [("stranger", &stranger), ("enrolled", &enrolled)] {
            let body = device_bomb(dev);
            assert!(body.len() < 140 * 1024);
            for path in ["/mdm/checkin", "/mdm/connect"] {
                let req = s
                    .http
                    .put(format!("{}{path}", s.base))
                    .header("Mdm-Signature", dev.sign(&body))
                    .header("Content-Type", "application/x-apple-aspen-mdm-checkin")
                    .body(body.clone());
                assert_refused(&format!("{who} {path}"), timed(req).await);
            }
        }

        // The original report: four at once, each 512 KiB (131072 references to one 4 KiB string, 512 MiB
        // decoded), got the server OOM-killed.
        let big = bomb(&stranger.udid, 128 * 1024, 4096);
        assert!(big.len() > 512 * 1024 && big.len() < s.config.max_body_bytes);
        let sig = stranger.sign(&big);
        let four: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(timed(
                    s.http
                        .put(format!("{}/mdm/connect", s.base))
                        .header("Mdm-Signature", sig.clone())
                        .body(big.clone()),
                ))
            })
            .collect();
        for r in four {
            assert_refused("concurrent /mdm/connect", r.await.unwrap());
        }

        // POST /enroll takes no credentials: signed device information (within its 64 KiB) around a bomb
        // of 12288 references to one 4 KiB string, 48 MiB decoded.
        let info = signed_device_information(&bomb("00008030-001A2C3E0E38802E", 12 * 1024, 4096));
        assert!(info.len() < 64 * 1024);
        let req = s.http.post(format!("{}/enroll", s.base)).body(info.clone());
        assert_refused("POST /enroll", timed(req).await);
        let req = s
            .http
            .get(format!("{}/enroll", s.base))
            .header("x-apple-aspen-deviceinfo", STANDARD.encode(&info));
        assert_refused("GET /enroll with device information", timed(req).await);

        // The raw enqueue (an admin's key; the body is still outside input).
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("nanomdm:{}", s.admin_key))
        );
        let req = s
            .http
            .put(format!("{}/v1/enqueue/{}", s.base, enrolled.udid))
            .header("Authorization", basic)
            .body(device_bomb(&enrolled));
        assert_refused("PUT /v1/enqueue", timed(req).await);

        assert_eq!(before, s.snapshot().await, "a bomb changed storage");
        assert_eq!(s.get("/healthz").await.status, 200);
        let r = s.connect(&enrolled, enrolled.idle(None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn identifiers_that_collide_or_are_huge_are_refused() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        // Device V with a user U: the channel `V:U`.
        let victim = Device::new(Platform::MacOs);
        s.enroll(&victim).await;
        let user = User::new("alice");
        let r = s.checkin(&victim, victim.token_update(Some(&user))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let before = s.snapshot().await;

        // A device whose UDID is `V:U` would have had that channel's id; one with a 10 KB UDID was stored.
        let colliding = format!("{}:{}", victim.udid, user.user_id);
        let huge = "A".repeat(10 * 1024);
        for udid in [colliding.as_str(), huge.as_str(), "V\nU", "V U"] {
            let mut attacker = Device::new(Platform::MacOs);
            attacker.udid = udid.to_string();
            for (what, body) in [
                ("Authenticate", attacker.authenticate()),
                ("TokenUpdate", attacker.token_update(None)),
                ("Idle", attacker.idle(None)),
            ] {
                let r = if what == "Idle" {
                    s.connect(&attacker, body).await
                } else {
                    s.checkin(&attacker, body).await
                };
                let text = r.text();
                assert_eq!(r.status, 400, "{what} from {:.40?}: {text}", udid);
                assert!(text.contains("UDID"), "{text}");
                assert!(text.len() < 200, "the answer echoes the identifier: {} bytes", text.len());
            }
        }
        // A user channel whose UserID carries a second `:`.
        let mut sneaky = user.clone();
        sneaky.user_id = format!("{}:X", user.user_id);
        let r = s.checkin(&victim, victim.token_update(Some(&sneaky))).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("UserID"), "{}", r.text());

        // Admin input that names a channel is held to the same rules.
        for bad in ["a b", "V:U:W", "a/b", ""] {
            let r = s
                .post(
                    "/api/v1/commands",
                    serde_json::json!({"ids": [victim.udid.clone(), bad], "command": {"RequestType": "ProfileList"}}),
                )
                .await;
            assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
            assert!(r.text().contains("ids[1]"), "{}", r.text());
        }
        let long = "A".repeat(4096);
        for path in [
            format!("/api/v1/devices/{long}"),
            format!("/api/v1/enrollments/{long}/commands"),
            format!("/api/v1/commands/C-1/results/{long}"),
        ] {
            let r = s.get(&path).await;
            assert_eq!(r.status, 400, "{}", r.text());
            assert!(!r.text().contains(&long));
        }
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("nanomdm:{}", s.admin_key))
        );
        let r = s
            .http
            .put(format!("{}/v1/enqueue/{},a%20b", s.base, victim.udid))
            .header("Authorization", basic)
            .body(profile_list())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);

        assert_eq!(before, s.snapshot().await, "a refused identifier changed storage");
        // The real channels still work.
        let r = s.connect(&victim, victim.idle(Some(&user))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        s.stop().await;
    })
    .await;
}
