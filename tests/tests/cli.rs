//! The `mdm-server` process as an operator runs it: what it logs (one line for the migrations it
//! applied, not the migrator's line per step on every command; an access line for every admin request and
//! every refusal; fields as themselves), and the command line's overrides.

use mdm_tests::device::{Device, Platform};
use mdm_tests::process::ServerProcess;
use std::path::Path;
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mdm-server-under-test"))
}

#[tokio::test]
async fn migrations_are_one_line_and_requests_leave_an_access_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let info = ("MDM_LOG__FILTER", "info".to_string());
    let mut server = ServerProcess::spawn("server", bin(), &data, &[info])
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let refused = http
        .get(format!("{}/api/v1/devices", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let health = http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    // A device authenticates: its serial number is logged as itself, not as a Rust Option.
    let dev = Device::new(Platform::Ios);
    let body = dev.authenticate();
    let res = http
        .put(format!("{}/mdm/checkin", server.base))
        .header("Mdm-Signature", dev.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    server.stop();
    let log = server.log();
    assert_eq!(log.matches("database migrated").count(), 1, "{log}");
    assert!(
        log.contains("m0001_initial") && !log.contains("Applying migration"),
        "{log}"
    );
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" request") && l.contains("status="))
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("status=401") && l.contains("/api/v1/devices")),
        "{access:?}"
    );
    assert!(
        !access.iter().any(|l| l.contains("/healthz")),
        "a success outside the API is not logged at INFO: {access:?}"
    );

    let authenticated = log
        .lines()
        .find(|l| l.contains("device authenticated"))
        .expect("logged");
    assert!(
        authenticated.contains(&format!("serial={}", dev.serial))
            && !authenticated.contains("Some("),
        "{authenticated}"
    );

    // A command on the migrated database says nothing about migrations.
    let out = Command::new(bin())
        .args(["apikey", "list"])
        .env_remove("MDM_CONFIG")
        .env("MDM_DATA_DIR", &data)
        .env(
            "MDM_PUSH__KEY_SECRET",
            "process-test-secret-of-sufficient-length",
        )
        .env("MDM_LOG__FILTER", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("migrat"), "{stderr}");
}

/// `--data-dir` places the database where it says, whatever the configuration holds, for every command.
#[test]
fn the_data_dir_can_be_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let given = dir.path().join("given");
    let configured = dir.path().join("configured");
    let run = |args: &[&str]| {
        Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(&given)
            .env_remove("MDM_CONFIG")
            .env("MDM_DATA_DIR", &configured)
            .env(
                "MDM_PUSH__KEY_SECRET",
                "process-test-secret-of-sufficient-length",
            )
            .output()
            .unwrap()
    };
    let created = run(&["apikey", "create", "--name", "ci", "--scope", "admin"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = run(&["apikey", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("ci"),
        "the same database"
    );
    assert!(
        given.join("mdm.db").exists(),
        "{:?}",
        std::fs::read_dir(&given).map(|d| d.count())
    );
    assert!(!configured.exists(), "the configured data_dir was not used");
    let printed = run(&["config"]);
    assert!(String::from_utf8_lossy(&printed.stdout).contains(&given.display().to_string()));
}
