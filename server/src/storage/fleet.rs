//! Fleet-wide figures for the metrics gauges: the pending queue and how recently devices were seen. Each
//! is one aggregate query, so a round costs two scans however large the fleet.

use super::entities::device::{Column as Device, Entity as Devices};
use super::entities::queue_item::{Column as Queue, Entity as Queued};
use super::queue::QueueStatus;
use super::StorageResult;
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query, SelectStatement, SimpleExpr};
use sea_orm::ConnectionTrait;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// How long ago devices were last seen: the upper bounds of the buckets, newest first. A device seen
/// earlier than the last is `older`.
pub const LAST_SEEN_BUCKETS: [(&str, i64); 4] = [
    ("1h", HOUR_MS),
    ("24h", DAY_MS),
    ("7d", 7 * DAY_MS),
    ("30d", 30 * DAY_MS),
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFigures {
    /// Commands queued to a channel and not finished (queued or NotNow'd).
    pub commands_pending: i64,
    /// Of those, the ones enqueued more than an hour ago.
    pub commands_pending_over_1h: i64,
    /// Enrolled devices (not checked out) by bucket, disjoint: `1h`, `24h`, `7d`, `30d`, `older`.
    pub devices_by_last_seen: Vec<(&'static str, i64)>,
}

pub async fn figures<C: ConnectionTrait>(c: &C, now: i64) -> StorageResult<FleetFigures> {
    let pending = [QueueStatus::Queued.as_str(), QueueStatus::NotNow.as_str()];
    let queue = Query::select()
        .expr(Func::count(Expr::col(Queue::Id)))
        .expr(count_where(Expr::col(Queue::CreatedAt).lt(now - HOUR_MS)))
        .from(Queued)
        .and_where(Expr::col(Queue::Status).is_in(pending))
        .to_owned();
    let [commands_pending, commands_pending_over_1h] = counts(c, &queue).await?;
    let mut devices = Query::select();
    devices.expr(Func::count(Expr::col(Device::Id)));
    for (_, within) in LAST_SEEN_BUCKETS {
        devices.expr(count_where(Expr::col(Device::LastSeenAt).gte(now - within)));
    }
    devices
        .from(Devices)
        .and_where(Expr::col(Device::CheckedOutAt).is_null());
    let [all, seen @ ..]: [i64; 5] = counts(c, &devices).await?;
    Ok(FleetFigures {
        commands_pending,
        commands_pending_over_1h,
        devices_by_last_seen: disjoint(all, seen),
    })
}

/// Cumulative counts (seen within 1h, within 24h, ...) as disjoint buckets, and the rest as `older`.
fn disjoint(all: i64, seen: [i64; 4]) -> Vec<(&'static str, i64)> {
    let mut out = Vec::with_capacity(seen.len() + 1);
    let mut below = 0;
    for ((name, _), within) in LAST_SEEN_BUCKETS.iter().zip(seen) {
        out.push((*name, within - below));
        below = within;
    }
    out.push(("older", all - below));
    out
}

/// `SUM(CASE WHEN cond THEN 1 ELSE 0 END)`: rows matching `cond`, in the same scan as the others.
fn count_where(cond: SimpleExpr) -> SimpleExpr {
    let matching: SimpleExpr = Func::sum(Expr::case(cond, 1).finally(0)).into();
    Func::coalesce([matching, Expr::val(0)]).into()
}

/// The one row of an aggregate query, every column read as a count.
async fn counts<C: ConnectionTrait, const N: usize>(
    c: &C,
    q: &SelectStatement,
) -> StorageResult<[i64; N]> {
    let stmt = c.get_database_backend().build(q);
    let row = c.query_one_raw(stmt).await?;
    let mut out = [0; N];
    if let Some(row) = row {
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = row.try_get_by_index::<i64>(i)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CommandEnvelope;
    use crate::storage::testing::{authenticated_device, device_channel, test_databases};
    use crate::storage::{enrollments, queue};

    fn command(uuid: &str) -> CommandEnvelope {
        let plist = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict><key>CommandUUID</key><string>{uuid}</string></dict></plist>"#
        );
        CommandEnvelope::from_raw(plist.as_bytes(), || unreachable!()).unwrap()
    }

    #[tokio::test]
    async fn pending_commands_and_devices_by_last_seen_are_counted_once_each() {
        let now = 100 * DAY_MS;
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            assert_eq!(
                figures(db, now).await.unwrap(),
                FleetFigures {
                    devices_by_last_seen: disjoint(0, [0; 4]),
                    ..Default::default()
                },
                "an empty fleet"
            );
            // Seen 10 minutes, 2 hours, 3 days, 10 days and 60 days ago; the last one checked out.
            let ago = [
                10 * 60_000,
                2 * HOUR_MS,
                3 * DAY_MS,
                10 * DAY_MS,
                60 * DAY_MS,
            ];
            for (i, ago) in ago.iter().enumerate() {
                let id = format!("D{i}");
                authenticated_device(db, &id, &format!("fp{i}"), Default::default(), now - ago)
                    .await
                    .unwrap();
                enrollments::ensure_device_channel(db, &device_channel(&id), now - ago)
                    .await
                    .unwrap();
            }
            authenticated_device(db, "OUT", "fpx", Default::default(), now)
                .await
                .unwrap();
            crate::storage::devices::mark_checked_out(db, "OUT", now)
                .await
                .unwrap();
            // Two pending (one for two hours), one NotNow'd (pending too), one finished.
            for (uuid, at) in [
                ("C1", now - 2 * HOUR_MS),
                ("C2", now),
                ("C3", now),
                ("C4", now),
            ] {
                queue::insert_command(db, &command(uuid), 0, "test", None, at)
                    .await
                    .unwrap();
                queue::enqueue(db, uuid, 0, None, &["D0".to_string()], at)
                    .await
                    .unwrap();
            }
            let (ack, not_now) = (QueueStatus::Acknowledged, QueueStatus::NotNow);
            queue::record_report(db, "D0", "C3", not_now, b"", "{}", now)
                .await
                .unwrap();
            queue::record_report(db, "D0", "C4", ack, b"", "{}", now)
                .await
                .unwrap();

            let f = figures(db, now).await.unwrap();
            assert_eq!((f.commands_pending, f.commands_pending_over_1h), (3, 1));
            assert_eq!(
                f.devices_by_last_seen,
                vec![("1h", 1), ("24h", 1), ("7d", 1), ("30d", 1), ("older", 1)]
            );
            tdb.cleanup().await;
        }
    }
}
