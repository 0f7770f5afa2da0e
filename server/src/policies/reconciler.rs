//! The profile reconciler: the configuration profiles a device should have (those of the policy versions
//! it holds) against those it has (what its ProfileList says), with `InstallProfile` and `RemoveProfile`
//! sent only where the two differ, and every outcome confirmed by another ProfileList — an
//! acknowledgement alone proves nothing.
//!
//! Each (device, profile identifier) is tracked with a state:
//! - **pending**: wanted, not yet seen installed (an InstallProfile may be out, or acknowledged and
//!   awaiting the confirming list);
//! - **verified**: listed by the device with the `PayloadUUID` of the wanted content;
//! - **failed**: the device refused it [`MAX_ATTEMPTS`] times (its last error chain kept), or it was
//!   acknowledged but never listed that often;
//! - **removing** / **removed**: no longer wanted; a RemoveProfile is sent if the device lists it, and it
//!   is removed once a list no longer shows it;
//! - **skipped**: wanted by a version, but its payloads do not install on the device's platform.
//!
//! When what a device holds changes, its rows change here and a ProfileList is queued; everything else
//! follows from the device's answers, inside the transaction that records each answer (so the next
//! command goes out in the same connection). A profile the server never wanted is never touched. Failures
//! back off ([`backoff_ms`]); the round ([`retry_due`]) asks again for lists of devices whose profiles
//! are due. Two policies a device holds that want the same identifier: the lower policy id's wins, and the
//! other's rollout counts the device pending.

use crate::ddm::sync::queue_command;
use crate::ddm::DdmError;
use crate::protocol::profile_list::InstalledProfile;
use crate::protocol::{EnrollmentRef, ErrorChainItem};
use crate::storage::profiles::{self as store, DeviceProfile, Wanted};
use crate::storage::queue::{self, QueueStatus};
use crate::storage::{enrollments, Storage};
use plist::{Dictionary, Value};
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// The `source` of the InstallProfile and RemoveProfile commands the reconciler queues.
pub const SOURCE: &str = "profiles";
/// The `source` of its ProfileList commands (one waits per device: a newer replaces it).
pub const LIST_SOURCE: &str = "profiles.list";
/// Failed attempts after which a profile is left failed, until another version wants it.
pub const MAX_ATTEMPTS: i32 = 5;
/// The first retry waits this long; each further one twice as long as the one before.
const RETRY_BASE_MS: i64 = 5 * 60 * 1000;
/// No retry waits longer than a day.
const RETRY_CAP_MS: i64 = 24 * 60 * 60 * 1000;
/// A device that has not answered a ProfileList is asked again after an hour (the waiting one replaced).
pub const RELIST_MS: i64 = 60 * 60 * 1000;
/// A command out this long without an answer, and no list asked for as long, gets its device asked for a
/// list (which finds out whether the command still waits).
pub const STALE_COMMAND_MS: i64 = 24 * 60 * 60 * 1000;
/// Devices asked for a list per round, at most.
const DUE_PER_ROUND: u64 = 5_000;

/// Where a tracked profile stands on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Verified,
    Failed,
    Removing,
    Removed,
    Skipped,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Verified,
        State::Failed,
        State::Removing,
        State::Removed,
        State::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Failed => "failed",
            State::Removing => "removing",
            State::Removed => "removed",
            State::Skipped => "skipped",
        }
    }

    /// A stored state; an unknown one reads as pending (it gets looked at again).
    pub fn of(row: &DeviceProfile) -> State {
        State::ALL
            .into_iter()
            .find(|s| s.as_str() == row.state)
            .unwrap_or(State::Pending)
    }

    /// Still to be settled by the device's answers.
    fn unsettled(self) -> bool {
        matches!(self, State::Pending | State::Removing)
    }
}

const UNSETTLED: [&str; 2] = ["pending", "removing"];

/// A command the reconciler sends for a tracked profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send {
    Install,
    Remove,
}

/// How long to wait before the next attempt after `attempts` failed ones.
pub fn backoff_ms(attempts: i32) -> i64 {
    let doublings = attempts.clamp(1, 20) - 1;
    RETRY_BASE_MS
        .saturating_mul(1i64 << doublings)
        .min(RETRY_CAP_MS)
}

fn fresh(row: &DeviceProfile, state: State, now: i64) -> DeviceProfile {
    DeviceProfile {
        state: state.as_str().into(),
        command_uuid: None,
        acknowledged: false,
        attempts: 0,
        next_attempt_at: None,
        error: None,
        updated_at: now,
        ..row.clone()
    }
}

/// A tracked profile as the API shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    /// Its `PayloadIdentifier`.
    pub identifier: String,
    /// The policy whose version wants it (wanted it, when removing or removed).
    pub policy_id: i64,
    /// That version's label.
    pub version: String,
    /// The `PayloadUUID` the device must list.
    pub payload_uuid: String,
    pub state: State,
    /// A command sent for it awaits the device's answer (or, acknowledged, the confirming list).
    pub in_flight: bool,
    /// Failed attempts since it was last wanted afresh.
    pub attempts: i32,
    /// While backing off: the earliest next attempt.
    pub next_attempt_at: Option<String>,
    /// The device's last error chain.
    #[schema(value_type = Option<Vec<Object>>)]
    pub error: Option<serde_json::Value>,
    pub updated_at: String,
}

impl ProfileView {
    pub fn of(r: &DeviceProfile) -> Self {
        let version = r
            .set_name
            .strip_prefix(&super::materialize::set_prefix(r.policy_id))
            .unwrap_or(&r.set_name);
        ProfileView {
            identifier: r.identifier.clone(),
            policy_id: r.policy_id,
            version: version.to_string(),
            payload_uuid: r.payload_uuid.clone(),
            state: State::of(r),
            in_flight: r.command_uuid.is_some() || r.acknowledged,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.map(crate::clock::to_rfc3339),
            error: r
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok()),
            updated_at: crate::clock::to_rfc3339(r.updated_at),
        }
    }
}

/// What a device holds changed: its rows made to say what it now wants (the lower policy id's profile
/// where two want one identifier). Returns the rows that changed.
pub fn want(
    device_id: &str,
    rows: &[DeviceProfile],
    wanted: &[&Wanted],
    now: i64,
) -> Vec<DeviceProfile> {
    let mut chosen: BTreeMap<&str, &Wanted> = BTreeMap::new();
    for w in wanted {
        let keep = chosen
            .get(w.identifier.as_str())
            .is_some_and(|c| (c.policy_id, &c.set_name) <= (w.policy_id, &w.set_name));
        if !keep {
            chosen.insert(&w.identifier, w);
        }
    }
    let had: HashMap<&str, &DeviceProfile> =
        rows.iter().map(|r| (r.identifier.as_str(), r)).collect();
    let mut changed = Vec::new();
    for (identifier, w) in &chosen {
        let owner = |r: DeviceProfile| DeviceProfile {
            policy_id: w.policy_id,
            set_name: w.set_name.clone(),
            payload_uuid: w.payload_uuid.clone(),
            ..r
        };
        let target = if applies(w) {
            State::Pending
        } else {
            State::Skipped
        };
        match had.get(identifier) {
            // The same content, still wanted the same way: where it stands holds, and only which
            // version wants it may change — except a failure, which another version tries afresh (the
            // same version does not retry what failed).
            Some(r)
                if r.payload_uuid == w.payload_uuid
                    && same_way(State::of(r), target)
                    && !(State::of(r) == State::Failed && r.set_name != w.set_name) =>
            {
                if r.set_name != w.set_name || r.policy_id != w.policy_id {
                    changed.push(owner(DeviceProfile {
                        updated_at: now,
                        ..(*r).clone()
                    }));
                }
            }
            Some(r) => changed.push(owner(fresh(r, target, now))),
            None => changed.push(owner(fresh(
                &DeviceProfile {
                    device_id: device_id.to_string(),
                    identifier: identifier.to_string(),
                    policy_id: w.policy_id,
                    set_name: w.set_name.clone(),
                    payload_uuid: w.payload_uuid.clone(),
                    state: String::new(),
                    command_uuid: None,
                    acknowledged: false,
                    attempts: 0,
                    next_attempt_at: None,
                    listed_at: None,
                    error: None,
                    updated_at: now,
                },
                target,
                now,
            ))),
        }
    }
    for r in rows {
        if chosen.contains_key(r.identifier.as_str()) {
            continue;
        }
        match State::of(r) {
            State::Removing | State::Removed => {}
            // Never sent: nothing to take back.
            State::Skipped => changed.push(fresh(r, State::Removed, now)),
            _ => changed.push(fresh(r, State::Removing, now)),
        }
    }
    changed
}

/// Whether a row in `state` already is what wanting it as `target` (pending or skipped) asks for.
fn same_way(state: State, target: State) -> bool {
    match target {
        State::Skipped => state == State::Skipped,
        _ => !matches!(state, State::Removing | State::Removed | State::Skipped),
    }
}

/// Whether a wanted profile installs on its device's platform.
fn applies(w: &Wanted) -> bool {
    let platforms: Vec<String> = w
        .platforms
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    platforms.is_empty() || super::profile::applies_to(&platforms, w.device_platform.as_deref())
}

/// A failed attempt: backed off, or failed for good after [`MAX_ATTEMPTS`].
fn failed_attempt(r: &DeviceProfile, error: String, now: i64) -> DeviceProfile {
    let attempts = r.attempts.saturating_add(1);
    let gave_up = attempts >= MAX_ATTEMPTS && State::of(r) == State::Pending;
    DeviceProfile {
        state: if gave_up {
            State::Failed.as_str().into()
        } else {
            r.state.clone()
        },
        command_uuid: None,
        acknowledged: false,
        attempts,
        next_attempt_at: (!gave_up).then(|| now.saturating_add(backoff_ms(attempts))),
        // The round asks for a list as soon as the backoff is over.
        listed_at: None,
        error: Some(error),
        updated_at: now,
        ..r.clone()
    }
}

/// The error recorded when a device acknowledged a command its next list contradicts.
fn contradicted(what: &str) -> String {
    json!([{"ErrorDomain": "MDMServer", "ErrorCode": "NotConfirmedByProfileList",
        "USEnglishDescription": format!("the device acknowledged the {what} but its ProfileList does not show it")}])
    .to_string()
}

/// A device listed its profiles: each of its rows as the list shows it, and the commands to send (the
/// row to send each for). Rows with a command out, or backing off, wait.
pub fn on_list(
    rows: &[DeviceProfile],
    installed: &[InstalledProfile],
    now: i64,
) -> Vec<(DeviceProfile, Option<Send>)> {
    let listed: HashMap<&str, &str> = installed
        .iter()
        .map(|p| (p.identifier.as_str(), p.uuid.as_str()))
        .collect();
    let due = |r: &DeviceProfile| r.next_attempt_at.is_none_or(|t| t <= now);
    let mut out = Vec::new();
    for r in rows {
        let seen = listed.get(r.identifier.as_str()).copied();
        let right = seen == Some(r.payload_uuid.as_str());
        let waiting = r.command_uuid.is_some() && !r.acknowledged;
        let step = match State::of(r) {
            State::Verified if right => None,
            State::Verified => Some((fresh(r, State::Pending, now), Some(Send::Install))),
            State::Pending | State::Failed if right => Some((fresh(r, State::Verified, now), None)),
            State::Failed => None,
            State::Pending if waiting => None,
            State::Pending if r.acknowledged => {
                let next = failed_attempt(r, contradicted("installation"), now);
                let send =
                    (State::of(&next) == State::Pending && due(&next)).then_some(Send::Install);
                Some((next, send))
            }
            State::Pending => due(r).then(|| (r.clone(), Some(Send::Install))),
            State::Removing if seen.is_none() => Some((fresh(r, State::Removed, now), None)),
            State::Removing if waiting => None,
            State::Removing if r.acknowledged => {
                let next = failed_attempt(r, contradicted("removal"), now);
                let send = due(&next).then_some(Send::Remove);
                Some((next, send))
            }
            State::Removing => due(r).then(|| (r.clone(), Some(Send::Remove))),
            State::Removed | State::Skipped => None,
        };
        out.extend(step);
    }
    out
}

/// The device answered the InstallProfile or RemoveProfile queued for `row`: acknowledged (a list is
/// to confirm it), or refused (an attempt failed). NotNow changes nothing: the queue offers it again.
pub fn on_result(
    row: &DeviceProfile,
    status: QueueStatus,
    chain: &[ErrorChainItem],
    now: i64,
) -> Option<DeviceProfile> {
    match status {
        QueueStatus::Acknowledged => Some(DeviceProfile {
            command_uuid: None,
            acknowledged: true,
            updated_at: now,
            ..row.clone()
        }),
        QueueStatus::Error | QueueStatus::CommandFormatError => {
            Some(failed_attempt(row, chain_json(chain, status), now))
        }
        _ => None,
    }
}

fn chain_json(chain: &[ErrorChainItem], status: QueueStatus) -> String {
    if chain.is_empty() {
        return json!([{"ErrorDomain": "MDMServer", "ErrorCode": status.as_str(),
            "USEnglishDescription": "the device answered with no error chain"}])
        .to_string();
    }
    serde_json::Value::Array(
        chain
            .iter()
            .map(|e| {
                json!({"ErrorCode": e.error_code, "ErrorDomain": e.error_domain,
                    "LocalizedDescription": e.localized_description,
                    "USEnglishDescription": e.us_english_description})
            })
            .collect(),
    )
    .to_string()
}

/// A failure's reason code, as rollouts count them: `profile:<domain>:<code>` of the chain's first error.
pub fn reason_code(error: Option<&str>) -> String {
    let first = error
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|v| v.get(0).cloned())
        .unwrap_or_default();
    let part = |k: &str| match &first[k] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => "unknown".into(),
    };
    format!("profile:{}:{}", part("ErrorDomain"), part("ErrorCode"))
}

/// What devices now hold changed: their tracked profiles follow, and those with something to settle are
/// asked for a list. Costs one read when no policy has profiles.
pub async fn follow_holdings<C: ConnectionTrait>(
    c: &C,
    devices: &[String],
    now: i64,
) -> Result<(), DdmError> {
    if devices.is_empty() || !store::in_use(c).await? {
        return Ok(());
    }
    let wanted = store::wanted(c, devices).await?;
    let rows = store::of_devices(c, devices).await?;
    let mut wanted_by: HashMap<&str, Vec<&Wanted>> = HashMap::new();
    for w in &wanted {
        wanted_by.entry(&w.device_id).or_default().push(w);
    }
    let mut rows_by: HashMap<String, Vec<DeviceProfile>> = HashMap::new();
    for r in rows {
        rows_by.entry(r.device_id.clone()).or_default().push(r);
    }
    let (mut changed, mut to_list) = (Vec::new(), Vec::new());
    for d in devices {
        let rows = rows_by.get(d.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let wants = wanted_by.get(d.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let ch = want(d, rows, wants, now);
        if ch.iter().any(|r| State::of(r).unsettled()) {
            to_list.push(d.clone());
        }
        changed.extend(ch);
    }
    store::save(c, changed).await?;
    ask_for_lists(c, &to_list, now).await
}

/// Queue one ProfileList to the reachable ones of `devices` (replacing one still waiting), a push owed.
async fn ask_for_lists<C: ConnectionTrait>(
    c: &C,
    devices: &[String],
    now: i64,
) -> Result<(), DdmError> {
    // A device's channel is the one whose id is the device's: those enabled can be sent commands.
    let mut reachable: Vec<String> = enrollments::eligibility(c, devices)
        .await?
        .into_iter()
        .filter_map(|(id, _, enabled)| enabled.then_some(id))
        .collect();
    reachable.sort();
    if reachable.is_empty() {
        return Ok(());
    }
    let mut command = Dictionary::new();
    command.insert("RequestType".into(), Value::String("ProfileList".into()));
    command.insert("ManagedOnly".into(), Value::Boolean(true));
    let uuid = queue_command(c, command, LIST_SOURCE, &reachable, now).await?;
    queue::withdraw_superseded(c, &uuid, LIST_SOURCE).await?;
    store::mark_listed(c, &reachable, &UNSETTLED, now).await?;
    Ok(())
}

/// A device channel's recorded command result, in its transaction: a ProfileList answer settles its
/// device's tracked profiles; an answer to the reconciler's own InstallProfile or RemoveProfile moves that
/// profile on. Anything else costs nothing.
pub async fn on_report<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    command_uuid: &str,
    status: QueueStatus,
    answer: &Dictionary,
    chain: &[ErrorChainItem],
    now: i64,
) -> Result<(), DdmError> {
    if e.kind.is_user_channel() {
        return Ok(());
    }
    let device = &e.device_id;
    if status == QueueStatus::Acknowledged && answer.contains_key("ProfileList") {
        let is_list = queue::find_command(c, command_uuid)
            .await?
            .is_some_and(|cmd| cmd.request_type == "ProfileList");
        match crate::protocol::profile_list::installed_profiles(answer) {
            Some(installed) if is_list => return settle_listed(c, device, &installed, now).await,
            None if is_list => {
                tracing::warn!(enrollment = %e.id, "malformed ProfileList answer; nothing concluded from it");
                return Ok(());
            }
            _ => {}
        }
    }
    let Some(row) = store::by_command(c, device, command_uuid).await? else {
        return Ok(());
    };
    let Some(next) = on_result(&row, status, chain, now) else {
        return Ok(());
    };
    let confirm = next.acknowledged;
    if State::of(&next) == State::Failed {
        tracing::warn!(device = %device, profile = %next.identifier, attempts = next.attempts, "profile failed on device");
    }
    store::save(c, vec![next]).await?;
    if confirm {
        ask_for_lists(c, std::slice::from_ref(device), now).await?;
    }
    Ok(())
}

/// A device's list, against its tracked profiles: rows moved on, commands sent.
async fn settle_listed<C: ConnectionTrait>(
    c: &C,
    device: &str,
    installed: &[InstalledProfile],
    now: i64,
) -> Result<(), DdmError> {
    let mut rows = store::of_devices(c, &[device.to_string()]).await?;
    for r in rows.iter_mut().filter(|r| !r.acknowledged) {
        if let Some(uuid) = &r.command_uuid {
            if !still_queued(c, device, uuid).await? {
                // Canceled or expired without an answer: the list decides afresh.
                r.command_uuid = None;
            }
        }
    }
    let mut save = Vec::new();
    for (mut row, send) in on_list(&rows, installed, now) {
        if let Some(send) = send {
            match command_for(c, &row, &send).await? {
                Some(cmd) => {
                    let uuid = queue_command(c, cmd, SOURCE, &[device.to_string()], now).await?;
                    row.command_uuid = Some(uuid);
                    row.acknowledged = false;
                    row.updated_at = now;
                }
                None => {
                    row = DeviceProfile {
                        state: State::Failed.as_str().into(),
                        error: Some(
                            json!([{"ErrorDomain": "MDMServer", "ErrorCode": "ProfileNotStored",
                            "USEnglishDescription": "the version's profile is no longer stored"}])
                            .to_string(),
                        ),
                        updated_at: now,
                        ..row
                    };
                }
            }
        }
        save.push(row);
    }
    store::save(c, save).await?;
    Ok(())
}

/// Whether a command queued to the device still awaits its answer.
async fn still_queued<C: ConnectionTrait>(
    c: &C,
    device: &str,
    command_uuid: &str,
) -> Result<bool, DdmError> {
    Ok(match queue::find_item(c, device, command_uuid).await? {
        Some(item) => QueueStatus::parse(&item.status)?.is_pending(),
        None => false,
    })
}

/// The InstallProfile (the wanted version's content) or RemoveProfile for a row; None when the content
/// is gone (its version pruned).
async fn command_for<C: ConnectionTrait>(
    c: &C,
    row: &DeviceProfile,
    send: &Send,
) -> Result<Option<Dictionary>, DdmError> {
    let mut d = Dictionary::new();
    match send {
        Send::Install => {
            let Some(content) = store::content(c, &row.set_name, &row.identifier).await? else {
                return Ok(None);
            };
            d.insert("RequestType".into(), Value::String("InstallProfile".into()));
            d.insert("Payload".into(), Value::Data(content));
        }
        Send::Remove => {
            d.insert("RequestType".into(), Value::String("RemoveProfile".into()));
            d.insert("Identifier".into(), Value::String(row.identifier.clone()));
        }
    }
    Ok(Some(d))
}

/// One round: devices with profiles due (never listed, backed off long enough, or not answering a list
/// for [`RELIST_MS`]; or with a command out unanswered for [`STALE_COMMAND_MS`], which may have been
/// canceled or expired) are asked for a list again. Returns how many.
pub async fn retry_due(storage: &Storage, now: i64) -> Result<usize, DdmError> {
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                let due = store::Due {
                    unsettled: &UNSETTLED,
                    now,
                    listed_before: now - RELIST_MS,
                    stale_before: now - STALE_COMMAND_MS,
                };
                let devices = store::due(txn, due, DUE_PER_ROUND).await?;
                ask_for_lists(txn, &devices, now).await?;
                Ok::<_, DdmError>(devices.len())
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(identifier: &str, policy_id: i64, uuid: &str) -> Wanted {
        Wanted {
            device_id: "D".into(),
            policy_id,
            set_name: format!("mdm.policy.{policy_id}.1"),
            identifier: identifier.into(),
            payload_uuid: uuid.into(),
            platforms: "iOS,macOS".into(),
            device_platform: Some("macOS".into()),
        }
    }

    fn listed(pairs: &[(&str, &str)]) -> Vec<InstalledProfile> {
        pairs
            .iter()
            .map(|(i, u)| InstalledProfile {
                identifier: i.to_string(),
                uuid: u.to_string(),
            })
            .collect()
    }

    fn state(rows: &[DeviceProfile], identifier: &str) -> State {
        State::of(rows.iter().find(|r| r.identifier == identifier).unwrap())
    }

    #[test]
    fn what_a_device_wants_follows_its_holdings() {
        let a = wanted("a", 2, "U1");
        let a_other_policy = wanted("a", 1, "U9");
        let rows = want("D", &[], &[&a, &a_other_policy], 0);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].policy_id, rows[0].payload_uuid.as_str()),
            (1, "U9"),
            "the lower policy id wins"
        );
        assert_eq!(State::of(&rows[0]), State::Pending);
        let verified = vec![fresh(&rows[0], State::Verified, 1)];
        assert!(
            want("D", &verified, &[&a_other_policy], 2).is_empty(),
            "nothing changed, nothing written"
        );
        let newer = wanted("a", 1, "U10");
        let changed = want("D", &verified, &[&newer], 3);
        assert_eq!(state(&changed, "a"), State::Pending, "new content: again");
        let gone = want("D", &verified, &[], 4);
        assert_eq!(state(&gone, "a"), State::Removing);
        let removed = vec![fresh(&verified[0], State::Removed, 5)];
        assert!(want("D", &removed, &[], 6).is_empty());
        // A failure stays failed for the version that failed, and is tried afresh by another.
        let failed = vec![fresh(&verified[0], State::Failed, 6)];
        assert!(want("D", &failed, &[&a_other_policy], 7).is_empty());
        let next_version = Wanted {
            set_name: "mdm.policy.1.2".into(),
            ..wanted("a", 1, "U9")
        };
        let retried = want("D", &failed, &[&next_version], 7);
        assert_eq!(
            (state(&retried, "a"), retried[0].attempts),
            (State::Pending, 0)
        );
        // A profile whose payloads do not install on the device's platform is skipped, never sent.
        let tv = Wanted {
            device_platform: Some("tvOS".into()),
            ..wanted("a", 1, "U9")
        };
        let skipped = want("D", &verified, &[&tv], 7);
        assert_eq!(state(&skipped, "a"), State::Skipped);
        assert!(want("D", &skipped, &[&tv], 8).is_empty());
        assert!(on_list(&skipped, &listed(&[]), 9).is_empty());
        assert_eq!(
            state(&want("D", &skipped, &[], 9), "a"),
            State::Removed,
            "nothing to take back"
        );
        let ipad = Wanted {
            device_platform: Some("iPadOS".into()),
            ..wanted("a", 1, "U9")
        };
        assert_eq!(
            state(&want("D", &skipped, &[&ipad], 10), "a"),
            State::Pending
        );
    }

    #[test]
    fn a_list_settles_rows_and_sends_only_what_differs() {
        let w = [wanted("a", 1, "U1"), wanted("b", 1, "U2")];
        let rows = want("D", &[], &[&w[0], &w[1]], 0);
        // The device has a already (right content) and an old b.
        let out = on_list(
            &rows,
            &listed(&[("a", "U1"), ("b", "OLD"), ("mine", "X")]),
            1,
        );
        let a = out.iter().find(|(r, _)| r.identifier == "a").unwrap();
        assert_eq!((State::of(&a.0), &a.1), (State::Verified, &None));
        let b = out.iter().find(|(r, _)| r.identifier == "b").unwrap();
        assert_eq!(
            (State::of(&b.0), &b.1),
            (State::Pending, &Some(Send::Install))
        );
        assert!(
            out.iter().all(|(r, _)| r.identifier != "mine"),
            "a profile the server never wanted is not touched"
        );
        // b out: a list meanwhile changes nothing for it.
        let sent = DeviceProfile {
            command_uuid: Some("C".into()),
            ..b.0.clone()
        };
        assert!(on_list(std::slice::from_ref(&sent), &listed(&[]), 2).is_empty());
        // Acknowledged, then listed: verified.
        let acked = on_result(&sent, QueueStatus::Acknowledged, &[], 3).unwrap();
        let out = on_list(std::slice::from_ref(&acked), &listed(&[("b", "U2")]), 4);
        assert_eq!(State::of(&out[0].0), State::Verified);
        // Acknowledged but not listed: an attempt failed, retried after the backoff.
        let out = on_list(&[acked], &listed(&[]), 4);
        assert_eq!(out[0].0.attempts, 1);
        assert_eq!(out[0].0.next_attempt_at, Some(4 + backoff_ms(1)));
        assert_eq!(out[0].1, None, "backing off");
        let later = on_list(&[out[0].0.clone()], &listed(&[]), 4 + backoff_ms(1));
        assert_eq!(later[0].1, Some(Send::Install));
    }

    #[test]
    fn refusals_back_off_then_fail_with_the_device_error() {
        let w = wanted("a", 1, "U1");
        let mut row = want("D", &[], &[&w], 0).remove(0);
        let chain = [ErrorChainItem {
            error_code: Some(4001),
            error_domain: Some("MCProfileErrorDomain".into()),
            localized_description: None,
            us_english_description: Some("bad".into()),
        }];
        let mut waits = Vec::new();
        for attempt in 1..=MAX_ATTEMPTS {
            row.command_uuid = Some(format!("C{attempt}"));
            row = on_result(&row, QueueStatus::Error, &chain, 100).unwrap();
            assert_eq!(row.attempts, attempt);
            waits.extend(row.next_attempt_at.map(|t| t - 100));
        }
        assert_eq!(State::of(&row), State::Failed);
        assert_eq!(
            waits,
            [backoff_ms(1), backoff_ms(2), backoff_ms(3), backoff_ms(4)]
        );
        assert!(waits.windows(2).all(|w| w[1] == 2 * w[0]), "doubling");
        assert_eq!(
            reason_code(row.error.as_deref()),
            "profile:MCProfileErrorDomain:4001"
        );
        assert!(
            on_list(&[row.clone()], &listed(&[]), 10_000_000).is_empty(),
            "failed stays failed"
        );
        assert_eq!(
            State::of(&on_list(&[row], &listed(&[("a", "U1")]), 1)[0].0),
            State::Verified,
            "unless the device shows it installed after all"
        );
        assert!(on_result(&want("D", &[], &[&w], 0)[0], QueueStatus::NotNow, &[], 1).is_none());
        assert_eq!(backoff_ms(100), RETRY_CAP_MS);
    }

    #[test]
    fn removal_is_confirmed_by_a_list() {
        let w = wanted("a", 1, "U1");
        let row = fresh(&want("D", &[], &[&w], 0)[0], State::Verified, 0);
        let removing = want("D", &[row], &[], 1).remove(0);
        let out = on_list(std::slice::from_ref(&removing), &listed(&[("a", "U1")]), 2);
        assert_eq!(out[0].1, Some(Send::Remove));
        let out = on_list(&[removing], &listed(&[]), 2);
        assert_eq!((State::of(&out[0].0), &out[0].1), (State::Removed, &None));
    }
}
