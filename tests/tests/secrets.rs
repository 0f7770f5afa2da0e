//! Secrets (API keys, push and CA private keys, the sealing secret, enrollment tokens, SCEP challenges) never
//! appear in the server's logs, at any level, or in API output.

use mdm_server::config::ExposeSecret;
use mdm_tests::device::{Device, Platform, TOPIC};
use mdm_tests::enrollment::{open_profile, push_cert_at, ScepClient, Transport};
use mdm_tests::harness::{each_database, TestServer};
use openssl::symm::Cipher;
use serde_json::json;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the server logs in this process, at trace level.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .init();
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A distinctive slice of a PEM body (the middle of the base64), which any leak of the key would contain.
fn pem_fingerprint(pem: &str) -> String {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    body[body.len() / 2..body.len() / 2 + 40].to_string()
}

#[tokio::test]
async fn secrets_stay_out_of_logs_and_api_output() {
    let logs = captured();
    each_database(|db| {
        let logs = logs.clone();
        async move {
            let s = TestServer::start(db).await;
            let mut secrets: Vec<(String, String)> = vec![
                ("admin API key".into(), s.admin_key.clone()),
                (
                    "sealing secret".into(),
                    s.config
                        .push
                        .key_secret
                        .as_ref()
                        .unwrap()
                        .expose_secret()
                        .to_string(),
                ),
            ];
            let (cert, key) = push_cert_at(Some(TOPIC), s.clock_now() / 1000, 365);
            secrets.push(("push private key".into(), pem_fingerprint(&key)));
            let r = s
                .post(
                    "/api/v1/push-certs",
                    json!({"cert_pem": cert, "key_pem": key}),
                )
                .await;
            assert_eq!(r.status, 201);
            // A wrong key, a key created through the API, a token, a challenge, a profile, an enrollment.
            let wrong = s
                .api(
                    reqwest::Method::GET,
                    "/api/v1/devices",
                    Some("mdm_wrong_key_value_123"),
                    None,
                )
                .await;
            assert_eq!(wrong.status, 401);
            secrets.push(("wrong API key".into(), "mdm_wrong_key_value_123".into()));
            let created = s
                .post(
                    "/api/v1/api-keys",
                    json!({"name": "ops", "scopes": ["devices:read"]}),
                )
                .await
                .json();
            secrets.push((
                "created API key".into(),
                created["key"].as_str().unwrap().into(),
            ));
            let token = s.post("/api/v1/enrollment-tokens", json!({})).await.json();
            secrets.push((
                "enrollment token".into(),
                token["token"].as_str().unwrap().into(),
            ));
            let ca_key = s.state.scep.ca().key.private_key_to_pem_pkcs8().unwrap();
            secrets.push((
                "CA private key".into(),
                pem_fingerprint(&String::from_utf8(ca_key).unwrap()),
            ));
            let client = ScepClient {
                url: format!("{}/scep", s.base),
                http: s.http.clone(),
            };
            let ca = client.ca_cert().await;
            let profile = s
                .http
                .get(format!("{}/enroll", s.base))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let challenge = open_profile(&profile, &ca).unwrap().challenge();
            secrets.push(("SCEP challenge".into(), challenge.clone()));
            let (rep, identity) = client
                .enroll(
                    &ca,
                    Some(&challenge),
                    Cipher::aes_128_cbc(),
                    Transport::Post,
                )
                .await;
            assert_eq!(rep.pki_status, 0);
            let identity = identity.unwrap();
            secrets.push((
                "device private key".into(),
                pem_fingerprint(
                    &String::from_utf8(identity.key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
                ),
            ));
            let mut dev = Device::new(Platform::Ios);
            dev.identity = identity;
            s.enroll(&dev).await;

            // What the API shows.
            let mut shown = String::new();
            for path in [
                "/api/v1/push-certs",
                "/api/v1/api-keys",
                "/api/v1/enrollment-tokens?all=true",
                "/api/v1/identity-certificates",
                &format!("/api/v1/devices/{}", dev.udid),
                "/api/openapi.json",
                "/metrics",
            ] {
                shown.push_str(&s.get(path).await.text());
            }
            let audit = s.audit_chain().await;
            let audit = format!("{audit:?}");
            let logs = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
            assert!(logs.len() > 1000, "the logs were captured");
            for (what, secret) in &secrets {
                assert!(!logs.contains(secret.as_str()), "the {what} is in the logs");
                assert!(
                    !shown.contains(secret.as_str()),
                    "the {what} is in API output"
                );
                assert!(
                    !audit.contains(secret.as_str()),
                    "the {what} is in the audit log"
                );
            }
            assert!(!logs.contains("PRIVATE KEY"));
            s.stop().await;
        }
    })
    .await;
}
