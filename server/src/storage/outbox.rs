//! The durable outbox for plugin events: written in the check-in's transaction, delivered afterwards with
//! retries. A worker leases due rows by moving their `next_attempt_at` forward (rows locked with SKIP
//! LOCKED on PostgreSQL), so two replicas never deliver the same attempt.

use super::entities::event_outbox::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QueryTrait, Statement,
};

pub use super::entities::event_outbox::Model as OutboxEvent;

/// The insert of a new event, due now, for the caller to run with its other writes (a plugin run's
/// batch). Events with the same `ordering_key` are delivered in the order written.
pub fn insert_statement(
    backend: DbBackend,
    plugin_id: &str,
    sink: &str,
    topic: &str,
    payload: &str,
    ordering_key: Option<&str>,
    now: i64,
) -> Statement {
    Entity::insert(ActiveModel {
        id: NotSet,
        plugin_id: Set(plugin_id.to_string()),
        sink: Set(sink.to_string()),
        topic: Set(topic.to_string()),
        payload: Set(payload.to_string()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        delivered_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        ordering_key: Set(ordering_key.map(str::to_string)),
    })
    .build(backend)
}

/// Lease up to `limit` due events for `lease_ms`, oldest first, in one statement; returns the events this
/// caller won. On PostgreSQL the due rows are locked `FOR UPDATE SKIP LOCKED`, so replicas leasing at the
/// same moment take disjoint events without waiting on each other; SQLite has one writer. A lease that
/// runs out (the replica died mid-delivery) makes the event due again: delivery is at least once.
pub async fn lease_due<C: ConnectionTrait>(
    c: &C,
    now: i64,
    lease_ms: i64,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let due = Query::select()
        .column(Column::Id)
        .from(Entity)
        .and_where(Column::DeliveredAt.is_null())
        .and_where(Column::NextAttemptAt.lte(now))
        .order_by(Column::Id, Order::Asc)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    let update = Query::update()
        .table(Entity)
        .value(Column::NextAttemptAt, now + lease_ms)
        .and_where(Column::Id.in_subquery(due))
        .returning_all()
        .to_owned();
    let stmt = c.get_database_backend().build(&update);
    let mut won = Entity::find().from_raw_sql(stmt).all(c).await?;
    won.sort_by_key(|e| e.id);
    Ok(won)
}

/// Record events as delivered, in one statement per batch (the ids of one leased batch).
pub async fn mark_delivered<C: ConnectionTrait>(c: &C, ids: &[i64], now: i64) -> StorageResult<()> {
    for chunk in ids.chunks(1000) {
        Entity::update_many()
            .col_expr(Column::DeliveredAt, Expr::value(now))
            .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .exec(c)
            .await?;
    }
    Ok(())
}

pub async fn mark_failed<C: ConnectionTrait>(
    c: &C,
    id: i64,
    next_attempt_at: i64,
    error: &str,
) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::NextAttemptAt, Expr::value(next_attempt_at))
        .col_expr(Column::LastError, Expr::value(error))
        .col_expr(Column::Attempts, Expr::col(Column::Attempts).add(1))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Leave an event untried until `until` (an earlier event of its device failed and retries then).
pub async fn hold<C: ConnectionTrait>(c: &C, id: i64, until: i64) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::NextAttemptAt, Expr::value(until))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(c: &C, id: i64) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(id).one(c).await?)
}

/// Delivered events older than `cutoff` are deleted (housekeeping).
pub async fn purge_delivered<C: ConnectionTrait>(c: &C, cutoff: i64) -> StorageResult<u64> {
    Ok(Entity::delete_many()
        .filter(Column::DeliveredAt.lt(cutoff))
        .exec(c)
        .await?
        .rows_affected)
}

pub async fn all<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<Model>> {
    Ok(Entity::find().order_by_asc(Column::Id).all(c).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    #[tokio::test]
    async fn a_lease_is_won_once_and_failures_back_off() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let event =
                insert_statement(db.get_database_backend(), "p", "sink", "t", "{}", None, 10);
            db.execute_raw(event).await.unwrap();
            let first = lease_due(db, 10, 1000, 10).await.unwrap();
            assert_eq!(first.len(), 1);
            assert!(
                lease_due(db, 10, 1000, 10).await.unwrap().is_empty(),
                "leased"
            );
            mark_failed(db, first[0].id, 5000, "boom").await.unwrap();
            assert!(lease_due(db, 4999, 1000, 10).await.unwrap().is_empty());
            let again = lease_due(db, 5000, 1000, 10).await.unwrap();
            assert_eq!((again.len(), again[0].attempts), (1, 1));
            mark_delivered(db, &[again[0].id], 5001).await.unwrap();
            assert!(lease_due(db, 99_999, 1000, 10).await.unwrap().is_empty());
            assert_eq!(purge_delivered(db, 6000).await.unwrap(), 1);
            tdb.cleanup().await;
        }
    }
}
