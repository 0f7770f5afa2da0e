//! Push state: certificates (keys sealed) and, per channel, when a push is next due. A push is owed when a
//! channel has pending commands and `next_push_at` has come: set to "now" by an enqueue, pushed back with
//! exponential backoff after each push, and moved to one interval after each check-in (for commands the
//! device left pending, e.g. after NotNow).

use super::entities::enrollment::{self, Column, Entity as Enrollments};
use super::entities::push_cert::{self, Entity as Certs};
use super::entities::queue_item;
use super::queue::QueueStatus;
use super::StorageResult;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

pub use super::entities::push_cert::Model as PushCert;

pub async fn upsert_cert<C: ConnectionTrait>(c: &C, cert: PushCert) -> StorageResult<()> {
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

/// Push these channels as soon as possible (an enqueue): `next_push_at` becomes `now` unless already sooner.
pub async fn due_now<C: ConnectionTrait>(c: &C, ids: &[String], now: i64) -> StorageResult<()> {
    for chunk in ids.chunks(super::queue::IDS_PER_STATEMENT) {
        Enrollments::update_many()
            .col_expr(Column::NextPushAt, Expr::value(now))
            .filter(Column::Id.is_in(chunk.iter().cloned()))
            .filter(
                Condition::any()
                    .add(Column::NextPushAt.is_null())
                    .add(Column::NextPushAt.gt(now)),
            )
            .exec(c)
            .await?;
    }
    Ok(())
}

/// The device checked in: attempts restart, and a push is owed again only one interval from now.
pub async fn checked_in<C: ConnectionTrait>(
    c: &C,
    id: &str,
    next_push_at: i64,
) -> StorageResult<()> {
    Enrollments::update_many()
        .col_expr(Column::PushAttempts, Expr::value(0))
        .col_expr(Column::NextPushAt, Expr::value(next_push_at))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Channels owed a push now: enabled, with a live token, due, and with commands pending.
pub async fn owed<C: ConnectionTrait>(
    c: &C,
    now: i64,
    limit: u64,
) -> StorageResult<Vec<enrollment::Model>> {
    let pending = Query::select()
        .column(queue_item::Column::EnrollmentId)
        .from(queue_item::Entity)
        .and_where(
            queue_item::Column::Status
                .is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
        )
        .to_owned();
    Ok(Enrollments::find()
        .filter(Column::Enabled.eq(true))
        .filter(Column::Token.is_not_null())
        .filter(Column::PushMagic.is_not_null())
        .filter(Column::Topic.is_not_null())
        .filter(Column::TokenDeadAt.is_null())
        .filter(Column::NextPushAt.lte(now))
        .filter(Column::Id.in_subquery(pending))
        .order_by_asc(Column::NextPushAt)
        .limit(limit)
        .all(c)
        .await?)
}

/// Claim a due push: move `next_push_at` from `seen` to `next`, counting the attempt. Only one replica wins.
pub async fn claim<C: ConnectionTrait>(
    c: &C,
    id: &str,
    seen: i64,
    next: i64,
    now: i64,
) -> StorageResult<bool> {
    Ok(Enrollments::update_many()
        .col_expr(Column::NextPushAt, Expr::value(next))
        .col_expr(Column::LastPushAt, Expr::value(now))
        .col_expr(Column::PushAttempts, Expr::col(Column::PushAttempts).add(1))
        .filter(Column::Id.eq(id))
        .filter(Column::NextPushAt.eq(seen))
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

/// APNs said the token is dead: no more pushes until the next TokenUpdate.
pub async fn token_dead<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> StorageResult<()> {
    Enrollments::update_many()
        .col_expr(Column::TokenDeadAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}
