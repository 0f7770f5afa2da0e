//! Writes that need no answer, sent to the database together.
//!
//! On SQLite every statement is a trip to its connection's thread and back: two thread wake-ups, more
//! than the insert itself costs, and the single writer is held for all of it. A plugin's audit rows and
//! events are three such inserts per check-in, so SQLite gets them as one query of several statements
//! (sqlx binds each statement's parameters in turn). PostgreSQL's extended protocol takes one statement
//! per query, so there they go one after another, as before.

use super::StorageResult;
use sea_orm::{ConnectionTrait, DbBackend, QueryResult, Statement, Values};

/// Run `statements` in order on `c` (inside the caller's transaction when `c` is one).
pub async fn execute<C: ConnectionTrait>(c: &C, statements: Vec<Statement>) -> StorageResult<()> {
    query(c, statements).await.map(drop)
}

/// Run `statements` in order on `c` and return the rows they return (`RETURNING`), in order.
pub async fn query<C: ConnectionTrait>(
    c: &C,
    statements: Vec<Statement>,
) -> StorageResult<Vec<QueryResult>> {
    match c.get_database_backend() {
        DbBackend::Sqlite if statements.len() > 1 => {
            Ok(c.query_all_raw(joined(statements)).await?)
        }
        _ => {
            let mut rows = Vec::new();
            for s in statements {
                rows.extend(c.query_all_raw(s).await?);
            }
            Ok(rows)
        }
    }
}

/// One SQLite query holding every statement, their values in the same order.
fn joined(statements: Vec<Statement>) -> Statement {
    let mut sql = String::new();
    let mut values = Vec::new();
    for s in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&s.sql);
        values.extend(s.values.map(|v| v.0).unwrap_or_default());
    }
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, Values(values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{test_databases, TestDatabase};
    use sea_orm::TransactionTrait;

    fn insert(backend: DbBackend, key: &str, value: i64) -> Statement {
        let sql = match backend {
            DbBackend::Postgres => "INSERT INTO batch_t (k, v) VALUES ($1, $2)",
            _ => "INSERT INTO batch_t (k, v) VALUES (?, ?)",
        };
        Statement::from_sql_and_values(backend, sql, [key.into(), value.into()])
    }

    /// The test database's storage, with the table the tests write.
    async fn with_table(tdb: &TestDatabase) -> crate::storage::Storage {
        let s = tdb.storage().await.unwrap();
        s.db()
            .execute_unprepared("CREATE TABLE batch_t (k TEXT NOT NULL UNIQUE, v BIGINT NOT NULL)")
            .await
            .unwrap();
        s
    }

    async fn rows<C: ConnectionTrait>(c: &C) -> Vec<(String, i64)> {
        let stmt = Statement::from_string(
            c.get_database_backend(),
            "SELECT k, v FROM batch_t ORDER BY v",
        );
        c.query_all_raw(stmt)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("", "k").unwrap(), r.try_get("", "v").unwrap()))
            .collect()
    }

    /// Each statement gets its own values, in order; a failing statement fails the batch, and in a
    /// transaction nothing of it stays.
    #[tokio::test]
    async fn statements_run_in_order_with_their_own_values_and_fail_together() {
        for tdb in test_databases().await {
            let s = with_table(&tdb).await;
            let db = s.db();
            let b = db.get_database_backend();
            execute(
                db,
                vec![insert(b, "a", 1), insert(b, "b", 2), insert(b, "c", 3)],
            )
            .await
            .unwrap();
            assert_eq!(
                rows(db).await,
                [("a".into(), 1), ("b".into(), 2), ("c".into(), 3)],
                "{}",
                tdb.label
            );

            let txn = db.begin().await.unwrap();
            // "a" exists: the third statement violates the unique key.
            let failed = execute(
                &txn,
                vec![insert(b, "d", 4), insert(b, "e", 5), insert(b, "a", 6)],
            )
            .await;
            assert!(failed.is_err(), "{}: duplicate key accepted", tdb.label);
            txn.rollback().await.unwrap();
            assert_eq!(
                rows(db).await.len(),
                3,
                "{}: part of a failed batch stayed",
                tdb.label
            );
            tdb.cleanup().await;
        }
    }

    /// The rows of the statements that return some come back in statement order; the others add none.
    #[tokio::test]
    async fn returned_rows_come_back_in_statement_order() {
        for tdb in test_databases().await {
            let s = with_table(&tdb).await;
            let db = s.db();
            let b = db.get_database_backend();
            let returning = |k: &str, v: i64| {
                let mut st = insert(b, k, v);
                st.sql.push_str(" RETURNING v");
                st
            };
            let txn = db.begin().await.unwrap();
            let out = query(
                &txn,
                vec![
                    returning("a", 10),
                    insert(b, "b", 2),
                    returning("c", 30),
                    returning("d", 40),
                ],
            )
            .await
            .unwrap();
            txn.commit().await.unwrap();
            let vs: Vec<i64> = out.iter().map(|r| r.try_get("", "v").unwrap()).collect();
            assert_eq!(vs, [10, 30, 40], "{}", tdb.label);
            assert_eq!(rows(db).await.len(), 4, "{}", tdb.label);
            tdb.cleanup().await;
        }
    }
}
