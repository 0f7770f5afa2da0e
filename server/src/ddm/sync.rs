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
use crate::storage::ddm::{assignments, sets, status};
use crate::storage::{enrollments, push, queue};
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

/// Announce to these enrollments what they should have now, if it changed since it was last announced
/// (always, with `force`).
pub async fn announce<C: ConnectionTrait>(
    c: &C,
    enrollment_ids: &[String],
    force: bool,
    now: i64,
) -> Result<Synced, DdmError> {
    let mut ids = enrollment_ids.to_vec();
    ids.sort();
    ids.dedup();
    let enabled: Vec<String> = enrollments::eligibility(c, &ids)
        .await?
        .into_iter()
        .filter_map(|(id, _, enabled)| enabled.then_some(id))
        .collect();
    let mut synced = Synced {
        skipped: ids.len() - enabled.len(),
        ..Synced::default()
    };
    let tokens = tokens_of(c, &enabled).await?;
    let announced = if force {
        HashMap::new()
    } else {
        status::announced(c, &enabled).await?
    };
    let mut by_token: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, token) in &tokens {
        if announced.get(id).map(String::as_str) == Some(token.as_str()) {
            synced.unchanged += 1;
        } else {
            by_token.entry(token.as_str()).or_default().push(id.clone());
        }
    }
    for (token, ids) in by_token {
        queue_sync(c, &ids, token, now).await?;
        status::set_announced(c, &ids, token, now).await?;
        synced.queued += ids.len();
    }
    if synced.queued > 0 {
        tracing::info!(
            queued = synced.queued,
            unchanged = synced.unchanged,
            "DDM sync queued"
        );
    }
    Ok(synced)
}

/// Each enrollment's DeclarationsToken, computed once per combination of assigned sets.
async fn tokens_of<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
) -> Result<Vec<(String, String)>, DdmError> {
    let builtins = builtin_items(c).await?;
    let mut sets_of: BTreeMap<String, BTreeSet<String>> =
        ids.iter().map(|id| (id.clone(), BTreeSet::new())).collect();
    for (id, set) in assignments::of_enrollments(c, ids).await? {
        sets_of.entry(id).or_default().insert(set);
    }
    let all_sets: Vec<String> = sets_of
        .values()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut members: HashMap<String, Vec<DeclarationItem>> = HashMap::new();
    for m in sets::declarations_of(c, &all_sets).await? {
        members
            .entry(m.set_name)
            .or_default()
            .push(DeclarationItem {
                category: m.category,
                identifier: m.identifier,
                server_token: m.server_token,
            });
    }
    let mut per_combination: HashMap<&BTreeSet<String>, String> = HashMap::new();
    let mut out = Vec::with_capacity(sets_of.len());
    for (id, sets) in &sets_of {
        let token = per_combination
            .entry(sets)
            .or_insert_with(|| {
                let assigned = sets.iter().flat_map(|s| members.get(s)).flatten().cloned();
                Effective::of(builtins.iter().cloned().chain(assigned)).token
            })
            .clone();
        out.push((id.clone(), token));
    }
    Ok(out)
}

/// One DeclarativeManagement command carrying `token`, queued to `ids` in place of any sync still waiting
/// for them, with a push owed.
async fn queue_sync<C: ConnectionTrait>(
    c: &C,
    ids: &[String],
    token: &str,
    now: i64,
) -> Result<(), DdmError> {
    queue::withdraw_undelivered(c, ids, SOURCE).await?;
    let mut command = Dictionary::new();
    command.insert(
        "RequestType".into(),
        Value::String("DeclarativeManagement".into()),
    );
    command.insert("Data".into(), Value::Data(sync_tokens_data(token, now)));
    let uuid = uuid::Uuid::new_v4().to_string().to_uppercase();
    let env = CommandEnvelope::new(uuid, command)
        .map_err(|e| DdmError::BadRequest(format!("building the sync command: {e}")))?;
    queue::insert_command(c, &env, 0, SOURCE, None, now).await?;
    queue::enqueue(c, &env.uuid, 0, None, ids, now).await?;
    push::due_for_command(c, &env.uuid, now).await?;
    Ok(())
}
