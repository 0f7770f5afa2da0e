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

/// The device's signed Authenticate to the server process; the HTTP status.
async fn authenticate(http: &reqwest::Client, server: &ServerProcess, dev: &Device) -> u16 {
    let body = dev.authenticate();
    let res = http
        .put(format!("{}/mdm/checkin", server.base))
        .header("Mdm-Signature", dev.sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    res.status().as_u16()
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
    assert_eq!(authenticate(&http, &server, &dev).await, 200);
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

/// `mdm-server plugin run`: a built plugin's hook on a device's message, with no server or database, as
/// a plugin author tries one.
#[test]
fn plugin_run_calls_a_hook_on_a_device_message_and_prints_what_came_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("plugin")
            .arg("run")
            .args(args)
            .output()
            .unwrap();
        let json = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok();
        (
            out.status.success(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    // decide-enrollment on an Authenticate: the allow-list's prefixes from the plugin's configuration.
    let allowlist = mdm_tests::plugins::build("serial-allowlist");
    let manifest = root.join("plugins/serial-allowlist/plugin.json");
    let dev = Device::new(Platform::Ios);
    let authenticate = file("authenticate.plist", &dev.authenticate());
    let config = file("config.json", br#"{"prefixes": ["NOPE"]}"#);
    let (ok, out, err) = run(&[
        allowlist.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--hook",
        "decide-enrollment",
        "--event",
        &authenticate,
        "--plugin-config",
        &config,
    ]);
    assert!(ok, "{err}");
    let out = out.expect("JSON");
    assert_eq!(out["answer"]["decision"], "deny", "{out}");
    assert_eq!(out["wit_version"], mdm_server::plugins::WIT_VERSION);
    // on-command-result on a NotNow report: a retry, and the attempt counted in the plugin's store.
    let retry = mdm_tests::plugins::build("retry-notnow");
    let manifest = root.join("plugins/retry-notnow/plugin.json");
    let report = file(
        "notnow.plist",
        &dev.report(None, "NotNow", "CMD-1", Default::default()),
    );
    let (ok, out, err) = run(&[
        retry.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--hook",
        "on-command-result",
        "--event",
        &report,
        "--request-type",
        "InstalledApplicationList",
    ]);
    assert!(ok, "{err}");
    let out = out.expect("JSON");
    assert_eq!(out["answer"][0]["kind"], "retry", "{out}");
    assert_eq!(out["answer"][0]["command_uuid"], "CMD-1");
    assert!(!out["kv"].as_object().unwrap().is_empty(), "{out}");
    // Mistakes are said plainly: no event, a hook that cannot run from a file, a report that is not one.
    let base = [
        retry.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let (ok, _, err) = run(&[&base[..], &["--hook", "on-command-result"]].concat());
    assert!(!ok && err.contains("needs --event"), "{err}");
    let (ok, _, err) = run(&[&base[..], &["--hook", "on-ddm-status"]].concat());
    assert!(!ok && err.contains("cannot run hook"), "{err}");
    let junk = file("junk.plist", b"not a plist");
    let (ok, _, err) = run(&[
        &base[..],
        &[
            "--hook",
            "on-command-result",
            "--event",
            &junk,
            "--request-type",
            "X",
        ],
    ]
    .concat());
    assert!(!ok && err.contains("the event file"), "{err}");
}

/// `plugins.watch_dir` (development): a plugin's config.json edited in the directory reaches the running
/// server, with no restart and no API call.
#[tokio::test]
async fn a_watched_plugins_directory_is_loaded_again_when_it_changes() {
    let plugins = tempfile::tempdir().unwrap();
    let sub = plugins.path().join("serial-allowlist");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::copy(
        mdm_tests::plugins::build("serial-allowlist"),
        sub.join("allowlist.wasm"),
    )
    .unwrap();
    let manifest = mdm_tests::plugins::manifest("serial-allowlist").to_string();
    std::fs::write(sub.join("plugin.json"), manifest).unwrap();
    std::fs::write(sub.join("config.json"), r#"{"prefixes": ["NOPE"]}"#).unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("MDM_PLUGINS__DIR", plugins.path().display().to_string()),
        ("MDM_PLUGINS__WATCH_DIR", "true".to_string()),
        ("MDM_PLUGINS__RELOAD_INTERVAL_SECS", "1".to_string()),
    ];
    let mut server = ServerProcess::spawn("watch", bin(), data.path(), &env)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let dev = Device::new(Platform::Ios);
    let authenticate = || authenticate(&http, &server, &dev);
    assert_eq!(authenticate().await, 403, "not on the allow-list");
    let ready = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert!(
        ready.text().await.unwrap().contains("plugins.watch_dir"),
        "never quietly"
    );
    let prefix = &dev.serial[..3];
    std::fs::write(
        sub.join("config.json"),
        format!(r#"{{"prefixes": ["{prefix}"]}}"#),
    )
    .unwrap();
    let mut status = 0;
    for _ in 0..100 {
        status = authenticate().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        200,
        "the edited config.json was loaded: {}",
        server.log()
    );
    server.stop();
}

/// `mdm-server plugin new`: the crate it writes passes its own tests and builds into a component that
/// `plugin run` calls, as a new plugin author would go, outside this workspace.
#[test]
fn a_new_plugin_crate_tests_builds_and_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path().join("os-check");
    let sdk = root.join("plugin-sdk");
    let new = |name: &str| {
        Command::new(bin())
            .args(["plugin", "new", name, "--dir"])
            .arg(&krate)
            .arg("--sdk")
            .arg(&sdk)
            .output()
            .unwrap()
    };
    let out = new("os-check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = new("os-check");
    assert!(
        !again.status.success() && String::from_utf8_lossy(&again.stderr).contains("is not empty"),
        "the crate is never written over"
    );
    // The scaffold's own lock would resolve anew; the workspace's keeps it to versions already built.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let cargo = |args: &[&str]| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", root.join("target").join("scaffold"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tested = cargo(&["test", "--quiet"]);
    assert!(tested.contains("3 passed"), "{tested}");
    mdm_tests::plugins::ensure_target(&root);
    cargo(&["build", "--quiet", "--release", "--target", "wasm32-wasip2"]);
    let wasm = root.join("target/scaffold/wasm32-wasip2/release/os_check.wasm");
    let dev = Device::new(Platform::Ios);
    let mut answer = plist::Dictionary::new();
    let mut responses = plist::Dictionary::new();
    responses.insert("OSVersion".into(), "16.7".into());
    answer.insert("QueryResponses".into(), responses.into());
    let report = dir.path().join("report.plist");
    std::fs::write(&report, dev.report(None, "Acknowledged", "CMD-1", answer)).unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, br#"{"minimum_os": "17.0"}"#).unwrap();
    let out = Command::new(bin())
        .args(["plugin", "run"])
        .arg(&wasm)
        .arg("--manifest")
        .arg(krate.join("plugin.json"))
        .args([
            "--hook",
            "on-command-result",
            "--request-type",
            "DeviceInformation",
        ])
        .arg("--event")
        .arg(&report)
        .arg("--plugin-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out["answer"][0]["kind"], "set-attribute", "{out}");
    assert_eq!(out["answer"][0]["key"], "os-outdated");
    assert_eq!(out["answer"][0]["value"], "true");
}
