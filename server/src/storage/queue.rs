//! The command queue: commands stored once, queued per channel, delivered in (priority desc, sequence asc)
//! order, with NotNow, expiry, cancellation and retention.

use super::entities::command::{self, Entity as Commands};
use super::entities::queue_item::{Column, Entity as Queue};
use super::Writes;
use super::{StorageError, StorageResult};
use crate::protocol::CommandEnvelope;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

pub use super::entities::command::Model as Command;
pub use super::entities::queue_item::Model as QueueItem;

/// Where a queued command stands for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueStatus {
    /// Waiting to be delivered (or delivered and awaiting the device's answer).
    Queued,
    /// The device said NotNow; skipped until its next Idle.
    NotNow,
    Acknowledged,
    Error,
    CommandFormatError,
    /// Its TTL ran out before the device answered.
    Expired,
    /// Removed by an admin or by a new Authenticate.
    Canceled,
}

impl QueueStatus {
    pub const ALL: [QueueStatus; 7] = [
        Self::Queued,
        Self::NotNow,
        Self::Acknowledged,
        Self::Error,
        Self::CommandFormatError,
        Self::Expired,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::NotNow => "not_now",
            Self::Acknowledged => "acknowledged",
            Self::Error => "error",
            Self::CommandFormatError => "command_format_error",
            Self::Expired => "expired",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> StorageResult<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown queue status {s:?}")))
    }

    pub fn is_pending(self) -> bool {
        matches!(self, Self::Queued | Self::NotNow)
    }
}

/// Store a command (once) ahead of queueing it to channels.
pub async fn insert_command<C: ConnectionTrait>(
    c: &C,
    env: &CommandEnvelope,
    priority: i32,
    source: &str,
    expires_at: Option<i64>,
    now: i64,
) -> StorageResult<()> {
    // ON CONFLICT DO NOTHING rather than a read first: two enqueues of one CommandUUID at once would both
    // read nothing and one insert would fail (a 500); this way the loser sees a conflict (409).
    let inserted = Commands::insert(command::ActiveModel {
        uuid: Set(env.uuid.clone()),
        request_type: Set(env.request_type.clone()),
        raw: Set(env.raw.clone()),
        priority: Set(priority),
        source: Set(source.to_string()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        retry_of: Set(None),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(command::Column::Uuid)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    if inserted == 0 {
        return Err(StorageError::Conflict(format!(
            "a command with CommandUUID {} already exists",
            env.uuid
        )));
    }
    Ok(())
}

/// Ids per statement for set-based writes: far below SQLite's (32,766) and PostgreSQL's (65,535) bind
/// limits, and few enough statements that a 100k-device fan-out is a handful of round trips.
pub(crate) const IDS_PER_STATEMENT: usize = 5_000;

/// Queue a stored command to channels, one `INSERT ... SELECT` per chunk of ids: only the ids are bound,
/// the rest of each row is the same. Rows are inserted in id order, so their sequence numbers record
/// enqueue order. Every id must be an existing channel (the caller checked), else nothing is queued.
pub async fn enqueue<C: ConnectionTrait>(
    c: &C,
    command_uuid: &str,
    priority: i32,
    expires_at: Option<i64>,
    enrollment_ids: &[String],
    now: i64,
) -> StorageResult<()> {
    use super::entities::enrollment::{self, Entity as Enrollments};
    use sea_orm::sea_query::{Order, Query};
    for chunk in enrollment_ids.chunks(IDS_PER_STATEMENT) {
        let rows = Query::select()
            .column(enrollment::Column::Id)
            .expr(Expr::val(command_uuid))
            .expr(Expr::val(priority))
            .expr(Expr::val(QueueStatus::Queued.as_str()))
            .expr(Expr::val(now))
            .expr(Expr::val(now))
            .expr(Expr::val(expires_at))
            .expr(Expr::val(0))
            .from(Enrollments)
            .and_where(Expr::col(enrollment::Column::Id).is_in(chunk.iter().map(String::as_str)))
            .order_by(enrollment::Column::Id, Order::Asc)
            .to_owned();
        let insert = Query::insert()
            .into_table(Queue)
            .columns([
                Column::EnrollmentId,
                Column::CommandUuid,
                Column::Priority,
                Column::Status,
                Column::CreatedAt,
                Column::UpdatedAt,
                Column::ExpiresAt,
                Column::DeliveryCount,
            ])
            .select_from(rows)
            .map_err(|e| StorageError::Corrupt(format!("enqueue statement: {e}")))?
            .to_owned();
        let inserted = c.execute(&insert).await?.rows_affected();
        if inserted != chunk.len() as u64 {
            // A duplicate or vanished id: the transaction rolls back, nothing is half-queued.
            return Err(StorageError::Conflict(format!(
                "queued {inserted} of {} channels: some no longer exist",
                chunk.len()
            )));
        }
    }
    Ok(())
}

fn live(now: i64) -> Condition {
    Condition::any()
        .add(Column::ExpiresAt.is_null())
        .add(Column::ExpiresAt.gt(now))
}

/// The next command for a channel, marked as delivered. NotNow'd, expired and finished ones are skipped.
pub async fn next<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    now: i64,
) -> StorageResult<Option<(QueueItem, Command)>> {
    // The row and its command body in one query.
    let Some((item, cmd)) = Queue::find()
        .find_also_related(Commands)
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::Status.eq(QueueStatus::Queued.as_str()))
        .filter(live(now))
        .filter(
            Condition::any()
                .add(Column::NotBefore.is_null())
                .add(Column::NotBefore.lte(now)),
        )
        .order_by_desc(Column::Priority)
        .order_by_asc(Column::Id)
        .one(c)
        .await?
    else {
        return Ok(None);
    };
    let cmd = cmd.ok_or_else(|| {
        StorageError::Corrupt(format!("queued command {} has no body", item.command_uuid))
    })?;
    Queue::update_many()
        .col_expr(Column::DeliveredAt, Expr::value(now))
        .col_expr(
            Column::DeliveryCount,
            Expr::col(Column::DeliveryCount).add(1),
        )
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(item.id))
        .exec(c)
        .await?;
    Ok(Some((item, cmd)))
}

/// After Idle, NotNow'd commands are offered again.
pub async fn reset_not_now<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    now: i64,
) -> StorageResult<u64> {
    Ok(Queue::update_many()
        .col_expr(Column::Status, Expr::value(QueueStatus::Queued.as_str()))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::Status.eq(QueueStatus::NotNow.as_str()))
        .exec(c)
        .await?
        .rows_affected)
}

/// What recording a device's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Recorded,
    /// No such command queued to this channel (or it was canceled/expired): nothing stored.
    Unknown,
    /// The command had already ended; a repeated report changes nothing.
    AlreadyFinal,
}

/// A command's final result as it was recorded: what its latency is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub request_type: String,
    pub priority: i32,
    pub status: QueueStatus,
    /// When it was queued to this channel (Unix ms).
    pub enqueued_at: i64,
}

/// Record a report for a pending command. Final statuses keep the raw result and its JSON form, and answer
/// what finished. One UPDATE guarded by the pending statuses: of two concurrent reports for the same command
/// (a retried request, two replicas), exactly one records it.
pub async fn record_report<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    command_uuid: &str,
    status: QueueStatus,
    raw: &[u8],
    json: &str,
    now: i64,
) -> StorageResult<(ReportOutcome, Option<Finished>)> {
    use sea_orm::sea_query::{Query, SimpleExpr};
    let mut update = Query::update();
    update
        .table(Queue)
        .value(Column::Status, status.as_str())
        .value(Column::UpdatedAt, now)
        .and_where(Column::EnrollmentId.eq(enrollment_id))
        .and_where(Column::CommandUuid.eq(command_uuid))
        .and_where(
            Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
        );
    if !status.is_pending() {
        update
            .value(Column::CompletedAt, now)
            .value(Column::ResultRaw, raw.to_vec())
            .value(Column::ResultJson, json);
    }
    // The command's type comes back with the row: no second read on the report's path.
    let request_type = Query::select()
        .column(command::Column::RequestType)
        .from(Commands)
        .and_where(
            Expr::col((Commands, command::Column::Uuid)).equals((Queue, Column::CommandUuid)),
        )
        .to_owned();
    update.returning(Query::returning().exprs([
        Expr::col(Column::CreatedAt),
        Expr::col(Column::Priority),
        SimpleExpr::SubQuery(None, Box::new(request_type.into())),
    ]));
    let stmt = c.get_database_backend().build(&update);
    if let Some(row) = c.query_one_raw(stmt).await? {
        if status.is_pending() {
            return Ok((ReportOutcome::Recorded, None));
        }
        let request_type: Option<String> = row.try_get_by_index(2)?;
        let finished = Finished {
            enqueued_at: row.try_get_by_index(0)?,
            priority: row.try_get_by_index(1)?,
            request_type: request_type.unwrap_or_default(),
            status,
        };
        return Ok((ReportOutcome::Recorded, Some(finished)));
    }
    // Not pending: say why (rare: a repeated or stray report).
    let Some(item) = Queue::find()
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::CommandUuid.eq(command_uuid))
        .one(c)
        .await?
    else {
        return Ok((ReportOutcome::Unknown, None));
    };
    Ok((
        match QueueStatus::parse(&item.status)? {
            QueueStatus::Canceled | QueueStatus::Expired => ReportOutcome::Unknown,
            _ => ReportOutcome::AlreadyFinal,
        },
        None,
    ))
}

/// Cancel pending commands of the given channels (Authenticate's reset, or an admin clearing a queue).
pub async fn cancel_pending<W: Writes>(
    c: &W,
    enrollment_ids: &[String],
    only_command: Option<&str>,
    now: i64,
) -> StorageResult<u64> {
    let c = c.connection();
    let mut total = 0;
    for chunk in enrollment_ids.chunks(500) {
        let mut q = Queue::update_many()
            .col_expr(Column::Status, Expr::value(QueueStatus::Canceled.as_str()))
            .col_expr(Column::CompletedAt, Expr::value(now))
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .filter(
                Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
            );
        if let Some(uuid) = only_command {
            q = q.filter(Column::CommandUuid.eq(uuid));
        }
        total += q.exec(c).await?.rows_affected;
    }
    Ok(total)
}

/// Mark the channel's pending commands from `source` acknowledged: what they asked for has been seen done
/// (a renewal profile, once the device authenticates with the identity it brought), so one whose
/// acknowledgement was lost is not offered again.
pub async fn complete_pending_from<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    source: &str,
    now: i64,
) -> StorageResult<u64> {
    use sea_orm::sea_query::Query;
    let from_source = Query::select()
        .column(super::entities::command::Column::Uuid)
        .from(super::entities::command::Entity)
        .and_where(super::entities::command::Column::Source.eq(source))
        .to_owned();
    Ok(Queue::update_many()
        .col_expr(
            Column::Status,
            Expr::value(QueueStatus::Acknowledged.as_str()),
        )
        .col_expr(Column::CompletedAt, Expr::value(now))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]))
        .filter(Column::CommandUuid.in_subquery(from_source))
        .exec(c)
        .await?
        .rows_affected)
}

/// A channel's queue, newest last. `pending_only` hides finished rows.
pub async fn for_enrollment<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    pending_only: bool,
    limit: u64,
) -> StorageResult<Vec<(QueueItem, Option<Command>)>> {
    let mut q = Queue::find().filter(Column::EnrollmentId.eq(enrollment_id));
    if pending_only {
        q = q.filter(
            Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
        );
    }
    let items = q
        .order_by_desc(Column::Priority)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(c)
        .await?;
    with_commands(c, items).await
}

/// Every channel a command was queued to, with each one's status and result.
pub async fn for_command<C: ConnectionTrait>(
    c: &C,
    command_uuid: &str,
    after_id: Option<i64>,
    limit: u64,
) -> StorageResult<Vec<QueueItem>> {
    let mut q = Queue::find().filter(Column::CommandUuid.eq(command_uuid));
    if let Some(after) = after_id {
        q = q.filter(Column::Id.gt(after));
    }
    Ok(q.order_by_asc(Column::Id).limit(limit).all(c).await?)
}

pub async fn find_command<C: ConnectionTrait>(c: &C, uuid: &str) -> StorageResult<Option<Command>> {
    Ok(Commands::find_by_id(uuid.to_string()).one(c).await?)
}

pub async fn find_item<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    command_uuid: &str,
) -> StorageResult<Option<QueueItem>> {
    Ok(Queue::find()
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::CommandUuid.eq(command_uuid))
        .one(c)
        .await?)
}

async fn with_commands<C: ConnectionTrait>(
    c: &C,
    items: Vec<QueueItem>,
) -> StorageResult<Vec<(QueueItem, Option<Command>)>> {
    let mut uuids: Vec<String> = items.iter().map(|i| i.command_uuid.clone()).collect();
    uuids.sort();
    uuids.dedup();
    let mut cmds = std::collections::HashMap::new();
    for chunk in uuids.chunks(500) {
        for cmd in Commands::find()
            .filter(command::Column::Uuid.is_in(chunk.iter().cloned()))
            .all(c)
            .await?
        {
            cmds.insert(cmd.uuid.clone(), cmd);
        }
    }
    Ok(items
        .into_iter()
        .map(|i| {
            let cmd = cmds.get(&i.command_uuid).cloned();
            (i, cmd)
        })
        .collect())
}

/// Mark pending rows whose TTL has passed as expired. Returns how many.
pub async fn expire<W: Writes>(c: &W, now: i64) -> StorageResult<u64> {
    let c = c.connection();
    Ok(Queue::update_many()
        .col_expr(Column::Status, Expr::value(QueueStatus::Expired.as_str()))
        .col_expr(Column::CompletedAt, Expr::value(now))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]))
        .filter(Column::ExpiresAt.lte(now))
        .exec(c)
        .await?
        .rows_affected)
}

/// Delete finished rows completed before `cutoff`, then commands no row refers to any more.
/// Returns (queue rows, commands) deleted.
pub async fn purge_finished<W: Writes>(c: &W, cutoff: i64) -> StorageResult<(u64, u64)> {
    let c = c.connection();
    let rows = Queue::delete_many()
        .filter(Column::CompletedAt.lt(cutoff))
        .filter(
            Column::Status.is_not_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]),
        )
        .exec(c)
        .await?
        .rows_affected;
    let referenced = sea_orm::sea_query::Query::select()
        .column(Column::CommandUuid)
        .from(Queue)
        .to_owned();
    let cmds = Commands::delete_many()
        .filter(command::Column::Uuid.not_in_subquery(referenced))
        .filter(command::Column::CreatedAt.lt(cutoff))
        .exec(c)
        .await?
        .rows_affected;
    Ok((rows, cmds))
}

/// Hold a pending command back until `not_before` (and offer it again after a NotNow). False when it is not
/// pending for that channel.
pub async fn defer<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    command_uuid: &str,
    not_before: i64,
    now: i64,
) -> StorageResult<bool> {
    Ok(Queue::update_many()
        .col_expr(Column::Status, Expr::value(QueueStatus::Queued.as_str()))
        .col_expr(Column::NotBefore, Expr::value(not_before))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::CommandUuid.eq(command_uuid))
        .filter(Column::Status.is_in([QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()]))
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// Queue a copy of a finished command to one channel under `new_uuid`, delivered no sooner than
/// `not_before`. Returns false when the command was never queued to that channel.
pub async fn requeue_copy<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    command_uuid: &str,
    new_uuid: &str,
    not_before: i64,
    now: i64,
) -> StorageResult<bool> {
    let Some(item) = find_item(c, enrollment_id, command_uuid).await? else {
        return Ok(false);
    };
    let Some(cmd) = find_command(c, command_uuid).await? else {
        return Ok(false);
    };
    let env = CommandEnvelope::from_raw(&cmd.raw, || new_uuid.to_string())
        .and_then(|e| e.with_uuid(new_uuid))
        .map_err(|e| StorageError::Corrupt(format!("stored command {command_uuid}: {e}")))?;
    insert_command(c, &env, cmd.priority, &cmd.source, None, now).await?;
    let root = cmd.retry_of.clone().unwrap_or_else(|| cmd.uuid.clone());
    Commands::update_many()
        .col_expr(command::Column::RetryOf, Expr::value(root))
        .filter(command::Column::Uuid.eq(new_uuid))
        .exec(c)
        .await?;
    enqueue(
        c,
        &env.uuid,
        item.priority,
        None,
        &[enrollment_id.to_string()],
        now,
    )
    .await?;
    Queue::update_many()
        .col_expr(Column::NotBefore, Expr::value(not_before))
        .filter(Column::EnrollmentId.eq(enrollment_id))
        .filter(Column::CommandUuid.eq(new_uuid))
        .exec(c)
        .await?;
    Ok(true)
}

/// Withdraw the copies of `source`'s older commands still waiting, undelivered, on the channels `newer`
/// (a command of that source) was just queued to: it supersedes them (a DDM sync replaces the one still
/// waiting). The channels are read from `newer`'s own queue rows, so nothing is bound per channel and the
/// statement stays one semi-join however large the audience (a generic plan over thousands of bound ids
/// searches them row by row). The older commands go with retention once nothing references them.
pub async fn withdraw_superseded<C: ConnectionTrait>(
    c: &C,
    newer: &str,
    source: &str,
) -> StorageResult<u64> {
    use sea_orm::sea_query::Query;
    let channels = Query::select()
        .column(Column::EnrollmentId)
        .from(Queue)
        .and_where(Expr::col(Column::CommandUuid).eq(newer))
        .to_owned();
    // Correlated, so each waiting row's command is looked up by its key, never every command the source
    // ever queued.
    let from_source = Query::select()
        .expr(Expr::val(1))
        .from(Commands)
        .and_where(
            Expr::col((Commands, command::Column::Uuid)).equals((Queue, Column::CommandUuid)),
        )
        .and_where(Expr::col((Commands, command::Column::Source)).eq(source))
        .to_owned();
    let withdrawn = Queue::delete_many()
        .filter(Column::EnrollmentId.in_subquery(channels))
        .filter(Column::CommandUuid.ne(newer))
        .filter(Column::Status.eq(QueueStatus::Queued.as_str()))
        .filter(Column::DeliveredAt.is_null())
        .filter(Expr::exists(from_source))
        .exec(c)
        .await?
        .rows_affected;
    Ok(withdrawn)
}
