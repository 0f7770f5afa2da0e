//! Which version of a policy each device holds. A device of the target group holds the rollout's version
//! once the stage that reaches it has been entered (and the rollout was not rolled back), and otherwise
//! the version before it, if there was one; a device outside the target group holds none. Holding is an
//! assignment of the version's set to the device channel, so every DDM read already answers for it, and
//! the reconciler installs the version's profiles from it.
//!
//! [`settle`] makes the assignments say so, for some devices or the whole target group, and syncs the
//! devices whose holdings changed, in the caller's transaction: rollout steps, target or stage group
//! membership changes, and a device enabled again after unenrolling all come here.

use super::materialize::{set_name, set_prefix};
use super::stages::{Plan, Stage};
use crate::ddm::sync::{announce, Synced};
use crate::ddm::DdmError;
use crate::storage::ddm::audience::Audience;
use crate::storage::groups::{members, Change};
use crate::storage::policies;
use crate::storage::rollouts::{self, Rollout};
use sea_orm::ConnectionTrait;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Promoted by itself while its gates hold.
    Running,
    /// Held by an admin: no promotion until resumed.
    Paused,
    /// Stopped by a check (a stored bundle that no longer matches its digest): the devices reached keep
    /// the version until an admin rolls it back.
    Halted,
    /// Every device of the target holds the version.
    Completed,
    /// The version was taken back: every device holds the previous one.
    RolledBack,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Paused => "paused",
            State::Halted => "halted",
            State::Completed => "completed",
            State::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Running,
            State::Paused,
            State::Halted,
            State::Completed,
            State::RolledBack,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// Whether another version may be activated: not while this one is under way.
    pub fn is_over(self) -> bool {
        matches!(self, State::Completed | State::RolledBack)
    }
}

/// A rollout row's state (an unknown one read as halted: nothing moves until an admin acts).
pub fn state_of(r: &Rollout) -> State {
    State::parse(&r.state).unwrap_or(State::Halted)
}

pub fn stage_of(r: &Rollout) -> Stage {
    Stage::from_index(r.stage).unwrap_or(Stage::Full)
}

pub fn plan_of(r: &Rollout) -> Plan {
    match (r.pilot_group, r.canary_group) {
        (Some(pilot), Some(canary)) => Plan::Groups { pilot, canary },
        _ => Plan::Shares {
            pilot_percent: r.pilot_percent.max(0) as u32,
            canary_percent: r.canary_percent.max(0) as u32,
        },
    }
}

/// The set a device at `stage` should hold.
fn desired(r: &Rollout, stage: Stage) -> Option<String> {
    let previous = || r.previous.as_deref().map(|v| set_name(r.policy_id, v));
    match state_of(r) {
        State::RolledBack => previous(),
        _ if stage <= stage_of(r) => Some(set_name(r.policy_id, &r.version)),
        _ => previous(),
    }
}

/// The members of `group` among `devices` (all of them, when None).
async fn membership<C: ConnectionTrait>(
    c: &C,
    group: i64,
    devices: Option<&[String]>,
) -> Result<HashSet<String>, DdmError> {
    Ok(match devices {
        None => members::devices_of(c, &[group])
            .await?
            .into_iter()
            .collect(),
        Some(ids) => members::present(c, group, ids).await?,
    })
}

/// Make the holdings of `devices` (or of the whole target group and everyone holding a version, when
/// None) what the rollout says, and sync those that changed. Returns what the sync did.
pub async fn settle<C: ConnectionTrait>(
    c: &C,
    r: &Rollout,
    target_group: i64,
    devices: Option<&[String]>,
    now: i64,
) -> Result<Synced, DdmError> {
    let plan = plan_of(r);
    let target = membership(c, target_group, devices).await?;
    let (pilots, canaries) = match plan {
        Plan::Groups { pilot, canary } => (
            membership(c, pilot, devices).await?,
            membership(c, canary, devices).await?,
        ),
        Plan::Shares { .. } => (HashSet::new(), HashSet::new()),
    };
    let in_group = |d: &str, g: i64| match plan {
        Plan::Groups { pilot, .. } if g == pilot => pilots.contains(d),
        Plan::Groups { .. } => canaries.contains(d),
        Plan::Shares { .. } => false,
    };
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (d, set) in rollouts::holdings(c, &set_prefix(r.policy_id), devices).await? {
        held.entry(d).or_default().push(set);
    }
    let reached = rollouts::reached(c, r.policy_id).await?;
    let universe: BTreeSet<String> = match devices {
        Some(ids) => ids.iter().cloned().collect(),
        None => target
            .iter()
            .chain(held.keys())
            .chain(reached.keys())
            .cloned()
            .collect(),
    };
    let new_set = set_name(r.policy_id, &r.version);
    let (mut remove, mut add, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut now_reached, mut left) = (Vec::new(), Vec::new());
    for d in universe {
        let stage = plan.stage_of(r.policy_id, &d, |g| in_group(&d, g));
        let want = if target.contains(&d) {
            desired(r, stage)
        } else {
            None
        };
        let has = held.remove(&d).unwrap_or_default();
        let right = match &want {
            Some(w) => has.len() == 1 && has[0] == *w,
            None => has.is_empty(),
        };
        if !right {
            remove.extend(
                has.iter()
                    .filter(|s| Some(*s) != want.as_ref())
                    .map(|s| (d.clone(), s.clone())),
            );
            if let Some(w) = &want {
                if !has.contains(w) {
                    add.push((d.clone(), w.clone()));
                }
            }
            changed.push(d.clone());
        }
        if want.as_ref() == Some(&new_set) && !reached.contains_key(&d) {
            now_reached.push((d.clone(), stage.index()));
        } else if !target.contains(&d) && reached.contains_key(&d) {
            left.push(d.clone());
        }
    }
    rollouts::change_holdings(c, &remove, &add, now).await?;
    rollouts::add_reached(c, r.policy_id, &now_reached, now).await?;
    rollouts::remove_reached(c, r.policy_id, &left).await?;
    if changed.is_empty() {
        return Ok(Synced::default());
    }
    super::reconciler::follow_holdings(c, &changed, now).await?;
    announce(c, Audience::Ids(&changed), false, now).await
}

/// Devices joined or left groups, in the caller's transaction: those in groups a rollout uses (its
/// policy's target, its pilot or canary group) are settled for that rollout.
pub async fn follow_membership<C: ConnectionTrait>(
    c: &C,
    changes: &[Change],
    now: i64,
) -> Result<(), DdmError> {
    let mut groups: Vec<i64> = changes.iter().map(|ch| ch.group_id).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.is_empty() {
        return Ok(());
    }
    let mut devices: Vec<String> = changes.iter().map(|ch| ch.device_id.clone()).collect();
    devices.sort();
    devices.dedup();
    for policy_id in rollouts::involving(c, &groups).await? {
        settle_policy(c, policy_id, Some(&devices), now).await?;
    }
    Ok(())
}

/// A device channel was enabled (its first TokenUpdate since Authenticate): unenrolling took its
/// holdings, so every rollout of a policy targeting one of its groups gives them back.
pub async fn on_enabled<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    now: i64,
) -> Result<(), DdmError> {
    let groups = members::groups_of(c, device_id).await?;
    if groups.is_empty() {
        return Ok(());
    }
    let device = [device_id.to_string()];
    for policy_id in rollouts::involving(c, &groups).await? {
        settle_policy(c, policy_id, Some(&device), now).await?;
    }
    Ok(())
}

async fn settle_policy<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    devices: Option<&[String]>,
    now: i64,
) -> Result<(), DdmError> {
    let (Some(r), Some(p)) = (
        rollouts::find(c, policy_id).await?,
        policies::find(c, policy_id).await?,
    ) else {
        return Ok(());
    };
    settle(c, &r, p.target_group, devices, now).await?;
    Ok(())
}
