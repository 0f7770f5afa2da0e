//! Enrollments: the command channels of a device (device channel, user channels) and their push details.

use super::entities::enrollment::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use crate::protocol::{EnrollmentKind, EnrollmentRef};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

pub use super::entities::enrollment::Model as Enrollment;

pub async fn find<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(id.to_string()).one(c).await?)
}

pub async fn find_many<C: ConnectionTrait>(c: &C, ids: &[String]) -> StorageResult<Vec<Model>> {
    let mut out = Vec::with_capacity(ids.len());
    // Chunked to stay under the bind-parameter limits of both databases.
    for chunk in ids.chunks(500) {
        out.extend(
            Entity::find()
                .filter(Column::Id.is_in(chunk.iter().cloned()))
                .all(c)
                .await?,
        );
    }
    Ok(out)
}

/// For each existing channel among `ids`: its device and whether it takes commands. Reads only those
/// columns (a fan-out to 100k channels would otherwise fetch every stored TokenUpdate).
pub async fn eligibility<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> StorageResult<Vec<(String, String, bool)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::queue::IDS_PER_STATEMENT) {
        out.extend(
            Entity::find()
                .select_only()
                .columns([Column::Id, Column::DeviceId, Column::Enabled])
                .filter(Column::Id.is_in(chunk.iter().map(String::as_str)))
                .into_tuple::<(String, String, bool)>()
                .all(c)
                .await?,
        );
    }
    Ok(out)
}

pub async fn for_device<C: ConnectionTrait>(c: &C, device_id: &str) -> StorageResult<Vec<Model>> {
    Ok(Entity::find()
        .filter(Column::DeviceId.eq(device_id))
        .order_by_asc(Column::Id)
        .all(c)
        .await?)
}

/// Push details from a TokenUpdate.
#[derive(Debug, Clone)]
pub struct TokenUpdateFacts {
    pub topic: String,
    pub push_magic: String,
    pub token: Vec<u8>,
    pub awaiting_configuration: Option<bool>,
    pub raw: Vec<u8>,
}

/// Store a TokenUpdate and enable the channel, creating the channel on its first TokenUpdate.
/// Returns the channel's TokenUpdate count after this one (1 means first).
pub async fn apply_token_update<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    f: TokenUpdateFacts,
    now: i64,
) -> StorageResult<i32> {
    let existing = find(c, &e.id).await?;
    let count = existing.as_ref().map_or(0, |x| x.token_update_count) + 1;
    let am = ActiveModel {
        id: Set(e.id.clone()),
        device_id: Set(e.device_id.clone()),
        kind: Set(e.kind.as_str().to_string()),
        user_id: Set(e.user_id.clone()),
        user_short_name: Set(e.user_short_name.clone()),
        user_long_name: Set(e.user_long_name.clone()),
        enabled: Set(true),
        topic: Set(Some(f.topic)),
        push_magic: Set(Some(f.push_magic)),
        token: Set(Some(f.token)),
        awaiting_configuration: Set(f.awaiting_configuration),
        token_update_count: Set(count),
        token_update_raw: Set(Some(f.raw)),
        // A new token is alive again; the device is here, so no push is owed.
        last_push_at: Set(existing.as_ref().and_then(|x| x.last_push_at)),
        next_push_at: Set(existing.as_ref().and_then(|x| x.next_push_at)),
        push_attempts: Set(0),
        token_dead_at: Set(None),
        created_at: Set(existing.as_ref().map_or(now, |x| x.created_at)),
        updated_at: Set(now),
        last_seen_at: Set(now),
    };
    if existing.is_some() {
        am.update(c).await?;
    } else {
        am.insert(c).await?;
    }
    Ok(count)
}

/// A channel as first stored: disabled until its TokenUpdate, never pushed, seen `now`.
pub fn new_channel(id: &str, device_id: &str, kind: EnrollmentKind, now: i64) -> ActiveModel {
    ActiveModel {
        id: Set(id.to_string()),
        device_id: Set(device_id.to_string()),
        kind: Set(kind.as_str().to_string()),
        user_id: Set(None),
        user_short_name: Set(None),
        user_long_name: Set(None),
        enabled: Set(false),
        topic: Set(None),
        push_magic: Set(None),
        token: Set(None),
        awaiting_configuration: Set(None),
        token_update_count: Set(0),
        token_update_raw: Set(None),
        last_push_at: Set(None),
        next_push_at: Set(None),
        push_attempts: Set(0),
        token_dead_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        last_seen_at: Set(now),
    }
}

/// Make sure the device channel row exists (disabled) after Authenticate, so the device is listed and
/// its queue can be inspected before the first TokenUpdate.
pub async fn ensure_device_channel<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    now: i64,
) -> StorageResult<()> {
    if find(c, &e.id).await?.is_some() {
        return Ok(());
    }
    new_channel(&e.id, &e.device_id, e.kind, now)
        .insert(c)
        .await?;
    Ok(())
}

/// Authenticate starts an enrollment afresh: every channel disabled until its TokenUpdate, and TokenUpdate
/// counts restart (so "first TokenUpdate" means first since this enrollment).
pub async fn reset_device<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    now: i64,
) -> StorageResult<()> {
    disable_channels(c, device_id, true, now).await
}

/// Disable every channel of a device (CheckOut on the device channel removes all).
pub async fn disable_device<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    now: i64,
) -> StorageResult<()> {
    disable_channels(c, device_id, false, now).await
}

async fn disable_channels<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    reset_counts: bool,
    now: i64,
) -> StorageResult<()> {
    let mut q = Entity::update_many()
        .col_expr(Column::Enabled, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::value(now));
    if reset_counts {
        q = q.col_expr(Column::TokenUpdateCount, Expr::value(0));
    }
    q.filter(Column::DeviceId.eq(device_id)).exec(c).await?;
    Ok(())
}

pub async fn disable<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::Enabled, Expr::value(false))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// The channel checked in: seen now, push attempts restart, and a push is owed again (if commands are
/// still pending) only at `next_push_at`.
pub async fn checked_in<C: ConnectionTrait>(
    c: &C,
    id: &str,
    now: i64,
    next_push_at: i64,
) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::LastSeenAt, Expr::value(now))
        .col_expr(Column::PushAttempts, Expr::value(0))
        .col_expr(Column::NextPushAt, Expr::value(next_push_at))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

pub async fn touch<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::LastSeenAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}
