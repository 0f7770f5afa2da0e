//! `mdm-server config --check` and `mdm-server config`, run as the operator would: a good file, a file
//! with a misspelt key, a misspelt environment variable, a reachable server without production settings;
//! and the printed configuration without its secrets.

use std::path::Path;
use std::process::Command;

/// Exit success, and stdout and stderr together.
fn run(args: &[&str], file: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mdm-server"));
    cmd.args(args)
        .arg("--config")
        .arg(file)
        .env_remove("MDM_CONFIG")
        .env("MDM_LOG__FILTER", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("mdm-server runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

#[test]
fn config_check_validates_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let check = ["config", "--check"];

    // Loopback: OK, with what production would need as warnings; nothing is created.
    let good = write(
        dir.path(),
        "good.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n[push]\nrepush_interval_secs = 60\n"
        ),
    );
    let (ok, out) = run(&check, &good, &[]);
    assert!(ok, "{out}");
    assert!(out.starts_with("OK\n"), "{out}");
    assert!(
        out.contains("warning: enroll.public_url is not set"),
        "{out}"
    );
    assert!(
        !Path::new(data).exists(),
        "config --check created the data dir"
    );

    // A misspelt key in a section: refused, naming the key, the section and the file.
    let typo = write(
        dir.path(),
        "typo.toml",
        "[push]\nkey_secrets = \"a-sealing-secret-of-length\"\n",
    );
    let (ok, out) = run(&check, &typo, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "unknown key `key_secrets` in section [push], from file {}",
            typo.display()
        )),
        "{out}"
    );
    assert!(!out.contains("a-sealing-secret"), "{out}");

    // At the top level, and the server itself refuses to start the same way.
    let top = write(
        dir.path(),
        "top.toml",
        "listen_address = \"0.0.0.0:8443\"\n",
    );
    for args in [&check[..], &["serve"][..]] {
        let (ok, out) = run(args, &top, &[]);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!(
                "unknown key `listen_address` in the top-level section, from file {}",
                top.display()
            )),
            "{args:?}: {out}"
        );
    }

    // From the environment: the variable is named.
    let (ok, out) = run(
        &check,
        &good,
        &[("MDM_PUSH__KEY_SECRETS", "a-sealing-secret-of-length")],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "unknown key `key_secrets` in section [push], from environment variable MDM_PUSH__KEY_SECRETS"
        ),
        "{out}"
    );
    let (ok, out) = run(&check, &good, &[("MDM_LISTEN_ADDR", "0.0.0.0:1")]);
    assert!(
        !ok && out.contains("from environment variable MDM_LISTEN_ADDR"),
        "{out}"
    );

    // The test suite's and tools' own variables are not settings.
    let tools = [
        (
            "MDM_TEST_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        ),
        ("MDM_CRASH_SEED", "7"),
    ];
    let (ok, out) = run(&check, &good, &tools);
    assert!(ok, "{out}");

    // Reachable without production settings: the error names each.
    let (ok, out) = run(&check, &good, &[("MDM_LISTEN", "0.0.0.0:8443")]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("refusing to listen on 0.0.0.0:8443")
            && out.contains("enroll.public_url")
            && out.contains("push.key_secret"),
        "{out}"
    );
}

#[test]
fn config_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.toml",
        "database_url = \"postgres://mdm:dbpass1@db/mdm\"\n[push]\nkey_secret = \"sealing-secret-2345\"\n\
         [plugins.sinks.hook]\nurl = \"https://hooks.example.com/?token=tok3\"\nheaders = { Authorization = \"Bearer tok4\" }\n",
    );
    let (ok, out) = run(
        &["config"],
        &file,
        &[("MDM_SCEP__CA_KEY_PASSPHRASE", "ca-pass-5")],
    );
    assert!(ok, "{out}");
    for secret in ["dbpass1", "sealing-secret", "tok3", "tok4", "ca-pass-5"] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert!(
        out.contains("postgres://mdm:REDACTED@db/mdm") && out.contains("Authorization"),
        "{out}"
    );
}
