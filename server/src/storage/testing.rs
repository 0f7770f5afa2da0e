//! Databases for tests: a fresh SQLite file, and a fresh PostgreSQL schema when `MDM_TEST_DATABASE_URL` is
//! set. Public so the black-box tests in `tests/` use the same helper.

use super::devices::{self, AuthenticateFacts, DeviceFacts};
use super::{Storage, StorageResult};
use crate::protocol::{EnrollmentKind, EnrollmentRef};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

/// The tests' own door: the writer connection itself, for setup and assertions the two doors of
/// [`Storage`] do not offer (raw statements, transactions begun by hand). Not for the server's code.
pub fn db(storage: &Storage) -> &DatabaseConnection {
    storage.db()
}

/// Store a device as Authenticate leaves it: `facts`, bound to the identity `fingerprint`.
pub async fn authenticated_device<C: ConnectionTrait>(
    c: &C,
    id: &str,
    fingerprint: &str,
    facts: DeviceFacts,
    now: i64,
) -> StorageResult<()> {
    let facts = AuthenticateFacts {
        facts,
        identity_fingerprint: fingerprint.into(),
        identity_subject: "CN=test device".into(),
        identity_not_after: None,
        raw: vec![],
        renewal: false,
    };
    devices::upsert_authenticated(c, id, facts, now).await
}

/// The device channel of `device_id`, as a message on it names it.
pub fn device_channel(device_id: &str) -> EnrollmentRef {
    EnrollmentRef {
        id: device_id.into(),
        device_id: device_id.into(),
        kind: EnrollmentKind::Device,
        user_id: None,
        user_short_name: None,
        user_long_name: None,
    }
}

/// Where a test database lives; dropping it removes the SQLite file (the PostgreSQL schema is dropped
/// by `cleanup`).
pub struct TestDatabase {
    pub label: &'static str,
    pub url: String,
    pub schema: Option<String>,
    /// Keeps a SQLite database's directory alive; None for PostgreSQL (and for a replica's view).
    pub _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn storage(&self) -> StorageResult<Storage> {
        let s = Storage::connect(&self.url, self.schema.as_deref()).await?;
        s.migrate().await?;
        Ok(s)
    }

    /// Drop the PostgreSQL schema this test made. Best effort: a leftover schema only costs disk.
    pub async fn cleanup(&self) {
        if let Some(schema) = &self.schema {
            if let Ok(db) = Database::connect(self.url.as_str()).await {
                let _ = db
                    .execute_unprepared(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await;
            }
        }
    }
}

/// The environment variable naming the PostgreSQL server tests also run against.
pub const TEST_DATABASE_ENV: &str = "MDM_TEST_DATABASE_URL";

/// A fresh SQLite database, then (when configured) a fresh PostgreSQL schema.
pub async fn test_databases() -> Vec<TestDatabase> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
    let mut out = vec![TestDatabase {
        label: "sqlite",
        url,
        schema: None,
        _dir: Some(dir),
    }];
    if let Ok(pg) = std::env::var(TEST_DATABASE_ENV) {
        if !pg.is_empty() {
            let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
            let db = Database::connect(pg.as_str())
                .await
                .unwrap_or_else(|e| panic!("{TEST_DATABASE_ENV}={pg} is set but unreachable: {e}"));
            db.execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .expect("create test schema");
            out.push(TestDatabase {
                label: "postgres",
                url: pg,
                schema: Some(schema),
                _dir: None,
            });
        }
    }
    out
}
