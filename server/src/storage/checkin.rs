//! What each check-in message writes: one function per message whose write spans several repositories (a
//! single write, as SetBootstrapToken's, is its repository's own), taking plain values and returning
//! [`StorageError`]. `checkin` decides which to call and composes them, with its plugins' actions, into the
//! message's one transaction; nothing here decides who may act.

use super::audit_log::{self, NewEntry};
use super::devices::{self, AuthenticateFacts, DeviceFacts};
use super::enrollments::{self, TokenUpdateFacts};
use super::queue::{self, QueueStatus, ReportOutcome};
use super::{issued_certs, StorageResult};
use crate::protocol::checkin::TokenUpdate;
use crate::protocol::{EnrollmentKind, EnrollmentRef};
use sea_orm::ConnectionTrait;

/// Authenticate of a device whose identity may act for it (checked by the caller).
pub struct AuthenticateRecord {
    pub facts: AuthenticateFacts,
    /// The source of the commands that asked for this identity (renewal profiles). A renewal keeps the
    /// queue but completes those: their work is done, and one whose acknowledgement was lost must not be
    /// offered again with its used challenge. Anything else cancels every pending command.
    pub renewal_commands_source: &'static str,
}

/// Bind the identity to the device and reset its enrollment: every channel disabled until its
/// TokenUpdate, the queue canceled (or, for a renewal, kept). Returns how many commands were canceled.
pub async fn authenticate<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    rec: AuthenticateRecord,
    now: i64,
) -> StorageResult<u64> {
    let fingerprint = rec.facts.identity_fingerprint.clone();
    let renewal = rec.facts.renewal;
    let serial_number = rec.facts.facts.serial_number.clone();
    // The certificate's row first, then the device's: the order a revocation locks them in, so the two
    // cannot deadlock on PostgreSQL.
    issued_certs::bind_device(c, &fingerprint, &e.device_id).await?;
    devices::upsert_authenticated(c, &e.device_id, rec.facts, now).await?;
    devices::clear_reenrollment(c, &e.device_id).await?;
    enrollments::ensure_device_channel(c, e, now).await?;
    enrollments::reset_device(c, &e.device_id, now).await?;
    let canceled = if renewal {
        queue::complete_pending_from(c, &e.device_id, rec.renewal_commands_source, now).await?;
        0
    } else {
        let channels: Vec<String> = enrollments::for_device(c, &e.device_id)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        // A device enrolling afresh starts clean: no sets, no reported status.
        super::ddm::forget_enrollments(c, &channels).await?;
        super::profiles::forget(c, std::slice::from_ref(&e.device_id)).await?;
        queue::cancel_pending(c, &channels, None, now).await?
    };
    // After the facts are stored and any reported status forgotten: the groups see what is now known.
    super::groups::refresh_device(c, &e.device_id, now).await?;
    let detail = serde_json::json!({
        "serial_number": serial_number,
        "identity_fingerprint": fingerprint,
        "renewal": renewal,
        "canceled_commands": canceled,
    });
    audit_device(c, e, "enrollment.authenticate", &e.device_id, detail, now).await?;
    Ok(canceled)
}

/// Which TokenUpdates [`token_update`] stores; the others write nothing and return None.
#[derive(Debug, Clone, Copy)]
pub enum TokenUpdateGuard<'a> {
    /// Any: a channel not stored yet is created. A channel id of another device or kind is a `Conflict`.
    Any,
    /// One on a known channel of a device still bound to this identity fingerprint (one statement that
    /// checks the identity itself).
    BoundTo(&'a str),
    /// One on a channel that has sent a TokenUpdate since its device authenticated.
    Repeated,
}

/// Store a TokenUpdate and enable the channel, which is seen `now` with push attempts restarted and no
/// push owed before `next_push_at`; a device channel's UnlockToken is escrowed. Returns the channel's
/// TokenUpdate count after this one, or None when `guard` refused it (nothing written).
pub async fn token_update<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    t: &TokenUpdate,
    raw: &[u8],
    guard: TokenUpdateGuard<'_>,
    now: i64,
    next_push_at: i64,
) -> StorageResult<Option<i32>> {
    let facts = TokenUpdateFacts {
        topic: t.topic.clone(),
        push_magic: t.push_magic.clone(),
        token: t.token.clone(),
        awaiting_configuration: t.awaiting_configuration,
        raw: raw.to_vec(),
    };
    let next = Some(next_push_at);
    let count = match guard {
        TokenUpdateGuard::Any => {
            Some(enrollments::apply_token_update(c, e, facts, now, next).await?)
        }
        TokenUpdateGuard::BoundTo(fp) => {
            enrollments::apply_token_update_if_bound(c, e, &facts, fp, now, next).await?
        }
        TokenUpdateGuard::Repeated => {
            enrollments::apply_token_update_if_repeated(c, e, &facts, now, next).await?
        }
    };
    if count.is_some() && matches!(e.kind, EnrollmentKind::Device) {
        if let Some(unlock) = &t.unlock_token {
            devices::set_unlock_token(c, &e.device_id, unlock.clone(), now).await?;
        }
    }
    Ok(count)
}

/// CheckOut: a user channel is disabled; on the device channel the whole device is, and remembered as
/// checked out (it may then enroll again with a new identity).
pub async fn checkout<C: ConnectionTrait>(c: &C, e: &EnrollmentRef, now: i64) -> StorageResult<()> {
    let unenrolled: Vec<String> = if e.kind.is_user_channel() {
        enrollments::disable(c, &e.id, now).await?;
        vec![e.id.clone()]
    } else {
        enrollments::disable_device(c, &e.device_id, now).await?;
        devices::mark_checked_out(c, &e.device_id, now).await?;
        super::profiles::forget(c, std::slice::from_ref(&e.device_id)).await?;
        let channels = enrollments::for_device(c, &e.device_id).await?;
        channels.into_iter().map(|c| c.id).collect()
    };
    super::ddm::forget_enrollments(c, &unenrolled).await?;
    let detail = serde_json::json!({});
    audit_device(c, e, "enrollment.checkout", &e.id, detail, now).await
}

/// A command's result as the device reported it.
pub struct CommandResult<'a> {
    pub command_uuid: &'a str,
    pub status: QueueStatus,
    pub raw: &'a [u8],
    pub json: String,
    /// What the result says of the device (a DeviceInformation answer's QueryResponses, when well formed).
    pub facts: Option<DeviceFacts>,
}

/// Record a result against its pending command. An acknowledged DeviceInformation refreshes what is known
/// of the device, and so its dynamic groups: the membership changes are returned with the outcome (the
/// caller syncs what they change). Unknown and repeated results change nothing (the outcome says which).
pub async fn command_result<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    r: CommandResult<'_>,
    now: i64,
) -> StorageResult<Recorded> {
    let (outcome, finished) =
        queue::record_report(c, &e.id, r.command_uuid, r.status, r.raw, &r.json, now).await?;
    let mut recorded = Recorded {
        outcome,
        memberships: Vec::new(),
        finished,
    };
    if let (ReportOutcome::Recorded, QueueStatus::Acknowledged, Some(facts)) =
        (outcome, r.status, r.facts)
    {
        let is_device_information =
            (recorded.finished.as_ref()).is_some_and(|f| f.request_type == "DeviceInformation");
        if is_device_information {
            devices::update_facts(c, &e.device_id, facts, now).await?;
            recorded.memberships = super::groups::refresh_device(c, &e.device_id, now).await?;
        }
    }
    Ok(recorded)
}

/// What recording a command's result did.
#[derive(Debug)]
pub struct Recorded {
    pub outcome: ReportOutcome,
    /// Group memberships the facts it taught changed.
    pub memberships: Vec<super::groups::Change>,
    /// The command, when this result was its final one.
    pub finished: Option<queue::Finished>,
}

/// Which last-seen times a message rewrites (each one a statement; see `checkin::fast_paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// This channel is seen now with push attempts restarted and no push owed before this time (None: the
    /// caller recorded it already, as a TokenUpdate does).
    pub channel_next_push_at: Option<i64>,
    pub device: bool,
    /// The device channel, for a message that came on a user channel.
    pub device_channel: bool,
}

/// The sender is here.
pub async fn seen<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    s: Seen,
    now: i64,
) -> StorageResult<()> {
    if let Some(next_push_at) = s.channel_next_push_at {
        enrollments::checked_in(c, &e.id, now, next_push_at).await?;
    }
    if s.device {
        devices::touch(c, &e.device_id, now).await?;
    }
    if s.device_channel {
        enrollments::touch(c, &e.device_id, now).await?;
    }
    Ok(())
}

/// An audit entry of the device's own doing (its enrollment's life).
async fn audit_device<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    now: i64,
) -> StorageResult<()> {
    let actor = format!("device:{}", e.device_id);
    let entry = NewEntry::new(now, actor, action, Some(target), detail);
    audit_log::append(c, vec![entry]).await?;
    Ok(())
}
