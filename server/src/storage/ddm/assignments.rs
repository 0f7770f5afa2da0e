//! Sets assigned to enrollments (device or user channels) and to device groups. An enrollment holds the
//! sets assigned to it and, if it is a device channel (whose id is the device's), those of every group its
//! device is in: every read here answers for both, so a device that joins or leaves a group gains or loses
//! the group's sets with nothing written but its membership.

use super::super::entities::ddm_assignment::{ActiveModel, Column, Entity};
use super::super::entities::ddm_group_assignment::{
    self as group_assignment, Entity as GroupAssignments,
};
use super::super::entities::ddm_set_member::{self, Entity as Members};
use super::super::entities::device_group_member::{self as member, Entity as GroupMembers};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::StorageResult;
use sea_orm::sea_query::{OnConflict, Query, SelectStatement, SimpleExpr, UnionType};
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

/// The sets one enrollment holds, directly or through its device's groups, by name, each once.
pub async fn sets_of<C: ConnectionTrait>(c: &C, enrollment_id: &str) -> StorageResult<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for row in c.query_all(&held_by(enrollment_id)).await? {
        names.push(row.try_get_by_index(0)?);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The names of the sets one enrollment holds (its own and its device's groups'), as a subquery.
fn held_by(enrollment_id: &str) -> SelectStatement {
    let mut q = Query::select()
        .column(Column::SetName)
        .from(Entity)
        .and_where(Column::EnrollmentId.eq(enrollment_id))
        .to_owned();
    q.union(
        UnionType::Distinct,
        Query::select()
            .column(group_assignment::Column::SetName)
            .from(GroupAssignments)
            .and_where(
                group_assignment::Column::GroupId.in_subquery(groups_of_device(enrollment_id)),
            )
            .to_owned(),
    );
    q
}

/// The groups a device is in, as a subquery.
fn groups_of_device(device_id: &str) -> SelectStatement {
    Query::select()
        .column(member::Column::GroupId)
        .from(GroupMembers)
        .and_where(member::Column::DeviceId.eq(device_id))
        .to_owned()
}

/// Which sets a read is about.
#[derive(Clone, Copy)]
enum Sets<'a> {
    Named(&'a str),
    /// Those holding this declaration.
    Holding(&'a str),
}

impl Sets<'_> {
    /// The condition on a `set_name` column.
    fn on<Col: ColumnTrait>(self, set_name: Col) -> SimpleExpr {
        match self {
            Sets::Named(name) => set_name.eq(name),
            Sets::Holding(identifier) => set_name.in_subquery(sets_holding(identifier)),
        }
    }
}

/// The enrollments holding `sets`, directly or as the device channel of a member of a group they are
/// assigned to, as a subquery.
fn enrollments_with(sets: Sets<'_>) -> SelectStatement {
    let groups = Query::select()
        .column(group_assignment::Column::GroupId)
        .from(GroupAssignments)
        .and_where(sets.on(group_assignment::Column::SetName))
        .to_owned();
    let mut q = Query::select()
        .column(Column::EnrollmentId)
        .from(Entity)
        .and_where(sets.on(Column::SetName))
        .to_owned();
    q.union(
        UnionType::Distinct,
        member_devices(member::Column::GroupId.in_subquery(groups)),
    );
    q
}

/// The device channels (device ids) of the members of the groups `which` selects, as a subquery.
fn member_devices(which: SimpleExpr) -> SelectStatement {
    Query::select()
        .column(member::Column::DeviceId)
        .from(GroupMembers)
        .and_where(which)
        .to_owned()
}

/// The enrollments holding a set, directly or through a group.
pub async fn enrollments_with_set<C: ConnectionTrait>(
    c: &C,
    set_name: &str,
) -> StorageResult<Vec<String>> {
    enrollment_ids(c, with_set(set_name)).await
}

/// The enrollments holding a set, directly or through a group, as a subquery.
pub(super) fn with_set(set_name: &str) -> SelectStatement {
    enrollments_with(Sets::Named(set_name))
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
    enrollments_with(Sets::Holding(identifier))
}

/// The enrollment ids a subquery selects, in order.
async fn enrollment_ids<C: ConnectionTrait>(
    c: &C,
    q: SelectStatement,
) -> StorageResult<Vec<String>> {
    let mut ids = Vec::new();
    for row in c.query_all(&q).await? {
        ids.push(row.try_get_by_index(0)?);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Whether an enrollment holds a declaration through any of its sets (its own or its groups'): one
/// statement, asked for every declaration a device fetches.
pub async fn holds<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    identifier: &str,
) -> StorageResult<bool> {
    Ok(Members::find()
        .filter(ddm_set_member::Column::Identifier.eq(identifier))
        .filter(ddm_set_member::Column::SetName.in_subquery(held_by(enrollment_id)))
        .one(c)
        .await?
        .is_some())
}

/// Whether any set is assigned to any group: when none is, a read of many enrollments' sets skips the
/// group tables (a lookup per enrollment for nothing).
pub async fn any_group_assignment<C: ConnectionTrait>(c: &C) -> StorageResult<bool> {
    Ok(GroupAssignments::find().one(c).await?.is_some())
}

/// Assign a set to a group. True if it was not assigned already.
pub async fn assign_group<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    set_name: &str,
    now: i64,
) -> StorageResult<bool> {
    let inserted = GroupAssignments::insert(group_assignment::ActiveModel {
        group_id: Set(group_id),
        set_name: Set(set_name.to_string()),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            group_assignment::Column::GroupId,
            group_assignment::Column::SetName,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(inserted > 0)
}

/// True if it was assigned.
pub async fn unassign_group<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    set_name: &str,
) -> StorageResult<bool> {
    Ok(GroupAssignments::delete_many()
        .filter(group_assignment::Column::GroupId.eq(group_id))
        .filter(group_assignment::Column::SetName.eq(set_name))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// The sets assigned to a group, by name.
pub async fn sets_of_group<C: ConnectionTrait>(c: &C, group_id: i64) -> StorageResult<Vec<String>> {
    Ok(GroupAssignments::find()
        .select_only()
        .column(group_assignment::Column::SetName)
        .filter(group_assignment::Column::GroupId.eq(group_id))
        .order_by_asc(group_assignment::Column::SetName)
        .into_tuple()
        .all(c)
        .await?)
}

/// Which of `group_ids` have sets assigned (sorted): a membership change in the others changes no one's
/// declarations.
pub async fn groups_with_sets<C: ConnectionTrait>(
    c: &C,
    group_ids: &[i64],
) -> StorageResult<Vec<i64>> {
    let mut out: Vec<i64> = Vec::new();
    for chunk in group_ids.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<i64> = GroupAssignments::find()
            .select_only()
            .column(group_assignment::Column::GroupId)
            .distinct()
            .filter(group_assignment::Column::GroupId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The device channels of a group's members, as a subquery (the audience of a set assigned to it).
pub(super) fn in_group(group_id: i64) -> SelectStatement {
    member_devices(member::Column::GroupId.eq(group_id))
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
