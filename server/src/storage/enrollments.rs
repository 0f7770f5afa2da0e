//! Enrollments: the command channels of a device (device channel, user channels) and their push details.

use super::entities::enrollment::{ActiveModel, Column, Entity, Model};
use super::{StorageError, StorageResult};
use crate::protocol::{EnrollmentKind, EnrollmentRef};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, UpdateStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
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

/// Store a TokenUpdate and enable the channel, creating the channel on its first TokenUpdate; the channel
/// is seen `now` with push attempts restarted (what [`checked_in`] does), and `next_push_at`, when given,
/// is when a push is owed again. One statement for a known channel. Returns the channel's TokenUpdate count
/// after this one (1 means first). A channel with this id of another device or kind is a `Conflict`.
pub async fn apply_token_update<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    f: TokenUpdateFacts,
    now: i64,
    next_push_at: Option<i64>,
) -> StorageResult<i32> {
    let update = token_update_statement(e, &f, now, next_push_at);
    if let Some(count) = returned_count(c, &update).await? {
        return Ok(count);
    }
    let mut am = new_channel(&e.id, &e.device_id, e.kind, now);
    am.user_id = Set(e.user_id.clone());
    am.user_short_name = Set(e.user_short_name.clone());
    am.user_long_name = Set(e.user_long_name.clone());
    am.enabled = Set(true);
    am.topic = Set(Some(f.topic));
    am.push_magic = Set(Some(f.push_magic));
    am.token = Set(Some(f.token));
    am.awaiting_configuration = Set(f.awaiting_configuration);
    am.token_update_count = Set(1);
    am.token_update_raw = Set(Some(f.raw));
    am.next_push_at = Set(next_push_at);
    // Two first TokenUpdates of one channel at once both find no row to update. The insert does nothing
    // if the other one stored the channel first (on PostgreSQL after waiting for it to commit, without
    // aborting this transaction), and then this one is a repeated TokenUpdate. A row the update does not
    // match then is another device's channel, or of another kind: a conflict the check-in refuses.
    let inserted = Entity::insert(am)
        .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
        .exec_without_returning(c)
        .await?;
    if inserted == 1 {
        return Ok(1);
    }
    returned_count(c, &update).await?.ok_or_else(|| {
        StorageError::Conflict(format!(
            "channel {} is another device's or of another kind (or vanished)",
            e.id
        ))
    })
}

/// [`apply_token_update`] for a channel already stored, in the same one statement, only while its device is
/// still bound to the identity `fingerprint`: the check a transaction would otherwise make with a read of
/// its own. None when nothing was updated (no such channel yet, or the device is unknown or bound to
/// another identity); the caller then takes the full path, which tells these apart.
pub async fn apply_token_update_if_bound<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    f: &TokenUpdateFacts,
    fingerprint: &str,
    now: i64,
    next_push_at: Option<i64>,
) -> StorageResult<Option<i32>> {
    use super::entities::device;
    let mut update = token_update_statement(e, f, now, next_push_at);
    update.and_where(Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(device::Entity)
            .and_where(device::Column::Id.eq(e.device_id.as_str()))
            .and_where(device::Column::IdentityFingerprint.eq(fingerprint))
            .to_owned(),
    ));
    returned_count(c, &update).await
}

/// [`apply_token_update`] for a channel that has sent a TokenUpdate since its device last authenticated,
/// in the same one statement. None when nothing was updated: this would be the channel's first TokenUpdate
/// (or the channel is not stored yet), which the caller stores another way.
pub async fn apply_token_update_if_repeated<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    f: &TokenUpdateFacts,
    now: i64,
    next_push_at: Option<i64>,
) -> StorageResult<Option<i32>> {
    let mut update = token_update_statement(e, f, now, next_push_at);
    update.and_where(Column::TokenUpdateCount.gt(0));
    returned_count(c, &update).await
}

/// The one UPDATE that stores a TokenUpdate on a known channel and returns its new TokenUpdate count.
fn token_update_statement(
    e: &EnrollmentRef,
    f: &TokenUpdateFacts,
    now: i64,
    next_push_at: Option<i64>,
) -> UpdateStatement {
    let mut update = Query::update();
    update
        .table(Entity)
        .values([
            (Column::UserId, e.user_id.clone().into()),
            (Column::UserShortName, e.user_short_name.clone().into()),
            (Column::UserLongName, e.user_long_name.clone().into()),
            (Column::Enabled, true.into()),
            (Column::Topic, Some(f.topic.clone()).into()),
            (Column::PushMagic, Some(f.push_magic.clone()).into()),
            (Column::Token, Some(f.token.clone()).into()),
            (
                Column::AwaitingConfiguration,
                f.awaiting_configuration.into(),
            ),
            (Column::TokenUpdateRaw, Some(f.raw.clone()).into()),
            // A new token is alive again; the device is here, so no push is owed.
            (Column::PushAttempts, 0.into()),
            (Column::TokenDeadAt, Option::<i64>::None.into()),
            (Column::UpdatedAt, now.into()),
            (Column::LastSeenAt, now.into()),
        ])
        .value(
            Column::TokenUpdateCount,
            Expr::col(Column::TokenUpdateCount).add(1),
        )
        .and_where(Column::Id.eq(e.id.as_str()))
        // A channel is its device's and of one kind: a message naming another never writes it.
        .and_where(Column::DeviceId.eq(e.device_id.as_str()))
        .and_where(Column::Kind.eq(e.kind.as_str()))
        .returning_col(Column::TokenUpdateCount);
    if let Some(at) = next_push_at {
        update.value(Column::NextPushAt, at);
    }
    update
}

async fn returned_count<C: ConnectionTrait>(
    c: &C,
    update: &UpdateStatement,
) -> StorageResult<Option<i32>> {
    let stmt = c.get_database_backend().build(update);
    match c.query_one_raw(stmt).await? {
        Some(row) => Ok(Some(row.try_get_by_index::<i32>(0)?)),
        None => Ok(None),
    }
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
    // Concurrent Authenticates of one device: the first stores the row, the others leave it.
    Entity::insert(new_channel(&e.id, &e.device_id, e.kind, now))
        .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
        .exec_without_returning(c)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::devices::{self, AuthenticateFacts};
    use crate::storage::testing::test_databases;

    fn channel(id: &str, kind: EnrollmentKind) -> EnrollmentRef {
        EnrollmentRef {
            id: id.into(),
            device_id: "UDID-1".into(),
            kind,
            user_id: None,
            user_short_name: None,
            user_long_name: None,
        }
    }

    fn facts(token: &[u8]) -> TokenUpdateFacts {
        TokenUpdateFacts {
            topic: "com.apple.mgmt.X".into(),
            push_magic: "magic".into(),
            token: token.to_vec(),
            awaiting_configuration: Some(false),
            raw: b"<plist/>".to_vec(),
        }
    }

    /// A channel id naming another device's channel (or a channel of another kind) is never written: its
    /// token, kind and count stay, and the caller is told (a `Conflict`, which the check-in refuses).
    #[tokio::test]
    async fn a_channel_of_another_device_or_kind_is_never_written() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["UDID-1", "OTHER"] {
                let facts = AuthenticateFacts {
                    identity_fingerprint: format!("fp-{id}"),
                    ..Default::default()
                };
                devices::upsert_authenticated(db, id, facts, 10)
                    .await
                    .unwrap();
            }
            let mut user = channel("UDID-1:U1", EnrollmentKind::User);
            user.user_id = Some("U1".into());
            apply_token_update(db, &user, facts(b"user"), 20, None)
                .await
                .unwrap();
            let before = find(db, "UDID-1:U1").await.unwrap();

            let mut foreign = user.clone();
            foreign.device_id = "OTHER".into();
            let mut other_kind = user.clone();
            other_kind.kind = EnrollmentKind::SharedIpadUser;
            for e in [foreign, other_kind] {
                let r = apply_token_update(db, &e, facts(b"attacker"), 30, None).await;
                assert!(
                    matches!(r, Err(super::super::StorageError::Conflict(_))),
                    "{r:?}"
                );
                let guarded = apply_token_update_if_repeated(db, &e, &facts(b"x"), 30, None).await;
                assert_eq!(guarded.unwrap(), None, "{}", tdb.label);
            }
            assert_eq!(
                find(db, "UDID-1:U1").await.unwrap(),
                before,
                "{}",
                tdb.label
            );
        }
    }

    /// A TokenUpdate in one statement: counts, enables, stores the token, and records the channel as
    /// checked in (seen, attempts restarted, a dead token alive again, next push when given); a channel
    /// seen for the first time is created.
    #[tokio::test]
    async fn a_token_update_enables_counts_and_checks_the_channel_in() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            devices::upsert_authenticated(db, "UDID-1", AuthenticateFacts::default(), 10)
                .await
                .unwrap();
            let dev = channel("UDID-1", EnrollmentKind::Device);
            ensure_device_channel(db, &dev, 10).await.unwrap();
            Entity::update_many()
                .col_expr(Column::PushAttempts, Expr::value(3))
                .col_expr(Column::TokenDeadAt, Expr::value(15))
                .filter(Column::Id.eq("UDID-1"))
                .exec(db)
                .await
                .unwrap();

            assert_eq!(
                apply_token_update(db, &dev, facts(b"t1"), 20, Some(620))
                    .await
                    .unwrap(),
                1
            );
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert!(c.enabled);
            assert_eq!(c.token.as_deref(), Some(&b"t1"[..]));
            assert_eq!(
                (
                    c.push_attempts,
                    c.token_dead_at,
                    c.next_push_at,
                    c.last_seen_at
                ),
                (0, None, Some(620), 20)
            );
            assert_eq!((c.created_at, c.updated_at), (10, 20));

            assert_eq!(
                apply_token_update(db, &dev, facts(b"t2"), 30, None)
                    .await
                    .unwrap(),
                2
            );
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!(c.token.as_deref(), Some(&b"t2"[..]));
            assert_eq!(c.next_push_at, Some(620), "kept when not given");

            let user = EnrollmentRef {
                user_id: Some("U-501".into()),
                ..channel("U-501", EnrollmentKind::User)
            };
            assert_eq!(
                apply_token_update(db, &user, facts(b"u1"), 40, Some(640))
                    .await
                    .unwrap(),
                1
            );
            let u = find(db, "U-501").await.unwrap().unwrap();
            assert!(u.enabled);
            assert_eq!(
                (
                    u.device_id.as_str(),
                    u.user_id.as_deref(),
                    u.token_update_count
                ),
                ("UDID-1", Some("U-501"), 1)
            );
            assert_eq!((u.created_at, u.next_push_at), (40, Some(640)));
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn a_repeated_token_update_is_stored_and_a_first_one_is_left_alone() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let dev = channel("UDID-1", EnrollmentKind::Device);
            let repeat = |token: &'static [u8], now| {
                let f = facts(token);
                let dev = dev.clone();
                async move {
                    apply_token_update_if_repeated(db, &dev, &f, now, None)
                        .await
                        .unwrap()
                }
            };
            assert_eq!(repeat(b"t0", 5).await, None, "no channel yet");
            assert_eq!(find(db, "UDID-1").await.unwrap(), None, "none is created");

            // Authenticate stores the device channel with no TokenUpdate yet.
            ensure_device_channel(db, &dev, 10).await.unwrap();
            assert_eq!(repeat(b"t0", 15).await, None, "the first TokenUpdate");
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!((c.token, c.token_update_count), (None, 0), "unchanged");

            apply_token_update(db, &dev, facts(b"t1"), 20, None)
                .await
                .unwrap();
            assert_eq!(repeat(b"t2", 30).await, Some(2));
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!(
                (c.token.as_deref(), c.token_update_count, c.last_seen_at),
                (Some(&b"t2"[..]), 2, 30)
            );

            // Authenticating again makes the next TokenUpdate a first one.
            reset_device(db, "UDID-1", 40).await.unwrap();
            assert_eq!(repeat(b"t3", 50).await, None, "first after re-enrolling");
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!((c.token.as_deref(), c.enabled), (Some(&b"t2"[..]), false));
            tdb.cleanup().await;
        }
    }

    /// The guarded form writes only a known channel of a device still bound to the identity, and writes
    /// nothing otherwise, so the caller can fall back to the full path.
    #[tokio::test]
    async fn a_bound_token_update_checks_the_identity_in_its_statement() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let dev = channel("UDID-1", EnrollmentKind::Device);
            assert_eq!(
                apply_token_update_if_bound(db, &dev, &facts(b"t0"), "fp1", 5, None)
                    .await
                    .unwrap(),
                None,
                "unknown device"
            );
            let bound = AuthenticateFacts {
                identity_fingerprint: "fp1".into(),
                ..Default::default()
            };
            devices::upsert_authenticated(db, "UDID-1", bound, 10)
                .await
                .unwrap();
            assert_eq!(
                apply_token_update_if_bound(db, &dev, &facts(b"t0"), "fp1", 15, None)
                    .await
                    .unwrap(),
                None,
                "no channel yet"
            );
            assert_eq!(find(db, "UDID-1").await.unwrap(), None, "none is created");

            apply_token_update(db, &dev, facts(b"t1"), 20, None)
                .await
                .unwrap();
            assert_eq!(
                apply_token_update_if_bound(db, &dev, &facts(b"t2"), "fp2", 30, Some(630))
                    .await
                    .unwrap(),
                None,
                "another identity"
            );
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!(
                (c.token.as_deref(), c.token_update_count, c.last_seen_at),
                (Some(&b"t1"[..]), 1, 20),
                "unchanged"
            );
            assert_eq!(
                apply_token_update_if_bound(db, &dev, &facts(b"t3"), "fp1", 40, Some(640))
                    .await
                    .unwrap(),
                Some(2)
            );
            let c = find(db, "UDID-1").await.unwrap().unwrap();
            assert_eq!(
                (c.token.as_deref(), c.last_seen_at, c.next_push_at),
                (Some(&b"t3"[..]), 40, Some(640))
            );
            tdb.cleanup().await;
        }
    }
}
