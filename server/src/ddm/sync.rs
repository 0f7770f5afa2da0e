//! Telling devices that what they should have changed: after any change to declarations, sets or
//! assignments, each affected enrollment whose DeclarationsToken moved is queued one DeclarativeManagement
//! command carrying its new tokens, and owed a push — in the change's transaction, so the push worker
//! sends it only after the change commits. A sync still waiting for its device is replaced, not added
//! to: however many changes come before the device does, it has one pending.
//!
//! Enrollments with the same sets share a token, so the fan-out computes one token per combination of
//! sets and queues one command per token: statements per chunk of ids, never per device.

use super::effective::{builtin_items, Effective};
use super::DdmError;
use crate::protocol::ddm::{sync_tokens_data, DeclarationItem};
use crate::protocol::CommandEnvelope;
use crate::storage::ddm::audience::{self, Audience, Member};
use crate::storage::ddm::{assignments, sets};
use crate::storage::groups::Change;
use crate::storage::{push, queue};
use plist::{Dictionary, Value};
use sea_orm::ConnectionTrait;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The `source` of the commands a sync queues.
pub const SOURCE: &str = "ddm";

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Synced {
    /// Enrollments queued a DeclarativeManagement command.
    pub queued: usize,
    /// Enrollments whose effective declarations did not change (nothing queued).
    pub unchanged: usize,
    /// Ids that are not enabled enrollments (unknown, checked out, or not yet through TokenUpdate).
    pub skipped: usize,
}

/// Announce to an audience what its enrollments should have now, to each one whose DeclarationsToken
/// changed since it was last announced (to every one, with `force`).
pub async fn announce<C: ConnectionTrait>(
    c: &C,
    who: Audience<'_>,
    force: bool,
    now: i64,
) -> Result<Synced, DdmError> {
    let sorted: Vec<String>;
    let who = match who {
        Audience::Ids(given) => {
            sorted = given
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            Audience::Ids(&sorted)
        }
        other => other,
    };
    let (members, not_enabled): (Vec<Member>, Vec<Member>) = audience::members(c, who)
        .await?
        .into_iter()
        .partition(|m| m.enabled);
    let mut synced = Synced {
        skipped: match who {
            Audience::Ids(ids) => ids.len() - members.len(),
            _ => not_enabled.len(),
        },
        ..Synced::default()
    };
    let considered = members.len();
    for (token, to) in due(c, members, force).await? {
        queue_sync(c, &to, &token, now).await?;
        synced.queued += to.len();
    }
    synced.unchanged = considered - synced.queued;
    if synced.queued > 0 {
        tracing::info!(
            queued = synced.queued,
            unchanged = synced.unchanged,
            "DDM sync queued"
        );
    }
    Ok(synced)
}

/// Devices joined or left groups: those of them in groups that carry sets are synced (their sets changed
/// with their membership). Changes in groups without sets cost one read.
pub async fn after_membership<C: ConnectionTrait>(
    c: &C,
    changes: &[Change],
    now: i64,
) -> Result<Synced, DdmError> {
    let mut groups: Vec<i64> = changes.iter().map(|ch| ch.group_id).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.is_empty() {
        return Ok(Synced::default());
    }
    let carrying = assignments::groups_with_sets(c, &groups).await?;
    let devices: Vec<String> = changes
        .iter()
        .filter(|ch| carrying.binary_search(&ch.group_id).is_ok())
        .map(|ch| ch.device_id.clone())
        .collect();
    if devices.is_empty() {
        return Ok(Synced::default());
    }
    announce(c, Audience::Ids(&devices), false, now).await
}

/// An enrollment was just enabled (its first TokenUpdate since Authenticate): if it holds sets already
/// (through its device's groups, or assigned before its TokenUpdate), it is told of them now. One that
/// holds none is left alone: it has only the built-in declarations, and a device that takes no part in DDM
/// must not be sent a DeclarativeManagement command it cannot run.
pub async fn on_enabled<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    now: i64,
) -> Result<Synced, DdmError> {
    if assignments::sets_of(c, enrollment_id).await?.is_empty() {
        return Ok(Synced::default());
    }
    announce(c, Audience::Ids(&[enrollment_id.to_string()]), false, now).await
}

/// The enrollments owed a sync, by the DeclarationsToken to announce to them: each one's token, computed
/// once per combination of sets, unless it is the token last announced to it (and not `force`).
async fn due<C: ConnectionTrait>(
    c: &C,
    members: Vec<Member>,
    force: bool,
) -> Result<BTreeMap<String, Vec<String>>, DdmError> {
    let builtins = builtin_items(c).await?;
    let all_sets: Vec<String> = members
        .iter()
        .flat_map(|m| m.sets.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut items: HashMap<String, Vec<DeclarationItem>> = HashMap::new();
    for m in sets::declarations_of(c, &all_sets).await? {
        items.entry(m.set_name).or_default().push(DeclarationItem {
            category: m.category,
            identifier: m.identifier,
            server_token: m.server_token,
        });
    }
    let mut token_of: HashMap<Vec<String>, String> = HashMap::new();
    let mut due: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in members {
        let token = token_of.entry(m.sets).or_insert_with_key(|sets| {
            let assigned = sets.iter().flat_map(|s| items.get(s)).flatten().cloned();
            Effective::of(builtins.iter().cloned().chain(assigned)).token
        });
        if force || m.announced_token.as_ref() != Some(token) {
            due.entry(token.clone()).or_default().push(m.enrollment_id);
        }
    }
    Ok(due)
}

/// One DeclarativeManagement command carrying `token`, queued to `ids` in place of any sync still waiting
/// for them, with a push owed and the token recorded as announced to them.
async fn queue_sync<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
    token: &str,
    now: i64,
) -> Result<(), DdmError> {
    let mut command = Dictionary::new();
    command.insert(
        "RequestType".into(),
        Value::String("DeclarativeManagement".into()),
    );
    command.insert("Data".into(), Value::Data(sync_tokens_data(token, now)));
    let uuid = queue_command(c, command, SOURCE, ids, now).await?;
    queue::withdraw_superseded(c, &uuid, SOURCE).await?;
    audience::record_announced(c, &uuid, token, now).await?;
    Ok(())
}

/// A command the server itself sends (a DDM sync, the profile reconciler's): stored under a new
/// CommandUUID with `source`, queued to `to` (existing channels), a push owed them. Returns the UUID.
pub(crate) async fn queue_command<C: ConnectionTrait>(
    c: &C,
    command: Dictionary,
    source: &str,
    to: &[String],
    now: i64,
) -> Result<String, DdmError> {
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let env = CommandEnvelope::new(uuid, command)
        .map_err(|e| DdmError::BadRequest(format!("building a {source} command: {e}")))?;
    queue::insert_command(c, &env, 0, source, None, now).await?;
    queue::enqueue(c, &env.uuid, 0, None, to, now).await?;
    push::due_for_command(c, &env.uuid, now).await?;
    Ok(env.uuid)
}
