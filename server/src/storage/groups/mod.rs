//! Device groups: the groups themselves ([`self`]), who is in them ([`members`]), and how a dynamic
//! group's membership follows its rule ([`evaluate`]). Reads take any connection; writes a transaction's
//! (or a [`super::Writes`]), so a membership change commits with whatever caused it.

pub mod evaluate;
pub mod members;

use super::entities::device_group::{ActiveModel, Column, Entity};
use super::{StorageError, StorageResult};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

pub use super::entities::device_group::Model as Group;
pub use evaluate::{refresh_device, Change};

/// What a group's membership comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    /// Members added and removed by an admin.
    Static,
    /// Members the devices matching the group's rule, kept current by the server.
    Dynamic,
}

impl GroupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Static => "static",
            GroupKind::Dynamic => "dynamic",
        }
    }

    pub fn parse(s: &str) -> StorageResult<GroupKind> {
        match s {
            "static" => Ok(GroupKind::Static),
            "dynamic" => Ok(GroupKind::Dynamic),
            other => Err(StorageError::Corrupt(format!(
                "unknown group kind {other:?}"
            ))),
        }
    }
}

/// Store a new group. A name already taken is a `Conflict`.
pub async fn insert<C: ConnectionTrait>(
    c: &C,
    name: &str,
    kind: GroupKind,
    rule: Option<String>,
    now: i64,
) -> StorageResult<Group> {
    if find_by_name(c, name).await?.is_some() {
        return Err(name_taken(name));
    }
    let inserted = Entity::insert(ActiveModel {
        name: Set(name.to_string()),
        kind: Set(kind.as_str().to_string()),
        rule: Set(rule),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec(c)
    .await
    .map_err(|e| unique_name(e, name))?;
    find(c, inserted.last_insert_id)
        .await?
        .ok_or_else(|| StorageError::Corrupt("a group vanished as it was created".into()))
}

fn name_taken(name: &str) -> StorageError {
    StorageError::Conflict(format!("a group named {name:?} exists"))
}

/// Two admins creating one name at once: the unique index settles it, as the same `Conflict`.
fn unique_name(e: sea_orm::DbErr, name: &str) -> StorageError {
    match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => name_taken(name),
        _ => StorageError::Db(e),
    }
}

pub async fn find<C: ConnectionTrait>(c: &C, id: i64) -> StorageResult<Option<Group>> {
    Ok(Entity::find_by_id(id).one(c).await?)
}

pub async fn find_by_name<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<Option<Group>> {
    Ok(Entity::find().filter(Column::Name.eq(name)).one(c).await?)
}

/// The groups among `ids` that exist.
pub async fn find_many<C: ConnectionTrait>(c: &C, ids: &[i64]) -> StorageResult<Vec<Group>> {
    Ok(Entity::find()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(Column::Id)
        .all(c)
        .await?)
}

/// Groups in id order after the cursor `after`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    after: Option<i64>,
    limit: u64,
) -> StorageResult<Vec<Group>> {
    Ok(Entity::find()
        .filter(Column::Id.gt(after.unwrap_or(0)))
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(c)
        .await?)
}

pub async fn count<C: ConnectionTrait>(c: &C) -> StorageResult<u64> {
    Ok(Entity::find().count(c).await?)
}

/// Rename a group and, for a dynamic one, replace its rule. False: no such group. A name taken by another
/// group is a `Conflict`.
pub async fn update<C: ConnectionTrait>(
    c: &C,
    id: i64,
    name: Option<&str>,
    rule: Option<String>,
    now: i64,
) -> StorageResult<bool> {
    if let Some(name) = name {
        if find_by_name(c, name).await?.is_some_and(|g| g.id != id) {
            return Err(name_taken(name));
        }
    }
    let mut update = Entity::update_many()
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id));
    if let Some(name) = name {
        update = update.col_expr(Column::Name, Expr::value(name));
    }
    if let Some(rule) = rule {
        update = update.col_expr(Column::Rule, Expr::value(rule));
    }
    let res = update
        .exec(c)
        .await
        .map_err(|e| unique_name(e, name.unwrap_or_default()))?;
    Ok(res.rows_affected == 1)
}

/// Delete a group; its memberships go with it (the foreign key cascades). False: no such group.
pub async fn delete<C: ConnectionTrait>(c: &C, id: i64) -> StorageResult<bool> {
    Ok(Entity::delete_by_id(id).exec(c).await?.rows_affected == 1)
}
