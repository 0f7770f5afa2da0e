//! The durable outbox for plugin events: written in the check-in's transaction, delivered afterwards with
//! retries. A worker leases due rows by moving their `next_attempt_at` forward (rows locked with SKIP
//! LOCKED on PostgreSQL), so two replicas never deliver the same attempt.

use super::entities::event_outbox::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QueryTrait, Statement,
};

pub use super::entities::event_outbox::Model as OutboxEvent;

/// A new event, as a plugin run writes it. Events with the same `ordering_key` are delivered in the
/// order written.
pub struct NewEvent<'a> {
    /// Globally unique: [`new_event_id`].
    pub event_id: &'a str,
    pub plugin_id: &'a str,
    pub sink: &'a str,
    pub topic: &'a str,
    pub payload: &'a str,
    pub ordering_key: Option<&'a str>,
    pub now: i64,
    /// When a worker may lease it: `now`, or later when the writing process delivers it itself and
    /// holds it as if leased until then (it stays in the outbox for any worker if that process dies).
    pub due_at: i64,
}

impl NewEvent<'_> {
    /// The insert, returning the new row's `id`, for the caller to run with its other writes (a plugin
    /// run's batch).
    pub fn insert_statement(&self, backend: DbBackend) -> Statement {
        let mut row: ActiveModel = self.stored(0).into();
        row.id = NotSet;
        let mut insert = Entity::insert(row);
        insert.query().returning_col(Column::Id);
        insert.build(backend)
    }

    /// The row as stored under `id`.
    pub fn stored(&self, id: i64) -> Model {
        Model {
            id,
            plugin_id: self.plugin_id.to_string(),
            sink: self.sink.to_string(),
            topic: self.topic.to_string(),
            payload: self.payload.to_string(),
            attempts: 0,
            next_attempt_at: self.due_at,
            delivered_at: None,
            last_error: None,
            created_at: self.now,
            ordering_key: self.ordering_key.map(str::to_string),
            event_id: Some(self.event_id.to_string()),
        }
    }
}

/// A new event's id: a random UUID, unique across databases and their resets.
pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Model {
    /// What receivers know the event by (`X-MDM-Event-Id`): its UUID, or for a row written before events
    /// had one, its row id.
    pub fn public_id(&self) -> String {
        self.event_id.clone().unwrap_or_else(|| self.id.to_string())
    }
}

/// Lease up to `limit` due events for `lease_ms`, oldest first, in one statement; returns the events this
/// caller won. On PostgreSQL the due rows are locked `FOR UPDATE SKIP LOCKED`, so replicas leasing at the
/// same moment take disjoint events without waiting on each other; SQLite has one writer. A lease that
/// runs out (the replica died mid-delivery) makes the event due again: delivery is at least once.
pub async fn lease_due<W: Writes>(
    c: &W,
    now: i64,
    lease_ms: i64,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    let c = c.connection();
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
pub async fn mark_delivered<W: Writes>(c: &W, ids: &[i64], now: i64) -> StorageResult<()> {
    let c = c.connection();
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

pub async fn mark_failed<W: Writes>(
    c: &W,
    id: i64,
    next_attempt_at: i64,
    error: &str,
) -> StorageResult<()> {
    let c = c.connection();
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
pub async fn hold<W: Writes>(c: &W, id: i64, until: i64) -> StorageResult<()> {
    let c = c.connection();
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

    /// An event of plugin `p` for `sink`, written at 10 and due at `due_at`.
    fn event(ordering_key: Option<&str>, due_at: i64) -> NewEvent<'_> {
        NewEvent {
            event_id: "e",
            plugin_id: "p",
            sink: "sink",
            topic: "t",
            payload: "{}",
            ordering_key,
            now: 10,
            due_at,
        }
    }

    #[tokio::test]
    async fn a_lease_is_won_once_and_failures_back_off() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let event = event(None, 10);
            db.execute_raw(event.insert_statement(db.get_database_backend()))
                .await
                .unwrap();
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

    /// An event its writer delivers itself is nobody else's until its hold runs out; then, the writer
    /// having died, any worker leases it. Its insert returns the id it is stored under.
    #[tokio::test]
    async fn a_held_event_waits_for_its_writer_then_is_due() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let event = event(Some("D1"), 10 + 60_000);
            let rows = db
                .query_all_raw(event.insert_statement(db.get_database_backend()))
                .await
                .unwrap();
            let id: i64 = rows[0].try_get("", "id").unwrap();
            assert_eq!(find(db, id).await.unwrap(), Some(event.stored(id)));
            assert!(lease_due(db, 10, 1000, 10).await.unwrap().is_empty());
            assert!(lease_due(db, 60_009, 1000, 10).await.unwrap().is_empty());
            let won = lease_due(db, 60_010, 1000, 10).await.unwrap();
            assert_eq!(won.iter().map(|e| e.id).collect::<Vec<_>>(), [id]);
            tdb.cleanup().await;
        }
    }
}
