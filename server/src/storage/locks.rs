//! Cluster-wide locks for background jobs that are not claimed row by row (housekeeping). Jobs over rows —
//! pushes, schedule ticks, outbox events, identity renewals — lock the rows they take instead
//! (`FOR UPDATE SKIP LOCKED`), so replicas share that work rather than take turns.

use super::StorageResult;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// A background job run by one replica at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Expiry and retention: command TTLs, finished rows, delivered events, plugin keys, used secrets.
    Housekeeping,
}

impl Job {
    /// Arbitrary, fixed advisory lock keys (ASCII), apart from the audit log's.
    fn key(self) -> i64 {
        match self {
            Job::Housekeeping => 0x6d646d5f686f7573, // "mdm_hous"
        }
    }
}

/// Take `job`'s lock for the rest of the transaction `c` without waiting: false when another replica holds
/// it (it is doing the job now, so this round is skipped). On PostgreSQL it is a transaction-scoped advisory
/// lock, released at commit, rollback, or when the holder's connection dies (a killed process never leaves
/// it held). SQLite has one writer and one server per file: always true.
pub async fn try_job_lock<C: ConnectionTrait>(c: &C, job: Job) -> StorageResult<bool> {
    if c.get_database_backend() != DbBackend::Postgres {
        return Ok(true);
    }
    let row = c
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_try_advisory_xact_lock({}) AS locked", job.key()),
        ))
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<bool>("", "locked")?,
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;
    use crate::storage::Storage;
    use sea_orm::TransactionTrait;

    #[tokio::test]
    async fn a_job_lock_is_held_by_one_transaction_until_it_ends() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let first = s.db().begin().await.unwrap();
            assert!(try_job_lock(&first, Job::Housekeeping).await.unwrap());
            if tdb.schema.is_some() {
                // Another connection (another replica) is refused while the first holds it...
                let other = Storage::connect(&tdb.url, tdb.schema.as_deref())
                    .await
                    .unwrap();
                let second = other.db().begin().await.unwrap();
                assert!(!try_job_lock(&second, Job::Housekeeping).await.unwrap());
                second.rollback().await.unwrap();
                first.commit().await.unwrap();
                // ...and gets it once the first transaction has ended.
                let third = other.db().begin().await.unwrap();
                assert!(try_job_lock(&third, Job::Housekeeping).await.unwrap());
                third.commit().await.unwrap();
            } else {
                first.commit().await.unwrap();
            }
            tdb.cleanup().await;
        }
    }
}
