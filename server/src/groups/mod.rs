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

pub mod admin;
mod eval;
pub mod rule;

pub use eval::{compare_versions, Facts};
pub use rule::{Fact, Kind, Op, Rule, RuleError, Test};

use crate::storage::groups::evaluate::{dynamic_groups, evaluate_page};
use crate::storage::groups::Change;
use crate::storage::{Storage, StorageResult};

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
                    evaluate_page(txn, &groups, cursor.as_deref(), PAGE, now).await
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
