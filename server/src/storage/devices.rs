//! Devices: hardware facts, the bound identity certificate, escrowed tokens.

use super::entities::device::{self, ActiveModel, Column, Entity, Model};
use super::{StorageError, StorageResult};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

pub async fn find<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(id.to_string()).one(c).await?)
}

pub async fn find_by_fingerprint<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
) -> StorageResult<Option<Model>> {
    Ok(Entity::find()
        .filter(Column::IdentityFingerprint.eq(fingerprint))
        .one(c)
        .await?)
}

/// What Authenticate tells us about a device and its identity.
#[derive(Debug, Clone, Default)]
pub struct AuthenticateFacts {
    pub serial_number: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    pub identity_fingerprint: String,
    pub identity_subject: String,
    pub identity_not_after: Option<i64>,
    pub raw: Vec<u8>,
}

/// Create or refresh a device at Authenticate and bind the identity certificate to it.
/// Fields a device did not send keep their previous value. Escrowed tokens are dropped: a new enrollment
/// brings its own.
pub async fn upsert_authenticated<C: ConnectionTrait>(
    c: &C,
    id: &str,
    f: AuthenticateFacts,
    now: i64,
) -> StorageResult<()> {
    let existing = find(c, id).await?;
    let keep = |new: Option<String>, old: Option<&Option<String>>| -> Option<String> {
        new.or_else(|| old.cloned().flatten())
    };
    let old = existing.as_ref();
    let am = ActiveModel {
        id: Set(id.to_string()),
        serial_number: Set(keep(f.serial_number, old.map(|o| &o.serial_number))),
        platform: Set(keep(f.platform, old.map(|o| &o.platform))),
        model: Set(keep(f.model, old.map(|o| &o.model))),
        model_name: Set(keep(f.model_name, old.map(|o| &o.model_name))),
        product_name: Set(keep(f.product_name, old.map(|o| &o.product_name))),
        device_name: Set(keep(f.device_name, old.map(|o| &o.device_name))),
        os_version: Set(keep(f.os_version, old.map(|o| &o.os_version))),
        build_version: Set(keep(f.build_version, old.map(|o| &o.build_version))),
        imei: Set(keep(f.imei, old.map(|o| &o.imei))),
        meid: Set(keep(f.meid, old.map(|o| &o.meid))),
        identity_fingerprint: Set(Some(f.identity_fingerprint)),
        identity_subject: Set(Some(f.identity_subject)),
        identity_not_after: Set(f.identity_not_after),
        unlock_token: Set(None),
        bootstrap_token: Set(None),
        authenticate_raw: Set(Some(f.raw)),
        authenticated_at: Set(now),
        created_at: Set(existing.as_ref().map_or(now, |e| e.created_at)),
        updated_at: Set(now),
        last_seen_at: Set(now),
    };
    if existing.is_some() {
        am.update(c).await?;
    } else {
        am.insert(c).await?;
    }
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

pub async fn set_unlock_token<C: ConnectionTrait>(
    c: &C,
    id: &str,
    token: Vec<u8>,
    now: i64,
) -> StorageResult<()> {
    set_column(c, id, Column::UnlockToken, Some(token), now).await
}

pub async fn set_bootstrap_token<C: ConnectionTrait>(
    c: &C,
    id: &str,
    token: Option<Vec<u8>>,
    now: i64,
) -> StorageResult<()> {
    set_column(c, id, Column::BootstrapToken, token, now).await
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
    Ok(Entity::find()
        .filter(cond)
        .order_by_asc(Column::Id)
        .limit(f.limit)
        .all(c)
        .await?)
}

pub use device::Model as Device;
