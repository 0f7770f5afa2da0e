//! The fast paths: messages answered with less than the whole pipeline, each under its rule.
//! - **Idle with nothing to do**: one read, no transaction ([`idle_needs_nothing`]).
//! - **First-TokenUpdate deferral**: when only plugins that hear a channel's first TokenUpdate listen, a
//!   repeated TokenUpdate is stored by one guarded UPDATE; a first one writes nothing and goes on to those
//!   plugins ([`CheckinService::repeated_token_update`]).
//! - **Last seen to the minute**: a device's and a channel's last-seen times are rewritten only when older
//!   than [`SEEN_RESOLUTION_MS`] ([`seen`]).

use super::{apply, authorize, CheckinError, CheckinService, MdmResponse};
use crate::identity::DeviceCert;
use crate::protocol::checkin::TokenUpdate;
use crate::protocol::{CheckinMessage, EnrollmentRef};
use crate::storage::checkin::{self as store, Seen, TokenUpdateGuard};
use crate::storage::checkin_state::{ChannelSeen, ChannelState};
use std::sync::Arc;

/// How stale a device's or channel's `last_seen_at` may get before a check-in rewrites it. Rewriting it on
/// every message would make each Idle a write; to the minute is what admins and plugins use it for.
pub const SEEN_RESOLUTION_MS: i64 = 60_000;

/// `seen` is within [`SEEN_RESOLUTION_MS`] of `now`: not worth a write.
fn seen_recently(now: i64, seen: i64) -> bool {
    now - seen < SEEN_RESOLUTION_MS
}

/// An Idle that finds nothing to deliver, no NotNow to re-offer, no push state to reset and last-seen
/// times within [`SEEN_RESOLUTION_MS`] needs no write: the commonest message a fleet sends.
pub(super) fn idle_needs_nothing(state: &ChannelState, channel: &ChannelSeen, now: i64) -> bool {
    let fresh = |seen: i64| seen_recently(now, seen);
    !state.has_queued
        && !state.has_not_now
        && channel.push_attempts == 0
        && fresh(channel.last_seen_at)
        && fresh(state.device_last_seen_at)
        && state.device_channel_last_seen_at.is_none_or(fresh)
}

/// When a device and its device channel were last seen, as read for this message (None: not read).
pub(super) struct LastSeen {
    pub device: Option<i64>,
    pub device_channel: Option<i64>,
}

/// Which last-seen times this message rewrites: its channel when `channel_next_push_at` is given (a
/// TokenUpdate records its channel itself), the device and (for a user channel) the device channel when
/// stale or unread.
pub(super) fn seen(
    e: &EnrollmentRef,
    last: LastSeen,
    now: i64,
    channel_next_push_at: Option<i64>,
) -> Seen {
    let stale = |seen: Option<i64>| !seen.is_some_and(|t| seen_recently(now, t));
    Seen {
        channel_next_push_at,
        device: stale(last.device),
        device_channel: e.id != e.device_id && stale(last.device_channel),
    }
}

impl CheckinService {
    /// The Idle fast path: answered from one point read when [`idle_needs_nothing`]. Refusals are the same
    /// as the full path's.
    pub(super) async fn idle_answered(
        &self,
        cert: &DeviceCert,
        e: &EnrollmentRef,
        now: i64,
    ) -> Result<bool, CheckinError> {
        let reads = self.storage.read();
        let (state, channel) = authorize::channel_state(&reads, cert.fingerprint(), e).await?;
        Ok(idle_needs_nothing(&state, &channel, now))
    }

    /// The first-TokenUpdate deferral: a TokenUpdate on a channel that has sent one since its device
    /// authenticated is stored (sender authorized, one guarded UPDATE) and answered. None when it is the
    /// channel's first: nothing was written, and the caller takes it to the plugins that hear it.
    pub(super) async fn repeated_token_update(
        &self,
        cert: &DeviceCert,
        msg: &Arc<CheckinMessage>,
        t: &TokenUpdate,
        now: i64,
    ) -> Result<Option<MdmResponse>, CheckinError> {
        let next_push_at = now + self.repush_interval_ms;
        let fingerprint = cert.fingerprint().to_string();
        let (msg, t) = (msg.clone(), t.clone());
        self.storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let e = &msg.enrollment;
                    let device = authorize::authorize(txn, &fingerprint, e).await?;
                    let guard = TokenUpdateGuard::Repeated;
                    if !apply::token_update(txn, e, &t, &msg.raw, guard, now, next_push_at).await? {
                        return Ok(None);
                    }
                    let last = LastSeen {
                        device: Some(device.last_seen_at),
                        device_channel: None,
                    };
                    store::seen(txn, e, seen(e, last, now, None), now).await?;
                    Ok::<_, CheckinError>(Some(MdmResponse::Empty))
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::device_channel;

    fn state(
        queued: bool,
        not_now: bool,
        device_seen: i64,
        device_channel_seen: Option<i64>,
    ) -> ChannelState {
        ChannelState {
            identity_fingerprint: Some("fp".into()),
            device_last_seen_at: device_seen,
            device_channel_last_seen_at: device_channel_seen,
            has_queued: queued,
            has_not_now: not_now,
            channel: None,
        }
    }

    fn channel(push_attempts: i32, last_seen_at: i64) -> ChannelSeen {
        ChannelSeen {
            push_attempts,
            last_seen_at,
        }
    }

    #[test]
    fn an_idle_needs_nothing_only_when_nothing_is_owed_and_everything_was_seen_within_a_minute() {
        let now = 10 * SEEN_RESOLUTION_MS;
        let recent = now - SEEN_RESOLUTION_MS + 1;
        let stale = now - SEEN_RESOLUTION_MS;
        assert!(idle_needs_nothing(
            &state(false, false, recent, None),
            &channel(0, recent),
            now
        ));
        assert!(idle_needs_nothing(
            &state(false, false, recent, Some(recent)),
            &channel(0, recent),
            now
        ));
        // Each reason to write, alone.
        assert!(!idle_needs_nothing(
            &state(true, false, recent, None),
            &channel(0, recent),
            now
        ));
        assert!(!idle_needs_nothing(
            &state(false, true, recent, None),
            &channel(0, recent),
            now
        ));
        assert!(!idle_needs_nothing(
            &state(false, false, recent, None),
            &channel(1, recent),
            now
        ));
        assert!(!idle_needs_nothing(
            &state(false, false, recent, None),
            &channel(0, stale),
            now
        ));
        assert!(!idle_needs_nothing(
            &state(false, false, stale, None),
            &channel(0, recent),
            now
        ));
        assert!(!idle_needs_nothing(
            &state(false, false, recent, Some(stale)),
            &channel(0, recent),
            now
        ));
    }

    #[test]
    fn last_seen_times_are_rewritten_when_stale_or_unread() {
        let now = 10 * SEEN_RESOLUTION_MS;
        let device = device_channel("UDID-1");
        let mut user = device_channel("UDID-1");
        user.id = "UDID-1:user".into();
        let fresh = LastSeen {
            device: Some(now - 1),
            device_channel: Some(now - 1),
        };
        let unread = || LastSeen {
            device: None,
            device_channel: None,
        };
        let s = seen(&device, fresh, now, Some(5));
        assert_eq!(
            (s.channel_next_push_at, s.device, s.device_channel),
            (Some(5), false, false)
        );
        let s = seen(&device, unread(), now, None);
        assert_eq!(
            (s.device, s.device_channel),
            (true, false),
            "a device channel is the channel itself"
        );
        let s = seen(&user, unread(), now, None);
        assert_eq!((s.device, s.device_channel), (true, true));
        let old = LastSeen {
            device: Some(now - SEEN_RESOLUTION_MS),
            device_channel: Some(now - 1),
        };
        let s = seen(&user, old, now, None);
        assert_eq!((s.device, s.device_channel), (true, false));
    }
}
