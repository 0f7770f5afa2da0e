//! Building the plugins written in Python and JavaScript with their ecosystems' own tools, once per test
//! process, into `target/lang`: Python with componentize-py (from PyPI, into a virtualenv there, at the
//! version `plugins/os-update-py/requirements.txt` pins), JavaScript with componentize-js (from npm, by
//! `npm ci` from `plugins/os-update-js/package-lock.json`). Both need the network the first time.

use crate::plugins::workspace_root;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn lang_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("lang");
    std::fs::create_dir_all(&dir).expect("target/lang");
    dir
}

/// Whether what was installed from `source` (a lockfile, a requirements file) is missing or older than it.
fn stale(installed: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(installed), modified(source)) {
        (Some(i), Some(s)) => i < s,
        _ => true,
    }
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `plugins/os-update-py` as a component.
pub fn python_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let plugin = root.join("plugins/os-update-py");
        let venv = lang_dir().join("venv");
        let tool = venv.join("bin/componentize-py");
        let installed = venv.join(".installed");
        if stale(&installed, &plugin.join("requirements.txt")) {
            let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
            run(
                "creating a virtualenv for componentize-py",
                Command::new(python).args(["-m", "venv"]).arg(&venv),
            );
            run(
                "pip install componentize-py",
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(plugin.join("requirements.txt")),
            );
            std::fs::write(&installed, b"").expect("venv marker");
        }
        let out = lang_dir().join("os_update_py.wasm");
        run(
            "componentize-py",
            Command::new(&tool)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .arg("-d")
                .arg(plugin.join("wit"))
                .args(["-w", "plugin", "componentize", "--stub-wasi", "-p"])
                .arg(&plugin)
                .arg("app")
                .arg("-o")
                .arg(&out),
        );
        out
    })
}

/// `plugins/os-update-js` as a component.
pub fn js_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let plugin = workspace_root().join("plugins/os-update-js");
        let tool = plugin.join("node_modules/.bin/componentize-js");
        // npm's record of what it installed, rewritten by every install.
        let installed = plugin.join("node_modules/.package-lock.json");
        if stale(&installed, &plugin.join("package-lock.json")) {
            run(
                "npm ci (componentize-js)",
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--silent"])
                    .current_dir(&plugin),
            );
        }
        let out = lang_dir().join("os_update_js.wasm");
        // componentize-js reads its inputs through a sandbox rooted at the working directory: relative
        // paths from the plugin's own.
        run(
            "componentize-js",
            Command::new(&tool)
                .current_dir(&plugin)
                .args(["--wit", "wit", "--world-name", "plugin", "-d"])
                .args(["stdio", "random", "clocks", "http", "fetch-event", "-o"])
                .arg(&out)
                .arg("os-update.js"),
        );
        out
    })
}
