//! Access to `../shared` (Apple's schemas and peer captures). It is absent in a user's fresh clone, so tests
//! that need it skip with a clear message.

use std::path::PathBuf;

/// `shared/<rel>` found by walking up from this crate, or None (after printing why the caller skips).
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        let candidate = dir.join("shared").join(rel);
        if candidate.exists() {
            return Some(candidate);
        }
        if !dir.pop() {
            eprintln!("skipping: ../shared/{rel} not found");
            return None;
        }
    }
}

/// A file generated from `../shared` and committed: with `regenerate` (an environment variable) set to
/// 1 it is rewritten (whole, then renamed: other tests may read it meanwhile); otherwise it must be what
/// the generator makes, or the test fails naming the first line that differs and the command (`how`)
/// that regenerates it.
pub fn check_generated(committed: &std::path::Path, generated: &str, regenerate: &str, how: &str) {
    if std::env::var_os(regenerate).is_some_and(|v| v == "1") {
        let tmp = committed.with_extension("tmp");
        std::fs::write(&tmp, generated).unwrap();
        std::fs::rename(&tmp, committed).unwrap();
        eprintln!("wrote {}", committed.display());
        return;
    }
    let current = std::fs::read_to_string(committed).unwrap_or_default();
    if current != generated {
        // The first line that differs, or the line after the shorter text ends.
        let line = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(generated.lines().count()))
            + 1;
        panic!(
            "{} is not what ../shared generates (first difference at line {line}). Regenerate it with \
             `{regenerate}=1 {how}` and review the diff.",
            committed.display()
        );
    }
}

/// The `.yaml` files under `dir`, recursively, sorted.
pub fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
