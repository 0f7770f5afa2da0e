//! The audit log: append-only and hash-chained. Each row's hash covers the previous row's hash and the row
//! itself, so `verify` finds any row that was edited, removed or inserted out of turn. Ids are assigned in
//! the chain (previous + 1), so a gap is a deletion.
//!
//! Writing an entry and chaining it are two steps. [`append`] inserts into `audit_pending` inside the
//! caller's transaction, so an entry commits or rolls back with the change it records, and costs one
//! insert: no lock, no read of the chain's head. [`seal`] moves pending entries into the chain in batches,
//! serialised across replicas (PostgreSQL: a transaction-scoped advisory lock; SQLite has one writer). The
//! server seals every [`SEAL_INTERVAL`]; until then an entry is durable but not yet covered by a hash.

use super::entities::audit_entry::{ActiveModel, Column, Entity, Model};
use super::entities::audit_pending;
use super::{Storage, StorageResult, Writes};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};
use std::time::Duration;

pub use super::entities::audit_entry::Model as AuditEntry;

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Arbitrary, fixed: the advisory lock that serialises sealing across replicas.
const APPEND_LOCK: i64 = 0x6d646d5f61756474; // "mdm_audt"

/// How often the server seals pending entries into the chain: the longest an entry stays outside it.
pub const SEAL_INTERVAL: Duration = Duration::from_secs(1);

/// Pending entries chained per transaction.
const SEAL_BATCH: u64 = 500;

/// What happened, by whom, to what.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

impl NewEntry {
    pub fn new(
        at: i64,
        actor: impl Into<String>,
        action: &str,
        target: Option<&str>,
        detail: serde_json::Value,
    ) -> Self {
        Self {
            at,
            actor: actor.into(),
            action: action.to_string(),
            target: target.map(str::to_string),
            detail,
        }
    }
}

/// The hash of a row given the previous hash: SHA-256 over a JSON array of the fields (unambiguous, and
/// the detail as stored, so no re-serialisation question arises).
pub fn row_hash(
    prev_hash: &str,
    id: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    detail: &str,
) -> String {
    let canonical =
        serde_json::json!([prev_hash, id, at, actor, action, target, detail]).to_string();
    hex::encode(openssl::sha::sha256(canonical.as_bytes()))
}

/// Record entries, in order, in `c`'s transaction: they commit or roll back with the change they record,
/// and [`seal`] chains them.
pub async fn append<W: Writes>(c: &W, entries: Vec<NewEntry>) -> StorageResult<()> {
    let c = c.connection();
    super::batch::execute(c, append_statements(c.get_database_backend(), entries)).await
}

/// The inserts [`append`] runs, for a caller that sends them with other writes.
pub fn append_statements(backend: DbBackend, entries: Vec<NewEntry>) -> Vec<Statement> {
    let rows: Vec<_> = entries
        .into_iter()
        .map(|e| audit_pending::ActiveModel {
            id: NotSet,
            at: Set(e.at),
            actor: Set(e.actor),
            action: Set(e.action),
            target: Set(e.target),
            detail: Set(e.detail.to_string()),
        })
        .collect();
    rows.chunks(200)
        .map(|chunk| audit_pending::Entity::insert_many(chunk.to_vec()).build(backend))
        .collect()
}

/// Chain every pending entry, oldest first, a batch per transaction; returns how many were chained. Safe to
/// run on every replica at once: each batch holds the chain's lock, and an entry leaves `audit_pending` in
/// the transaction that chains it.
pub async fn seal(s: &Storage) -> StorageResult<u64> {
    let mut sealed = 0;
    loop {
        let n = s.transaction(|txn| Box::pin(seal_batch(txn))).await?;
        sealed += n;
        if n < SEAL_BATCH {
            return Ok(sealed);
        }
    }
}

async fn seal_batch(txn: &DatabaseTransaction) -> StorageResult<u64> {
    if txn.get_database_backend() == DbBackend::Postgres {
        // Held until the transaction ends: no other sealer can read the same head or the same pending rows.
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
            .await?;
    }
    let pending = audit_pending::Entity::find()
        .order_by_asc(audit_pending::Column::Id)
        .limit(SEAL_BATCH)
        .all(txn)
        .await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = pending.iter().map(|p| p.id).collect();
    let head = Entity::find()
        .order_by_desc(Column::Id)
        .limit(1)
        .one(txn)
        .await?;
    let (mut id, mut prev) = head.map_or((0, GENESIS.to_string()), |h| (h.id, h.hash));
    let n = pending.len() as u64;
    let mut rows = Vec::with_capacity(pending.len());
    for e in pending {
        id += 1;
        let hash = row_hash(
            &prev,
            id,
            e.at,
            &e.actor,
            &e.action,
            e.target.as_deref(),
            &e.detail,
        );
        rows.push(ActiveModel {
            id: Set(id),
            at: Set(e.at),
            actor: Set(e.actor),
            action: Set(e.action),
            target: Set(e.target),
            detail: Set(e.detail),
            prev_hash: Set(prev),
            hash: Set(hash.clone()),
        });
        prev = hash;
    }
    for chunk in rows.chunks(200) {
        Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    // By id, not "up to the last id": on PostgreSQL an entry with a lower id may commit after the read
    // above, and must stay pending for the next batch.
    audit_pending::Entity::delete_many()
        .filter(sea_orm::ColumnTrait::is_in(&audit_pending::Column::Id, ids))
        .exec(txn)
        .await?;
    Ok(n)
}

/// Entries recorded and not yet chained.
pub async fn pending<C: ConnectionTrait>(c: &C) -> StorageResult<u64> {
    Ok(audit_pending::Entity::find().count(c).await?)
}

/// The sealer's round: chain whatever is pending, if anything is. The check is a read, off the writer, so an
/// idle server does not queue a write every [`SEAL_INTERVAL`].
pub async fn seal_pending(storage: &super::Storage) -> StorageResult<u64> {
    if pending(&storage.read()).await? == 0 {
        return Ok(0);
    }
    seal(storage).await
}

/// Newest first, optionally before an id (paging).
pub async fn list<C: ConnectionTrait>(
    c: &C,
    before_id: Option<i64>,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    let mut q = Entity::find();
    if let Some(b) = before_id {
        q = q.filter(sea_orm::ColumnTrait::lt(&Column::Id, b));
    }
    Ok(q.order_by_desc(Column::Id).limit(limit).all(c).await?)
}

/// Whether a row with this hash exists (a head recorded earlier must still be in the chain).
pub async fn contains_hash<C: ConnectionTrait>(c: &C, hash: &str) -> StorageResult<bool> {
    Ok(Entity::find()
        .filter(sea_orm::ColumnTrait::eq(&Column::Hash, hash))
        .one(c)
        .await?
        .is_some())
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every row links to the one before; `head` is the last hash (record it elsewhere to detect a
    /// truncated tail later).
    Intact { rows: u64, head: String },
    /// The first row where the chain breaks, and how.
    Broken { id: i64, reason: String },
}

/// Walk the whole chain in id order, a page at a time.
pub async fn verify<C: ConnectionTrait>(c: &C) -> StorageResult<Verification> {
    let mut prev = GENESIS.to_string();
    let mut expect_id = 1;
    let mut rows = 0u64;
    loop {
        let page = Entity::find()
            .filter(sea_orm::ColumnTrait::gte(&Column::Id, expect_id))
            .order_by_asc(Column::Id)
            .limit(1000)
            .all(c)
            .await?;
        if page.is_empty() {
            return Ok(Verification::Intact { rows, head: prev });
        }
        for r in page {
            if r.id != expect_id {
                return Ok(Verification::Broken {
                    id: expect_id,
                    reason: format!("row {expect_id} is missing (next is {})", r.id),
                });
            }
            if r.prev_hash != prev {
                return Ok(Verification::Broken {
                    id: r.id,
                    reason: "does not link to the row before it".into(),
                });
            }
            let h = row_hash(
                &r.prev_hash,
                r.id,
                r.at,
                &r.actor,
                &r.action,
                r.target.as_deref(),
                &r.detail,
            );
            if h != r.hash {
                return Ok(Verification::Broken {
                    id: r.id,
                    reason: "its contents do not match its hash (edited)".into(),
                });
            }
            prev = r.hash;
            expect_id += 1;
            rows += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;
    use sea_orm::TransactionTrait;

    fn entry(i: i64) -> NewEntry {
        NewEntry {
            at: i,
            actor: "api-key:k1".into(),
            action: "test.action".into(),
            target: Some(format!("t{i}")),
            detail: serde_json::json!({"n": i}),
        }
    }

    #[tokio::test]
    async fn the_chain_verifies_and_any_edit_or_deletion_is_found() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let c = s.db();
            assert_eq!(
                verify(c).await.unwrap(),
                Verification::Intact {
                    rows: 0,
                    head: GENESIS.into()
                }
            );
            append(c, (1..=3).map(entry).collect()).await.unwrap();
            append(c, vec![entry(4)]).await.unwrap();
            assert_eq!(seal(&s).await.unwrap(), 4);
            let Verification::Intact { rows, .. } = verify(c).await.unwrap() else {
                panic!("intact chain reported broken");
            };
            assert_eq!(rows, 4);

            // The table refuses edits; an attacker with the database drops the guard first.
            let edit = "UPDATE audit_log SET detail = '{\"n\":99}' WHERE id = 2";
            assert!(c.execute_unprepared(edit).await.is_err(), "append-only");
            let unguard = match c.get_database_backend() {
                DbBackend::Postgres => vec!["DROP TRIGGER audit_log_no_update ON audit_log"],
                _ => vec![
                    "DROP TRIGGER audit_log_no_update",
                    "DROP TRIGGER audit_log_no_delete",
                ],
            };
            for sql in unguard {
                c.execute_unprepared(sql).await.unwrap();
            }
            c.execute_unprepared(edit).await.unwrap();
            assert!(matches!(
                verify(c).await.unwrap(),
                Verification::Broken { id: 2, .. }
            ));
            // Recomputing the edited row's own hash is not enough: the next row no longer links.
            let r2 = Entity::find_by_id(2).one(c).await.unwrap().unwrap();
            let forged = row_hash(
                &r2.prev_hash,
                2,
                r2.at,
                &r2.actor,
                &r2.action,
                r2.target.as_deref(),
                &r2.detail,
            );
            c.execute_unprepared(&format!(
                "UPDATE audit_log SET hash = '{forged}' WHERE id = 2"
            ))
            .await
            .unwrap();
            assert!(matches!(
                verify(c).await.unwrap(),
                Verification::Broken { id: 3, .. }
            ));
            c.execute_unprepared("DELETE FROM audit_log WHERE id = 3")
                .await
                .unwrap();
            let Verification::Broken { id, reason } = verify(c).await.unwrap() else {
                panic!("deletion not found");
            };
            assert!(id <= 3, "{reason}");
        }
    }

    #[tokio::test]
    async fn entries_wait_with_their_change_and_are_chained_once_in_order() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let c = s.db();
            let txn = c.begin().await.unwrap();
            append(&txn, (1..=3).map(entry).collect()).await.unwrap();
            txn.commit().await.unwrap();
            let txn = c.begin().await.unwrap();
            append(&txn, vec![entry(99)]).await.unwrap();
            txn.rollback().await.unwrap();

            assert_eq!(
                pending(c).await.unwrap(),
                3,
                "the rolled-back entry is gone"
            );
            assert!(
                list(c, None, 10).await.unwrap().is_empty(),
                "not chained yet"
            );
            assert_eq!(seal(&s).await.unwrap(), 3);
            assert_eq!(pending(c).await.unwrap(), 0);
            assert_eq!(seal(&s).await.unwrap(), 0, "nothing is chained twice");
            let chained = list(c, None, 10).await.unwrap();
            let targets: Vec<_> = chained
                .iter()
                .rev()
                .filter_map(|e| e.target.clone())
                .collect();
            assert_eq!(targets, ["t1", "t2", "t3"]);
            assert!(matches!(
                verify(c).await.unwrap(),
                Verification::Intact { rows: 3, .. }
            ));
        }
    }

    #[tokio::test]
    async fn sealers_on_every_replica_chain_each_entry_exactly_once() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let c = s.db();
            let n = SEAL_BATCH as i64 * 2 + 234;
            append(c, (1..=n).map(entry).collect()).await.unwrap();
            // Side by side, as replicas would: on PostgreSQL each takes its own connection.
            let (a, b, d) = tokio::join!(seal(&s), seal(&s), seal(&s));
            assert_eq!(a.unwrap() + b.unwrap() + d.unwrap(), n as u64);
            assert_eq!(pending(c).await.unwrap(), 0);
            let Verification::Intact { rows, .. } = verify(c).await.unwrap() else {
                panic!("concurrent sealing broke the chain");
            };
            assert_eq!(rows, n as u64);
        }
    }
}
