//! One query plan per statement on SQLite, whatever values it is run with.
//!
//! SQLite (3.51, built with STAT4) lets a bound value shape a statement's plan. It then marks the
//! statement to be compiled again whenever that parameter is bound anew: for `LIMIT ?` it inlines the
//! limit. sea-orm binds every value, so each `.one()` (`... LIMIT ?`) was parsed and planned again on
//! every run. On a check-in that was the device, certificate and enrollment reads, 7% of the server's CPU.
//! The query planner stability guarantee (QPSG) turns that off: plans are made without looking at bound
//! values, and cached statements stay compiled. Our queries gain nothing from value-specific plans (no
//! partial indexes, no ANALYZE statistics).

use sea_orm::sqlx::pool::PoolOptions;
use sea_orm::sqlx::sqlite::SqliteConnection;
use sea_orm::sqlx::{Error, Sqlite};

/// A SQLite pool whose every connection (the writer's and the readers') plans each statement once.
pub(super) fn on_every_connection(pool: PoolOptions<Sqlite>) -> PoolOptions<Sqlite> {
    pool.after_connect(|conn, _| Box::pin(stable_plans(conn)))
}

/// Turn on the planner stability guarantee for one new connection.
async fn stable_plans(conn: &mut SqliteConnection) -> Result<(), Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is this connection's open handle, locked out of sqlx's worker for the call.
    // SQLITE_DBCONFIG_ENABLE_QPSG takes an int (1: on) and an int* for the new state (NULL: not wanted).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db,
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(Error::Configuration(
            format!("SQLite refused SQLITE_DBCONFIG_ENABLE_QPSG (code {rc})").into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::testing::test_databases;
    use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

    /// The opcodes SQLite compiled `SELECT 1 LIMIT ?` into, run with a bound limit on `c`.
    async fn limit_opcodes(c: &DatabaseConnection) -> Vec<String> {
        let stmt = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "EXPLAIN SELECT 1 LIMIT ?",
            [1i64.into()],
        );
        c.query_all_raw(stmt)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String>("", "opcode").unwrap())
            .collect()
    }

    /// Without the guarantee, binding the limit expires the statement and SQLite compiles it again with
    /// the value inlined (an `Integer` where `Variable` was), on every run. With it the limit stays a
    /// parameter, on the writer and on every reader.
    #[tokio::test]
    async fn bound_limits_stay_parameters_on_every_connection() {
        let tdb = test_databases().await.remove(0);
        assert_eq!(tdb.label, "sqlite");
        let s = tdb.storage().await.unwrap();
        for (name, c) in [("writer", s.db()), ("reader", s.read().pool)] {
            for run in 0..2 {
                let ops = limit_opcodes(c).await;
                assert!(
                    ops.iter().any(|o| o == "Variable"),
                    "{name}, run {run}: LIMIT ? was compiled with its value: {ops:?}"
                );
            }
        }
    }
}
