//! The read door, [`super::Storage::read`]: every read outside a transaction goes through it.

use super::point_reads::{Fields, LocalSqlite, PointRead};
use super::StorageResult;
use sea_orm::sea_query::SelectStatement;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, ExecResult, QueryResult, Statement,
};
use std::future::Future;
use std::pin::Pin;

/// Reads that see everything committed before they start. As a sea-orm connection it is the read-only
/// pool (on a SQLite file, connections that do not wait for the writer; elsewhere the one pool); as a
/// [`PointRead`] it answers a one-row lookup on the calling thread when it can (see
/// [`super::point_reads`]). Anything a transaction must see consistently is read inside it instead.
#[derive(Clone, Copy)]
pub struct Reads<'s> {
    pub(super) pool: &'s DatabaseConnection,
    /// SQLite files only: the point reads' own connections.
    pub(super) local: Option<&'s LocalSqlite>,
}

impl PointRead for Reads<'_> {
    async fn one<T, F>(&self, q: &SelectStatement, decode: F) -> StorageResult<Option<T>>
    where
        T: Send,
        F: FnOnce(&Fields<'_>) -> StorageResult<T> + Send,
    {
        match self.local {
            Some(local) => local.one(q, decode),
            None => self.pool.one(q, decode).await,
        }
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 'a>>;

/// The pool's own futures, handed on as they are (no second box): reads cost what they cost on the pool.
impl ConnectionTrait for Reads<'_> {
    fn get_database_backend(&self) -> DbBackend {
        self.pool.get_database_backend()
    }

    fn execute_raw<'a, 'b>(&'a self, stmt: Statement) -> Boxed<'b, ExecResult>
    where
        'a: 'b,
        Self: 'b,
    {
        self.pool.execute_raw(stmt)
    }

    fn execute_unprepared<'a, 'c, 'b>(&'a self, sql: &'c str) -> Boxed<'b, ExecResult>
    where
        'a: 'b,
        'c: 'b,
        Self: 'b,
    {
        self.pool.execute_unprepared(sql)
    }

    fn query_one_raw<'a, 'b>(&'a self, stmt: Statement) -> Boxed<'b, Option<QueryResult>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.pool.query_one_raw(stmt)
    }

    fn query_all_raw<'a, 'b>(&'a self, stmt: Statement) -> Boxed<'b, Vec<QueryResult>>
    where
        'a: 'b,
        Self: 'b,
    {
        self.pool.query_all_raw(stmt)
    }

    fn support_returning(&self) -> bool {
        self.pool.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.pool.is_mock_connection()
    }
}
