//! Group membership, one row per (group, device) for both kinds of group: indexed by group (the primary
//! key) and by device, so a group's devices and a device's groups are each one range read.

use super::super::entities::device_group_member::{ActiveModel, Column, Entity};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::StorageResult;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::collections::{HashMap, HashSet};

/// Rows per multi-row insert: three values a row keeps a statement far below SQLite's bind limit.
const ROWS_PER_INSERT: usize = 5_000;

/// One page of a group's devices, by device id after the cursor `after`, with when each joined.
pub async fn page<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    after: Option<&str>,
    limit: u64,
) -> StorageResult<Vec<(String, i64)>> {
    let mut q = Entity::find().filter(Column::GroupId.eq(group_id));
    if let Some(after) = after {
        q = q.filter(Column::DeviceId.gt(after));
    }
    Ok(q.select_only()
        .column(Column::DeviceId)
        .column(Column::Since)
        .order_by_asc(Column::DeviceId)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?)
}

/// Every device in any of `group_ids`, each once, sorted: the targets of a command or push to groups.
pub async fn devices_of<C: ConnectionTrait>(
    c: &C,
    group_ids: &[i64],
) -> StorageResult<Vec<String>> {
    let mut out: Vec<String> = Entity::find()
        .select_only()
        .column(Column::DeviceId)
        .distinct()
        .filter(Column::GroupId.is_in(group_ids.iter().copied()))
        .into_tuple()
        .all(c)
        .await?;
    out.sort();
    Ok(out)
}

/// How many devices each of `group_ids` holds (groups with none are absent).
pub async fn counts<C: ConnectionTrait>(
    c: &C,
    group_ids: &[i64],
) -> StorageResult<HashMap<i64, u64>> {
    let rows: Vec<(i64, i64)> = Entity::find()
        .select_only()
        .column(Column::GroupId)
        .column_as(Column::DeviceId.count(), "n")
        .filter(Column::GroupId.is_in(group_ids.iter().copied()))
        .group_by(Column::GroupId)
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows.into_iter().map(|(g, n)| (g, n as u64)).collect())
}

pub async fn count<C: ConnectionTrait>(c: &C, group_id: i64) -> StorageResult<u64> {
    Ok(Entity::find()
        .filter(Column::GroupId.eq(group_id))
        .count(c)
        .await?)
}

/// The groups a device is in.
pub async fn groups_of<C: ConnectionTrait>(c: &C, device_id: &str) -> StorageResult<Vec<i64>> {
    Ok(Entity::find()
        .select_only()
        .column(Column::GroupId)
        .filter(Column::DeviceId.eq(device_id))
        .order_by_asc(Column::GroupId)
        .into_tuple()
        .all(c)
        .await?)
}

/// Which of `device_ids` are in `group_id`.
pub async fn present<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    device_ids: &[String],
) -> StorageResult<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in device_ids.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<String> = Entity::find()
            .select_only()
            .column(Column::DeviceId)
            .filter(Column::GroupId.eq(group_id))
            .filter(Column::DeviceId.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Add devices to a group (those in it already stay, their `since` kept). Returns those that joined.
pub async fn add<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    device_ids: &[String],
    now: i64,
) -> StorageResult<Vec<String>> {
    let there = present(c, group_id, device_ids).await?;
    let joined: Vec<String> = device_ids
        .iter()
        .filter(|d| !there.contains(*d))
        .cloned()
        .collect();
    insert(c, joined.iter().map(|d| (group_id, d.as_str())), now).await?;
    Ok(joined)
}

/// Remove devices from a group. Returns those that were in it.
pub async fn remove<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    device_ids: &[String],
) -> StorageResult<Vec<String>> {
    let there = present(c, group_id, device_ids).await?;
    let left: Vec<String> = device_ids
        .iter()
        .filter(|d| there.contains(*d))
        .cloned()
        .collect();
    delete(c, group_id, &left).await?;
    Ok(left)
}

/// Insert memberships; one already stored is left as it is (a concurrent writer got there first).
pub(super) async fn insert<'a, C: ConnectionTrait>(
    c: &C,
    rows: impl Iterator<Item = (i64, &'a str)>,
    now: i64,
) -> StorageResult<()> {
    let rows: Vec<_> = rows.collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        Entity::insert_many(chunk.iter().map(|(g, d)| ActiveModel {
            group_id: Set(*g),
            device_id: Set(d.to_string()),
            since: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([Column::GroupId, Column::DeviceId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

pub(super) async fn delete<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    device_ids: &[String],
) -> StorageResult<()> {
    for chunk in device_ids.chunks(IDS_PER_STATEMENT) {
        Entity::delete_many()
            .filter(Column::GroupId.eq(group_id))
            .filter(Column::DeviceId.is_in(chunk.iter().map(String::as_str)))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// The memberships in `group_ids` of the devices with ids in `[first, last]` (a page of devices, read as
/// a range so the page's ids are not bound one by one).
pub(super) async fn in_range<C: ConnectionTrait>(
    c: &C,
    group_ids: &[i64],
    first: &str,
    last: &str,
) -> StorageResult<HashSet<(i64, String)>> {
    let rows: Vec<(i64, String)> = Entity::find()
        .select_only()
        .column(Column::GroupId)
        .column(Column::DeviceId)
        .filter(Column::GroupId.is_in(group_ids.iter().copied()))
        .filter(Column::DeviceId.gte(first))
        .filter(Column::DeviceId.lte(last))
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows.into_iter().collect())
}
