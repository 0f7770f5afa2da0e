//! Queueing one command to many channels inside the caller's transaction: the command built once (or
//! per device, for device-specific commands), unknown and disabled channels reported, the eligible ones
//! queued and marked due for a push. The admin API's enqueue (`queue::QueueService`) and plugins'
//! `enqueue` actions both come here.

use super::{devices, enrollments, queue, StorageError};
use crate::protocol::commands::{CommandContext, CommandError, TypedCommand};
use crate::protocol::{CommandEnvelope, RawCommandError};
use sea_orm::ConnectionTrait;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The most channels one enqueue call may name (after its groups are expanded).
pub const MAX_IDS_PER_ENQUEUE: usize = 100_000;
/// The most groups one enqueue call may name.
pub const MAX_GROUPS_PER_ENQUEUE: usize = 100;

#[derive(Debug, Clone)]
pub enum CommandSpec {
    Typed(TypedCommand),
    /// A plist: a whole envelope or a bare Command dictionary.
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    pub ids: Vec<String>,
    /// Groups whose devices (their device channels) are targets too, beside `ids`.
    pub groups: Vec<i64>,
    pub command: CommandSpec,
    /// Higher goes first; ties go in enqueue order.
    pub priority: i32,
    /// Drop the command if the device has not finished it within this many seconds.
    pub ttl_seconds: Option<u64>,
    /// Who asked (`api`, `nanomdm-api`, `plugin:<id>`), kept with the command.
    pub source: String,
    /// Do not wake the devices: the commands wait for their next check-in (or a later push).
    pub no_push: bool,
}

/// What happened for one id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnqueueStatus {
    Queued,
    /// No such enrollment.
    Unknown,
    /// The enrollment exists but is disabled (checked out, or Authenticated without TokenUpdate yet).
    Disabled,
    /// The command needs a device fact this device has not reported (e.g. ClearPasscode's UnlockToken).
    MissingUnlockToken,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdResult {
    pub status: EnqueueStatus,
    /// The CommandUUID queued to this id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_uuid: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnqueueOutcome {
    pub request_type: String,
    /// The command UUIDs created: one, or one per device for device-specific commands.
    pub command_uuids: Vec<String>,
    pub results: BTreeMap<String, IdResult>,
}

impl EnqueueOutcome {
    pub fn queued_ids(&self) -> impl Iterator<Item = &str> {
        self.results
            .iter()
            .filter(|(_, r)| r.status == EnqueueStatus::Queued)
            .map(|(id, _)| id.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no enrollment ids given")]
    NoIds,
    #[error("too many ids ({0}); at most {MAX_IDS_PER_ENQUEUE} per call")]
    TooManyIds(usize),
    #[error("too many groups ({0}); at most {MAX_GROUPS_PER_ENQUEUE} per call")]
    TooManyGroups(usize),
    #[error("unknown groups: {}", .0.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))]
    UnknownGroups(Vec<i64>),
    #[error("invalid raw command: {0}")]
    RawCommand(#[from] RawCommandError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("priority must be between -1000 and 1000")]
    BadPriority,
    #[error("ttl_seconds must be between 1 and 31536000")]
    BadTtl,
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sea_orm::DbErr> for QueueError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// The channels a call names: `ids` and the device channels of `groups`' devices (a device channel's id is
/// its device's), sorted, each once. Read in the caller's transaction so the targets are the members as of
/// the call. Every group must exist.
pub async fn targets<C: ConnectionTrait>(
    c: &C,
    mut ids: Vec<String>,
    groups: &[i64],
) -> Result<Vec<String>, QueueError> {
    if !groups.is_empty() {
        ids.extend(group_devices(c, groups).await?);
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn group_devices<C: ConnectionTrait>(
    c: &C,
    groups: &[i64],
) -> Result<Vec<String>, QueueError> {
    if groups.len() > MAX_GROUPS_PER_ENQUEUE {
        return Err(QueueError::TooManyGroups(groups.len()));
    }
    let found = super::groups::find_many(c, groups).await?;
    let mut unknown: Vec<i64> = groups
        .iter()
        .copied()
        .filter(|g| !found.iter().any(|f| f.id == *g))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(QueueError::UnknownGroups(unknown));
    }
    Ok(super::groups::members::devices_of(c, groups).await?)
}

/// Queue a command within the caller's transaction (the admin API's own, or a check-in's for plugin actions).
pub async fn enqueue_in<C: ConnectionTrait>(
    c: &C,
    req: EnqueueRequest,
    now: i64,
) -> Result<EnqueueOutcome, QueueError> {
    if req.ids.is_empty() && req.groups.is_empty() {
        return Err(QueueError::NoIds);
    }
    if req.ids.len() > MAX_IDS_PER_ENQUEUE {
        return Err(QueueError::TooManyIds(req.ids.len()));
    }
    if !(-1000..=1000).contains(&req.priority) {
        return Err(QueueError::BadPriority);
    }
    if req.ttl_seconds.is_some_and(|t| t == 0 || t > 31_536_000) {
        return Err(QueueError::BadTtl);
    }
    let expires_at = req.ttl_seconds.map(|t| now + (t as i64) * 1000);
    let ids = targets(c, req.ids.clone(), &req.groups).await?;
    if ids.len() > MAX_IDS_PER_ENQUEUE {
        return Err(QueueError::TooManyIds(ids.len()));
    }

    // Build once up front, so a bad command fails before any lookup or write.
    let shared = match &req.command {
        CommandSpec::Raw(bytes) => Some(CommandEnvelope::from_raw(bytes, new_uuid)?),
        CommandSpec::Typed(t) if !t.is_device_specific() => Some(CommandEnvelope::new(
            new_uuid(),
            t.to_command_dict(&CommandContext::default())?,
        )?),
        CommandSpec::Typed(_) => None,
    };

    // id -> (device, enabled)
    let found: HashMap<String, (String, bool)> = enrollments::eligibility(c, &ids)
        .await?
        .into_iter()
        .map(|(id, device, enabled)| (id, (device, enabled)))
        .collect();
    let mut results = BTreeMap::new();
    let mut eligible = Vec::new();
    for id in &ids {
        let status = match found.get(id) {
            None => EnqueueStatus::Unknown,
            Some((_, enabled)) if !enabled => EnqueueStatus::Disabled,
            Some(_) => {
                eligible.push(id.clone());
                continue;
            }
        };
        results.insert(
            id.clone(),
            IdResult {
                status,
                command_uuid: None,
            },
        );
    }

    let mut command_uuids = Vec::new();
    let request_type;
    match (shared, &req.command) {
        (Some(env), _) => {
            request_type = env.request_type.clone();
            if !eligible.is_empty() {
                queue::insert_command(c, &env, req.priority, &req.source, expires_at, now).await?;
                queue::enqueue(c, &env.uuid, req.priority, expires_at, &eligible, now).await?;
                for id in &eligible {
                    results.insert(
                        id.clone(),
                        IdResult {
                            status: EnqueueStatus::Queued,
                            command_uuid: Some(env.uuid.clone()),
                        },
                    );
                }
                command_uuids.push(env.uuid);
            }
        }
        (None, CommandSpec::Typed(t)) => {
            request_type = t.request_type().to_string();
            for id in &eligible {
                let device_id = &found[id].0;
                let ctx = CommandContext {
                    unlock_token: devices::find(c, device_id)
                        .await?
                        .and_then(|d| d.unlock_token),
                };
                let dict = match t.to_command_dict(&ctx) {
                    Ok(d) => d,
                    Err(CommandError::MissingUnlockToken(_)) => {
                        results.insert(
                            id.clone(),
                            IdResult {
                                status: EnqueueStatus::MissingUnlockToken,
                                command_uuid: None,
                            },
                        );
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let env = CommandEnvelope::new(new_uuid(), dict)?;
                queue::insert_command(c, &env, req.priority, &req.source, expires_at, now).await?;
                queue::enqueue(
                    c,
                    &env.uuid,
                    req.priority,
                    expires_at,
                    std::slice::from_ref(id),
                    now,
                )
                .await?;
                results.insert(
                    id.clone(),
                    IdResult {
                        status: EnqueueStatus::Queued,
                        command_uuid: Some(env.uuid.clone()),
                    },
                );
                command_uuids.push(env.uuid);
            }
        }
        (None, CommandSpec::Raw(_)) => unreachable!("raw commands are always shared"),
    }
    if !req.no_push {
        // Owed a push as of now; the push worker sends it after this transaction commits. One statement per
        // command: a fan-out binds no ids here.
        for uuid in &command_uuids {
            super::push::due_for_command(c, uuid, now).await?;
        }
    }
    let queued = results
        .values()
        .filter(|r| r.status == EnqueueStatus::Queued)
        .count();
    tracing::info!(
        request_type,
        queued,
        asked = ids.len(),
        source = req.source,
        "enqueued"
    );
    Ok(EnqueueOutcome {
        request_type,
        command_uuids,
        results,
    })
}
