//! Storage: sea-orm over SQLite (embedded default) or PostgreSQL (production, several replicas).
//! Services call the repository functions in the submodules; each takes any `ConnectionTrait`, so a caller
//! composes several into one transaction.

pub mod api_keys;
pub mod attributes;
pub mod audit_log;
pub mod checkin_state;
pub mod devices;
pub mod enrollments;
pub mod entities;
pub mod issued_certs;
pub mod locks;
mod migration;
pub mod outbox;
pub mod plugin_audit;
pub mod plugin_kv;
pub mod plugins;
pub mod push;
pub mod queue;
pub mod secrets;
pub mod testing;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Clone, Debug)]
pub struct Storage {
    db: DatabaseConnection,
}

impl Storage {
    /// Connect to `url` (`sqlite://path?mode=rwc` or `postgres://...`). `schema` selects a PostgreSQL schema
    /// (search_path), so several servers or test runs can share one database.
    pub async fn connect(url: &str, schema: Option<&str>) -> StorageResult<Self> {
        let mut opts = ConnectOptions::new(url.to_string());
        opts.sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            // One connection: SQLite has one writer anyway, and a single connection rules out
            // SQLITE_BUSY when a read transaction upgrades to a write under load.
            opts.max_connections(1).min_connections(1);
            opts.map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
                    .foreign_keys(true)
            });
        } else {
            opts.max_connections(32).min_connections(1);
            if let Some(schema) = schema {
                opts.set_schema_search_path(schema.to_string());
            }
        }
        let db = Database::connect(opts).await?;
        Ok(Self { db })
    }

    pub async fn migrate(&self) -> StorageResult<()> {
        migration::Migrator::up(&self.db, None).await?;
        Ok(())
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> StorageResult<()> {
        self.db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }
}
