//! API keys, stored as SHA-256 hashes.

use super::entities::api_key::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder,
};

pub use super::entities::api_key::Model as ApiKey;

pub async fn insert<W: Writes>(c: &W, key: Model) -> StorageResult<()> {
    let c = c.connection();
    ActiveModel {
        id: Set(key.id),
        name: Set(key.name),
        key_hash: Set(key.key_hash),
        prefix: Set(key.prefix),
        scopes: Set(key.scopes),
        created_at: Set(key.created_at),
        last_used_at: Set(key.last_used_at),
        revoked_at: Set(key.revoked_at),
    }
    .insert(c)
    .await?;
    Ok(())
}

pub async fn find_active_by_hash<C: ConnectionTrait>(
    c: &C,
    hash: &str,
) -> StorageResult<Option<Model>> {
    Ok(Entity::find()
        .filter(Column::KeyHash.eq(hash))
        .filter(Column::RevokedAt.is_null())
        .one(c)
        .await?)
}

pub async fn list<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<Model>> {
    // Id breaks ties: keys created in the same millisecond still list in a stable order.
    Ok(Entity::find()
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .all(c)
        .await?)
}

pub async fn touch<W: Writes>(c: &W, id: &str, now: i64) -> StorageResult<()> {
    let c = c.connection();
    Entity::update_many()
        .col_expr(Column::LastUsedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(c)
        .await?;
    Ok(())
}

/// Returns false when there was no such active key.
pub async fn revoke<W: Writes>(c: &W, id: &str, now: i64) -> StorageResult<bool> {
    let c = c.connection();
    Ok(Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::RevokedAt.is_null())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}
