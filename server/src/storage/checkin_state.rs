//! Everything a command report needs to know about its sender before it writes anything, in one query:
//! the bound identity, the channel, when each was last seen, the push state and whether anything waits in
//! the queue. An Idle from a device with nothing pending is then answered without a write.

use super::entities::device::{self, Entity as Devices};
use super::entities::enrollment::{self, Entity as Enrollments};
use super::entities::queue_item::{self, Entity as Queue};
use super::point_reads::PointRead;
use super::queue::QueueStatus;
use super::StorageResult;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query, SelectStatement};

/// A device and one of its channels as a report finds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    /// The fingerprint bound at Authenticate.
    pub identity_fingerprint: Option<String>,
    pub device_last_seen_at: i64,
    /// None: the device never sent a TokenUpdate for this channel.
    pub channel: Option<ChannelSeen>,
    /// The device channel's last check-in (same as `channel` for the device channel).
    pub device_channel_last_seen_at: Option<i64>,
    /// A command waits (or was delivered and awaits its answer).
    pub has_queued: bool,
    /// A command was deferred with NotNow; an Idle offers it again.
    pub has_not_now: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSeen {
    pub last_seen_at: i64,
    pub push_attempts: i32,
}

/// None when the device is unknown. A point read: on every Idle.
pub async fn load<R: PointRead>(
    r: &R,
    device_id: &str,
    enrollment_id: &str,
) -> StorageResult<Option<ChannelState>> {
    let (ch, dc) = (Alias::new("ch"), Alias::new("dc"));
    let q = Query::select()
        .column((Devices, device::Column::IdentityFingerprint))
        .column((Devices, device::Column::LastSeenAt))
        .expr_as(
            Expr::col((ch.clone(), enrollment::Column::Id)),
            Alias::new("channel_id"),
        )
        .expr_as(
            Expr::col((ch.clone(), enrollment::Column::LastSeenAt)),
            Alias::new("channel_seen"),
        )
        .expr_as(
            Expr::col((ch.clone(), enrollment::Column::PushAttempts)),
            Alias::new("push_attempts"),
        )
        .expr_as(
            Expr::col((dc.clone(), enrollment::Column::LastSeenAt)),
            Alias::new("device_channel_seen"),
        )
        .expr_as(
            Expr::exists(pending(enrollment_id, QueueStatus::Queued)),
            Alias::new("has_queued"),
        )
        .expr_as(
            Expr::exists(pending(enrollment_id, QueueStatus::NotNow)),
            Alias::new("has_not_now"),
        )
        .from(Devices)
        .join_as(
            JoinType::LeftJoin,
            Enrollments,
            ch.clone(),
            // The channel must be this device's: a channel id never reaches another device's channel.
            Expr::col((ch.clone(), enrollment::Column::Id))
                .eq(enrollment_id)
                .and(
                    Expr::col((ch, enrollment::Column::DeviceId))
                        .equals((Devices, device::Column::Id)),
                ),
        )
        .join_as(
            JoinType::LeftJoin,
            Enrollments,
            dc.clone(),
            Expr::col((dc, enrollment::Column::Id)).equals((Devices, device::Column::Id)),
        )
        .and_where(Expr::col((Devices, device::Column::Id)).eq(device_id))
        .to_owned();
    r.one(&q, |row| {
        let channel = match row.get::<Option<String>>("channel_id")? {
            Some(_) => Some(ChannelSeen {
                last_seen_at: row.get("channel_seen")?,
                push_attempts: row.get("push_attempts")?,
            }),
            None => None,
        };
        Ok(ChannelState {
            identity_fingerprint: row.get("identity_fingerprint")?,
            device_last_seen_at: row.get("last_seen_at")?,
            channel,
            device_channel_last_seen_at: row.get("device_channel_seen")?,
            has_queued: row.get("has_queued")?,
            has_not_now: row.get("has_not_now")?,
        })
    })
    .await
}

fn pending(enrollment_id: &str, status: QueueStatus) -> SelectStatement {
    // Served by idx_queue_next (enrollment_id, status, ...).
    Query::select()
        .expr(Expr::val(1))
        .from(Queue)
        .and_where(Expr::col((Queue, queue_item::Column::EnrollmentId)).eq(enrollment_id))
        .and_where(Expr::col((Queue, queue_item::Column::Status)).eq(status.as_str()))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CommandEnvelope;
    use crate::storage::devices;
    use crate::storage::testing::{authenticated_device, device_channel, test_databases};
    use crate::storage::{enrollments, queue};

    #[tokio::test]
    async fn reports_identity_channel_and_queue_in_one_read() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            assert_eq!(load(db, "D1", "D1").await.unwrap(), None, "unknown device");
            authenticated_device(db, "D1", "fp1", Default::default(), 1_000)
                .await
                .unwrap();
            let st = load(db, "D1", "D1").await.unwrap().unwrap();
            assert_eq!(st.identity_fingerprint.as_deref(), Some("fp1"));
            assert_eq!(st.device_last_seen_at, 1_000);
            assert_eq!(st.channel, None, "no TokenUpdate yet");
            assert!(!st.has_queued && !st.has_not_now);

            let e = device_channel("D1");
            enrollments::ensure_device_channel(db, &e, 2_000)
                .await
                .unwrap();
            devices::touch(db, "D1", 3_000).await.unwrap();
            let st = load(db, "D1", "D1").await.unwrap().unwrap();
            assert_eq!(st.device_last_seen_at, 3_000);
            let ch = st.channel.clone().unwrap();
            assert_eq!((ch.last_seen_at, ch.push_attempts), (2_000, 0));
            assert_eq!(st.device_channel_last_seen_at, Some(2_000));
            let user = load(db, "D1", "U1").await.unwrap().unwrap();
            assert_eq!(
                user.channel, None,
                "another channel is looked up by its own id"
            );

            let env = CommandEnvelope::from_raw(
                br#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>Command</key><dict><key>RequestType</key><string>ProfileList</string></dict><key>CommandUUID</key><string>C1</string></dict></plist>"#,
                || unreachable!(),
            )
            .unwrap();
            queue::insert_command(db, &env, 0, "test", None, 4_000)
                .await
                .unwrap();
            queue::enqueue(db, "C1", 0, None, &["D1".to_string()], 4_000)
                .await
                .unwrap();
            let st = load(db, "D1", "D1").await.unwrap().unwrap();
            assert!(st.has_queued && !st.has_not_now);
            queue::record_report(db, "D1", "C1", queue::QueueStatus::NotNow, b"", "{}", 5_000)
                .await
                .unwrap();
            let st = load(db, "D1", "D1").await.unwrap().unwrap();
            assert!(!st.has_queued && st.has_not_now);
            assert!(!load(db, "D1", "U1").await.unwrap().unwrap().has_not_now);
            tdb.cleanup().await;
        }
    }
}
