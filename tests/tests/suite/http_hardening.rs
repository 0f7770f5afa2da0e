//! What an outside attacker reaches without credentials: slow bodies and many connections, anonymous
//! enrollment downloads, and request headers that claim to say where the server is or who the client is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mdm_server::config::TrustedProxies;
use mdm_server::storage::entities::one_time_secret;
use mdm_tests::device::{Device, Platform};
use mdm_tests::enrollment::{open_profile, upload_push_cert, Profile, ScepClient};
use mdm_tests::harness::{each_database, TestServer};
use openssl::x509::X509;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ca(s: &TestServer) -> X509 {
    ScepClient {
        url: format!("{}/scep", s.base),
        http: s.http.clone(),
    }
    .ca_cert()
    .await
}

/// GET `/enroll` with extra headers: status, Retry-After, body.
async fn enroll_with(s: &TestServer, headers: &[(&str, &str)]) -> (u16, Option<String>, Vec<u8>) {
    let mut req = s.http.get(format!("{}/enroll", s.base));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        r.status().as_u16(),
        retry,
        r.bytes().await.unwrap().to_vec(),
    )
}

fn assert_points_at(p: &Profile, base: &str) {
    assert_eq!(
        p.mdm["ServerURL"].as_string().unwrap(),
        format!("{base}/mdm/connect")
    );
    assert_eq!(
        p.mdm["CheckInURL"].as_string().unwrap(),
        format!("{base}/mdm/checkin")
    );
    assert_eq!(p.scep_url(), format!("{base}/scep"));
}

const SPOOFS: &[&[(&str, &str)]] = &[
    &[("Host", "evil.example")],
    &[
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
    ],
    &[("Forwarded", "for=203.0.113.9;host=evil.example;proto=https")],
];

/// The URLs in a signed profile and in an enrollment link are the server's own whatever the request's
/// `Host`, `X-Forwarded-Host` or `Forwarded` say: the listen address on a loopback development server, the
/// configured `enroll.public_url` otherwise, even from a trusted proxy.
#[tokio::test]
async fn signed_profiles_never_take_urls_from_request_headers() {
    each_database(|db| async move {
        let s = TestServer::start(db).await;
        upload_push_cert(&s).await;
        let ca = ca(&s).await;
        for headers in SPOOFS {
            let (status, _, body) = enroll_with(&s, headers).await;
            assert_eq!(
                status,
                200,
                "{headers:?}: {}",
                String::from_utf8_lossy(&body)
            );
            assert_points_at(&open_profile(&body, &ca).unwrap(), &s.base);
        }
        let r = s
            .http
            .post(format!("{}/api/v1/enrollment-tokens", s.base))
            .bearer_auth(&s.admin_key)
            .header("Host", "evil.example")
            .header("X-Forwarded-Host", "evil.example")
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let link = r.json::<serde_json::Value>().await.unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            link.starts_with(&format!("{}/enroll?token=", s.base)),
            "{link}"
        );
        s.stop().await;
    })
    .await;

    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.enroll.public_url = Some("https://mdm.example.test/".into());
            c.http.trusted_proxies = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        })
        .await;
        upload_push_cert(&s).await;
        let ca = ca(&s).await;
        for headers in SPOOFS {
            let (status, _, body) = enroll_with(&s, headers).await;
            assert_eq!(status, 200);
            assert_points_at(
                &open_profile(&body, &ca).unwrap(),
                "https://mdm.example.test",
            );
        }
        s.stop().await;
    })
    .await;
}

/// Forwarding headers say who the client is only when a trusted proxy sends them: the per-client limit on
/// anonymous downloads counts a stranger's `X-Forwarded-For` as the stranger itself, and a trusted proxy's
/// as the client it names.
#[tokio::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy() {
    for trusted in [
        vec![],
        vec!["192.0.2.1".to_string()],
        vec!["127.0.0.1".to_string()],
    ] {
        each_database(|db| {
            let trusted = trusted.clone();
            async move {
                let believed = trusted.contains(&"127.0.0.1".to_string());
                let s = TestServer::start_with(db, |c| {
                    c.enroll.anonymous_per_client_per_minute = 2;
                    c.http.trusted_proxies = TrustedProxies::parse(&trusted).unwrap();
                })
                .await;
                upload_push_cert(&s).await;
                let statuses = {
                    let mut v = Vec::new();
                    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
                        let (status, retry, _) =
                            enroll_with(&s, &[("X-Forwarded-For", client)]).await;
                        if status == 429 {
                            assert!(retry.unwrap().parse::<u64>().unwrap() >= 1);
                        }
                        v.push(status);
                    }
                    v
                };
                if believed {
                    assert_eq!(statuses, [200, 200, 200]);
                    // The same forwarded client is limited.
                    let same = [("Forwarded", "for=203.0.113.1")];
                    assert_eq!(enroll_with(&s, &same).await.0, 200);
                    assert_eq!(enroll_with(&s, &same).await.0, 429);
                } else {
                    assert_eq!(
                        statuses,
                        [200, 200, 429],
                        "trusted: {:?}",
                        s.config.http.trusted_proxies
                    );
                }
                s.stop().await;
            }
        })
        .await;
    }
}

/// `identity.proxy_cert_header` from a peer that is not a configured trusted proxy is ignored: a stranger
/// connecting directly cannot name any certificate it likes. Without another identity the message is
/// refused as today (400), and nothing is stored.
#[tokio::test]
async fn the_proxy_certificate_header_counts_only_from_a_trusted_proxy() {
    for (trusted, expected) in [("192.0.2.1", 400), ("127.0.0.1", 200)] {
        each_database(|db| async move {
            let s = TestServer::start_with(db, |c| {
                c.identity.proxy_cert_header = Some("X-Client-Cert".into());
                c.http.trusted_proxies = TrustedProxies::parse(&[trusted.into()]).unwrap();
            })
            .await;
            let dev = Device::new(Platform::MacOs);
            let header = format!(":{}:", STANDARD.encode(dev.identity.cert.to_der().unwrap()));
            let before = s.snapshot().await;
            let r = s
                .put(
                    "/mdm/checkin",
                    dev.authenticate(),
                    &[("X-Client-Cert", header)],
                )
                .await;
            assert_eq!(r.status, expected, "trusted {trusted}: {}", r.text());
            if expected != 200 {
                assert_eq!(
                    before,
                    s.snapshot().await,
                    "a refused request changed storage"
                );
            }
            s.stop().await;
        })
        .await;
    }
}

/// A server reachable from other hosts refuses to start without the settings that keep it safe, naming
/// each; on loopback it starts and `/readyz` warns.
#[tokio::test]
async fn a_reachable_server_needs_production_settings_and_a_development_one_warns() {
    let dir = tempfile::tempdir().unwrap();
    let config = mdm_server::Config {
        listen: "0.0.0.0:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let err = match mdm_server::Application::build(config.clone()).await {
        Ok(_) => panic!("started on 0.0.0.0 without enroll.public_url or push.key_secret"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("enroll.public_url"), "{err}");
    assert!(err.contains("push.key_secret"), "{err}");
    // It refused before writing anything (no generated sealing secret left behind).
    assert!(!dir.path().join("push-seal.key").exists());

    each_database(|db| async move {
        let s = TestServer::start(db).await;
        let r = s.get("/readyz").await;
        assert_eq!(r.status, 200);
        let warnings = r.json()["warnings"].to_string();
        assert!(warnings.contains("enroll.public_url"), "{warnings}");
        s.stop().await;
    })
    .await;
}

async fn challenges(s: &TestServer, unused_only: bool) -> u64 {
    let mut q =
        one_time_secret::Entity::find().filter(one_time_secret::Column::Kind.eq("challenge"));
    if unused_only {
        q = q.filter(one_time_secret::Column::UsedAt.is_null());
    }
    q.count(mdm_server::storage::testing::db(&s.storage))
        .await
        .unwrap()
}

/// Anonymous downloads do not grow the challenge table past `enroll.max_anonymous_challenges`: beyond it a
/// 503 with `Retry-After`, until challenges expire; a token's download is not held back; expired unused
/// challenges are deleted by the production housekeeping round (not only after retention).
#[tokio::test]
async fn anonymous_enrollments_are_bounded_and_expired_challenges_purged() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.enroll.max_anonymous_challenges = 5;
            c.enroll.anonymous_per_client_per_minute = 0;
        })
        .await;
        upload_push_cert(&s).await;
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let (status, retry, _) = enroll_with(&s, &[]).await;
            if status == 503 {
                let retry: u64 = retry.expect("Retry-After").parse().unwrap();
                assert!((1..=600).contains(&retry), "{retry}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [[200; 5].as_slice(), &[503; 7]].concat());
        assert_eq!(challenges(&s, false).await, 5);

        // An admin's token still enrolls.
        let r = s
            .post("/api/v1/enrollment-tokens", serde_json::json!({}))
            .await;
        assert_eq!(r.status, 201);
        let token = r.json()["token"].as_str().unwrap().to_string();
        let r = s
            .http
            .get(format!("{}/enroll?token={token}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);

        // Once they expire, they make room again: the refused download's purge, then housekeeping.
        s.clock
            .advance_ms(s.config.scep.challenge_ttl_secs as i64 * 1000 + 1);
        assert_eq!(enroll_with(&s, &[]).await.0, 200);
        // The token's challenge had expired too; only the new one is left unused.
        assert_eq!(challenges(&s, true).await, 1);
        s.clock
            .advance_ms(s.config.scep.challenge_ttl_secs as i64 * 1000 + 1);
        let round = mdm_server::storage::housekeeping::run(
            &s.storage,
            s.clock_now(),
            s.config.retention_days,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(round.expired_challenges, 1);
        assert_eq!(challenges(&s, false).await, 0);
        s.stop().await;
    })
    .await;
}

/// How one slow client's connection ended: the status line's code, or 0 if closed without an answer.
async fn slow_client(server: std::net::SocketAddr, from: std::net::IpAddr) -> (u16, Duration) {
    let started = Instant::now();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((from, 0).into()).unwrap();
    let mut conn = sock.connect(server).await.unwrap();
    conn.write_all(b"PUT /mdm/connect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            n = conn.read(&mut buf) => {
                let n = n.unwrap_or(0);
                let code = std::str::from_utf8(&buf[..n])
                    .ok()
                    .and_then(|t| t.split(' ').nth(1))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return (code, started.elapsed());
            }
            _ = tick.tick() => {
                // One byte now and then: never finishing, never idle.
                if conn.write_all(b"a").await.is_err() {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    let code = std::str::from_utf8(&buf[..n]).ok()
                        .and_then(|t| t.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
                    return (code, started.elapsed());
                }
            }
        }
    }
}

/// Clients that declare a large body and send a byte now and then do not take the server from devices:
/// with 300 of them open (from another loopback address), `/healthz` and a device's Idle are answered; the
/// connections beyond `http.max_connections_per_peer` are refused at once (429), and the rest are ended at
/// `http.body_timeout_secs` (408). Loopback only; bounded in count and time.
#[tokio::test]
async fn the_server_keeps_serving_devices_while_slow_clients_hold_connections() {
    each_database(|db| async move {
        let s = TestServer::start_with(db, |c| {
            c.http.body_timeout_secs = 3;
            c.http.max_connections_per_peer = 100;
        })
        .await;
        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let server: std::net::SocketAddr = s.base.trim_start_matches("http://").parse().unwrap();
        let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let slow: Vec<_> = (0..300)
            .map(|_| tokio::spawn(slow_client(server, attacker)))
            .collect();
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            s.http.get(format!("{}/healthz", s.base)).send(),
        )
        .await
        .expect("healthz answered in time")
        .unwrap();
        assert_eq!(r.status(), 200);
        let r = tokio::time::timeout(Duration::from_secs(10), s.connect(&dev, dev.idle(None)))
            .await
            .expect("Idle answered in time");
        assert_eq!(r.status, 200, "{}", r.text());
        eprintln!(
            "healthz and Idle in {:?} with slow clients open",
            t.elapsed()
        );

        let mut codes = std::collections::BTreeMap::<u16, usize>::new();
        for h in slow {
            let (code, took) = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("every slow connection is ended by the server")
                .unwrap();
            if code == 408 {
                assert!(took >= Duration::from_secs(2), "408 after {took:?}");
            }
            *codes.entry(code).or_default() += 1;
        }
        eprintln!("slow clients ended with {codes:?}");
        assert!(codes.get(&429).copied().unwrap_or(0) >= 150, "{codes:?}");
        assert!(codes.get(&408).copied().unwrap_or(0) >= 50, "{codes:?}");
        assert!(
            codes.keys().all(|c| *c == 408 || *c == 429 || *c == 0),
            "{codes:?}"
        );
        // Still serving afterwards.
        assert_eq!(s.connect(&dev, dev.idle(None)).await.status, 200);
        s.stop().await;
    })
    .await;
}
