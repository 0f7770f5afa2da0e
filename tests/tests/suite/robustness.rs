//! Thousands of malformed requests against every device-facing endpoint: no 5xx, never 401, nothing stored,
//! and the server healthy afterwards.

use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, TestServer};
use std::io::{Read, Write};

/// A small deterministic generator (xorshift64*), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug)]
struct Case {
    method: reqwest::Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    signature: Option<String>,
}

const PATHS: [&str; 8] = [
    "/mdm/checkin",
    "/mdm/connect",
    "/mdm",
    "/scep?operation=PKIOperation",
    "/scep?operation=GetCACaps&message=x",
    "/enroll",
    "/enroll?token=nope",
    "/scep/pkiclient.exe?operation=PKIOperation",
];

const CONTENT_TYPES: [Option<&str>; 6] = [
    None,
    Some("application/x-apple-aspen-mdm-checkin"),
    Some("application/xml"),
    Some("application/x-pki-message"),
    Some("application/x-apple-aspen-mdm-checkin; charset=\"unterminated"),
    Some("multipart/form-data; boundary=x"),
];

fn mutate(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    match rng.below(6) {
        0 => b.truncate(rng.below(b.len().max(1))),
        1 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(b.len().max(1));
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            let i = rng.below(b.len().max(1));
            b.splice(i..i, std::iter::repeat_n(b'<', rng.below(64)));
        }
        3 => b = b.repeat(1 + rng.below(4)),
        4 => b = (0..rng.below(4096)).map(|_| rng.next() as u8).collect(),
        _ => b.clear(),
    }
    b
}

fn cases(dev: &Device, seed: u64, n: usize) -> Vec<Case> {
    let mut rng = Rng(seed);
    // Valid messages of a device the server does not know (Authenticate is never re-signed after a change,
    // so no mutation can enroll anything).
    let originals = [
        dev.authenticate(),
        dev.token_update(None),
        dev.idle(None),
        dev.report(None, "Acknowledged", "X", Default::default()),
        dev.checkout(),
        mdm_tests::ddm::request(&dev.udid, "tokens", None),
        mdm_tests::ddm::request(&dev.udid, "declaration/configuration/com.example.x", None),
        mdm_tests::ddm::request(
            &dev.udid,
            "status",
            Some(br#"{"StatusItems":{},"Errors":[]}"#.to_vec()),
        ),
    ];
    let methods = [
        reqwest::Method::PUT,
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ];
    (0..n)
        .map(|_| {
            let which = rng.below(originals.len());
            let original = &originals[which];
            let mut body = mutate(&mut rng, original);
            if body == *original {
                // A mutation can be a no-op (a repeat of one): the genuine message is not an attack.
                body.push(b'!');
            }
            let signature = match rng.below(4) {
                0 => None,
                // The signature of the original over a changed body.
                1 => Some(dev.sign(original)),
                // A valid signature over the mutated body (never for Authenticate).
                2 if which != 0 => Some(dev.sign(&body)),
                _ => Some(
                    String::from_utf8_lossy(&mutate(&mut rng, dev.sign(original).as_bytes()))
                        .replace(['\r', '\n', '\0'], ""),
                ),
            };
            let path = PATHS[rng.below(PATHS.len())];
            // Mostly the method the endpoint takes (so the handlers see the bodies), sometimes any.
            let method = if rng.below(10) < 7 {
                if path.starts_with("/mdm") {
                    reqwest::Method::PUT
                } else if path.contains("PKIOperation") {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::GET
                }
            } else {
                methods[rng.below(methods.len())].clone()
            };
            Case {
                method,
                path,
                content_type: CONTENT_TYPES[rng.below(CONTENT_TYPES.len())],
                body,
                signature,
            }
        })
        .collect()
}

async fn send(s: &TestServer, c: &Case) -> u16 {
    let mut req = s
        .http
        .request(c.method.clone(), format!("{}{}", s.base, c.path));
    if let Some(ct) = c.content_type {
        req = req.header("content-type", ct);
    }
    if let Some(sig) = &c.signature {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(sig) {
            req = req.header("Mdm-Signature", v);
        }
    }
    req.body(c.body.clone())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Raw HTTP/1.1 over TCP: what a client that lies about its body does. Returns the status line, if any.
fn raw(addr: &str, request: &[u8]) -> Option<String> {
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    conn.write_all(request).ok()?;
    // The client stops sending: the body ends early.
    conn.shutdown(std::net::Shutdown::Write).ok()?;
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .map(str::to_string)
}

#[tokio::test]
async fn mutated_requests_never_5xx_never_401_and_change_nothing() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        // A push certificate, so /enroll serves profiles (a 503 without one is deliberate).
        mdm_tests::enrollment::upload_push_cert(&s).await;
        // An enrolled device, so there is state to damage.
        let enrolled = Device::new(Platform::Ios);
        s.enroll(&enrolled).await;
        let before = s.snapshot().await;
        let stranger = Device::new(Platform::MacOs);
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for (i, c) in cases(&stranger, 0x5eed_0001, 2000).iter().enumerate() {
            let status = send(&s, c).await;
            assert!(
                status != 0 && status != 401 && status < 500,
                "case {i} answered {status}: {:?} {} ct={:?} body={} bytes",
                c.method,
                c.path,
                c.content_type,
                c.body.len()
            );
            *statuses.entry(status).or_default() += 1;
        }
        // The enrolled device's own messages, mutated without re-signing: refused, nothing changes.
        for (i, c) in cases(&enrolled, 0x5eed_0002, 500).iter().enumerate() {
            if c.signature.as_deref().is_some_and(|sig| *sig == enrolled.sign(&c.body)) {
                continue; // a genuinely signed message of the device: not an attack
            }
            let status = send(&s, c).await;
            assert!(status != 0 && status != 401 && status < 500, "enrolled case {i}: {status}");
        }

        // Oversized bodies and headers.
        let huge = vec![b'a'; s.config.max_body_bytes + 1];
        let r = s
            .http
            .put(format!("{}/mdm/connect", s.base))
            .body(huge)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        let r = s
            .http
            .put(format!("{}/mdm/checkin", s.base))
            .header("X-Padding", "p".repeat(64 * 1024))
            .body(stranger.idle(None))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(431);
        assert!(r == 431 || r == 400 || r == 413, "huge header: {r}");

        // Bodies shorter than declared, headers cut off, garbage instead of HTTP.
        let addr = s.base.trim_start_matches("http://").to_string();
        let idle = stranger.idle(None);
        let requests: Vec<Vec<u8>> = vec![
            [
                format!("PUT /mdm/connect HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nMdm-Signature: {}\r\n\r\n", stranger.sign(&idle)).into_bytes(),
                idle[..idle.len() / 2].to_vec(),
            ]
            .concat(),
            b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nContent-Le".to_vec(),
            b"PUT /mdm/checkin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffff\r\nabc".to_vec(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http".to_vec(),
            b"GET /scep?operation=PKIOperation&message=%zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ];
        for r in requests {
            let a = addr.clone();
            let line = tokio::task::spawn_blocking(move || raw(&a, &r)).await.unwrap();
            if let Some(line) = line {
                assert!(
                    !line.contains(" 5") && !line.contains(" 401"),
                    "raw request answered {line}"
                );
            }
        }

        assert_eq!(before, s.snapshot().await, "malformed requests changed storage");
        assert_eq!(s.get("/healthz").await.status, 200);
        assert_eq!(s.get("/readyz").await.status, 200);
        // The enrolled device still works.
        let r = s.connect(&enrolled, enrolled.idle(None)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        println!("status mix: {statuses:?}");
        s.stop().await;
    })
    .await;
}
