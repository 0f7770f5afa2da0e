//! Point reads (one row by key) on the paths check-ins take: an Idle's state, a plugin's event, a plugin's
//! key. On a SQLite file they run on the calling thread, on read-only connections of their own. sqlx runs
//! every SQLite connection on a thread of its own, so a read through its pool is two thread wake-ups, there
//! and back and often across CPUs, which cost several times the read itself (BENCHMARKS.md, *Point reads on
//! the calling thread*).
//! Elsewhere (PostgreSQL, a transaction, SQLite in memory) a point read goes through sea-orm like any other.
//!
//! The trade: a SQLite read here holds the calling thread for its length. These are single-row lookups by
//! primary key or index, tens of microseconds; in WAL mode a reader never waits for the writer, only (up to
//! the busy timeout) for the rare moment another connection rebuilds the WAL index.

use super::{StorageError, StorageResult};
use rusqlite::types::FromSql;
use rusqlite::{CachedStatement, Connection, OpenFlags};
use sea_orm::sea_query::{SelectStatement, SqliteQueryBuilder, Value};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult, TryGetable,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// What can answer a point read: a transaction, or [`super::Reads`] ([`super::Storage::read`]).
pub trait PointRead: Sync {
    /// The first row `q` selects, decoded by `decode`; None when it selects none.
    fn one<T, F>(
        &self,
        q: &SelectStatement,
        decode: F,
    ) -> impl Future<Output = StorageResult<Option<T>>> + Send
    where
        T: Send,
        F: FnOnce(&Fields<'_>) -> StorageResult<T> + Send;
}

/// In a transaction, or on a pool: through sea-orm like any other read.
async fn pooled<C, T, F>(c: &C, q: &SelectStatement, decode: F) -> StorageResult<Option<T>>
where
    C: ConnectionTrait,
    F: FnOnce(&Fields<'_>) -> StorageResult<T>,
{
    match c.query_one(q).await? {
        Some(row) => decode(&Fields::Pool(&row)).map(Some),
        None => Ok(None),
    }
}

impl PointRead for DatabaseTransaction {
    async fn one<T, F>(&self, q: &SelectStatement, decode: F) -> StorageResult<Option<T>>
    where
        T: Send,
        F: FnOnce(&Fields<'_>) -> StorageResult<T> + Send,
    {
        pooled(self, q, decode).await
    }
}

impl PointRead for DatabaseConnection {
    async fn one<T, F>(&self, q: &SelectStatement, decode: F) -> StorageResult<Option<T>>
    where
        T: Send,
        F: FnOnce(&Fields<'_>) -> StorageResult<T> + Send,
    {
        pooled(self, q, decode).await
    }
}

/// A row as either driver returns it, read by column name.
pub enum Fields<'r> {
    Pool(&'r QueryResult),
    Local(&'r rusqlite::Row<'r>),
}

impl Fields<'_> {
    pub fn get<T: TryGetable + FromSql>(&self, column: &str) -> StorageResult<T> {
        match self {
            Fields::Pool(row) => Ok(row.try_get("", column)?),
            Fields::Local(row) => row.get(column).map_err(|e| local_error(column, e)),
        }
    }
}

/// Connections kept for reuse; more are opened when more threads read at once (each actix worker and
/// plugin task reads on its own thread), and those beyond this are closed when put back.
const KEEP_IDLE: usize = 8;

/// Read-only connections to one SQLite file, used on whichever thread takes one.
#[derive(Debug)]
pub struct LocalSqlite {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl LocalSqlite {
    /// Opens one connection at once, so a file that cannot be read fails at start, not on a check-in.
    pub(super) fn open(path: PathBuf, busy_timeout: Duration) -> StorageResult<Self> {
        let local = Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        };
        let first = local.connect()?;
        local.put_back(first);
        Ok(local)
    }

    fn connect(&self) -> StorageResult<Connection> {
        let open = || {
            let c = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(self.busy_timeout)?;
            // As on sqlx's connections (see `sqlite_plans`): one plan per statement, so cached
            // statements stay compiled whatever they are bound with.
            c.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )?;
            Ok(c)
        };
        open().map_err(|e: rusqlite::Error| {
            StorageError::Unavailable(format!("opening {}: {e}", self.path.display()))
        })
    }

    fn take(&self) -> StorageResult<Connection> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put_back(&self, c: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < KEEP_IDLE {
            idle.push(c);
        }
    }

    pub(super) fn one<T>(
        &self,
        q: &SelectStatement,
        decode: impl FnOnce(&Fields<'_>) -> StorageResult<T>,
    ) -> StorageResult<Option<T>> {
        let (sql, values) = q.build(SqliteQueryBuilder);
        let c = self.take()?;
        let out = first_row(&c, &sql, &values.0, decode);
        self.put_back(c);
        out
    }

    #[cfg(test)]
    pub(super) fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    #[cfg(test)]
    pub(super) fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let c = self.take().unwrap();
        let out = f(&c);
        self.put_back(c);
        out
    }
}

fn first_row<T>(
    c: &Connection,
    sql: &str,
    values: &[Value],
    decode: impl FnOnce(&Fields<'_>) -> StorageResult<T>,
) -> StorageResult<Option<T>> {
    let read = |e| local_error("the query", e);
    let mut stmt = c.prepare_cached(sql).map_err(read)?;
    for (i, v) in values.iter().enumerate() {
        bind(&mut stmt, i + 1, v).map_err(read)?;
    }
    let mut rows = stmt.raw_query();
    match rows.next().map_err(read)? {
        Some(row) => decode(&Fields::Local(row)).map(Some),
        None => Ok(None),
    }
}

/// The values sea-query puts in our statements.
fn bind(stmt: &mut CachedStatement<'_>, i: usize, v: &Value) -> rusqlite::Result<()> {
    match v {
        Value::Bool(x) => stmt.raw_bind_parameter(i, x),
        Value::TinyInt(x) => stmt.raw_bind_parameter(i, x),
        Value::SmallInt(x) => stmt.raw_bind_parameter(i, x),
        Value::Int(x) => stmt.raw_bind_parameter(i, x),
        Value::BigInt(x) => stmt.raw_bind_parameter(i, x),
        Value::TinyUnsigned(x) => stmt.raw_bind_parameter(i, x),
        Value::SmallUnsigned(x) => stmt.raw_bind_parameter(i, x),
        Value::Unsigned(x) => stmt.raw_bind_parameter(i, x),
        Value::BigUnsigned(x) => {
            let x = x
                .map(i64::try_from)
                .transpose()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            stmt.raw_bind_parameter(i, x)
        }
        Value::Float(x) => stmt.raw_bind_parameter(i, x),
        Value::Double(x) => stmt.raw_bind_parameter(i, x),
        Value::String(x) => stmt.raw_bind_parameter(i, x.as_deref()),
        Value::Bytes(x) => stmt.raw_bind_parameter(i, x.as_deref()),
        other => Err(rusqlite::Error::ToSqlConversionFailure(
            format!("no SQLite binding for {other:?}").into(),
        )),
    }
}

/// A value that does not decode is stored data we cannot read; anything else is the database failing.
fn local_error(what: &str, e: rusqlite::Error) -> StorageError {
    use rusqlite::Error as E;
    match e {
        E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..) => StorageError::Corrupt(format!("{what}: {e}")),
        E::InvalidColumnName(_) | E::ToSqlConversionFailure(_) => {
            StorageError::Db(DbErr::Custom(format!("{what}: {e}")))
        }
        _ => StorageError::Unavailable(format!("SQLite read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};

    /// One column of each kind our reads decode.
    fn every_kind() -> SelectStatement {
        Query::select()
            .expr_as(Expr::val("text"), Alias::new("s"))
            .expr_as(Expr::val(42i64), Alias::new("n"))
            .expr_as(Expr::val(7i32), Alias::new("i"))
            .expr_as(Expr::val(vec![1u8, 2, 3]), Alias::new("b"))
            .expr_as(Expr::val(true), Alias::new("t"))
            .expr_as(Expr::val(Option::<String>::None), Alias::new("none"))
            .to_owned()
    }

    type Kinds = (String, i64, i32, Vec<u8>, bool, Option<String>);

    fn decode_kinds(row: &Fields<'_>) -> StorageResult<Kinds> {
        Ok((
            row.get("s")?,
            row.get("n")?,
            row.get("i")?,
            row.get("b")?,
            row.get("t")?,
            row.get("none")?,
        ))
    }

    /// A SQLite file's point reads run on local connections and decode what the pool decodes; elsewhere
    /// they are the pool's.
    #[tokio::test]
    async fn point_reads_decode_what_the_pool_decodes() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let local = s.read().local.is_some();
            assert_eq!(local, tdb.label == "sqlite", "{}", tdb.label);
            let q = every_kind();
            let want: Kinds = ("text".into(), 42, 7, vec![1, 2, 3], true, None);
            assert_eq!(
                s.read().one(&q, decode_kinds).await.unwrap(),
                Some(want.clone())
            );
            assert_eq!(s.db().one(&q, decode_kinds).await.unwrap(), Some(want));
            let nothing = Query::select()
                .expr(Expr::val(1))
                .and_where(Expr::val(1).eq(2))
                .to_owned();
            assert_eq!(s.read().one(&nothing, |_| Ok(())).await.unwrap(), None);
            tdb.cleanup().await;
        }
    }

    fn local_of(s: &super::super::Storage) -> &LocalSqlite {
        s.read().local.expect("a SQLite file reads locally")
    }

    /// Stored data of the wrong type is an error the caller can report, not a panic.
    #[tokio::test]
    async fn a_value_of_the_wrong_type_is_corrupt_data() {
        let tdb = test_databases().await.remove(0);
        let s = tdb.storage().await.unwrap();
        let q = Query::select()
            .expr_as(Expr::val("x"), Alias::new("n"))
            .to_owned();
        let err = s
            .read()
            .one(&q, |row| row.get::<i64>("n"))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Corrupt(_)), "{err:?}");
        let missing = s
            .read()
            .one(&q, |row| row.get::<String>("absent"))
            .await
            .unwrap_err();
        assert!(matches!(missing, StorageError::Db(_)), "{missing:?}");
        tdb.cleanup().await;
    }

    /// Connections are reused, opened when several threads read at once, and at most KEEP_IDLE kept.
    #[tokio::test]
    async fn connections_are_reused_and_at_most_a_few_kept() {
        let tdb = test_databases().await.remove(0);
        let s = tdb.storage().await.unwrap();
        let local = local_of(&s);
        for _ in 0..20 {
            local.one(&every_kind(), decode_kinds).unwrap();
        }
        assert_eq!(
            local.idle_connections(),
            1,
            "one reader at a time needs one connection"
        );
        let busy: Vec<_> = (0..KEEP_IDLE + 3).map(|_| local.take().unwrap()).collect();
        assert_eq!(local.idle_connections(), 0);
        busy.into_iter().for_each(|c| local.put_back(c));
        assert_eq!(local.idle_connections(), KEEP_IDLE);
        tdb.cleanup().await;
    }

    /// Local connections are read-only and plan each statement once, as the pool's readers do.
    #[tokio::test]
    async fn local_connections_are_read_only_with_stable_plans() {
        let tdb = test_databases().await.remove(0);
        let s = tdb.storage().await.unwrap();
        local_of(&s).with_connection(|c| {
            assert!(c.execute("CREATE TABLE t (a)", []).is_err(), "read-only");
            let qpsg = c
                .db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
                .unwrap();
            assert!(qpsg, "planner stability guarantee on");
        });
        tdb.cleanup().await;
    }
}
