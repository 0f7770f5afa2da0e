//! Storage: sea-orm over SQLite (embedded default) or PostgreSQL (production, several replicas).
//! Services call the repository functions in the submodules through the two doors of [`Storage`]. A read
//! takes any `ConnectionTrait` and a write any [`Writes`], so a caller composes several into one
//! transaction.

pub mod api_keys;
pub mod attributes;
pub mod audit_log;
pub mod batch;
pub mod checkin;
pub mod checkin_state;
pub mod ddm;
pub mod devices;
pub mod enqueue;
pub mod enrollments;
pub mod entities;
pub mod event_subject;
pub mod fleet;
pub mod groups;
pub mod housekeeping;
pub mod issued_certs;
pub mod locks;
mod migration;
pub mod outbox;
pub mod plugin_audit;
pub mod plugin_kv;
pub mod plugins;
pub mod point_reads;
pub mod policies;
pub mod private_files;
pub mod profiles;
pub mod push;
pub mod queue;
mod read;
pub mod rollouts;
pub mod sealing;
pub mod secrets;
pub mod sinks;
mod sqlite_plans;
pub mod testing;
mod writer;

pub use point_reads::PointRead;
pub use read::Reads;
pub use writer::WriterCpu;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The identity certificate is bound to another device (a unique violation on
    /// `devices.identity_fingerprint`, e.g. two devices authenticating with one certificate at once).
    #[error("the identity certificate is bound to another device")]
    IdentityBoundElsewhere,
    /// The identity certificate was revoked (seen while binding it).
    #[error("the identity certificate is revoked")]
    IdentityRevoked,
}

pub type StorageResult<T> = Result<T, StorageError>;

/// The database, entered by two doors:
/// - **reads** outside a transaction: [`Storage::read`], for sea-orm queries and [`PointRead`]s alike;
///   they see everything committed before they start and never wait for the writer;
/// - **writes**: [`Storage::transaction`] for statements that commit together (on SQLite it runs on the
///   writer's thread), or a repository function taking [`Writes`], given `&Storage`, for a write that
///   commits alone.
///
/// What a transaction must see consistently is read inside it. The writer connection is private to this
/// module, so nothing else begins a transaction (on SQLite that would bypass the writer's thread) or
/// reads from the writer. Tests have their own door, [`testing::db`].
#[derive(Clone, Debug)]
pub struct Storage {
    db: DatabaseConnection,
    /// SQLite files only: read-only connections beside the single writer (WAL lets them read while it
    /// writes). None elsewhere: PostgreSQL's pool serves both.
    reader: Option<DatabaseConnection>,
    /// SQLite only: the thread its write transactions run on (see [`writer`]).
    writer: Option<Arc<writer::Writer>>,
    /// SQLite files only: connections for point reads on the calling thread (see [`point_reads`]).
    local: Option<Arc<point_reads::LocalSqlite>>,
}

/// Where a write that needs no transaction of its own runs: in a caller's transaction, or given
/// `&Storage`, alone on the writer connection. A write there holds that connection only for its own
/// round trips, so it runs on the calling task rather than on the writer's thread (see [`writer`]).
/// Reads take a connection, never `&Storage`: outside a transaction they go through [`Storage::read`].
pub trait Writes: Sync {
    type Connection: ConnectionTrait;
    fn connection(&self) -> &Self::Connection;
}

impl Writes for Storage {
    type Connection = DatabaseConnection;
    fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// A transaction; or, in this module and in tests, the writer connection itself. ([`Reads`] is one too,
/// but read-only on SQLite: writes are not sent there.)
impl<C: ConnectionTrait> Writes for C {
    type Connection = C;
    fn connection(&self) -> &C {
        self
    }
}

/// The body of a [`Storage::transaction`]: an async block over the transaction that owns what it uses.
pub type TxnFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// Read-only SQLite connections. Reads that need no transaction (plugin events and key-value reads, the
/// Idle state check, admin listings) run here instead of queueing for the writer.
const SQLITE_READERS: u32 = 4;

/// How long a SQLite connection waits for a lock before its statement fails.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a PostgreSQL connection may sit idle in the pool before it is checked with a ping on its way
/// out: long enough that busy connections are never checked, short of the minutes after which proxies and
/// firewalls drop idle ones.
const PG_PING_IF_IDLE_FOR: Duration = Duration::from_secs(30);

/// What every pool shares. sea-orm pings each connection as it leaves the pool by default: one more round
/// trip before every query and every transaction (on SQLite a hand-off to the connection's thread and
/// back, on PostgreSQL a trip to the server). A SQLite connection is a file handle in this process, which
/// a ping never finds broken, so it is not pinged; a PostgreSQL connection only after sitting idle.
fn pool_options(url: &str) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.sqlx_logging(false)
        .acquire_timeout(Duration::from_secs(10));
    if is_sqlite(url) {
        opts.test_before_acquire(false);
    } else {
        opts.test_before_acquire_if_idle_for(PG_PING_IF_IDLE_FOR);
    }
    opts
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// The file a `sqlite:` URL names, as sqlx reads the URL.
fn sqlite_file(url: &str) -> StorageResult<std::path::PathBuf> {
    use sea_orm::sqlx::sqlite::SqliteConnectOptions;
    let opts: SqliteConnectOptions = url
        .parse()
        .map_err(|e| StorageError::Unavailable(format!("{url}: {e}")))?;
    Ok(opts.get_filename().to_path_buf())
}

impl Storage {
    /// Connect to `url` (`sqlite://path?mode=rwc` or `postgres://...`). `schema` selects a PostgreSQL schema
    /// (search_path), so several servers or test runs can share one database.
    pub async fn connect(url: &str, schema: Option<&str>) -> StorageResult<Self> {
        Self::connect_with(url, schema, WriterCpu::Auto).await
    }

    /// [`Storage::connect`], with SQLite's writer kept to `writer_cpu` (ignored on PostgreSQL).
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        writer_cpu: WriterCpu,
    ) -> StorageResult<Self> {
        let sqlite = is_sqlite(url);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if sqlite && !in_memory {
            // Owner-only before sqlx opens it: sqlx would create it with the umask's mode (0644), and
            // SQLite gives the -wal and -shm files the main file's mode.
            let file = sqlite_file(url)?;
            private_files::prepare_sqlite_file(&file, url.contains("mode=rwc"))
                .map_err(|e| StorageError::Unavailable(format!("{}: {e}", file.display())))?;
        }
        let mut opts = pool_options(url);
        if sqlite {
            // One connection: SQLite has one writer anyway, and a single connection rules out
            // SQLITE_BUSY when a read transaction upgrades to a write under load.
            opts.max_connections(1).min_connections(1);
            opts.map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
            });
            // Never closed for age or idleness: a new connection would get a new sqlx thread, opened
            // wherever the next write happens to run rather than beside the writer (see `writer`).
            opts.map_sqlx_sqlite_pool_opts(|pool| {
                sqlite_plans::on_every_connection(pool)
                    .max_lifetime(None)
                    .idle_timeout(None)
            });
        } else {
            opts.max_connections(32).min_connections(1);
            if let Some(schema) = schema {
                opts.set_schema_search_path(schema.to_string());
            }
        }
        let writer = if sqlite {
            Some(writer::Writer::start(writer_cpu.resolve()?)?)
        } else {
            None
        };
        // On SQLite, opened from the writer's thread, so sqlx's thread for it shares the writer's CPU.
        let db = match &writer {
            Some(w) => w.run(Database::connect(opts)).await??,
            None => Database::connect(opts).await?,
        };
        // After the writer: it has created the file and put it in WAL mode.
        let reader = if sqlite && !in_memory {
            let mut ro = pool_options(url);
            ro.max_connections(SQLITE_READERS).min_connections(1);
            ro.map_sqlx_sqlite_opts(|o| {
                o.read_only(true)
                    .create_if_missing(false)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
            });
            ro.map_sqlx_sqlite_pool_opts(sqlite_plans::on_every_connection);
            Some(Database::connect(ro).await?)
        } else {
            None
        };
        let local = match reader {
            Some(_) => Some(Arc::new(point_reads::LocalSqlite::open(
                sqlite_file(url)?,
                SQLITE_BUSY_TIMEOUT,
            )?)),
            None => None,
        };
        Ok(Self {
            db,
            reader,
            writer,
            local,
        })
    }

    /// Apply the pending migrations, logging one line naming them (none when there were none; the
    /// migrator's own line per step is at DEBUG, see `telemetry`).
    pub async fn migrate(&self) -> StorageResult<()> {
        let pending: Vec<String> = migration::Migrator::get_pending_migrations(&self.db)
            .await?
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        migration::Migrator::up(&self.db, None).await?;
        if !pending.is_empty() {
            tracing::info!(applied = %pending.join(", "), "database migrated");
        }
        Ok(())
    }

    /// The connection for writes and transactions (on SQLite, its one writer): for this module only.
    fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Run `body` in one transaction: committed when it returns `Ok`, rolled back when it returns
    /// `Err`. On SQLite it runs on the writer's own thread, so the one writer connection is not held
    /// while the task waits its turn on a busy HTTP worker; `body` therefore owns what it uses, and it
    /// finishes (commits or rolls back) even if the caller stops waiting.
    pub async fn transaction<T, E, F>(&self, body: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> TxnFuture<'c, T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StorageError> + Send + 'static,
    {
        use tracing::Instrument;
        let db = self.db.clone();
        let run = async move {
            let txn = db
                .begin()
                .await
                .map_err(|e| E::from(StorageError::from(e)))?;
            // Dropping `txn` on an error rolls it back.
            let out = body(&txn).await?;
            txn.commit()
                .await
                .map_err(|e| E::from(StorageError::from(e)))?;
            Ok(out)
        }
        // Made here, so it is a child of the caller's span on whichever thread the writer runs it.
        .instrument(tracing::debug_span!("storage.transaction"));
        match &self.writer {
            Some(w) => w.run(run).await?,
            None => run.await,
        }
    }

    /// The read door: everything committed before a read starts, without waiting for the writer (see
    /// [`Reads`]).
    pub fn read(&self) -> Reads<'_> {
        Reads {
            pool: self.reader.as_ref().unwrap_or(&self.db),
            local: self.local.as_deref(),
        }
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

#[cfg(test)]
mod tests {
    use super::testing::test_databases;
    use super::*;
    use sea_orm::{Statement, TransactionTrait};

    /// Busy PostgreSQL connections are not pinged, so one the server dropped fails the query that finds it
    /// dead; the pool must then replace it rather than hand it out again. (SQLite has no server to drop one.)
    #[tokio::test]
    async fn a_postgres_connection_the_server_dropped_is_replaced() {
        let Some(tdb) = test_databases()
            .await
            .into_iter()
            .find(|t| t.label == "postgres")
        else {
            eprintln!("skipped: {} is not set", testing::TEST_DATABASE_ENV);
            return;
        };
        let name = format!("mdm_drop_{}", uuid::Uuid::new_v4().simple());
        let sep = if tdb.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}application_name={name}", tdb.url);
        let s = Storage::connect(&url, tdb.schema.as_deref()).await.unwrap();
        s.ping().await.unwrap();
        let other = Database::connect(tdb.url.as_str()).await.unwrap();
        let dropped = other
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                [name.into()],
            ))
            .await
            .unwrap()
            .len();
        assert!(dropped >= 1, "the pool's connections were found");
        // Each dropped connection may fail one query; after that every query must work.
        let mut failed = 0;
        while s.ping().await.is_err() {
            failed += 1;
            assert!(
                failed <= dropped,
                "a dropped connection was handed out again"
            );
        }
        for _ in 0..3 {
            s.ping().await.unwrap();
        }
        eprintln!("{dropped} connection(s) dropped, {failed} query(ies) failed");
        tdb.cleanup().await;
    }

    /// The database and the -wal and -shm files SQLite makes beside it are owner-only, whatever the
    /// umask, and a database left world-readable by an older version is tightened.
    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mdm.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let mode = |suffix: &str| {
            let p = dir.path().join(format!("mdm.db{suffix}"));
            std::fs::metadata(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let s = Storage::connect(&url, None).await.unwrap();
        s.migrate().await.unwrap();
        plugin_kv::set(s.db(), "p", "k", b"v".to_vec(), None, 1)
            .await
            .unwrap();
        for suffix in ["", "-wal", "-shm"] {
            assert_eq!(mode(suffix), 0o600, "mdm.db{suffix}");
        }
        drop(s);
        // As an older version left it.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = Storage::connect(&url, None).await.unwrap();
        s.ping().await.unwrap();
        assert_eq!(mode(""), 0o600, "tightened at start");
    }

    /// No pool pings a busy connection before each use; PostgreSQL still checks one that sat idle.
    #[test]
    fn connections_are_pinged_only_after_sitting_idle() {
        let sqlite = pool_options("sqlite://x.db");
        assert!(!sqlite.get_test_before_acquire());
        assert_eq!(sqlite.get_test_before_acquire_if_idle_for(), None);
        let pg = pool_options("postgres://h/db");
        assert!(!pg.get_test_before_acquire());
        assert_eq!(
            pg.get_test_before_acquire_if_idle_for(),
            Some(PG_PING_IF_IDLE_FOR)
        );
    }

    /// The point of the reader and of point reads: a read outside a transaction is answered while the
    /// writer is inside one (on SQLite the writer is one connection, so a read queued for it would wait for
    /// the commit), sees only what is committed, and cannot write.
    #[tokio::test]
    async fn reads_do_not_wait_for_the_writer_and_see_what_is_committed() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let txn = s.db().begin().await.unwrap();
            plugin_kv::set(&txn, "p", "k", b"v".to_vec(), None, 1)
                .await
                .unwrap();
            let during = tokio::time::timeout(
                Duration::from_secs(5),
                plugin_kv::get(s.read().pool, "p", "k", 1),
            )
            .await
            .unwrap_or_else(|_| panic!("{}: the read waited for the writer", tdb.label))
            .unwrap();
            assert_eq!(during, None, "{}: uncommitted write seen", tdb.label);
            // Before the commit too, so a point-read connection is reused across it.
            let point = plugin_kv::get(&s.read(), "p", "k", 1).await.unwrap();
            assert_eq!(point, None, "{}: uncommitted write seen", tdb.label);
            txn.commit().await.unwrap();
            assert_eq!(
                plugin_kv::get(s.read().pool, "p", "k", 1).await.unwrap(),
                Some(b"v".to_vec()),
                "{}: committed write not seen",
                tdb.label
            );
            assert_eq!(
                plugin_kv::get(&s.read(), "p", "k", 1).await.unwrap(),
                Some(b"v".to_vec()),
                "{}: committed write not seen by a point read",
                tdb.label
            );
            if tdb.label == "sqlite" {
                assert!(
                    plugin_kv::set(s.read().pool, "p", "k2", b"v".to_vec(), None, 1)
                        .await
                        .is_err(),
                    "the SQLite readers are read-only"
                );
            }
            tdb.cleanup().await;
        }
    }

    /// `transaction` commits what its body wrote when the body returns Ok and nothing when it returns
    /// Err; on SQLite the body runs on the writer's own thread; and a body the caller stopped waiting
    /// for still runs to its end (committed whole, not abandoned between statements).
    #[tokio::test]
    async fn transactions_commit_on_ok_roll_back_on_err_and_finish_when_abandoned() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let thread = s
                .transaction(|txn| {
                    Box::pin(async move {
                        plugin_kv::set(txn, "p", "kept", b"1".to_vec(), None, 1).await?;
                        Ok::<_, StorageError>(std::thread::current().name().map(str::to_string))
                    })
                })
                .await
                .unwrap();
            if tdb.label == "sqlite" {
                assert_eq!(thread.as_deref(), Some("db-writer"), "runs on the writer");
            }
            let refused = s
                .transaction(|txn| {
                    Box::pin(async move {
                        plugin_kv::set(txn, "p", "dropped", b"1".to_vec(), None, 1).await?;
                        Err::<(), _>(StorageError::Conflict("refused".into()))
                    })
                })
                .await;
            assert!(matches!(refused, Err(StorageError::Conflict(_))));
            let get = |k: &'static str| plugin_kv::get(s.read().pool, "p", k, 1);
            assert_eq!(
                get("kept").await.unwrap(),
                Some(b"1".to_vec()),
                "{}",
                tdb.label
            );
            assert_eq!(
                get("dropped").await.unwrap(),
                None,
                "{}: rolled back",
                tdb.label
            );

            // The caller gives up while the body is between its two statements.
            let (started, go) = (
                std::sync::Arc::new(tokio::sync::Notify::new()),
                std::sync::Arc::new(tokio::sync::Notify::new()),
            );
            let (started2, go2) = (started.clone(), go.clone());
            let call = s.transaction(move |txn| {
                Box::pin(async move {
                    plugin_kv::set(txn, "p", "a", b"1".to_vec(), None, 1).await?;
                    started2.notify_one();
                    go2.notified().await;
                    plugin_kv::set(txn, "p", "b", b"1".to_vec(), None, 1).await?;
                    Ok::<_, StorageError>(())
                })
            });
            let waited = tokio::time::timeout(Duration::from_secs(30), async {
                tokio::select! {
                    _ = call => panic!("the body cannot finish before it is let go"),
                    _ = started.notified() => {}
                }
            });
            waited.await.expect("the body started");
            go.notify_one();
            // On SQLite the next transaction waits for the writer, so it reads after the abandoned one
            // ended; PostgreSQL runs a body in the caller's task, so giving up rolled it back.
            let seen = s
                .transaction(|txn| {
                    Box::pin(async move {
                        let a = plugin_kv::get(txn, "p", "a", 1).await?.is_some();
                        let b = plugin_kv::get(txn, "p", "b", 1).await?.is_some();
                        Ok::<_, StorageError>((a, b))
                    })
                })
                .await
                .unwrap();
            let whole = if tdb.label == "sqlite" {
                (true, true)
            } else {
                (false, false)
            };
            assert_eq!(seen, whole, "{}: whole or not at all", tdb.label);
            tdb.cleanup().await;
        }
    }
}
