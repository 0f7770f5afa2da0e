//! What admins change: declarations, sets and assignments, each change with the sync it causes and its
//! audit entry in one transaction.

use super::sync::{self, Synced};
use super::{assignments, check_set_name, DdmError, BUILTIN_PREFIX};
use crate::protocol::ddm::Declaration;
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::ddm::audience::Audience;
use crate::storage::ddm::declarations::{self, Owner, Written};
use crate::storage::ddm::{assignments as assigned, sets};
use crate::storage::Storage;
use sea_orm::ConnectionTrait;
use serde_json::json;

/// Who made a change, for the audit log (`api-key:<name>`).
pub type Actor = String;

/// Create or replace a declaration from its JSON. Every enrollment holding it is synced if it changed.
pub async fn put_declaration(
    storage: &Storage,
    body: &[u8],
    actor: Actor,
    now: i64,
) -> Result<(Declaration, Written, Synced), DdmError> {
    let d = Declaration::parse(body)?;
    if d.identifier.starts_with(BUILTIN_PREFIX) {
        return Err(DdmError::builtin_reserved());
    }
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                admins(txn, &d.identifier).await?;
                let written = declarations::put(txn, &d, Owner::Admin, now).await?;
                let synced = match written {
                    Written::Changed => {
                        let holders = Audience::Holding(&d.identifier);
                        sync::announce(txn, holders, false, now).await?
                    }
                    Written::Created | Written::Unchanged => Synced::default(),
                };
                if written != Written::Unchanged {
                    let detail = json!({"type": d.declaration_type, "server_token": d.server_token, "synced": synced.queued});
                    audit(txn, now, actor, "ddm.declaration_put", &d.identifier, detail).await?;
                }
                Ok((d, written, synced))
            })
        })
        .await
}

/// Remove a declaration. Refused while a set holds it, unless `force`: then it leaves those sets and
/// their enrollments are synced.
pub async fn delete_declaration(
    storage: &Storage,
    identifier: &str,
    force: bool,
    actor: Actor,
    now: i64,
) -> Result<Synced, DdmError> {
    if identifier.starts_with(BUILTIN_PREFIX) {
        return Err(DdmError::builtin_reserved());
    }
    let identifier = identifier.to_string();
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                if !admins(txn, &identifier).await? {
                    return Err(DdmError::UnknownDeclaration(identifier));
                }
                let holding = sets::holding(txn, &identifier).await?;
                if !holding.is_empty() && !force {
                    return Err(DdmError::InUse {
                        identifier,
                        sets: holding,
                    });
                }
                let holders = assigned::enrollments_holding(txn, &identifier).await?;
                declarations::delete(txn, &identifier).await?;
                let synced = sync::announce(txn, Audience::Ids(&holders), false, now).await?;
                let detail = json!({"force": force, "sets": holding, "synced": synced.queued});
                audit(
                    txn,
                    now,
                    actor,
                    "ddm.declaration_deleted",
                    &identifier,
                    detail,
                )
                .await?;
                Ok(synced)
            })
        })
        .await
}

/// Create a set or replace its declarations, which must all exist. Its enrollments are synced.
pub async fn put_set(
    storage: &Storage,
    name: &str,
    identifiers: Vec<String>,
    actor: Actor,
    now: i64,
) -> Result<Synced, DdmError> {
    check_set_name(name)?;
    let name = name.to_string();
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let mut wanted = identifiers;
                wanted.sort();
                wanted.dedup();
                let found = declarations::uploaded_among(txn, &wanted).await?;
                if found.len() != wanted.len() {
                    let missing = wanted.into_iter().filter(|i| !found.contains(i)).collect();
                    return Err(DdmError::UnknownMembers(missing));
                }
                let existed = sets::exists(txn, &name).await?;
                let changed = sets::put(txn, &name, &wanted, now).await?;
                let synced = if changed {
                    sync::announce(txn, Audience::WithSet(&name), false, now).await?
                } else {
                    Synced::default()
                };
                if changed || !existed {
                    let detail = json!({"declarations": wanted, "synced": synced.queued});
                    audit(txn, now, actor, "ddm.set_put", &name, detail).await?;
                }
                Ok(synced)
            })
        })
        .await
}

/// Remove a set and its assignments; its enrollments are synced.
pub async fn delete_set(
    storage: &Storage,
    name: &str,
    actor: Actor,
    now: i64,
) -> Result<Synced, DdmError> {
    check_set_name(name)?;
    let name = name.to_string();
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let holders = assigned::enrollments_with_set(txn, &name).await?;
                if !sets::delete(txn, &name).await? {
                    return Err(DdmError::UnknownSet(name));
                }
                let synced = sync::announce(txn, Audience::Ids(&holders), false, now).await?;
                let detail = json!({"enrollments": holders.len(), "synced": synced.queued});
                audit(txn, now, actor, "ddm.set_deleted", &name, detail).await?;
                Ok(synced)
            })
        })
        .await
}

/// What a set is assigned to.
#[derive(Debug, Clone)]
pub enum Holder {
    /// An enrollment (device or user channel).
    Enrollment(String),
    /// A device group: its members' device channels hold the set.
    Group(i64),
}

/// Assign (`assign`) or unassign a set to an enrollment or a group. Ok(true) if that changed anything.
pub async fn set_assignment(
    storage: &Storage,
    holder: Holder,
    set_name: &str,
    assign: bool,
    actor: Actor,
    now: i64,
) -> Result<bool, DdmError> {
    let set = set_name.to_string();
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let (changed, target, action) = match (&holder, assign) {
                    (Holder::Enrollment(id), true) => {
                        let changed = assignments::assign_set(txn, id, &set, now).await?;
                        (changed, id.clone(), "ddm.set_assigned")
                    }
                    (Holder::Enrollment(id), false) => {
                        let changed = assignments::unassign_set(txn, id, &set, now).await?;
                        (changed, id.clone(), "ddm.set_unassigned")
                    }
                    (Holder::Group(id), _) => {
                        let changed = assignments::group_set(txn, *id, &set, assign, now).await?;
                        let action = if assign {
                            "ddm.group_set_assigned"
                        } else {
                            "ddm.group_set_unassigned"
                        };
                        (changed, id.to_string(), action)
                    }
                };
                if changed {
                    audit(txn, now, actor, action, &target, json!({"set": set})).await?;
                }
                Ok(changed)
            })
        })
        .await
}

/// Queue a sync to these enrollments whether or not anything changed (support and testing).
pub async fn force_sync(
    storage: &Storage,
    enrollment_ids: Vec<String>,
    actor: Actor,
    now: i64,
) -> Result<Synced, DdmError> {
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let synced = sync::announce(txn, Audience::Ids(&enrollment_ids), true, now).await?;
                let detail = json!({"ids": enrollment_ids, "queued": synced.queued});
                audit(txn, now, actor, "ddm.sync_forced", "", detail).await?;
                Ok(synced)
            })
        })
        .await
}

/// Whether a declaration exists for an admin to replace or delete: Ok(false) if there is none, refused
/// if it is a policy's.
async fn admins<C: ConnectionTrait>(c: &C, identifier: &str) -> Result<bool, DdmError> {
    match declarations::get(c, identifier)
        .await?
        .as_ref()
        .map(Owner::of)
    {
        None => Ok(false),
        Some(Owner::Policy(p)) => Err(DdmError::OwnedByPolicy(identifier.to_string(), p)),
        Some(Owner::Admin | Owner::Builtin) => Ok(true),
    }
}

async fn audit<C: ConnectionTrait>(
    c: &C,
    now: i64,
    actor: Actor,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), DdmError> {
    let target = (!target.is_empty()).then_some(target);
    audit_log::append(c, vec![NewEntry::new(now, actor, action, target, detail)]).await?;
    Ok(())
}
