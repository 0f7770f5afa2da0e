//! One-time secrets: SCEP challenges and enrollment tokens. Only the SHA-256 of a secret is stored; using one
//! is a single conditional UPDATE, so two replicas (or two requests) can never both use it.

use super::entities::one_time_secret::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

pub use super::entities::one_time_secret::Model as OneTimeSecret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A SCEP challengePassword.
    Challenge,
    /// An enrollment token (`/enroll?token=`).
    Token,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Challenge => "challenge",
            Self::Token => "token",
        }
    }
}

/// What a new secret is bound to.
#[derive(Debug, Clone, Default)]
pub struct SecretScope {
    pub serial_number: Option<String>,
    pub renewal_for: Option<String>,
    pub token_id: Option<String>,
    pub label: Option<String>,
}

/// Why a secret was not accepted (said to the client only as "invalid", logged in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Used,
    Expired,
    /// Pinned to another serial number (or the request did not say which device it is).
    WrongDevice,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "is unknown",
            Self::Used => "was already used",
            Self::Expired => "has expired",
            Self::WrongDevice => {
                "was issued for another device (or the device did not say which it is)"
            }
        })
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(openssl::sha::sha256(secret.as_bytes()))
}

/// Create a secret valid for `ttl_ms`; returns the record and the secret (shown once, never stored).
pub async fn create<W: Writes>(
    c: &W,
    kind: SecretKind,
    scope: SecretScope,
    ttl_ms: i64,
    now: i64,
) -> StorageResult<(Model, String)> {
    let c = c.connection();
    let secret = hex::encode(crate::pki::random_bytes(20));
    let model = Model {
        id: uuid::Uuid::new_v4().to_string(),
        kind: kind.as_str().to_string(),
        secret_hash: hash(&secret),
        created_at: now,
        expires_at: now + ttl_ms,
        used_at: None,
        serial_number: scope.serial_number,
        renewal_for: scope.renewal_for,
        token_id: scope.token_id,
        label: scope.label,
    };
    Entity::insert(ActiveModel {
        id: Set(model.id.clone()),
        kind: Set(model.kind.clone()),
        secret_hash: Set(model.secret_hash.clone()),
        created_at: Set(now),
        expires_at: Set(model.expires_at),
        used_at: Set(None),
        serial_number: Set(model.serial_number.clone()),
        renewal_for: Set(model.renewal_for.clone()),
        token_id: Set(model.token_id.clone()),
        label: Set(model.label.clone()),
    })
    .exec_without_returning(c)
    .await?;
    Ok((model, secret))
}

/// Use a secret once. For a token, `serial` is the device's serial number when known: a pinned token refuses
/// any other (and an unknown one) without being used up. A pinned challenge is not checked here (a SCEP
/// request does not say which device sends it): the pin goes into the certificate and is checked at
/// Authenticate.
pub async fn consume<W: Writes>(
    c: &W,
    kind: SecretKind,
    secret: &str,
    serial: Option<&str>,
    now: i64,
) -> StorageResult<Result<Model, Refusal>> {
    let c = c.connection();
    let h = hash(secret);
    let Some(found) = Entity::find()
        .filter(Column::SecretHash.eq(&h))
        .filter(Column::Kind.eq(kind.as_str()))
        .one(c)
        .await?
    else {
        return Ok(Err(Refusal::Unknown));
    };
    if found.used_at.is_some() {
        return Ok(Err(Refusal::Used));
    }
    if found.expires_at <= now {
        return Ok(Err(Refusal::Expired));
    }
    if let (SecretKind::Token, Some(pinned)) = (kind, &found.serial_number) {
        if serial != Some(pinned.as_str()) {
            return Ok(Err(Refusal::WrongDevice));
        }
    }
    let won = Entity::update_many()
        .col_expr(Column::UsedAt, Expr::value(now))
        .filter(Column::Id.eq(&found.id))
        .filter(Column::UsedAt.is_null())
        .exec(c)
        .await?
        .rows_affected
        == 1;
    if !won {
        return Ok(Err(Refusal::Used));
    }
    Ok(Ok(Model {
        used_at: Some(now),
        ..found
    }))
}

/// Secrets of `kind`, newest first; unused and unexpired only unless `all`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    kind: SecretKind,
    all: bool,
    now: i64,
    limit: u64,
) -> StorageResult<Vec<Model>> {
    let mut q = Entity::find().filter(Column::Kind.eq(kind.as_str()));
    if !all {
        q = q
            .filter(Column::UsedAt.is_null())
            .filter(Column::ExpiresAt.gt(now));
    }
    Ok(q.order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .limit(limit)
        .all(c)
        .await?)
}

/// Withdraw an unused secret (it expires now). False when there is no such unused secret.
pub async fn revoke<W: Writes>(c: &W, kind: SecretKind, id: &str, now: i64) -> StorageResult<bool> {
    let c = c.connection();
    Ok(Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::Kind.eq(kind.as_str()))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

/// Unused challenges handed out by anonymous `/enroll` downloads (no token, not a renewal), counted up to
/// `cap`: the bound `enroll.max_anonymous_challenges` keeps, whether or not they have expired yet.
pub async fn unused_anonymous_challenges<C: ConnectionTrait>(
    c: &C,
    cap: u64,
) -> StorageResult<u64> {
    use sea_orm::sea_query::{Alias, Query};
    let unused = Query::select()
        .expr(Expr::val(1))
        .from(Entity)
        .and_where(Column::Kind.eq(SecretKind::Challenge.as_str()))
        .and_where(Column::UsedAt.is_null())
        .and_where(Column::TokenId.is_null())
        .and_where(Column::RenewalFor.is_null())
        .limit(cap)
        .to_owned();
    let count = Query::select()
        .expr(Expr::cust("COUNT(*)"))
        .from_subquery(unused, Alias::new("unused"))
        .to_owned();
    let stmt = c.get_database_backend().build(&count);
    let n = match c.query_one_raw(stmt).await? {
        Some(row) => row.try_get_by_index::<i64>(0)?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// When the oldest unused anonymous challenge expires (so a refused download knows when to come back).
pub async fn oldest_unused_anonymous_challenge_expiry<C: ConnectionTrait>(
    c: &C,
) -> StorageResult<Option<i64>> {
    Ok(Entity::find()
        .filter(Column::Kind.eq(SecretKind::Challenge.as_str()))
        .filter(Column::UsedAt.is_null())
        .filter(Column::TokenId.is_null())
        .filter(Column::RenewalFor.is_null())
        .order_by_asc(Column::ExpiresAt)
        .one(c)
        .await?
        .map(|m| m.expires_at))
}

/// Delete challenges that expired unused (housekeeping, and `/enroll` when at its bound). Nothing refers to
/// them and nobody can use them, so they go as soon as they expire; used challenges (an issued certificate
/// names its challenge) and tokens (listed to admins) wait for `purge`.
pub async fn purge_expired_challenges<W: Writes>(c: &W, now: i64) -> StorageResult<u64> {
    let c = c.connection();
    Ok(Entity::delete_many()
        .filter(Column::Kind.eq(SecretKind::Challenge.as_str()))
        .filter(Column::UsedAt.is_null())
        .filter(Column::ExpiresAt.lte(now))
        .exec(c)
        .await?
        .rows_affected)
}

/// Delete secrets that expired or were used before `cutoff` (housekeeping).
pub async fn purge<C: ConnectionTrait>(c: &C, cutoff: i64) -> StorageResult<u64> {
    Ok(Entity::delete_many()
        .filter(Column::ExpiresAt.lt(cutoff))
        .exec(c)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    #[tokio::test]
    async fn a_secret_works_once_before_it_expires_and_only_for_its_device() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let c = s.db();
            let (_, s) = create(c, SecretKind::Challenge, SecretScope::default(), 1000, 0)
                .await
                .unwrap();
            // The wrong kind does not find it.
            assert_eq!(
                consume(c, SecretKind::Token, &s, None, 1).await.unwrap(),
                Err(Refusal::Unknown)
            );
            assert!(consume(c, SecretKind::Challenge, &s, None, 1)
                .await
                .unwrap()
                .is_ok());
            assert_eq!(
                consume(c, SecretKind::Challenge, &s, None, 2)
                    .await
                    .unwrap(),
                Err(Refusal::Used)
            );

            let (_, late) = create(c, SecretKind::Token, SecretScope::default(), 1000, 0)
                .await
                .unwrap();
            assert_eq!(
                consume(c, SecretKind::Token, &late, None, 1000)
                    .await
                    .unwrap(),
                Err(Refusal::Expired)
            );

            let pinned = SecretScope {
                serial_number: Some("C02ABC".into()),
                ..Default::default()
            };
            let (_, p) = create(c, SecretKind::Token, pinned, 1000, 0).await.unwrap();
            for wrong in [None, Some("OTHER")] {
                assert_eq!(
                    consume(c, SecretKind::Token, &p, wrong, 1).await.unwrap(),
                    Err(Refusal::WrongDevice)
                );
            }
            // Refusing the wrong device did not use it up.
            let used = consume(c, SecretKind::Token, &p, Some("C02ABC"), 1)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(used.used_at, Some(1));
            assert_eq!(
                list(c, SecretKind::Token, false, 1000, 10)
                    .await
                    .unwrap()
                    .len(),
                0
            );
            assert_eq!(
                list(c, SecretKind::Token, true, 1, 10).await.unwrap().len(),
                2
            );
            assert_eq!(purge(c, 2000).await.unwrap(), 3);
        }
    }

    /// The anonymous-challenge count stops at its cap and leaves out token and renewal challenges; expired
    /// unused challenges are purged at once, used ones and tokens are kept for retention.
    #[tokio::test]
    async fn unused_anonymous_challenges_are_counted_to_a_cap_and_expired_ones_purged() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let c = s.db();
            let anon = || SecretScope::default();
            for _ in 0..3 {
                create(c, SecretKind::Challenge, anon(), 1000, 0)
                    .await
                    .unwrap();
            }
            let for_token = SecretScope {
                token_id: Some("t".into()),
                ..Default::default()
            };
            create(c, SecretKind::Challenge, for_token, 1000, 0)
                .await
                .unwrap();
            create(c, SecretKind::Token, anon(), 1000, 0).await.unwrap();
            let (_, used) = create(c, SecretKind::Challenge, anon(), 1000, 0)
                .await
                .unwrap();
            consume(c, SecretKind::Challenge, &used, None, 1)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(unused_anonymous_challenges(c, 10).await.unwrap(), 3);
            assert_eq!(unused_anonymous_challenges(c, 2).await.unwrap(), 2);
            assert_eq!(
                oldest_unused_anonymous_challenge_expiry(c).await.unwrap(),
                Some(1000)
            );
            assert_eq!(purge_expired_challenges(c, 999).await.unwrap(), 0);
            // The three anonymous and the token's challenge; not the used one, not the token.
            assert_eq!(purge_expired_challenges(c, 1000).await.unwrap(), 4);
            assert_eq!(unused_anonymous_challenges(c, 10).await.unwrap(), 0);
            assert_eq!(
                list(c, SecretKind::Token, true, 0, 10).await.unwrap().len(),
                1
            );
        }
    }
}
