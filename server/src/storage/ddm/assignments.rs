//! Sets assigned to enrollments (device or user channels).

use super::super::entities::ddm_assignment::{ActiveModel, Column, Entity};
use super::super::entities::ddm_set_member::{self, Entity as Members};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::StorageResult;
use sea_orm::sea_query::{OnConflict, Order, Query, SelectStatement};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

/// Assign a set to an enrollment. True if it was not assigned already.
pub async fn assign<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    set_name: &str,
    now: i64,
) -> StorageResult<bool> {
    let inserted = Entity::insert(ActiveModel {
        enrollment_id: Set(enrollment_id.to_string()),
        set_name: Set(set_name.to_string()),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([Column::EnrollmentId, Column::SetName])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(inserted > 0)
}

/// True if it was assigned.
pub async fn unassign<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    set_name: &str,
) -> StorageResult<bool> {
    Ok(Entity::delete_many()
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::SetName.eq(set_name))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// The sets assigned to one enrollment, by name.
pub async fn sets_of<C: ConnectionTrait>(c: &C, enrollment_id: &str) -> StorageResult<Vec<String>> {
    Ok(Entity::find()
        .select_only()
        .column(Column::SetName)
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .order_by_asc(Column::SetName)
        .into_tuple()
        .all(c)
        .await?)
}

/// The enrollments a set is assigned to.
pub async fn enrollments_with_set<C: ConnectionTrait>(
    c: &C,
    set_name: &str,
) -> StorageResult<Vec<String>> {
    enrollment_ids(c, with_set(set_name)).await
}

/// The enrollments a set is assigned to, as a subquery.
pub(super) fn with_set(set_name: &str) -> SelectStatement {
    Query::select()
        .column(Column::EnrollmentId)
        .from(Entity)
        .and_where(Column::SetName.eq(set_name))
        .to_owned()
}

/// The names of the sets holding a declaration, as a subquery.
fn sets_holding(identifier: &str) -> SelectStatement {
    Query::select()
        .column(ddm_set_member::Column::SetName)
        .from(Members)
        .and_where(ddm_set_member::Column::Identifier.eq(identifier))
        .to_owned()
}

/// The enrollments holding a declaration through any of their sets.
pub async fn enrollments_holding<C: ConnectionTrait>(
    c: &C,
    identifier: &str,
) -> StorageResult<Vec<String>> {
    enrollment_ids(c, holding(identifier)).await
}

/// The enrollments holding a declaration through any of their sets, as a subquery.
pub(super) fn holding(identifier: &str) -> SelectStatement {
    Query::select()
        .distinct()
        .column(Column::EnrollmentId)
        .from(Entity)
        .and_where(Column::SetName.in_subquery(sets_holding(identifier)))
        .to_owned()
}

/// The enrollment ids a subquery of this table selects, in order.
async fn enrollment_ids<C: ConnectionTrait>(
    c: &C,
    mut q: SelectStatement,
) -> StorageResult<Vec<String>> {
    q.order_by(Column::EnrollmentId, Order::Asc);
    let mut ids = Vec::new();
    for row in c.query_all(&q).await? {
        ids.push(row.try_get_by_index(0)?);
    }
    Ok(ids)
}

/// Whether an enrollment holds a declaration through any of its sets.
pub async fn holds<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    identifier: &str,
) -> StorageResult<bool> {
    Ok(Entity::find()
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::SetName.in_subquery(sets_holding(identifier)))
        .one(c)
        .await?
        .is_some())
}

pub(super) async fn remove_all<C: ConnectionTrait>(
    c: &C,
    enrollment_ids: &[String],
) -> StorageResult<()> {
    for chunk in enrollment_ids.chunks(IDS_PER_STATEMENT) {
        Entity::delete_many()
            .filter(Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(())
}
