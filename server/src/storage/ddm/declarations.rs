//! Declarations: stored once by identifier, with the ServerToken the server computed over their content.

use super::super::entities::ddm_declaration::{ActiveModel, Column, Entity};
use super::super::entities::ddm_set_member;
use super::super::StorageResult;
use crate::protocol::ddm::Declaration;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

pub use super::super::entities::ddm_declaration::Model as StoredDeclaration;

/// What a write did to a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    /// Its content, and so its ServerToken, changed.
    Changed,
    /// The same content again: nothing written.
    Unchanged,
}

/// Whose a declaration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Uploaded by an admin (or a plugin): theirs to change.
    Admin,
    /// The server's own (`ddm::builtin`).
    Builtin,
    /// A policy's versions' (`policies::materialize`): it changes only with a new version.
    Policy(i64),
}

impl Owner {
    pub fn of(d: &StoredDeclaration) -> Self {
        match (d.builtin, d.policy_id) {
            (true, _) => Owner::Builtin,
            (false, Some(p)) => Owner::Policy(p),
            (false, None) => Owner::Admin,
        }
    }
}

/// Create or replace the declaration with `d`'s identifier.
pub async fn put<C: ConnectionTrait>(
    c: &C,
    d: &Declaration,
    owner: Owner,
    now: i64,
) -> StorageResult<Written> {
    let before = get(c, &d.identifier).await?;
    let written = match &before {
        None => Written::Created,
        Some(b) if b.server_token == d.server_token && Owner::of(b) == owner => {
            return Ok(Written::Unchanged)
        }
        Some(_) => Written::Changed,
    };
    Entity::insert(ActiveModel {
        identifier: Set(d.identifier.clone()),
        builtin: Set(owner == Owner::Builtin),
        policy_id: Set(match owner {
            Owner::Policy(p) => Some(p),
            Owner::Admin | Owner::Builtin => None,
        }),
        declaration_type: Set(d.declaration_type.clone()),
        category: Set(d.category.as_str().to_string()),
        payload: Set(d.payload_json()),
        server_token: Set(d.server_token.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(Column::Identifier)
            .update_columns([
                Column::Builtin,
                Column::DeclarationType,
                Column::Category,
                Column::Payload,
                Column::ServerToken,
                Column::UpdatedAt,
                Column::PolicyId,
            ])
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(written)
}

pub async fn get<C: ConnectionTrait>(
    c: &C,
    identifier: &str,
) -> StorageResult<Option<StoredDeclaration>> {
    Ok(Entity::find_by_id(identifier.to_string()).one(c).await?)
}

/// A page of declarations in identifier order, after `after`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    after: Option<&str>,
    limit: u64,
) -> StorageResult<Vec<StoredDeclaration>> {
    let mut q = Entity::find().order_by_asc(Column::Identifier).limit(limit);
    if let Some(after) = after {
        q = q.filter(Column::Identifier.gt(after));
    }
    Ok(q.all(c).await?)
}

/// The built-in declarations: in every enrollment's effective set.
pub async fn builtins<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<StoredDeclaration>> {
    Ok(Entity::find()
        .filter(Column::Builtin.eq(true))
        .order_by_asc(Column::Identifier)
        .all(c)
        .await?)
}

/// Which of `identifiers` exist as an admin's (sets hold only those: the built-in are everyone's, and a
/// policy's reach devices only through its versions).
pub async fn uploaded_among<C: ConnectionTrait>(
    c: &C,
    identifiers: &[String],
) -> StorageResult<Vec<String>> {
    Ok(Entity::find()
        .select_only()
        .column(Column::Identifier)
        .filter(Column::Identifier.is_in(identifiers.iter().cloned()))
        .filter(Column::Builtin.eq(false))
        .filter(Column::PolicyId.is_null())
        .into_tuple()
        .all(c)
        .await?)
}

/// Remove a declaration, and with it its place in every set. True if it existed.
pub async fn delete<C: ConnectionTrait>(c: &C, identifier: &str) -> StorageResult<bool> {
    ddm_set_member::Entity::delete_many()
        .filter(ddm_set_member::Column::Identifier.eq(identifier))
        .exec(c)
        .await?;
    Ok(Entity::delete_by_id(identifier.to_string())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// Built-in declarations no longer configured: removed, with their identifiers returned.
pub async fn remove_builtins_except<C: ConnectionTrait>(
    c: &C,
    keep: &[String],
) -> StorageResult<Vec<String>> {
    let gone: Vec<String> = Entity::find()
        .select_only()
        .column(Column::Identifier)
        .filter(Column::Builtin.eq(true))
        .filter(Column::Identifier.is_not_in(keep.iter().cloned()))
        .into_tuple()
        .all(c)
        .await?;
    if !gone.is_empty() {
        Entity::delete_many()
            .filter(Column::Identifier.is_in(gone.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(gone)
}
