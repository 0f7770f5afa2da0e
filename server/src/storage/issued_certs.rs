//! Certificates our SCEP CA issued: for expiry tracking, revocation and binding to the device that used it.

use super::entities::issued_certificate::{ActiveModel, Column, Entity, Model};
use super::{StorageError, StorageResult};
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

/// Record which device authenticated with the certificate. Refused ([`StorageError::IdentityRevoked`])
/// when the certificate is ours and revoked: on PostgreSQL a revocation committed while this Authenticate
/// was under way is seen here (the UPDATE waits for the revocation's row lock and re-reads the row), so
/// the Authenticate rolls back instead of binding a revoked identity that the revocation could not unbind.
pub async fn bind_device<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    device_id: &str,
) -> StorageResult<()> {
    let bound = Entity::update_many()
        .col_expr(Column::DeviceId, Expr::value(device_id))
        .filter(Column::Fingerprint.eq(fingerprint))
        .filter(Column::RevokedAt.is_null())
        .exec(c)
        .await?
        .rows_affected;
    if bound == 0 && find_by_fingerprint(c, fingerprint).await?.is_some() {
        return Err(StorageError::IdentityRevoked);
    }
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

/// How many renewals deep a chain is followed. A device renews about once a year, so real chains are a few
/// links long; the bound keeps a corrupt (or cyclic) chain from turning a lookup into an endless walk.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// The record of the certificate with this fingerprint, its row locked until the transaction ends
/// (`FOR UPDATE` on PostgreSQL; SQLite has one writer). A renewal locks the identity it descends from, so
/// a concurrent [`revoke_chain`] either commits first (and the renewal sees the revocation) or waits for the
/// renewal to commit (and then finds the new certificate among the descendants it revokes).
pub async fn lock_by_fingerprint<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
) -> StorageResult<Option<Model>> {
    Ok(Entity::find()
        .filter(Column::Fingerprint.eq(fingerprint))
        .lock_exclusive()
        .one(c)
        .await?)
}

/// True if the certificate with this fingerprint, or any certificate it descends from through
/// `renewal_of`, is revoked: revoking an identity revokes every renewal of it, so a renewal that slipped
/// past the cascade must still be refused. A certificate we did not issue has no chain: false. The walk is
/// bounded ([`MAX_CHAIN_DEPTH`]) and stops at a cycle; a chain longer than the bound counts as revoked
/// (fail closed: such a chain is corrupt).
pub async fn revoked_in_chain<C: ConnectionTrait>(c: &C, fingerprint: &str) -> StorageResult<bool> {
    let Some(mut cert) = find_by_fingerprint(c, fingerprint).await? else {
        return Ok(false);
    };
    let mut seen = std::collections::HashSet::new();
    for _ in 0..MAX_CHAIN_DEPTH {
        if cert.revoked_at.is_some() {
            return Ok(true);
        }
        if !seen.insert(cert.serial.clone()) {
            return Ok(false);
        }
        let Some(parent) = cert.renewal_of.as_deref() else {
            return Ok(false);
        };
        match find(c, parent).await? {
            Some(p) => cert = p,
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Revoke `serial` and every certificate renewed from it, directly or through other renewals: whoever
/// held the revoked identity could have renewed it, and the renewal must not outlive it. Returns the
/// certificates of the chain (the one named first, then its descendants, each as it was before this call
/// except for `revoked_at`), for the caller to unbind from their devices in the same transaction; None if
/// `serial` is not an unrevoked certificate we issued.
///
/// Each level is revoked (its rows locked) before its renewals are read, so a renewal committed
/// concurrently from one of them is either seen here or refused (see [`lock_by_fingerprint`]).
pub async fn revoke_chain<C: ConnectionTrait>(
    c: &C,
    serial: &str,
    now: i64,
) -> StorageResult<Option<Vec<Model>>> {
    let serial = serial.to_uppercase();
    if !revoke(c, &serial, now).await? {
        return Ok(None);
    }
    let Some(root) = find(c, &serial).await? else {
        return Ok(None);
    };
    let mut seen = std::collections::HashSet::from([root.serial.clone()]);
    let mut frontier = vec![root.serial.clone()];
    let mut chain = vec![root];
    for _ in 0..MAX_CHAIN_DEPTH {
        if frontier.is_empty() {
            break;
        }
        let children: Vec<Model> = Entity::find()
            .filter(Column::RenewalOf.is_in(frontier.iter().map(String::as_str)))
            .order_by_asc(Column::Serial)
            .all(c)
            .await?
            .into_iter()
            .filter(|m| seen.insert(m.serial.clone()))
            .collect();
        if children.is_empty() {
            break;
        }
        frontier = children.iter().map(|m| m.serial.clone()).collect();
        Entity::update_many()
            .col_expr(Column::RevokedAt, Expr::value(now))
            .filter(Column::Serial.is_in(frontier.iter().map(String::as_str)))
            .filter(Column::RevokedAt.is_null())
            .exec(c)
            .await?;
        chain.extend(children.into_iter().map(|m| Model {
            revoked_at: m.revoked_at.or(Some(now)),
            ..m
        }));
    }
    Ok(Some(chain))
}

/// The certificate we issued that `device_id` is bound to now, if any.
pub async fn bound_to_device<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
) -> StorageResult<Option<Model>> {
    use super::entities::device;
    let Some(fingerprint) = device::Entity::find_by_id(device_id.to_string())
        .one(c)
        .await?
        .and_then(|d| d.identity_fingerprint)
    else {
        return Ok(None);
    };
    lock_by_fingerprint(c, &fingerprint).await
}

/// True if a certificate bound to `device_id` was revoked at or after `since`: a renewal challenge created
/// before that was handed to the revoked identity, and must not renew the device.
pub async fn device_revoked_since<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    since: i64,
) -> StorageResult<bool> {
    Ok(Entity::find()
        .filter(Column::DeviceId.eq(device_id))
        .filter(Column::RevokedAt.gte(since))
        .one(c)
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{authenticated_device, test_databases};

    fn cert(serial: &str, renewal_of: Option<&str>) -> Model {
        Model {
            serial: serial.into(),
            fingerprint: format!("fp-{serial}"),
            subject: "CN=test".into(),
            not_before: 0,
            not_after: i64::MAX,
            issued_at: 0,
            challenge_id: None,
            pinned_serial_number: None,
            renewal_of: renewal_of.map(Into::into),
            renews_device: None,
            device_id: None,
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn revoking_an_identity_revokes_every_renewal_descending_from_it() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            // A ← B ← C, A ← D; E is another device's.
            for (serial, of) in [
                ("A", None),
                ("B", Some("A")),
                ("C", Some("B")),
                ("D", Some("A")),
                ("E", None),
            ] {
                insert(db, cert(serial, of)).await.unwrap();
            }
            let chain = revoke_chain(db, "a", 7).await.unwrap().expect("revoked");
            let mut serials: Vec<&str> = chain.iter().map(|c| c.serial.as_str()).collect();
            assert_eq!(serials.remove(0), "A", "the named certificate comes first");
            serials.sort();
            assert_eq!(serials, ["B", "C", "D"]);
            assert!(chain.iter().all(|c| c.revoked_at == Some(7)));
            for serial in ["A", "B", "C", "D"] {
                let c = find(db, serial).await.unwrap().unwrap();
                assert_eq!(c.revoked_at, Some(7), "{serial}");
                assert!(revoked_in_chain(db, &c.fingerprint).await.unwrap());
            }
            assert_eq!(find(db, "E").await.unwrap().unwrap().revoked_at, None);
            assert!(!revoked_in_chain(db, "fp-E").await.unwrap());
            // Already revoked: nothing to do.
            assert!(revoke_chain(db, "A", 8).await.unwrap().is_none());
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn a_revoked_ancestor_is_found_through_the_chain_and_a_cycle_ends_the_walk() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            // P revoked; Q renews P; R renews Q (as if committed after the cascade ran).
            insert(
                db,
                Model {
                    revoked_at: Some(1),
                    ..cert("P", None)
                },
            )
            .await
            .unwrap();
            insert(db, cert("Q", Some("P"))).await.unwrap();
            insert(db, cert("R", Some("Q"))).await.unwrap();
            assert!(revoked_in_chain(db, "fp-R").await.unwrap());
            // X ↔ Y (corrupt): the walk stops, and neither is revoked.
            insert(db, cert("X", Some("Y"))).await.unwrap();
            insert(db, cert("Y", Some("X"))).await.unwrap();
            assert!(!revoked_in_chain(db, "fp-X").await.unwrap());
            // A chain longer than the bound fails closed.
            insert(db, cert("L0", None)).await.unwrap();
            for i in 1..=MAX_CHAIN_DEPTH {
                insert(db, cert(&format!("L{i}"), Some(&format!("L{}", i - 1))))
                    .await
                    .unwrap();
            }
            assert!(revoked_in_chain(db, &format!("fp-L{MAX_CHAIN_DEPTH}"))
                .await
                .unwrap());
            assert!(!revoked_in_chain(db, "fp-L1").await.unwrap());
            // Not ours: no chain.
            assert!(!revoked_in_chain(db, "fp-unknown").await.unwrap());
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn a_revoked_certificate_is_not_bound() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            insert(db, cert("A", None)).await.unwrap();
            authenticated_device(db, "UDID-1", "fp-A", Default::default(), 1)
                .await
                .unwrap();
            bind_device(db, "fp-A", "UDID-1").await.unwrap();
            revoke(db, "A", 2).await.unwrap();
            assert!(matches!(
                bind_device(db, "fp-A", "UDID-1").await,
                Err(StorageError::IdentityRevoked)
            ));
            // A certificate from another CA has no record: binding it is not ours to refuse.
            bind_device(db, "fp-foreign", "UDID-1").await.unwrap();
            tdb.cleanup().await;
        }
    }
}
