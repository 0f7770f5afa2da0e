//! `mdm-server audit verify`, run as the operator would: intact, then after someone edits a row in the
//! database behind the server's back.

use mdm_server::storage::audit_log::{self, NewEntry};
use mdm_server::storage::testing::db;
use mdm_server::storage::Storage;
use sea_orm::ConnectionTrait;
use std::process::Command;

fn verify(data_dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mdm-server"))
        .args(["audit", "verify"])
        .args(extra)
        .env("MDM_DATA_DIR", data_dir)
        .env("MDM_LOG__FILTER", "error")
        .output()
        .expect("mdm-server runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn audit_verify_detects_an_edited_row() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("mdm.db").display());
    let s = Storage::connect(&url, None).await.unwrap();
    s.migrate().await.unwrap();
    let entries = (1..=5)
        .map(|i| {
            NewEntry::new(
                i,
                "api-key:k",
                "POST /api/v1/commands",
                Some("/api/v1/commands"),
                serde_json::json!({"status": 200}),
            )
        })
        .collect();
    audit_log::append(db(&s), entries).await.unwrap();

    // The server would chain them within a second; the command chains what is pending first.
    let (ok, out) = verify(dir.path(), &[]);
    assert!(ok, "{out}");
    assert!(out.contains("chained 5 pending entries"), "{out}");
    assert!(out.contains("intact: 5 rows"), "{out}");
    let head = out.trim().rsplit(' ').next().unwrap().to_string();
    let (ok, out) = verify(dir.path(), &["--expect-head", &head]);
    assert!(ok, "{out}");

    for sql in [
        "DROP TRIGGER audit_log_no_update",
        "UPDATE audit_log SET actor = 'api-key:someone-else' WHERE id = 3",
    ] {
        db(&s).execute_unprepared(sql).await.unwrap();
    }
    let (ok, out) = verify(dir.path(), &[]);
    assert!(!ok, "tampering not detected: {out}");
    assert!(out.contains("broken at row 3"), "{out}");

    // Removing the tail keeps the rest of the chain consistent: only a recorded head shows it.
    db(&s)
        .execute_unprepared("DROP TRIGGER audit_log_no_delete")
        .await
        .unwrap();
    db(&s)
        .execute_unprepared("DELETE FROM audit_log WHERE id >= 3")
        .await
        .unwrap();
    let (ok, out) = verify(dir.path(), &[]);
    assert!(ok, "{out}");
    let (ok, out) = verify(dir.path(), &["--expect-head", &head]);
    assert!(!ok, "truncation not detected: {out}");
}
