//! Policies and their versions end to end, on SQLite and PostgreSQL: a CI job packs a folder into a signed
//! bundle and uploads it; the server checks it whole (form, declarations, signature against its trusted
//! signers), stores it once and never changes it — the database refuses an update, and if that refusal
//! were removed the recomputed digest would expose the change.

use mdm_server::apikeys::Scope;
use mdm_server::policies::pack;
use mdm_tests::device::{Device, Platform};
use mdm_tests::harness::{each_database, Resp, TestServer};
use mdm_tests::policy::folder;
use openssl::pkey::PKey;
use reqwest::Method;
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};

fn ok(r: Resp, status: u16, what: &str) -> Value {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    r.json()
}

/// A zip of these files, made without `policy pack`'s checks.
fn hand_zip(files: &[(&str, String)]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in files {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(text.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn bundle(version: &str, minimum_length: i64, key: Option<&[u8]>) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    folder(dir.path(), version, minimum_length, true);
    let packed = pack::pack(dir.path(), key).unwrap();
    (packed.zip, packed.bundle.digest)
}

async fn upload(s: &TestServer, policy: i64, zip: Vec<u8>, key: &str) -> Resp {
    let res = s
        .http
        .post(format!("{}/api/v1/policies/{policy}/versions", s.base))
        .bearer_auth(key)
        .header("Content-Type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.bytes().await.unwrap().to_vec();
    Resp { status, body }
}

#[tokio::test]
async fn versions_are_checked_whole_stored_once_and_never_changed() {
    each_database(|db| async move {
        let keys = tempfile::tempdir().unwrap();
        let trusted = PKey::generate_ed25519().unwrap();
        let signer_file = keys.path().join("ci.pem");
        std::fs::write(&signer_file, trusted.public_key_to_pem().unwrap()).unwrap();
        let signer = signer_file.clone();
        let s = TestServer::start_with(db, move |c| c.policies.trusted_signers = vec![signer]).await;
        let private = trusted.private_key_to_pem_pkcs8().unwrap();
        let stranger = PKey::generate_ed25519().unwrap().private_key_to_pem_pkcs8().unwrap();

        let dev = Device::new(Platform::Ios);
        s.enroll(&dev).await;
        let group = ok(
            s.post("/api/v1/groups", json!({"name": "fleet", "devices": [dev.udid]})).await,
            201,
            "group",
        )["id"]
            .as_i64()
            .unwrap();
        let writer = s.key(&[Scope::PoliciesWrite, Scope::DevicesRead]).await;
        let reader = s.key(&[Scope::DevicesRead]).await;
        let created = s
            .api(Method::POST, "/api/v1/policies", Some(&writer),
                 Some(json!({"name": "baseline", "target_group": group})))
            .await;
        let policy = ok(created, 201, "policy")["id"].as_i64().unwrap();

        // A signed bundle: stored, its digest the one the pack tool computed.
        let (zip, digest) = bundle("2026.05", 6, Some(&private));
        let up = ok(upload(&s, policy, zip.clone(), &writer).await, 201, "upload");
        assert_eq!(up["version"], "2026.05");
        assert_eq!(up["sha256"], digest.as_str());
        assert_eq!(up["signer"], signer_file.display().to_string());
        assert_eq!(up["created"], true);
        // The same bundle again: what is stored, nothing written.
        let again = ok(upload(&s, policy, zip, &writer).await, 200, "again");
        assert_eq!((again["created"].clone(), again["sha256"].clone()), (json!(false), json!(digest)));

        // Refused, each with why, and nothing stored.
        let before = s.snapshot().await;
        let (other_content, _) = bundle("2026.05", 8, Some(&private));
        let r = upload(&s, policy, other_content, &writer).await;
        assert_eq!(r.status, 409, "{}", r.text());
        let (unsigned, _) = bundle("2026.06", 8, None);
        let r = upload(&s, policy, unsigned, &writer).await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("not signed"), "{}", r.text());
        let (forged, _) = bundle("2026.06", 8, Some(&stranger));
        let r = upload(&s, policy, forged, &writer).await;
        assert_eq!(r.status, 400);
        assert!(r.text().contains("does not verify"), "{}", r.text());
        let r = upload(&s, policy, b"not a zip".to_vec(), &writer).await;
        assert_eq!(r.status, 400);
        // A profile no device could install (not a Configuration dictionary) is refused at upload.
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), "2026.07", 6, true);
        std::fs::write(dir.path().join("profiles/wifi.mobileconfig"), "<plist/>").unwrap();
        let bad_profile = pack::pack(dir.path(), Some(&private)).map(|p| p.zip);
        let e = bad_profile.expect_err("pack checks the bundle too").to_string();
        assert!(e.contains("profiles/wifi.mobileconfig"), "{e}");
        // A bundle built by another tool: the server refuses it the same way, naming the file and why
        // (a profile whose payloads no one platform installs: a Mac-only one beside an iOS-only one).
        let mixed = mdm_tests::policy::PROFILE
            .replace("com.apple.wifi.managed", "com.apple.systempolicy.control")
            .replace(
                "</array></dict></plist>",
                "<dict><key>PayloadType</key><string>com.apple.app.lock</string><key>PayloadIdentifier</key>\
                 <string>com.example.lock</string></dict></array></dict></plist>",
            );
        let manifest = json!({"version": "2026.07", "profiles": ["profiles/mixed.mobileconfig"]});
        let zip = hand_zip(&[("policy.json", manifest.to_string()), ("profiles/mixed.mobileconfig", mixed)]);
        let r = upload(&s, policy, zip, &writer).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("profiles/mixed.mobileconfig") && r.text().contains("no platform installs"), "{}", r.text());
        let (signed, _) = bundle("2026.06", 8, Some(&private));
        assert_eq!(upload(&s, policy, signed.clone(), &reader).await.status, 403);
        assert_eq!(upload(&s, 9_999, signed.clone(), &writer).await.status, 404);
        let r = s.api(Method::POST, "/api/v1/policies/0/versions", Some(&writer), None).await;
        assert_eq!(r.status, 400);
        let r = s
            .api(Method::POST, "/api/v1/policies", Some(&writer),
                 Some(json!({"name": "x", "target_group": 9_999})))
            .await;
        assert_eq!(r.status, 400, "an unknown group: {}", r.text());
        let r = s
            .api(Method::POST, "/api/v1/policies", Some(&writer),
                 Some(json!({"name": "baseline", "target_group": group})))
            .await;
        assert_eq!(r.status, 409, "a taken name");
        assert_eq!(s.snapshot().await, before, "refused requests changed nothing");

        // Reads: the list, one version with its manifest; the target group may not be deleted.
        let later = ok(upload(&s, policy, signed, &writer).await, 201, "a second version");
        let listed = ok(s.get(&format!("/api/v1/policies/{policy}/versions")).await, 200, "list");
        let labels: Vec<&str> = listed.as_array().unwrap().iter().map(|v| v["version"].as_str().unwrap()).collect();
        assert_eq!(labels, ["2026.06", "2026.05"], "newest first");
        let one = ok(s.get(&format!("/api/v1/policies/{policy}/versions/2026.05")).await, 200, "version");
        assert_eq!(one["manifest"]["declarations"], json!(["declarations/passcode.json", "declarations/activation.json"]));
        assert_eq!(one["sha256"], digest.as_str());
        assert_eq!(one["profiles"][0]["identifier"], "com.example.wifi", "{one}");
        assert_eq!(one["profiles"][0]["payload_types"], json!(["com.apple.wifi.managed"]));
        assert_eq!(one["profiles"][0]["platforms"], json!(["iOS", "macOS", "tvOS", "visionOS", "watchOS"]));
        assert_eq!(s.get(&format!("/api/v1/policies/{policy}/versions/nope")).await.status, 404);
        assert_eq!(s.get(&format!("/api/v1/policies/{policy}/versions/a%20b")).await.status, 400);
        let all = ok(s.get("/api/v1/policies").await, 200, "policies");
        assert_eq!(all["policies"][0]["target_group"], group);
        let r = s.delete(&format!("/api/v1/groups/{group}")).await;
        assert_eq!(r.status, 409, "a policy's target group stays: {}", r.text());

        // The database refuses to change or delete a version.
        let db = mdm_server::storage::testing::db(&s.storage);
        for sql in [
            "UPDATE policy_versions SET sha256 = 'x'",
            "DELETE FROM policy_versions",
        ] {
            let refused = db.execute_unprepared(sql).await;
            let e = refused.expect_err(sql).to_string();
            assert!(e.contains("policy versions are immutable"), "{sql}: {e}");
        }
        // With the refusal removed, a changed bundle is caught by its digest: never served as the version.
        let drop = if s.storage.backend() == sea_orm::DbBackend::Postgres {
            "DROP TRIGGER policy_versions_immutable ON policy_versions"
        } else {
            "DROP TRIGGER policy_versions_no_update"
        };
        db.execute_unprepared(drop).await.unwrap();
        let later_sha = later["sha256"].as_str().unwrap();
        let swap = format!(
            "UPDATE policy_versions SET bundle = (SELECT bundle FROM policy_versions WHERE sha256 = '{later_sha}') \
             WHERE version = '2026.05'"
        );
        db.execute_unprepared(&swap).await.unwrap();
        let r = s.get(&format!("/api/v1/policies/{policy}/versions/2026.05")).await;
        assert_eq!(r.status, 500, "{}", r.text());

        let actions: Vec<String> = s.audit_chain().await.into_iter().map(|e| e.action).collect();
        assert!(actions.contains(&"policy.created".to_string()));
        assert_eq!(actions.iter().filter(|a| *a == "policy.version_uploaded").count(), 2);
        s.stop().await;
    })
    .await;
}

/// `mdm-server policy pack` and `policy verify`, as a CI job runs them: the digest printed is the
/// bundle's, a signer that did not sign it fails verification, and nothing needs a configuration or a
/// database.
#[test]
fn the_cli_packs_signs_and_verifies() {
    let bin = env!("CARGO_BIN_EXE_mdm-server-under-test");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("baseline");
    folder(&src, "2026.05", 6, true);
    let key = PKey::generate_ed25519().unwrap();
    let (private, public, other) = (
        dir.path().join("ci-key.pem"),
        dir.path().join("ci.pem"),
        dir.path().join("other.pem"),
    );
    std::fs::write(&private, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&public, key.public_key_to_pem().unwrap()).unwrap();
    let stranger = PKey::generate_ed25519().unwrap();
    std::fs::write(&other, stranger.public_key_to_pem().unwrap()).unwrap();
    let out = dir.path().join("baseline.zip");
    let run = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(bin)
            .args(args)
            // No configuration is read: a broken one in the environment does not matter.
            .env("MDM_CONFIG", dir.path().join("missing.toml"))
            .output()
            .unwrap()
    };
    let packed = run(&[
        "policy".as_ref(),
        "pack".as_ref(),
        src.as_os_str(),
        "--sign".as_ref(),
        private.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(
        packed.status.success(),
        "{}",
        String::from_utf8_lossy(&packed.stderr)
    );
    let digest = String::from_utf8(packed.stdout).unwrap().trim().to_string();
    let expected = mdm_server::policies::bundle::read(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(digest, expected.digest);

    let verified = run(&[
        "policy".as_ref(),
        "verify".as_ref(),
        out.as_os_str(),
        "--signer".as_ref(),
        public.as_os_str(),
    ]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(String::from_utf8(verified.stdout).unwrap().trim(), digest);
    let refused = run(&[
        "policy".as_ref(),
        "verify".as_ref(),
        out.as_os_str(),
        "--signer".as_ref(),
        other.as_os_str(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not verify"));
}

/// `config --check` reads the files start-up would: a trusted signer that holds no usable key fails it
/// naming the file, and turning signatures off is a warning.
#[test]
fn config_check_reads_the_trusted_signers() {
    let bin = env!("CARGO_BIN_EXE_mdm-server-under-test");
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("signer.pem");
    std::fs::write(&not_a_key, "not a key").unwrap();
    let check = |toml: String| {
        let file = dir.path().join("mdm.toml");
        std::fs::write(&file, toml).unwrap();
        std::process::Command::new(bin)
            .args(["config", "--check", "-c"])
            .arg(&file)
            .env("MDM_DATA_DIR", dir.path().join("data"))
            .output()
            .unwrap()
    };
    let bad = check(format!(
        "[policies]\ntrusted_signers = [{:?}]\n",
        not_a_key.display().to_string()
    ));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("signer.pem"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let off = check("[policies]\nrequire_signature = false\n".into());
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert!(String::from_utf8_lossy(&off.stdout).contains("policies.require_signature is off"));
}
