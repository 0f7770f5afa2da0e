//! Interop with a third-party SCEP client: Debian's `scepclient` (micromdm/scep) enrolls against our CA.
//! `.ci/run` installs it (package `scep`); elsewhere the test skips, saying so.

use mdm_tests::enrollment::ScepClient;
use mdm_tests::harness::{each_database, TestServer};
use openssl::x509::X509;
use serde_json::json;
use std::process::Command;

fn scepclient() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("scepclient"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        println!("skipping: scepclient not installed (apt-get install scep)");
    }
    found
}

/// Run scepclient with a challenge; returns (exit ok, its output, the certificate if written).
async fn run(
    bin: &std::path::Path,
    url: String,
    challenge: String,
) -> (bool, String, Option<X509>) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client.key");
    let cert = dir.path().join("client.pem");
    let (k, c) = (key.clone(), cert.clone());
    let bin = bin.to_owned();
    // A blocking child process: off the async runtime's threads.
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("-server-url")
            .arg(url)
            .arg("-challenge")
            .arg(challenge)
            .arg("-private-key")
            .arg(&k)
            .arg("-certificate")
            .arg(&c)
            .arg("-cn")
            .arg("interop-device")
            .arg("-debug")
            .output()
            .expect("scepclient runs")
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let issued = std::fs::read(&cert)
        .ok()
        .and_then(|pem| X509::from_pem(&pem).ok());
    (out.status.success(), text, issued)
}

#[tokio::test]
async fn scepclient_enrolls_against_our_ca() {
    let Some(bin) = scepclient() else {
        return;
    };
    each_database(|db| {
        let bin = bin.clone();
        async move {
            let s = TestServer::start(db).await;
            let url = format!("{}/scep", s.base);
            let ca = ScepClient {
                url: url.clone(),
                http: s.http.clone(),
            }
            .ca_cert()
            .await;

            let r = s.post("/api/v1/scep-challenges", json!({})).await;
            assert_eq!(r.status, 201, "{}", r.text());
            let challenge = r.json()["challenge"].as_str().unwrap().to_string();
            let (ok, out, cert) = run(&bin, url.clone(), challenge).await;
            assert!(ok, "scepclient failed:\n{out}");
            let cert = cert.unwrap_or_else(|| panic!("no certificate written:\n{out}"));
            assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
            let cn = cert
                .subject_name()
                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                .next()
                .unwrap()
                .data()
                .to_string();
            assert_eq!(cn.unwrap(), "interop-device");
            let eku = cert.to_text().unwrap();
            assert!(String::from_utf8_lossy(&eku).contains("TLS Web Client Authentication"));
            let listed = s.get("/api/v1/identity-certificates").await.json();
            assert_eq!(listed.as_array().unwrap().len(), 1);

            // A wrong challenge: scepclient is told no, and nothing more is issued.
            let (ok, out, cert) = run(&bin, url, "wrong".into()).await;
            assert!(!ok || cert.is_none(), "issued on a wrong challenge:\n{out}");
            let listed = s.get("/api/v1/identity-certificates").await.json();
            assert_eq!(listed.as_array().unwrap().len(), 1);
            s.stop().await;
        }
    })
    .await;
}
