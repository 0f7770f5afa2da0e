//! Push state: certificates (keys sealed) and, per channel, when a push is next due. A push is owed when a
//! channel has pending commands and `next_push_at` has come: set to "now" by an enqueue, pushed back with
//! exponential backoff after each push, and moved to one interval after each check-in (for commands the
//! device left pending, e.g. after NotNow).

use super::entities::enrollment::{self, Column, Entity as Enrollments};
use super::entities::push_cert::{self, Entity as Certs};
use super::entities::queue_item;
use super::queue::QueueStatus;
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::{
    Alias, Expr, ExprTrait, LockBehavior, LockType, OnConflict, Order, Query,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};

pub use super::entities::push_cert::Model as PushCert;

pub async fn upsert_cert<W: Writes>(c: &W, cert: PushCert) -> StorageResult<()> {
    let c = c.connection();
    Certs::insert(push_cert::ActiveModel {
        topic: Set(cert.topic),
        cert_pem: Set(cert.cert_pem),
        key_sealed: Set(cert.key_sealed),
        not_before: Set(cert.not_before),
        not_after: Set(cert.not_after),
        created_at: Set(cert.created_at),
        updated_at: Set(cert.updated_at),
    })
    .on_conflict(
        OnConflict::column(push_cert::Column::Topic)
            .update_columns([
                push_cert::Column::CertPem,
                push_cert::Column::KeySealed,
                push_cert::Column::NotBefore,
                push_cert::Column::NotAfter,
                push_cert::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn certs<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<PushCert>> {
    Ok(Certs::find()
        .order_by_asc(push_cert::Column::Topic)
        .all(c)
        .await?)
}

/// `next_push_at` is unset or later than `now`: moving it to `now` makes a push sooner, never later.
fn not_due_before(now: i64) -> Condition {
    Condition::any()
        .add(Column::NextPushAt.is_null())
        .add(Column::NextPushAt.gt(now))
}

/// Push these channels as soon as possible (an enqueue): `next_push_at` becomes `now` unless already sooner.
pub async fn due_now<C: ConnectionTrait>(c: &C, ids: &[String], now: i64) -> StorageResult<()> {
    for chunk in ids.chunks(super::queue::IDS_PER_STATEMENT) {
        Enrollments::update_many()
            .col_expr(Column::NextPushAt, Expr::value(now))
            .filter(Column::Id.is_in(chunk.iter().cloned()))
            .filter(not_due_before(now))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Push every channel `command_uuid` is queued to as soon as possible, in one statement however many
/// channels (a fan-out): what [`due_now`] does for their ids, without binding them.
pub async fn due_for_command<C: ConnectionTrait>(
    c: &C,
    command_uuid: &str,
    now: i64,
) -> StorageResult<()> {
    let queued_to = Query::select()
        .column(queue_item::Column::EnrollmentId)
        .from(queue_item::Entity)
        .and_where(Expr::col(queue_item::Column::CommandUuid).eq(command_uuid))
        .to_owned();
    Enrollments::update_many()
        .col_expr(Column::NextPushAt, Expr::value(now))
        .filter(Column::Id.in_subquery(queued_to))
        .filter(not_due_before(now))
        .exec(c)
        .await?;
    Ok(())
}

/// Channels owed a push now: enabled, with a live token, due, and with commands pending. The pending test
/// is a correlated EXISTS, which `idx_queue_next (enrollment_id, status, ...)` answers per channel, and
/// the scan starts from `idx_enrollments_next_push`; an `IN (SELECT enrollment_id ...)` over the whole
/// queue cost a scan of every pending row each round.
fn owed_query(now: i64, limit: u64) -> sea_orm::sea_query::SelectStatement {
    let pending = Query::select()
        .expr(Expr::val(1))
        .from_as(queue_item::Entity, Alias::new("q"))
        .and_where(
            Expr::col((Alias::new("q"), queue_item::Column::EnrollmentId))
                .equals((Alias::new("e"), Column::Id)),
        )
        .and_where(
            Expr::col((Alias::new("q"), queue_item::Column::Status))
                .is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
        )
        .to_owned();
    let e = |c: Column| Expr::col((Alias::new("e"), c));
    Query::select()
        .column((Alias::new("e"), Column::Id))
        .from_as(Enrollments, Alias::new("e"))
        .and_where(e(Column::Enabled).eq(true))
        .and_where(e(Column::Token).is_not_null())
        .and_where(e(Column::PushMagic).is_not_null())
        .and_where(e(Column::Topic).is_not_null())
        .and_where(e(Column::TokenDeadAt).is_null())
        .and_where(e(Column::NextPushAt).lte(now))
        .and_where(Expr::exists(pending))
        .order_by((Alias::new("e"), Column::NextPushAt), Order::Asc)
        .limit(limit)
        .to_owned()
}

/// The ids of channels owed a push now (oldest due first), without claiming them.
pub async fn owed<C: ConnectionTrait>(c: &C, now: i64, limit: u64) -> StorageResult<Vec<String>> {
    let stmt = c.get_database_backend().build(&owed_query(now, limit));
    let mut ids = Vec::new();
    for row in c.query_all_raw(stmt).await? {
        ids.push(row.try_get::<String>("", "id")?);
    }
    Ok(ids)
}

/// Claim up to `limit` owed pushes in one statement: each claimed channel's `next_push_at` moves to `now`
/// plus `backoff(attempt)` for the attempt this push is, its attempts count up, and the claimed rows come
/// back. On PostgreSQL the candidates are locked `FOR UPDATE SKIP LOCKED`, so replicas claiming at the
/// same moment take disjoint sets and never wait on each other (a row whose due time another replica has
/// just moved on is re-checked after the lock and drops out). SQLite has one writer, so the statement is
/// already exclusive there.
pub async fn claim_owed<W: Writes>(
    c: &W,
    now: i64,
    limit: u64,
    backoff: impl Fn(i32) -> i64,
) -> StorageResult<Vec<enrollment::Model>> {
    let c = c.connection();
    if limit == 0 {
        return Ok(Vec::new());
    }
    let candidates = owed_query(now, limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    // The wait after this push, by the attempts made so far: the backoff stops growing at its cap, so a
    // short CASE covers every count.
    let saturated = backoff(i32::MAX);
    let mut wait = Expr::case(Expr::col(Column::PushAttempts).lte(0), backoff(1));
    for made in 1..64 {
        let w = backoff(made + 1);
        if w == saturated {
            break;
        }
        wait = wait.case(Expr::col(Column::PushAttempts).eq(made), w);
    }
    let wait: Expr = wait.finally(saturated).into();
    let update = Query::update()
        .table(Enrollments)
        .value(Column::NextPushAt, Expr::val(now).add(wait))
        .value(Column::LastPushAt, now)
        .value(Column::PushAttempts, Expr::col(Column::PushAttempts).add(1))
        .and_where(Column::Id.in_subquery(candidates))
        .returning_all()
        .to_owned();
    let stmt = c.get_database_backend().build(&update);
    let mut claimed = Enrollments::find().from_raw_sql(stmt).all(c).await?;
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(claimed)
}

/// APNs said the token is dead: no more pushes until the next TokenUpdate.
pub async fn token_dead<W: Writes>(c: &W, id: &str, now: i64) -> StorageResult<()> {
    let c = c.connection();
    Enrollments::update_many()
        .col_expr(Column::TokenDeadAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}
