//! Building plugin crates for `wasm32-wasip2` from tests, once per test process, into `target/plugins`
//! (a separate target directory, so it never waits on the `cargo test` that runs us).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Build `package` (a workspace member) as a component and return the `.wasm` path.
pub fn build(package: &str) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(package) {
        return p.clone();
    }
    let root = workspace_root();
    ensure_target(&root);
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building plugin {package} failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = target_dir
        .join("wasm32-wasip2")
        .join("plugin")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(path.exists(), "{} was not produced", path.display());
    map.insert(package.to_string(), path.clone());
    path
}

/// Add the `wasm32-wasip2` target when rustup manages the toolchain and lacks it, once per test process.
/// rustup installs the targets `rust-toolchain.toml` names only when it installs the toolchain itself, so
/// a machine that already had 1.95 would otherwise fail every plugin test on a first `cargo test --workspace`.
pub fn ensure_target(root: &std::path::Path) {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| add_target_if_missing(root));
}

fn add_target_if_missing(root: &std::path::Path) {
    let installed = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else {
        return; // No rustup: the build below says what is missing.
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == "wasm32-wasip2")
    {
        return;
    }
    eprintln!("adding the wasm32-wasip2 target (rustup target add wasm32-wasip2) to build plugins");
    let _ = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", "wasm32-wasip2"])
        .status();
}

/// The manifest beside a plugin crate (`plugins/<name>/plugin.json` or `tests/plugins/<name>/plugin.json`).
pub fn manifest(package: &str) -> serde_json::Value {
    let root = workspace_root();
    for dir in [
        root.join("plugins").join(package),
        root.join("tests").join("plugins").join(package),
    ] {
        let p = dir.join("plugin.json");
        if p.exists() {
            let text = std::fs::read_to_string(&p).expect("read manifest");
            return serde_json::from_str(&text).expect("manifest is JSON");
        }
    }
    panic!("no plugin.json for {package}");
}
