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
