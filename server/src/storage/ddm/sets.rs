//! Sets: named lists of declarations, the unit assigned to enrollments.

use super::super::entities::ddm_declaration::{self, Entity as Declarations};
use super::super::entities::ddm_set::{ActiveModel, Column, Entity};
use super::super::entities::ddm_set_member::{self, Entity as Members};
use super::super::entities::{ddm_assignment, ddm_group_assignment};
use super::super::StorageResult;
use super::ROWS_PER_INSERT;
use crate::protocol::ddm::Category;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QueryOrder,
    QuerySelect, RelationDef,
};

pub use super::super::entities::ddm_set::Model as StoredSet;

/// A declaration as a set holds it: what the device is told in its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub set_name: String,
    pub identifier: String,
    pub category: Category,
    pub server_token: String,
}

/// Create the set or replace its declarations. True if its declarations changed (a new set with none
/// did not change anything a device has).
pub async fn put<C: ConnectionTrait>(
    c: &C,
    name: &str,
    identifiers: &[String],
    now: i64,
) -> StorageResult<bool> {
    let mut wanted = identifiers.to_vec();
    wanted.sort();
    wanted.dedup();
    let before = members(c, name).await?.unwrap_or_default();
    Entity::insert(ActiveModel {
        name: Set(name.to_string()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(Column::Name)
            .update_column(Column::UpdatedAt)
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    if before == wanted {
        return Ok(false);
    }
    Members::delete_many()
        .filter(ddm_set_member::Column::SetName.eq(name))
        .exec(c)
        .await?;
    for chunk in wanted.chunks(ROWS_PER_INSERT) {
        Members::insert_many(chunk.iter().map(|id| ddm_set_member::ActiveModel {
            set_name: Set(name.to_string()),
            identifier: Set(id.clone()),
        }))
        .exec_without_returning(c)
        .await?;
    }
    Ok(true)
}

/// The set's declaration identifiers, sorted; None if there is no such set.
pub async fn members<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<Option<Vec<String>>> {
    if Entity::find_by_id(name.to_string()).one(c).await?.is_none() {
        return Ok(None);
    }
    let ids = Members::find()
        .select_only()
        .column(ddm_set_member::Column::Identifier)
        .filter(ddm_set_member::Column::SetName.eq(name))
        .order_by_asc(ddm_set_member::Column::Identifier)
        .into_tuple()
        .all(c)
        .await?;
    Ok(Some(ids))
}

/// A page of sets in name order, after `after`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    after: Option<&str>,
    limit: u64,
) -> StorageResult<Vec<StoredSet>> {
    let mut q = Entity::find().order_by_asc(Column::Name).limit(limit);
    if let Some(after) = after {
        q = q.filter(Column::Name.gt(after));
    }
    Ok(q.all(c).await?)
}

pub async fn exists<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<bool> {
    Ok(Entity::find_by_id(name.to_string()).one(c).await?.is_some())
}

/// The sets holding a declaration.
pub async fn holding<C: ConnectionTrait>(c: &C, identifier: &str) -> StorageResult<Vec<String>> {
    Ok(Members::find()
        .select_only()
        .column(ddm_set_member::Column::SetName)
        .filter(ddm_set_member::Column::Identifier.eq(identifier))
        .order_by_asc(ddm_set_member::Column::SetName)
        .into_tuple()
        .all(c)
        .await?)
}

/// Remove a set, its members and its assignments (to enrollments and groups). True if it existed.
pub async fn delete<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<bool> {
    Members::delete_many()
        .filter(ddm_set_member::Column::SetName.eq(name))
        .exec(c)
        .await?;
    ddm_assignment::Entity::delete_many()
        .filter(ddm_assignment::Column::SetName.eq(name))
        .exec(c)
        .await?;
    ddm_group_assignment::Entity::delete_many()
        .filter(ddm_group_assignment::Column::SetName.eq(name))
        .exec(c)
        .await?;
    Ok(Entity::delete_by_id(name.to_string())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

fn member_declaration() -> RelationDef {
    Members::belongs_to(Declarations)
        .from(ddm_set_member::Column::Identifier)
        .to(ddm_declaration::Column::Identifier)
        .into()
}

/// Every declaration the named sets hold, with what the manifest needs of it.
pub async fn declarations_of<C: ConnectionTrait>(
    c: &C,
    set_names: &[String],
) -> StorageResult<Vec<Member>> {
    let mut out = Vec::new();
    for chunk in set_names.chunks(super::super::queue::IDS_PER_STATEMENT) {
        let rows: Vec<(String, String, String, String)> = Members::find()
            .select_only()
            .column(ddm_set_member::Column::SetName)
            .column(ddm_set_member::Column::Identifier)
            .column_as(
                Expr::col((Declarations, ddm_declaration::Column::Category)),
                "category",
            )
            .column_as(
                Expr::col((Declarations, ddm_declaration::Column::ServerToken)),
                "server_token",
            )
            .join(JoinType::InnerJoin, member_declaration())
            .filter(ddm_set_member::Column::SetName.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        for (set_name, identifier, category, server_token) in rows {
            out.push(Member {
                set_name,
                identifier,
                category: super::status::category_of(&category)?,
                server_token,
            });
        }
    }
    Ok(out)
}
