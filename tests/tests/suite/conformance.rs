//! Conformance with what real devices and peer servers send, read at run time from `../shared/testdata/peers`
//! (skipped with a message when absent, as in a user's fresh clone).

use mdm_server::protocol::{CheckinMessage, CheckinPayload, CommandReport, ReportStatus};
use mdm_tests::device::{Identity, ReceivedCommand};
use mdm_tests::harness::{each_database, TestServer};
use mdm_tests::shared::shared_path;
use std::path::PathBuf;

fn plists(dirs: &[&str]) -> Option<Vec<PathBuf>> {
    let root = shared_path("testdata/peers")?;
    let mut out = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(root.join(d)).expect("peer dir") {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "plist") {
                out.push(p);
            }
        }
    }
    out.sort();
    Some(out)
}

#[test]
fn every_real_message_decodes() {
    let Some(files) = plists(&["nanomdm/mdm", "micromdm/webhook-examples", "nanocmd"]) else {
        return;
    };
    let (mut checkins, mut reports) = (0, 0);
    for f in &files {
        let body = std::fs::read(f).unwrap();
        let dict = plist::Value::from_reader(std::io::Cursor::new(&body))
            .unwrap()
            .into_dictionary()
            .unwrap();
        if dict.contains_key("MessageType") {
            let m =
                CheckinMessage::decode(&body).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!(m.raw, body, "raw bytes kept");
            assert!(!m.enrollment.id.is_empty());
            if let CheckinPayload::TokenUpdate(t) = &m.payload {
                // Real tokens are 32 bytes; documentation samples are shortened, and the server accepts
                // any non-empty token rather than guess.
                assert!(!t.token.is_empty(), "{}", f.display());
            }
            checkins += 1;
        } else {
            let r = CommandReport::decode(&body).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_ne!(r.status, ReportStatus::Idle);
            if r.status == ReportStatus::Error {
                assert!(
                    !r.error_chain.is_empty(),
                    "{}: ErrorChain decoded",
                    f.display()
                );
            }
            reports += 1;
        }
    }
    assert!(
        checkins >= 7 && reports >= 8,
        "read {checkins} check-ins and {reports} reports"
    );
}

#[test]
fn ios_authenticate_without_device_name_or_model_decodes() {
    // Apple marks DeviceName and Model required, but this real iOS Authenticate has neither.
    let Some(root) = shared_path("testdata/peers") else {
        return;
    };
    let body = std::fs::read(root.join("nanomdm/mdm/Authenticate.1.plist")).unwrap();
    let m = CheckinMessage::decode(&body).unwrap();
    let CheckinPayload::Authenticate(a) = m.payload else {
        panic!("not Authenticate")
    };
    assert!(a.facts.device_name.is_none() && a.facts.model.is_none());
    assert_eq!(a.facts.product_name.as_deref(), Some("iPad2,5"));
    assert_eq!(m.enrollment.id.len(), 40, "old iOS 40-hex UDID");
    let t = CheckinMessage::decode(
        &std::fs::read(root.join("nanomdm/mdm/TokenUpdate.1.plist")).unwrap(),
    )
    .unwrap();
    let CheckinPayload::TokenUpdate(t) = t.payload else {
        panic!("not TokenUpdate")
    };
    assert_eq!(t.token.len(), 32, "a real APNs device token");
    assert_eq!(
        t.unlock_token.map(|u| u.len()),
        Some(1288),
        "real UnlockToken keybag"
    );
}

/// A real Mac's messages, byte for byte, through the running server.
#[tokio::test]
async fn real_macos_session_replays_through_the_server() {
    let Some(root) = shared_path("testdata/peers/micromdm/webhook-examples") else {
        return;
    };
    let read = |n: &str| std::fs::read(root.join(n)).unwrap();
    each_database(|db| {
        let (auth, token, ack, checkout) = (
            read("Authenticate.raw_payload.plist"),
            read("TokenUpdate.raw_payload.plist"),
            read("Connect.raw_payload.plist"),
            read("CheckOut.raw_payload.plist"),
        );
        async move {
            let s = TestServer::start(db).await;
            let id = Identity::generate("A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD");
            let udid = "A5EF1BA1-586D-4F29-B4F3-759DADAC2DDD";
            let send = async |path: &str, body: Vec<u8>| {
                let sig = id.sign(&body);
                s.put(path, body, &[("Mdm-Signature", sig)]).await
            };
            assert_eq!(send("/mdm/checkin", auth).await.status, 200);
            assert_eq!(send("/mdm/checkin", token).await.status, 200);
            let d = s.get(&format!("/api/v1/devices/{udid}")).await.json();
            assert_eq!(d["serial_number"], "C04W00D3HTD0");
            assert_eq!(d["platform"], "macOS");
            assert_eq!(d["os_version"], "10.13.6");
            assert_eq!(d["enabled"], true);

            // Queue the command the real report answers, under its real CommandUUID.
            let raw = r#"<plist version="1.0"><dict><key>CommandUUID</key><string>41d35de3-a343-4146-ba4b-0069bae2a54f</string><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict></dict></plist>"#;
            let r = s.post("/api/v1/commands", serde_json::json!({"ids": [udid], "raw_plist": raw})).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let idle = {
                let mut d = plist::Dictionary::new();
                d.insert("Status".into(), "Idle".into());
                d.insert("UDID".into(), udid.into());
                mdm_tests::device::xml(d)
            };
            let got = send("/mdm/connect", idle).await;
            assert_eq!(ReceivedCommand::parse(&got.body).unwrap().uuid, "41d35de3-a343-4146-ba4b-0069bae2a54f");
            assert_eq!(send("/mdm/connect", ack).await.status, 200);
            let st = s.get("/api/v1/commands/41d35de3-a343-4146-ba4b-0069bae2a54f").await.json();
            assert_eq!(st["deliveries"][0]["status"], "acknowledged");

            assert_eq!(send("/mdm/checkin", checkout).await.status, 200);
            assert_eq!(s.get(&format!("/api/v1/devices/{udid}")).await.json()["enabled"], false);
            s.stop().await;
        }
    })
    .await;
}
