//! Certificates our SCEP CA issued: for expiry tracking, revocation and binding to the device that used it.

use super::entities::issued_certificate::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};

pub use super::entities::issued_certificate::Model as IssuedCertificate;

pub async fn insert<C: ConnectionTrait>(c: &C, cert: Model) -> StorageResult<()> {
    let am: ActiveModel = cert.into_active_model();
    am.reset_all().insert(c).await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(c: &C, serial: &str) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(serial.to_uppercase()).one(c).await?)
}

pub async fn find_by_fingerprint<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
) -> StorageResult<Option<Model>> {
    Ok(Entity::find()
        .filter(Column::Fingerprint.eq(fingerprint))
        .one(c)
        .await?)
}

/// Record which device authenticated with the certificate.
pub async fn bind_device<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    device_id: &str,
) -> StorageResult<()> {
    Entity::update_many()
        .col_expr(Column::DeviceId, Expr::value(device_id))
        .filter(Column::Fingerprint.eq(fingerprint))
        .exec(c)
        .await?;
    Ok(())
}

/// Revoke by serial; false if there is no such unrevoked certificate.
pub async fn revoke<C: ConnectionTrait>(c: &C, serial: &str, now: i64) -> StorageResult<bool> {
    Ok(Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(now))
        .filter(Column::Serial.eq(serial.to_uppercase()))
        .filter(Column::RevokedAt.is_null())
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

/// Issued certificates, soonest expiry first; only unrevoked ones expiring before `before` when given.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    expiring_before: Option<i64>,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    let mut q = Entity::find();
    if let Some(t) = expiring_before {
        q = q
            .filter(Column::NotAfter.lt(t))
            .filter(Column::RevokedAt.is_null());
    }
    Ok(q.order_by_asc(Column::NotAfter)
        .order_by_asc(Column::Serial)
        .limit(limit)
        .all(c)
        .await?)
}

/// PLACEHOLDER until the revocation-chain change lands: only the certificate itself.
pub async fn revoked_in_chain<C: ConnectionTrait>(c: &C, fingerprint: &str) -> StorageResult<bool> {
    Ok(find_by_fingerprint(c, fingerprint)
        .await?
        .is_some_and(|m| m.revoked_at.is_some()))
}
