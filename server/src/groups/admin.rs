//! What admins change: groups and static groups' members, each change with its audit entry in one
//! transaction; a dynamic group's rule is then evaluated over every device (see [`super::evaluate`]).
//! Everything is checked before anything is written: bad input changes nothing.

use super::rule::{Rule, RuleError};
use crate::protocol::enrollment::DEVICE_ID;
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::ddm::assignments;
use crate::storage::groups::{self, members, Group, GroupKind};
use crate::storage::{devices, Storage, StorageError};
use sea_orm::ConnectionTrait;
use serde_json::{json, Value};

/// The most groups the server holds: every fact change evaluates every dynamic group's rule.
pub const MAX_GROUPS: u64 = 1_000;
/// The most devices one request may add to or remove from a static group.
pub const MAX_DEVICES_PER_REQUEST: usize = 10_000;
/// The most devices a static group holds (the most one command may target).
pub const MAX_STATIC_MEMBERS: u64 = 100_000;
/// Group names: 1 to 128 characters.
pub const MAX_NAME: usize = 128;

/// Who made a change, for the audit log (`api-key:<name>`).
pub type Actor = String;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no group {0}")]
    NotFound(i64),
    #[error("invalid rule: {0}")]
    Rule(#[from] RuleError),
    #[error("{0}")]
    Invalid(String),
    #[error("at most {MAX_GROUPS} groups")]
    TooManyGroups,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sea_orm::DbErr> for GroupError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

fn invalid<T>(why: impl Into<String>) -> Result<T, GroupError> {
    Err(GroupError::Invalid(why.into()))
}

/// A name people type: 1 to 128 characters, no control characters, no space at either end.
pub fn check_name(name: &str) -> Result<(), GroupError> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return invalid(format!("name: 1 to {MAX_NAME} characters"));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return invalid("name: no control characters, and no space at either end");
    }
    Ok(())
}

/// Device ids from a request, each well formed, at most [`MAX_DEVICES_PER_REQUEST`]; sorted, once each.
pub fn check_devices(field: &str, ids: &[String]) -> Result<Vec<String>, GroupError> {
    if ids.len() > MAX_DEVICES_PER_REQUEST {
        return invalid(format!(
            "{field}: at most {MAX_DEVICES_PER_REQUEST} devices per request"
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        DEVICE_ID
            .check(id)
            .map_err(|e| GroupError::Invalid(format!("{field}[{i}]: {e}")))?;
    }
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// What a new group is.
#[derive(Debug, Clone)]
pub enum NewGroup {
    Static { devices: Vec<String> },
    Dynamic { rule: Rule },
}

/// Create a group. A static one gets its devices (all of which must exist); a dynamic one is then
/// evaluated over every device. Returns the group and the changes evaluation made.
pub async fn create(
    storage: &Storage,
    name: String,
    new: NewGroup,
    actor: Actor,
    now: i64,
) -> Result<(Group, Vec<groups::Change>), GroupError> {
    check_name(&name)?;
    let (kind, rule, devices) = match new {
        NewGroup::Static { devices } => {
            (GroupKind::Static, None, check_devices("devices", &devices)?)
        }
        NewGroup::Dynamic { rule } => (GroupKind::Dynamic, Some(rule), Vec::new()),
    };
    let stored_rule = rule.as_ref().map(|r| r.to_string());
    let group = storage
        .transaction(move |txn| {
            Box::pin(async move {
                if groups::count(txn).await? >= MAX_GROUPS {
                    return Err(GroupError::TooManyGroups);
                }
                all_exist(txn, &devices).await?;
                let group = groups::insert(txn, &name, kind, stored_rule, now).await?;
                members::add(txn, group.id, &devices, now).await?;
                let mut detail = json!({"name": name, "kind": kind.as_str()});
                match &group.rule {
                    Some(r) => detail["rule"] = serde_json::from_str(r).unwrap_or(Value::Null),
                    None => detail["devices"] = json!(devices.len()),
                }
                audit(txn, now, actor, "group.created", group.id, detail).await?;
                Ok(group)
            })
        })
        .await?;
    let changes = match kind {
        GroupKind::Dynamic => super::evaluate(storage, Some(vec![group.id]), now).await?,
        GroupKind::Static => Vec::new(),
    };
    Ok((group, changes))
}

/// What an admin changes of a group: its name; a dynamic group's rule; a static group's devices.
#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub rule: Option<Rule>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// Change a group. A new rule is evaluated over every device. Returns the group as it now is and the
/// membership changes (for a static group, those `add` and `remove` made).
pub async fn update(
    storage: &Storage,
    id: i64,
    u: GroupUpdate,
    actor: Actor,
    now: i64,
) -> Result<(Group, Vec<groups::Change>), GroupError> {
    if let Some(name) = &u.name {
        check_name(name)?;
    }
    let add = check_devices("add", &u.add)?;
    let remove = check_devices("remove", &u.remove)?;
    if let Some(both) = add.iter().find(|d| remove.binary_search(d).is_ok()) {
        return invalid(format!("device {both} is both added and removed"));
    }
    let rule_changed = u.rule.is_some();
    let (group, changes) = storage
        .transaction(move |txn| Box::pin(apply_update(txn, id, u, add, remove, actor, now)))
        .await?;
    if !rule_changed {
        return Ok((group, changes));
    }
    let evaluated = super::evaluate(storage, Some(vec![id]), now).await?;
    Ok((group, evaluated))
}

async fn apply_update<C: ConnectionTrait>(
    txn: &C,
    id: i64,
    u: GroupUpdate,
    add: Vec<String>,
    remove: Vec<String>,
    actor: Actor,
    now: i64,
) -> Result<(Group, Vec<groups::Change>), GroupError> {
    let group = groups::find(txn, id)
        .await?
        .ok_or(GroupError::NotFound(id))?;
    let kind = GroupKind::parse(&group.kind)?;
    match kind {
        GroupKind::Static if u.rule.is_some() => {
            return invalid("rule: a static group has no rule")
        }
        GroupKind::Dynamic if !add.is_empty() || !remove.is_empty() => {
            return invalid("add, remove: a dynamic group's members follow its rule")
        }
        _ => {}
    }
    all_exist(txn, &add).await?;
    let rule = u.rule.as_ref().map(|r| r.to_string());
    groups::update(txn, id, u.name.as_deref(), rule, now).await?;
    let joined = members::add(txn, id, &add, now).await?;
    let left = members::remove(txn, id, &remove).await?;
    if members::count(txn, id).await? > MAX_STATIC_MEMBERS {
        return invalid(format!(
            "a static group holds at most {MAX_STATIC_MEMBERS} devices"
        ));
    }
    let detail = json!({
        "name": u.name,
        "rule": u.rule.as_ref().map(Rule::to_json),
        "added": joined.len(),
        "removed": left.len(),
    });
    audit(txn, now, actor, "group.updated", id, detail).await?;
    let group = groups::find(txn, id)
        .await?
        .ok_or(GroupError::NotFound(id))?;
    let change = |joined: bool| {
        move |device_id: String| groups::Change {
            group_id: id,
            device_id,
            joined,
        }
    };
    let mut changes: Vec<_> = joined.into_iter().map(change(true)).collect();
    changes.extend(left.into_iter().map(change(false)));
    changes.sort();
    super::sync_members(txn, &changes, now).await?;
    Ok((group, changes))
}

/// Delete a group and its memberships.
pub async fn delete(storage: &Storage, id: i64, actor: Actor, now: i64) -> Result<(), GroupError> {
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let group = groups::find(txn, id)
                    .await?
                    .ok_or(GroupError::NotFound(id))?;
                let used_by = crate::storage::policies::using(txn, id).await?;
                if let Some(first) = used_by.first() {
                    return Err(GroupError::Storage(StorageError::Conflict(format!(
                        "group {id} is used by {} policies (as their target or a stage of their rollout), {first:?} first",
                        used_by.len()
                    ))));
                }
                let had = members::count(txn, id).await?;
                // Its members lose the sets it carries: they are synced once it is gone.
                let lost = if assignments::sets_of_group(txn, id).await?.is_empty() {
                    Vec::new()
                } else {
                    members::devices_of(txn, &[id]).await?
                };
                groups::delete(txn, id).await?;
                let synced = super::sync_devices(txn, &lost, now).await?;
                let detail = json!({"name": group.name, "kind": group.kind, "members": had, "synced": synced.queued});
                audit(txn, now, actor, "group.deleted", id, detail).await
            })
        })
        .await
}

/// Refuse devices that are not stored, naming the first few.
async fn all_exist<C: ConnectionTrait>(c: &C, ids: &[String]) -> Result<(), GroupError> {
    if ids.is_empty() {
        return Ok(());
    }
    let found = devices::existing(c, ids).await?;
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !found.contains(*id))
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        some => invalid(format!(
            "{} unknown devices: {}",
            some.len(),
            some.iter().take(10).copied().collect::<Vec<_>>().join(", ")
        )),
    }
}

async fn audit<C: ConnectionTrait>(
    c: &C,
    now: i64,
    actor: Actor,
    action: &str,
    id: i64,
    detail: Value,
) -> Result<(), GroupError> {
    let target = id.to_string();
    let entry = NewEntry::new(now, actor, action, Some(&target), detail);
    audit_log::append(c, vec![entry]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_characters_and_refuse_control_characters_and_edge_spaces() {
        assert!(check_name("Lab Macs").is_ok());
        // 128 characters of two bytes each: the documented maxLength, so accepted.
        assert!(check_name(&"é".repeat(MAX_NAME)).is_ok());
        for bad in [
            String::new(),
            "x".repeat(MAX_NAME + 1),
            " Lab".into(),
            "Lab\u{a0}".into(),
            "La\nb".into(),
            "Lab\u{85}x".into(),
        ] {
            assert!(check_name(&bad).is_err(), "{bad:?}");
        }
    }
}
