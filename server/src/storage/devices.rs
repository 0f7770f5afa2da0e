//! Devices: hardware facts, the bound identity certificate, escrowed tokens.

use super::entities::device::{self, ActiveModel, Column, Entity, Model};
use super::sealing::{self, Token};
use super::Writes;
use super::{StorageError, StorageResult};
pub use crate::protocol::DeviceFacts;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

/// A device as read, its escrowed tokens opened (they are sealed at rest, see [`sealing`]): every
/// function here that returns a device passes it through this, so callers only see plain tokens.
fn opened(mut m: Model) -> Model {
    m.unlock_token = m
        .unlock_token
        .take()
        .and_then(|t| sealing::open(Token::Unlock, &m.id, t));
    m.bootstrap_token = m
        .bootstrap_token
        .take()
        .and_then(|t| sealing::open(Token::Bootstrap, &m.id, t));
    m
}

pub async fn find<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(id.to_string()).one(c).await?.map(opened))
}

pub async fn find_by_fingerprint<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
) -> StorageResult<Option<Model>> {
    Ok(Entity::find()
        .filter(Column::IdentityFingerprint.eq(fingerprint))
        .one(c)
        .await?
        .map(opened))
}

/// Set on `am` every fact that was reported, keeping the rest. The serial number is set only where none is
/// bound yet: it is the hardware binding, changed only by an explicit re-enrollment decision.
fn apply_facts(f: DeviceFacts, am: &mut ActiveModel, existing: Option<&Model>) {
    let keep = |new: Option<String>, old: Option<&Option<String>>| -> Option<String> {
        new.or_else(|| old.cloned().flatten())
    };
    let old = existing;
    let platform = f.platform();
    am.serial_number = Set(match old.and_then(|o| o.serial_number.clone()) {
        Some(bound) => Some(bound),
        None => f.serial_number,
    });
    am.platform = Set(keep(platform, old.map(|o| &o.platform)));
    am.model = Set(keep(f.model, old.map(|o| &o.model)));
    am.model_name = Set(keep(f.model_name, old.map(|o| &o.model_name)));
    am.product_name = Set(keep(f.product_name, old.map(|o| &o.product_name)));
    am.device_name = Set(keep(f.device_name, old.map(|o| &o.device_name)));
    am.os_version = Set(keep(f.os_version, old.map(|o| &o.os_version)));
    am.build_version = Set(keep(f.build_version, old.map(|o| &o.build_version)));
    am.imei = Set(keep(f.imei, old.map(|o| &o.imei)));
    am.meid = Set(keep(f.meid, old.map(|o| &o.meid)));
}

/// What Authenticate tells us about a device and its identity.
#[derive(Debug, Clone, Default)]
pub struct AuthenticateFacts {
    pub facts: DeviceFacts,
    pub identity_fingerprint: String,
    pub identity_subject: String,
    pub identity_not_after: Option<i64>,
    pub raw: Vec<u8>,
    /// A renewal of the device's identity (not a new enrollment): escrowed tokens stay.
    pub renewal: bool,
}

/// Create or refresh a device at Authenticate and bind the identity certificate to it.
/// Fields a device did not send keep their previous value. Escrowed tokens are dropped: a new enrollment
/// brings its own.
///
/// Race-safe: a new device is inserted with `ON CONFLICT DO NOTHING` (every unique index an arbiter), which
/// on PostgreSQL waits for a concurrent insert of the same device or certificate to commit and then does
/// nothing, without aborting the transaction. The row is then read again and updated: identical
/// Authenticates all succeed. A certificate bound to another device (found by the insert or by the update's
/// unique check) is [`StorageError::IdentityBoundElsewhere`], not a database error.
pub async fn upsert_authenticated<C: ConnectionTrait>(
    c: &C,
    id: &str,
    f: AuthenticateFacts,
    now: i64,
) -> StorageResult<()> {
    let mut existing = find(c, id).await?;
    if existing.is_none() {
        let am = authenticated_model(id, f.clone(), now, None);
        let inserted = Entity::insert(am)
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .exec_without_returning(c)
            .await
            .map_err(identity_conflict)?;
        if inserted == 1 {
            return Ok(());
        }
        // Lost a race: the device is stored now, or another device holds the certificate.
        existing = find(c, id).await?;
        if existing.is_none() {
            return Err(StorageError::IdentityBoundElsewhere);
        }
    }
    authenticated_model(id, f, now, existing.as_ref())
        .update(c)
        .await
        .map_err(identity_conflict)?;
    Ok(())
}

/// The row Authenticate stores for the device, over `existing` when it is stored already.
fn authenticated_model(
    id: &str,
    f: AuthenticateFacts,
    now: i64,
    existing: Option<&Model>,
) -> ActiveModel {
    let mut am = ActiveModel {
        id: Set(id.to_string()),
        identity_fingerprint: Set(Some(f.identity_fingerprint)),
        identity_subject: Set(Some(f.identity_subject)),
        identity_not_after: Set(f.identity_not_after),
        authenticate_raw: Set(Some(f.raw)),
        renewal_requested_at: Set(None),
        authenticated_at: Set(now),
        created_at: Set(existing.map_or(now, |e| e.created_at)),
        updated_at: Set(now),
        last_seen_at: Set(now),
        ..Default::default()
    };
    if !f.renewal {
        am.unlock_token = Set(None);
        am.bootstrap_token = Set(None);
    }
    apply_facts(f.facts, &mut am, existing);
    am
}

/// A unique violation on `devices.identity_fingerprint` (constraint `devices_identity_fingerprint_key` on
/// PostgreSQL, column `devices.identity_fingerprint` in SQLite's message): the certificate is bound to
/// another device, which the caller answers as a refusal. Any other error is passed on.
pub(crate) fn identity_conflict(e: sea_orm::DbErr) -> StorageError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(msg))
            if msg.contains("identity_fingerprint") =>
        {
            StorageError::IdentityBoundElsewhere
        }
        _ => StorageError::Db(e),
    }
}

/// Forget the identity binding of whichever devices are bound to one of `fingerprints` (revoked
/// certificates). By fingerprint, not by the device a certificate records: a device that bound one of them
/// after that was read is unbound too.
pub async fn unbind_identity<C: ConnectionTrait>(
    c: &C,
    fingerprints: &[String],
    now: i64,
) -> StorageResult<()> {
    for chunk in fingerprints.chunks(500) {
        Entity::update_many()
            .col_expr(
                Column::IdentityFingerprint,
                Expr::value(Option::<String>::None),
            )
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::IdentityFingerprint.is_in(chunk.iter().map(String::as_str)))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// How many devices' identity certificates expire before `before`.
pub async fn identity_expiring<C: ConnectionTrait>(c: &C, before: i64) -> StorageResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(Entity::find()
        .filter(Column::IdentityNotAfter.lt(before))
        .count(c)
        .await?)
}

/// Devices whose identity expires before `before` and that were not sent a renewal since `retry_before`,
/// soonest expiry first.
pub async fn renewal_candidates<C: ConnectionTrait>(
    c: &C,
    before: i64,
    retry_before: i64,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    Ok(Entity::find()
        .filter(Column::IdentityNotAfter.lt(before))
        .filter(
            Condition::any()
                .add(Column::RenewalRequestedAt.is_null())
                .add(Column::RenewalRequestedAt.lt(retry_before)),
        )
        .order_by_asc(Column::IdentityNotAfter)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(opened)
        .collect())
}

/// Mark a renewal as sent, if no one else has since `seen` was read. The row is locked `FOR UPDATE SKIP
/// LOCKED` on PostgreSQL (a replica renewing the same device at that moment skips it), and the update only
/// matches while the marker still holds `seen`: one renewal per device across replicas.
pub async fn claim_renewal<W: Writes>(
    c: &W,
    id: &str,
    seen: Option<i64>,
    now: i64,
) -> StorageResult<bool> {
    let c = c.connection();
    let unchanged = || match seen {
        Some(t) => Column::RenewalRequestedAt.eq(t),
        None => Column::RenewalRequestedAt.is_null(),
    };
    let row = sea_orm::sea_query::Query::select()
        .column(Column::Id)
        .from(Entity)
        .and_where(Column::Id.eq(id))
        .and_where(unchanged())
        .lock_with_behavior(
            sea_orm::sea_query::LockType::Update,
            sea_orm::sea_query::LockBehavior::SkipLocked,
        )
        .to_owned();
    Ok(Entity::update_many()
        .col_expr(Column::RenewalRequestedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(unchanged())
        .filter(Column::Id.in_subquery(row))
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

/// Record facts a device reported later (a DeviceInformation result). Unknown devices are ignored.
pub async fn update_facts<C: ConnectionTrait>(
    c: &C,
    id: &str,
    facts: DeviceFacts,
    now: i64,
) -> StorageResult<()> {
    // Read as stored (tokens sealed), so the model turned into an update carries no opened token.
    let Some(existing) = Entity::find_by_id(id.to_string()).one(c).await? else {
        return Ok(());
    };
    let mut am: ActiveModel = existing.clone().into();
    apply_facts(facts, &mut am, Some(&existing));
    am.updated_at = Set(now);
    am.update(c).await?;
    Ok(())
}

/// Which of `ids` are stored devices.
pub async fn existing<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> StorageResult<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(super::queue::IDS_PER_STATEMENT) {
        let found: Vec<String> = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Id.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(found);
    }
    Ok(out)
}

pub async fn touch<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::LastSeenAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Escrow a device's UnlockToken, sealed (see [`sealing`]).
pub async fn set_unlock_token<C: ConnectionTrait>(
    c: &C,
    id: &str,
    token: Vec<u8>,
    now: i64,
) -> StorageResult<()> {
    let sealed = sealing::seal(Token::Unlock, id, &token)?;
    set_column(c, id, Column::UnlockToken, Some(sealed), now).await
}

/// Escrow (or, with None, forget) a Mac's BootstrapToken, sealed (see [`sealing`]).
pub async fn set_bootstrap_token<C: ConnectionTrait>(
    c: &C,
    id: &str,
    token: Option<Vec<u8>>,
    now: i64,
) -> StorageResult<()> {
    let sealed = match token {
        Some(t) => Some(sealing::seal(Token::Bootstrap, id, &t)?),
        None => None,
    };
    set_column(c, id, Column::BootstrapToken, sealed, now).await
}

async fn set_column<C: ConnectionTrait>(
    c: &C,
    id: &str,
    col: Column,
    value: Option<Vec<u8>>,
    now: i64,
) -> StorageResult<()> {
    let res = Entity::update_many()
        .col_expr(col, Expr::value(value))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    if res.rows_affected == 0 {
        return Err(StorageError::Conflict(format!("no device {id}")));
    }
    Ok(())
}

/// Filters for the device list. `after` is the cursor: the last id of the previous page.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    pub serial_number: Option<String>,
    pub platform: Option<String>,
    pub seen_after: Option<i64>,
    pub seen_before: Option<i64>,
    /// Only devices whose device channel is (true) or is not (false) enabled.
    pub enabled: Option<bool>,
    /// Only members of this group.
    pub group: Option<i64>,
    /// Only devices with this plugin attribute: the key, and the value it must have (None: any value).
    pub attribute: Option<(String, Option<String>)>,
    pub after: Option<String>,
    pub limit: u64,
}

pub async fn list<C: ConnectionTrait>(c: &C, f: &DeviceFilter) -> StorageResult<Vec<Model>> {
    use super::entities::enrollment;
    let mut cond = Condition::all();
    if let Some(s) = &f.serial_number {
        cond = cond.add(Column::SerialNumber.eq(s.as_str()));
    }
    if let Some(p) = &f.platform {
        cond = cond.add(Column::Platform.eq(p.as_str()));
    }
    if let Some(t) = f.seen_after {
        cond = cond.add(Column::LastSeenAt.gte(t));
    }
    if let Some(t) = f.seen_before {
        cond = cond.add(Column::LastSeenAt.lt(t));
    }
    if let Some(after) = &f.after {
        cond = cond.add(Column::Id.gt(after.as_str()));
    }
    if let Some(enabled) = f.enabled {
        // The device channel's enrollment row has the device's own id.
        let sub = sea_orm::sea_query::Query::select()
            .column(enrollment::Column::Id)
            .from(enrollment::Entity)
            .and_where(enrollment::Column::Enabled.eq(true))
            .to_owned();
        cond = cond.add(if enabled {
            Column::Id.in_subquery(sub)
        } else {
            Column::Id.not_in_subquery(sub)
        });
    }
    if let Some(group) = f.group {
        use super::entities::device_group_member as member;
        let sub = sea_orm::sea_query::Query::select()
            .column(member::Column::DeviceId)
            .from(member::Entity)
            .and_where(member::Column::GroupId.eq(group))
            .to_owned();
        cond = cond.add(Column::Id.in_subquery(sub));
    }
    if let Some((key, value)) = &f.attribute {
        use super::entities::device_attribute as attribute;
        let mut sub = sea_orm::sea_query::Query::select();
        sub.column(attribute::Column::DeviceId)
            .from(attribute::Entity)
            .and_where(attribute::Column::Key.eq(key.as_str()));
        if let Some(v) = value {
            sub.and_where(attribute::Column::Value.eq(v.as_str()));
        }
        cond = cond.add(Column::Id.in_subquery(sub.to_owned()));
    }
    Ok(Entity::find()
        .filter(cond)
        .order_by_asc(Column::Id)
        .limit(f.limit)
        .all(c)
        .await?
        .into_iter()
        .map(opened)
        .collect())
}

pub use device::Model as Device;

/// Allow the device to enroll again with a new identity once, until `until`. False: no such device.
pub async fn allow_reenrollment<C: ConnectionTrait>(
    c: &C,
    id: &str,
    until: i64,
    now: i64,
) -> StorageResult<bool> {
    Ok(Entity::update_many()
        .col_expr(Column::ReenrollAllowedUntil, Expr::value(until))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

/// The device checked out: it may enroll again with a new identity.
pub async fn mark_checked_out<C: ConnectionTrait>(c: &C, id: &str, now: i64) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::CheckedOutAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// An Authenticate has used whatever let the device enroll again (an allowance, a check-out).
pub async fn clear_reenrollment<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(
            Column::ReenrollAllowedUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(Column::CheckedOutAt, Expr::value(Option::<i64>::None))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{authenticated_device, test_databases};

    #[tokio::test]
    async fn a_certificate_bound_to_another_device_is_a_typed_error_on_insert_and_update() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            authenticated_device(db, "UDID-1", "fp-1", Default::default(), 1)
                .await
                .unwrap();
            authenticated_device(db, "UDID-2", "fp-2", Default::default(), 1)
                .await
                .unwrap();
            // A new device presenting UDID-1's certificate (the insert).
            let r = authenticated_device(db, "UDID-3", "fp-1", Default::default(), 2).await;
            assert!(
                matches!(r, Err(StorageError::IdentityBoundElsewhere)),
                "{r:?}"
            );
            assert!(find(db, "UDID-3").await.unwrap().is_none());
            // A known device presenting it (the update).
            let r = authenticated_device(db, "UDID-2", "fp-1", Default::default(), 2).await;
            assert!(
                matches!(r, Err(StorageError::IdentityBoundElsewhere)),
                "{r:?}"
            );
            let d2 = find(db, "UDID-2").await.unwrap().unwrap();
            assert_eq!(d2.identity_fingerprint.as_deref(), Some("fp-2"));
            // Authenticate again with its own certificate: an update, not an error.
            authenticated_device(db, "UDID-1", "fp-1", Default::default(), 3)
                .await
                .unwrap();
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn other_unique_violations_stay_database_errors() {
        let e = sea_orm::DbErr::Custom("not a constraint".into());
        assert!(matches!(identity_conflict(e), StorageError::Db(_)));
    }
}
