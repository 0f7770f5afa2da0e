//! Housekeeping: expiry and retention in one round (command TTLs, finished rows, delivered events, plugin
//! keys, used secrets, expired SCEP challenges), run by one replica at a time.

use super::{locks, outbox, plugin_kv, queue, secrets, Storage, StorageError, StorageResult};
use sea_orm::{ConnectionTrait, DbBackend};

/// What one housekeeping round removed or expired.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HousekeepingRound {
    pub expired_kv: u64,
    pub expired_secrets: u64,
    /// SCEP challenges that expired unused (deleted as soon as they expire, not after retention).
    pub expired_challenges: u64,
    pub delivered_events: u64,
    pub expired: u64,
    pub purged_rows: u64,
    pub purged_commands: u64,
}

/// One round at `now`, deleting what finished more than `retention_days` before it; None when another
/// replica holds the job's lock. On PostgreSQL the round is one transaction holding the `Housekeeping`
/// advisory lock, so replicas never run it at the same time and a round cut short (the process killed)
/// changes nothing. SQLite has a single writer: the steps run one statement at a time, so check-ins are not
/// held behind the whole round.
pub async fn run(
    storage: &Storage,
    now: i64,
    retention_days: u32,
) -> StorageResult<Option<HousekeepingRound>> {
    let cutoff = now - i64::from(retention_days) * 86_400_000;
    if storage.backend() != DbBackend::Postgres {
        return steps(storage.db(), now, cutoff).await.map(Some);
    }
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                if !locks::try_job_lock(txn, locks::Job::Housekeeping).await? {
                    return Ok::<_, StorageError>(None);
                }
                steps(txn, now, cutoff).await.map(Some)
            })
        })
        .await
}

async fn steps<C: ConnectionTrait>(
    c: &C,
    now: i64,
    cutoff: i64,
) -> StorageResult<HousekeepingRound> {
    let expired_kv = plugin_kv::purge_expired(c, now).await?;
    let expired_secrets = secrets::purge(c, cutoff).await?;
    let expired_challenges = secrets::purge_expired_challenges(c, now).await?;
    let delivered_events = outbox::purge_delivered(c, cutoff).await?;
    let expired = queue::expire(c, now).await?;
    let (purged_rows, purged_commands) = queue::purge_finished(c, cutoff).await?;
    Ok(HousekeepingRound {
        expired_kv,
        expired_secrets,
        expired_challenges,
        delivered_events,
        expired,
        purged_rows,
        purged_commands,
    })
}
