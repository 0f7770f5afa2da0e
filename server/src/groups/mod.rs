//! Device groups: static ones (devices an admin lists) and dynamic ones (the devices matching a rule over
//! device facts, plugin attributes and DDM status items). Both kinds are materialised in one membership
//! table (`storage::groups`), so targeting a group is a read of its rows whatever the fleet's size.
//!
//! A dynamic group's membership stays current without an admin: the transactions that change a device's
//! facts (Authenticate, a DeviceInformation result, a plugin setting or clearing an attribute, a DDM
//! status report with status items) recompute that device's memberships
//! ([`crate::storage::groups::refresh_device`]); writing a rule evaluates every device ([`evaluate`]);
//! and a background job does that for every dynamic group each round, for rules on times (which change
//! with nothing reported) and to finish an evaluation a crash interrupted.
//!
//! A group may carry DDM sets (`crate::ddm::group_set`): every membership change, whatever made
//! it, is followed in its own transaction by the sync of the devices whose sets it changed
//! ([`crate::ddm::sync::after_membership`]); so is a group a policy rollout uses
//! ([`crate::policies::holdings::follow_membership`]).

pub mod admin;
mod eval;
pub mod rule;

pub use eval::{compare_versions, Facts};
pub use rule::{Fact, Kind, Op, Rule, RuleError, Test};

use crate::ddm::sync::{after_membership, announce, Synced};
use crate::ddm::DdmError;
use crate::storage::ddm::audience::Audience;
use crate::storage::groups::evaluate::{dynamic_groups, evaluate_page};
use crate::storage::groups::{refresh_device, Change};
use crate::storage::{Storage, StorageError, StorageResult};
use sea_orm::ConnectionTrait;

/// Devices evaluated per transaction: each page holds the writer (SQLite) or its devices' row locks
/// (PostgreSQL) for a few milliseconds, never for a whole fleet.
pub const PAGE: u64 = 1_000;

/// Evaluate dynamic groups (those among `only`, or all) over every device, one page per transaction.
/// Returns every membership change.
pub async fn evaluate(
    storage: &Storage,
    only: Option<Vec<i64>>,
    now: i64,
) -> StorageResult<Vec<Change>> {
    let mut changes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let only = only.clone();
        let cursor = after.clone();
        let (page, next) = storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let groups = dynamic_groups(txn, only.as_deref()).await?;
                    if groups.is_empty() {
                        return Ok((Vec::new(), None));
                    }
                    let (changes, next) =
                        evaluate_page(txn, &groups, cursor.as_deref(), PAGE, now).await?;
                    sync_members(txn, &changes, now).await?;
                    Ok::<_, StorageError>((changes, next))
                })
            })
            .await?;
        changes.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(changes),
        }
    }
}

/// A device's facts changed, in the caller's transaction: its dynamic memberships are recomputed, and it is
/// synced if a group it joined or left carries DDM sets. Returns the membership changes.
pub async fn follow_facts<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    now: i64,
) -> StorageResult<Vec<Change>> {
    let changes = refresh_device(c, device_id, now).await?;
    sync_members(c, &changes, now).await?;
    Ok(changes)
}

/// The DDM sync membership changes cause, in the caller's transaction: the versions of policies whose
/// rollouts use the groups are given or taken, then the groups' own sets followed.
pub async fn sync_members<C: ConnectionTrait>(
    c: &C,
    changes: &[Change],
    now: i64,
) -> StorageResult<Synced> {
    crate::policies::holdings::follow_membership(c, changes, now)
        .await
        .map_err(storage_only)?;
    after_membership(c, changes, now)
        .await
        .map_err(storage_only)
}

/// The DDM sync of devices whose group (and so its sets) went away, in the caller's transaction.
pub async fn sync_devices<C: ConnectionTrait>(
    c: &C,
    device_ids: &[String],
    now: i64,
) -> StorageResult<Synced> {
    if device_ids.is_empty() {
        return Ok(Synced::default());
    }
    announce(c, Audience::Ids(device_ids), false, now)
        .await
        .map_err(storage_only)
}

/// A sync can fail only in storage; anything else is a bug, reported as such.
fn storage_only(e: DdmError) -> StorageError {
    match e {
        DdmError::Storage(s) => s,
        other => StorageError::Corrupt(format!("DDM sync after a membership change: {other}")),
    }
}
