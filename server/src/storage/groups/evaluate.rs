//! Dynamic groups follow their rules: a device's memberships are recomputed in the transaction that changes
//! its facts ([`refresh_device`]), and whole groups a page of devices at a time ([`evaluate_page`]) when a
//! rule is written and periodically (for rules on times, which change without any event).
//!
//! Writers of one device's memberships exclude each other on PostgreSQL by row locks, so a page evaluated
//! while a check-in changes a device's facts cannot write what it read before that change: a page locks
//! its groups' rows and its devices' rows `FOR KEY SHARE`; [`refresh_device`] the same groups' rows, then
//! its device's `FOR UPDATE`, which waits for a page holding that device (and a page waits for it). Groups
//! are locked before devices on both paths, and a group's deletion locks its row first, so none of them
//! can deadlock. On SQLite the one writer runs them one after the other.

use super::super::entities::ddm_status_item::{self as item, Entity as Items};
use super::super::entities::device::{Column as D, Entity as Devices};
use super::super::entities::device_attribute::{self as attribute, Entity as Attributes};
use super::super::entities::device_group::{Column as G, Entity as Groups};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::{StorageError, StorageResult};
use super::{members, GroupKind};
use crate::groups::{Fact, Facts, Rule};
use sea_orm::sea_query::LockType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::{HashMap, HashSet};

/// A device joined (`joined`) or left a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Change {
    pub group_id: i64,
    pub device_id: String,
    pub joined: bool,
}

/// A dynamic group and its rule.
#[derive(Debug, Clone)]
pub struct DynamicGroup {
    pub id: i64,
    pub rule: Rule,
}

/// The dynamic groups (all, or those among `only`), their rows locked `FOR KEY SHARE` for the rest of the
/// transaction: none is deleted under the evaluation, and a rule changed meanwhile is read as committed.
pub async fn dynamic_groups<C: ConnectionTrait>(
    c: &C,
    only: Option<&[i64]>,
) -> StorageResult<Vec<DynamicGroup>> {
    let mut q = Groups::find()
        .select_only()
        .column(G::Id)
        .column(G::Rule)
        .filter(G::Kind.eq(GroupKind::Dynamic.as_str()));
    if let Some(ids) = only {
        q = q.filter(G::Id.is_in(ids.iter().copied()));
    }
    let rows: Vec<(i64, Option<String>)> = q
        .order_by_asc(G::Id)
        .lock(LockType::KeyShare)
        .into_tuple()
        .all(c)
        .await?;
    rows.into_iter()
        .map(|(id, rule)| {
            let rule = Rule::parse(rule.as_deref().unwrap_or_default())
                .map_err(|e| StorageError::Corrupt(format!("group {id}'s rule: {e}")))?;
            Ok(DynamicGroup { id, rule })
        })
        .collect()
}

/// The columns of `devices` a rule reads (not the tokens or raw messages).
#[derive(Debug, Clone, FromQueryResult)]
struct FactRow {
    id: String,
    platform: Option<String>,
    os_version: Option<String>,
    build_version: Option<String>,
    model: Option<String>,
    model_name: Option<String>,
    product_name: Option<String>,
    serial_number: Option<String>,
    device_name: Option<String>,
    created_at: i64,
    last_seen_at: i64,
}

fn fact_columns<Q: QuerySelect>(q: Q) -> Q {
    q.select_only().columns([
        D::Id,
        D::Platform,
        D::OsVersion,
        D::BuildVersion,
        D::Model,
        D::ModelName,
        D::ProductName,
        D::SerialNumber,
        D::DeviceName,
        D::CreatedAt,
        D::LastSeenAt,
    ])
}

impl From<FactRow> for (String, Facts) {
    fn from(r: FactRow) -> Self {
        let facts = Facts {
            platform: r.platform,
            os_version: r.os_version,
            build: r.build_version,
            model: r.model,
            model_name: r.model_name,
            product_name: r.product_name,
            serial_number: r.serial_number,
            device_name: r.device_name,
            enrolled_at: r.created_at,
            last_seen_at: r.last_seen_at,
            ..Default::default()
        };
        (r.id, facts)
    }
}

/// Recompute one device's dynamic memberships, in the transaction that changed its facts. Costs one read
/// when there are no dynamic groups. Returns the changes (sorted).
pub async fn refresh_device<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    now: i64,
) -> StorageResult<Vec<Change>> {
    let groups = dynamic_groups(c, None).await?;
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let row = fact_columns(Devices::find())
        .filter(D::Id.eq(device_id))
        .lock(LockType::Update)
        .into_model::<FactRow>()
        .one(c)
        .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    reconcile(c, &groups, vec![row.into()], now).await
}

/// Evaluate `groups` over one page of devices (ids after `after`, at most `limit`), writing the changes.
/// Returns them and the cursor for the next page (None after the last).
pub async fn evaluate_page<C: ConnectionTrait>(
    c: &C,
    groups: &[DynamicGroup],
    after: Option<&str>,
    limit: u64,
    now: i64,
) -> StorageResult<(Vec<Change>, Option<String>)> {
    let mut q = fact_columns(Devices::find());
    if let Some(after) = after {
        q = q.filter(D::Id.gt(after));
    }
    let rows = q
        .order_by_asc(D::Id)
        .limit(limit)
        .lock(LockType::KeyShare)
        .into_model::<FactRow>()
        .all(c)
        .await?;
    let next = (rows.len() as u64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let devices = rows.into_iter().map(Into::into).collect();
    Ok((reconcile(c, groups, devices, now).await?, next))
}

/// Write what `groups`' rules say of `devices` (sorted by id): the devices that match and are not members
/// join, the members that no longer match leave.
async fn reconcile<C: ConnectionTrait>(
    c: &C,
    groups: &[DynamicGroup],
    mut devices: Vec<(String, Facts)>,
    now: i64,
) -> StorageResult<Vec<Change>> {
    let (Some(first), Some(last)) = (devices.first(), devices.last()) else {
        return Ok(Vec::new());
    };
    let (first, last) = (first.0.clone(), last.0.clone());
    add_side_facts(c, groups, &mut devices).await?;
    let group_ids: Vec<i64> = groups.iter().map(|g| g.id).collect();
    let current = members::in_range(c, &group_ids, &first, &last).await?;
    let mut changes = Vec::new();
    for g in groups {
        for (id, facts) in &devices {
            let member = current.contains(&(g.id, id.clone()));
            if g.rule.matches(facts, now) != member {
                changes.push(Change {
                    group_id: g.id,
                    device_id: id.clone(),
                    joined: !member,
                });
            }
        }
    }
    write(c, &changes, now).await?;
    changes.sort();
    Ok(changes)
}

async fn write<C: ConnectionTrait>(c: &C, changes: &[Change], now: i64) -> StorageResult<()> {
    let joined = changes
        .iter()
        .filter(|ch| ch.joined)
        .map(|ch| (ch.group_id, ch.device_id.as_str()));
    members::insert(c, joined, now).await?;
    let mut left: HashMap<i64, Vec<String>> = HashMap::new();
    for ch in changes.iter().filter(|ch| !ch.joined) {
        left.entry(ch.group_id)
            .or_default()
            .push(ch.device_id.clone());
    }
    for (group_id, ids) in left {
        members::delete(c, group_id, &ids).await?;
    }
    Ok(())
}

/// Fill in the attributes and DDM status items the rules read, and only those tables the rules use.
async fn add_side_facts<C: ConnectionTrait>(
    c: &C,
    groups: &[DynamicGroup],
    devices: &mut [(String, Facts)],
) -> StorageResult<()> {
    let mut attribute_keys = HashSet::new();
    let mut item_names = HashSet::new();
    for t in groups.iter().flat_map(|g| g.rule.tests()) {
        match &t.fact {
            Fact::Attribute(k) => attribute_keys.insert(k.clone()),
            Fact::Ddm(n) => item_names.insert(n.clone()),
            _ => false,
        };
    }
    if attribute_keys.is_empty() && item_names.is_empty() {
        return Ok(());
    }
    let index: HashMap<String, usize> = devices
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.clone(), i))
        .collect();
    let ids: Vec<String> = devices.iter().map(|(id, _)| id.clone()).collect();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        if !attribute_keys.is_empty() {
            // Every key: a device has few, and the rules may name many.
            let rows: Vec<(String, String, String)> = Attributes::find()
                .select_only()
                .columns([
                    attribute::Column::DeviceId,
                    attribute::Column::Key,
                    attribute::Column::Value,
                ])
                .filter(attribute::Column::DeviceId.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(c)
                .await?;
            for (device, key, value) in rows {
                devices[index[&device]].1.attributes.insert(key, value);
            }
        }
        if !item_names.is_empty() {
            // The device channel's enrollment id is the device's own id. Only the items the rules read
            // (single values; at most the few dozen Apple documents): others may be large lists.
            let rows: Vec<(String, String, String)> = Items::find()
                .select_only()
                .columns([
                    item::Column::EnrollmentId,
                    item::Column::Name,
                    item::Column::Value,
                ])
                .filter(item::Column::EnrollmentId.is_in(chunk.iter().map(String::as_str)))
                .filter(item::Column::Name.is_in(item_names.iter().map(String::as_str)))
                .into_tuple()
                .all(c)
                .await?;
            for (device, name, value) in rows {
                // Stored by the server as JSON; a value that is not is treated as absent.
                if let Ok(v) = serde_json::from_str(&value) {
                    devices[index[&device]].1.ddm.insert(name, v);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{insert, members};
    use super::*;
    use crate::storage::devices::DeviceFacts;
    use crate::storage::testing::db as db_for_tests;
    use crate::storage::testing::{authenticated_device, test_databases};
    use crate::storage::{attributes, devices, Storage};
    use serde_json::json;

    fn phone(os: &str) -> DeviceFacts {
        DeviceFacts {
            product_name: Some("iPhone15,2".into()),
            os_version: Some(os.into()),
            ..Default::default()
        }
    }

    async fn dynamic(s: &Storage, name: &str, rule: serde_json::Value) -> i64 {
        let rule = Rule::from_json(&rule).unwrap().to_string();
        insert(db_for_tests(s), name, GroupKind::Dynamic, Some(rule), 1)
            .await
            .unwrap()
            .id
    }

    async fn in_group(s: &Storage, group: i64) -> Vec<String> {
        let page = members::page(db_for_tests(s), group, None, 1000)
            .await
            .unwrap();
        page.into_iter().map(|(d, _)| d).collect()
    }

    /// Whole-fleet evaluation pages through every device, and a device's own refresh moves it between
    /// groups as its facts change, returning what changed.
    #[tokio::test]
    async fn memberships_follow_rules_over_pages_and_per_device() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = db_for_tests(&s);
            for (i, os) in ["16.7", "17.1", "17.10", "17.9"].iter().enumerate() {
                authenticated_device(db, &format!("D{i}"), &format!("fp{i}"), phone(os), 1)
                    .await
                    .unwrap();
            }
            let new_os = dynamic(
                &s,
                "new",
                json!({"fact": "os_version", "op": "gte", "value": "17.2"}),
            )
            .await;
            let sales = dynamic(
                &s,
                "sales",
                json!({"fact": "attribute:team", "op": "eq", "value": "sales"}),
            )
            .await;
            let changes = crate::groups::evaluate(&s, None, 2).await.unwrap();
            assert_eq!(changes.len(), 2, "{}: {changes:?}", tdb.label);
            assert_eq!(in_group(&s, new_os).await, ["D2", "D3"], "{}", tdb.label);

            // D1 updates to 17.2: it joins, and nothing else changes.
            let mut facts = phone("17.2");
            facts.product_name = None;
            devices::update_facts(db, "D1", facts, 3).await.unwrap();
            let joined = refresh_device(db, "D1", 3).await.unwrap();
            assert_eq!(
                joined,
                [Change {
                    group_id: new_os,
                    device_id: "D1".into(),
                    joined: true
                }],
                "{}",
                tdb.label
            );
            assert!(
                refresh_device(db, "D1", 4).await.unwrap().is_empty(),
                "idempotent"
            );

            attributes::set(db, "D0", "team", "sales", "p", 5)
                .await
                .unwrap();
            let changes = refresh_device(db, "D0", 5).await.unwrap();
            assert_eq!(changes[0].group_id, sales, "{}", tdb.label);
            attributes::clear(db, "D0", "team").await.unwrap();
            let left = refresh_device(db, "D0", 6).await.unwrap();
            assert!(!left[0].joined, "{}", tdb.label);

            // A smaller page size walks the same fleet to the same answer.
            let groups = dynamic_groups(db, Some(&[new_os])).await.unwrap();
            let (_, next) = evaluate_page(db, &groups, None, 2, 7).await.unwrap();
            assert_eq!(next.as_deref(), Some("D1"));
            let (_, next) = evaluate_page(db, &groups, next.as_deref(), 2, 7)
                .await
                .unwrap();
            assert_eq!(next.as_deref(), Some("D3"));
            let (changes, next) = evaluate_page(db, &groups, next.as_deref(), 2, 7)
                .await
                .unwrap();
            assert!(changes.is_empty() && next.is_none());
            assert_eq!(
                in_group(&s, new_os).await,
                ["D1", "D2", "D3"],
                "{}",
                tdb.label
            );

            // Deleting a group takes its memberships with it.
            assert!(super::super::delete(db, new_os).await.unwrap());
            assert!(in_group(&s, new_os).await.is_empty(), "{}", tdb.label);
            tdb.cleanup().await;
        }
    }

    /// Rules on times change with nothing reported: the periodic evaluation moves devices as time passes.
    #[tokio::test]
    async fn time_rules_follow_the_clock_on_evaluation() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = db_for_tests(&s);
            authenticated_device(db, "D1", "fp1", phone("17.0"), 1_000)
                .await
                .unwrap();
            let recent = dynamic(
                &s,
                "recent",
                json!({"fact": "last_seen_at", "op": "within", "value": 60}),
            )
            .await;
            let changes = crate::groups::evaluate(&s, None, 61_000).await.unwrap();
            assert_eq!(changes.len(), 1, "{}", tdb.label);
            assert_eq!(in_group(&s, recent).await, ["D1"]);
            let changes = crate::groups::evaluate(&s, None, 61_001).await.unwrap();
            assert_eq!(
                changes,
                [Change {
                    group_id: recent,
                    device_id: "D1".into(),
                    joined: false
                }],
                "{}",
                tdb.label
            );
            tdb.cleanup().await;
        }
    }

    /// A rule on DDM status items reads the device channel's latest reported values.
    #[tokio::test]
    async fn status_items_are_facts() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = db_for_tests(&s);
            authenticated_device(db, "D1", "fp1", phone("17.0"), 1)
                .await
                .unwrap();
            let compliant = dynamic(
                &s,
                "ok",
                json!({"fact": "ddm:passcode.is-compliant", "op": "eq", "value": true}),
            )
            .await;
            let items = [("passcode.is-compliant".to_string(), json!(true))].into();
            crate::storage::ddm::status::record_report(db, "D1", &[], &items, false, 2)
                .await
                .unwrap();
            assert_eq!(
                refresh_device(db, "D1", 2).await.unwrap().len(),
                1,
                "{}",
                tdb.label
            );
            assert_eq!(in_group(&s, compliant).await, ["D1"]);
            let items = [("passcode.is-compliant".to_string(), json!(false))].into();
            crate::storage::ddm::status::record_report(db, "D1", &[], &items, false, 3)
                .await
                .unwrap();
            assert!(!refresh_device(db, "D1", 3).await.unwrap()[0].joined);
            tdb.cleanup().await;
        }
    }
}
