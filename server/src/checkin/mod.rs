//! Apple's check-in and command-report semantics, each message applied in one storage transaction.
//!
//! The HTTP layer hands over the device's identity certificate (already verified against the body, or taken
//! from TLS or a trusted proxy) and the raw body; everything below is independent of HTTP.

use crate::clock::SharedClock;
use crate::config::UserAuthenticatePolicy;
use crate::enroll::RENEWAL_COMMAND_SOURCE;
use crate::identity::{DeviceCert, IdentityError};
use crate::metrics::Metrics;
use crate::plugins::{
    self, convert, CheckinMessageKind, EventScope, Hook, HookInput, HookRun, LoadedPlugin,
    PluginHost,
};
use crate::protocol::checkin::{Authenticate, TokenUpdate};
use crate::protocol::{
    plist_json, to_xml, CheckinMessage, CheckinPayload, CommandReport, EnrollmentKind,
    EnrollmentRef, ProtocolError, ReportStatus,
};
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::checkin_state::{self, ChannelSeen, ChannelState};
use crate::storage::devices::{self, AuthenticateFacts, Device, DeviceFacts};
use crate::storage::enrollments::{self, TokenUpdateFacts};
use crate::storage::queue::{self, QueueStatus, ReportOutcome};
use crate::storage::{event_subject, issued_certs, PointRead, Storage, StorageError};
use plist::{Dictionary, Value};
use sea_orm::ConnectionTrait;
use std::sync::Arc;

/// What to send back to the device.
#[derive(Debug, Clone, PartialEq)]
pub enum MdmResponse {
    /// 200 with an empty body.
    Empty,
    /// 200 with a plist body.
    Plist(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    // Refusals about who may act for an enrollment share one text: the device learns that it was refused,
    // not what is stored (whether a UDID is enrolled, which serial number it is bound to). Details are in
    // the variants' fields and the log.
    #[error("{REFUSED}")]
    UnknownDevice(String),
    #[error("{REFUSED}")]
    UnknownEnrollment(String),
    #[error("{REFUSED}")]
    IdentityMismatch(String),
    #[error("{REFUSED}")]
    CertificateBoundElsewhere,
    #[error("{REFUSED}")]
    SerialMismatch {
        device: String,
        bound: String,
        presented: String,
    },
    /// A known device presented a new identity without a renewal, an admin's allowance or a check-out.
    #[error("{REFUSED}")]
    ReenrollmentRefused(String),
    /// The identity was issued against a token pinned to another serial number.
    #[error("{REFUSED}")]
    IssuedForAnotherDevice(String),
    #[error("Authenticate must come on the device channel")]
    AuthenticateOnUserChannel,
    #[error("UserAuthenticate is declined by this server")]
    UserAuthenticateDeclined,
    #[error("{0} is not supported by this server yet")]
    Unsupported(&'static str),
    #[error("{0}")]
    EnrollmentDenied(String),
    #[error("the identity certificate has been revoked")]
    CertificateRevoked,
    #[error("{0}")]
    PluginRefused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a device is told when its identity may not act for the enrollment it names.
const REFUSED: &str = "this identity certificate may not act for this enrollment";

impl From<sea_orm::DbErr> for CheckinError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

pub struct CheckinService {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    user_authenticate: UserAuthenticatePolicy,
    plugins: Arc<PluginHost>,
    repush_interval_ms: i64,
}

impl CheckinService {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        user_authenticate: UserAuthenticatePolicy,
        plugins: Arc<PluginHost>,
        repush_interval_ms: i64,
    ) -> Self {
        Self {
            storage,
            clock,
            metrics,
            user_authenticate,
            plugins,
            repush_interval_ms,
        }
    }

    /// Plugins run before the transaction (their key-value and inventory calls use the database, and SQLite
    /// has one connection); a fail-closed refusal is audited on its own and stops the message.
    async fn refuse_if(&self, run: &mut HookRun) -> Result<(), CheckinError> {
        if let Some(reason) = run.refused.take() {
            crate::storage::plugin_audit::insert_many(
                &self.storage,
                std::mem::take(&mut run.audit),
            )
            .await?;
            tracing::warn!(%reason, "refused by plugin policy");
            return Err(CheckinError::PluginRefused(reason));
        }
        Ok(())
    }

    /// Run the plugins that hear a check-in; a fail-closed refusal stops the message.
    async fn hear(
        &self,
        listeners: &[Arc<LoadedPlugin>],
        event: plugins::types::CheckinEvent,
        scope: EventScope<'_>,
    ) -> Result<HookRun, CheckinError> {
        let input = HookInput::Checkin(event);
        let mut run = (self.plugins)
            .run_on(listeners, Hook::OnCheckin, input, scope)
            .await;
        self.refuse_if(&mut run).await?;
        Ok(run)
    }

    /// A check-in message (Authenticate, TokenUpdate, ...).
    pub async fn checkin(
        &self,
        cert: &DeviceCert,
        body: &[u8],
    ) -> Result<MdmResponse, CheckinError> {
        let msg = match CheckinMessage::decode(body) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.checkin("invalid", "400");
                return Err(e.into());
            }
        };
        let kind = msg.payload.message_type();
        let res = self.apply_checkin(cert, msg).await;
        self.metrics.checkin(kind, outcome(&res));
        res
    }

    async fn apply_checkin(
        &self,
        cert: &DeviceCert,
        msg: CheckinMessage,
    ) -> Result<MdmResponse, CheckinError> {
        let now = self.clock.now_ms();
        let e = &msg.enrollment;
        if let CheckinPayload::Authenticate(a) = &msg.payload {
            return self.authenticate(cert, e, a, &msg.raw, now).await;
        }
        if let CheckinPayload::DeclarativeManagement { .. } = msg.payload {
            return Err(CheckinError::Unsupported("DeclarativeManagement"));
        }
        if let CheckinPayload::GetToken { .. } = msg.payload {
            return Err(CheckinError::Unsupported("GetToken"));
        }
        let event_id = plugins::new_event_id();
        let is_token_update = matches!(msg.payload, CheckinPayload::TokenUpdate(_));
        let msg = Arc::new(msg);
        let hearing =
            |first| (self.plugins).hearing_checkin(convert::checkin_message(&msg.payload, first));
        let every_time = hearing(false);
        if every_time.is_empty() {
            // No plugin hears this message, unless it is a channel's first TokenUpdate: store it as if
            // there were no plugins, except that first one, which is handed back (nothing written) for
            // the plugins that hear it. A plugin that acts on enrollment then costs no other check-in.
            let first_heard = is_token_update && !hearing(true).is_empty();
            let none = HookRun::default();
            let stored = self
                .store(cert, msg.clone(), None, none, now, &event_id, first_heard)
                .await?;
            if let Some(response) = stored {
                return Ok(response);
            }
        }
        let e = &msg.enrollment;
        // One point read off the writer for the plugins' event. The transaction checks the identity
        // again; a TokenUpdate's does so in its one UPDATE, so with plugins it still reads nothing itself.
        // Without plugins the read stays in the transaction: there it costs less than a point read before
        // it (measured with point reads on the calling thread too, BENCHMARKS.md, session 15).
        let subject = identified(
            event_subject::load(&self.storage.read(), &e.device_id, &e.id).await?,
            |s| s.identity_fingerprint.as_deref(),
            cert.fingerprint(),
            e,
        )?;
        let sender_seen_at = subject.last_seen_at;
        let (count, awaiting, first) = match &msg.payload {
            CheckinPayload::TokenUpdate(t) => {
                let before = subject.token_update_count.unwrap_or(0);
                (
                    Some(before as u32 + 1),
                    t.awaiting_configuration,
                    before == 0,
                )
            }
            _ => (None, None, false),
        };
        let listeners = if first { hearing(true) } else { every_time };
        let mut run = HookRun::default();
        if !listeners.is_empty() {
            let event = plugins::types::CheckinEvent {
                event_id: event_id.clone(),
                kind: convert::checkin_kind(&msg.payload),
                enrollment: convert::enrollment(e),
                device: convert::device_facts(subject.device),
                token_update_count: count,
                awaiting_configuration: awaiting,
                raw: Some(msg.raw.clone()),
            };
            run = self.hear(&listeners, event, scope_of(e, &event_id)).await?;
        }
        let seen_at = Some(sender_seen_at);
        let stored = self
            .store(cert, msg.clone(), seen_at, run, now, &event_id, false)
            .await?;
        stored.ok_or_else(|| {
            let why = "a TokenUpdate was handed back when it had to be stored";
            CheckinError::Storage(StorageError::Corrupt(why.into()))
        })
    }

    /// Store a check-in message and its plugins' actions in one transaction. `sender_seen_at`: the sender
    /// as the plugins' event read found it, identity checked; with it, a TokenUpdate on a known channel is
    /// one statement. With `defer_first`, a channel's first TokenUpdate is not stored: None hands it back.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        cert: &DeviceCert,
        msg: Arc<CheckinMessage>,
        sender_seen_at: Option<i64>,
        run: HookRun,
        now: i64,
        event_id: &str,
        defer_first: bool,
    ) -> Result<Option<MdmResponse>, CheckinError> {
        let is_token_update = matches!(msg.payload, CheckinPayload::TokenUpdate(_));
        let next_push_at = now + self.repush_interval_ms;
        let plugins = self.plugins.clone();
        let policy = self.user_authenticate;
        let fingerprint = cert.fingerprint().to_string();
        let event_id = event_id.to_string();
        let stored = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let e = &msg.enrollment;
                    // A TokenUpdate on a known channel is one statement that checks the identity itself.
                    let stored = match (&msg.payload, sender_seen_at) {
                        (CheckinPayload::TokenUpdate(t), Some(_)) => {
                            let only = Only::BoundTo(&fingerprint);
                            token_update(txn, e, t, &msg.raw, now, next_push_at, only).await?
                        }
                        _ => false,
                    };
                    let (response, device_seen_at) = if stored {
                        (MdmResponse::Empty, sender_seen_at)
                    } else {
                        let device = authorize(txn, &fingerprint, e).await?;
                        let response = match &msg.payload {
                            CheckinPayload::TokenUpdate(t) if defer_first => {
                                let only = Only::Repeated;
                                if !token_update(txn, e, t, &msg.raw, now, next_push_at, only)
                                    .await?
                                {
                                    return Ok(None);
                                }
                                MdmResponse::Empty
                            }
                            _ => {
                                apply_message(txn, &msg, &device, policy, now, next_push_at).await?
                            }
                        };
                        (response, Some(device.last_seen_at))
                    };
                    let last = LastSeen {
                        device: device_seen_at,
                        device_channel: None,
                    };
                    // A TokenUpdate has recorded its channel already.
                    let channel = (!is_token_update).then_some(next_push_at);
                    seen(txn, e, last, now, channel).await?;
                    let scope = scope_of(e, &event_id);
                    let events = plugins
                        .apply(txn, run, Hook::OnCheckin.as_str(), scope, now)
                        .await?;
                    Ok::<_, CheckinError>(Some((response, events)))
                })
            })
            .await?;
        Ok(stored.map(|(response, events)| {
            self.plugins.events_committed(events);
            response
        }))
    }

    /// Bind the identity to the device, reset the enrollment: every channel disabled until TokenUpdate and
    /// every pending command canceled.
    async fn authenticate(
        &self,
        cert: &DeviceCert,
        e: &EnrollmentRef,
        a: &Authenticate,
        raw: &[u8],
        now: i64,
    ) -> Result<MdmResponse, CheckinError> {
        if e.kind.is_user_channel() {
            return Err(CheckinError::AuthenticateOnUserChannel);
        }
        enrollment_checks(&self.storage.read(), cert.fingerprint(), e, a, now).await?;
        let platform = a.facts.platform();
        let event_id = plugins::new_event_id();
        let scope = scope_of(e, &event_id);
        let wit_facts = convert::facts(&a.facts, platform);
        let mut decision = self
            .plugins
            .decide_enrollment(
                HookInput::Enrollment(plugins::types::EnrollmentRequest {
                    event_id: event_id.clone(),
                    enrollment: convert::enrollment(e),
                    device: wit_facts.clone(),
                    identity_fingerprint: cert.fingerprint().to_string(),
                    raw: Some(raw.to_vec()),
                }),
                scope,
            )
            .await;
        if let Some(reason) = decision.refused.take() {
            // Nothing of the enrollment is stored; the decision is.
            crate::storage::plugin_audit::insert_many(&self.storage, decision.audit).await?;
            tracing::warn!(device = %e.device_id, %reason, "enrollment denied");
            return Err(CheckinError::EnrollmentDenied(reason));
        }
        let mut run = HookRun::default();
        let listeners = (self.plugins).hearing_checkin(CheckinMessageKind::Authenticate);
        if !listeners.is_empty() {
            let event = plugins::types::CheckinEvent {
                event_id: event_id.clone(),
                kind: plugins::types::CheckinKind::Authenticate,
                enrollment: convert::enrollment(e),
                device: wit_facts,
                token_update_count: None,
                awaiting_configuration: None,
                raw: Some(raw.to_vec()),
            };
            run = self.hear(&listeners, event, scope).await?;
        }
        let plugins = self.plugins.clone();
        let fingerprint = cert.fingerprint().to_string();
        let subject = cert.subject()?;
        let not_after = cert.not_after_unix().ok().map(|s| s * 1000);
        let (e_owned, a_owned, raw) = (e.clone(), a.clone(), raw.to_vec());
        let (canceled, renewal, events) = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let (e, a) = (&e_owned, &a_owned);
                    let renewal = enrollment_checks(txn, &fingerprint, e, a, now).await?;
                    let facts = AuthenticateFacts {
                        facts: a.facts.clone(),
                        identity_fingerprint: fingerprint.clone(),
                        identity_subject: subject,
                        identity_not_after: not_after,
                        raw,
                        renewal,
                    };
                    // The certificate's row first, then the device's: the order a revocation locks
                    // them in, so the two cannot deadlock on PostgreSQL.
                    issued_certs::bind_device(txn, &fingerprint, &e.device_id).await?;
                    devices::upsert_authenticated(txn, &e.device_id, facts, now).await?;
                    devices::clear_reenrollment(txn, &e.device_id).await?;
                    enrollments::ensure_device_channel(txn, e, now).await?;
                    enrollments::reset_device(txn, &e.device_id, now).await?;
                    let channels: Vec<String> = enrollments::for_device(txn, &e.device_id)
                        .await?
                        .into_iter()
                        .map(|c| c.id)
                        .collect();
                    // A renewed identity keeps the queue (the renewal profile itself may still await
                    // its result).
                    let canceled = if renewal {
                        // The renewal profile did its work; if its acknowledgement was lost, it must
                        // not be offered again with its used challenge.
                        queue::complete_pending_from(
                            txn,
                            &e.device_id,
                            RENEWAL_COMMAND_SOURCE,
                            now,
                        )
                        .await?;
                        0
                    } else {
                        queue::cancel_pending(txn, &channels, None, now).await?
                    };
                    let detail = serde_json::json!({
                        "serial_number": a.facts.serial_number,
                        "identity_fingerprint": fingerprint,
                        "renewal": renewal,
                        "canceled_commands": canceled,
                    });
                    audit_device(txn, e, "enrollment.authenticate", &e.device_id, detail, now)
                        .await?;
                    let scope = scope_of(e, &event_id);
                    let mut events = plugins
                        .apply(txn, decision, Hook::DecideEnrollment.as_str(), scope, now)
                        .await?;
                    events.extend(
                        plugins
                            .apply(txn, run, Hook::OnCheckin.as_str(), scope, now)
                            .await?,
                    );
                    Ok::<_, CheckinError>((canceled, renewal, events))
                })
            })
            .await?;
        self.plugins.events_committed(events);
        tracing::info!(device = %e.device_id, serial = ?a.facts.serial_number, canceled, renewal, "device authenticated");
        Ok(MdmResponse::Empty)
    }

    /// A command report (Idle or a command's result); answers with the next command, if any.
    pub async fn report(
        &self,
        cert: &DeviceCert,
        body: &[u8],
    ) -> Result<MdmResponse, CheckinError> {
        let report = match CommandReport::decode(body) {
            Ok(r) => r,
            Err(e) => {
                self.metrics.report("invalid");
                return Err(e.into());
            }
        };
        self.metrics.report(report.status.as_str());
        let now = self.clock.now_ms();
        let e = &report.enrollment;
        if report.status == ReportStatus::Idle && self.idle_needs_nothing(cert, e, now).await? {
            return Ok(MdmResponse::Empty);
        }
        let event_id = plugins::new_event_id();
        let scope = scope_of(e, &event_id);
        let mut run = HookRun::default();
        if let (Some(status), false) = (
            convert::command_status(report.status),
            self.plugins.subscribed(Hook::OnCommandResult).is_empty(),
        ) {
            if let Some(event) = self.result_event(cert, &report, status, &event_id).await? {
                run = self
                    .plugins
                    .run_hook(
                        Hook::OnCommandResult,
                        HookInput::CommandResult(event),
                        scope,
                    )
                    .await;
                self.refuse_if(&mut run).await?;
            }
        }
        let plugins = self.plugins.clone();
        let fingerprint = cert.fingerprint().to_string();
        let next_push_at = now + self.repush_interval_ms;
        let (next, events) = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let e = &report.enrollment;
                    let (state, _) = channel_state(txn, &fingerprint, e).await?;
                    record_report(txn, &report, &state, now).await?;
                    let scope = scope_of(e, &event_id);
                    let events = plugins
                        .apply(txn, run, Hook::OnCommandResult.as_str(), scope, now)
                        .await?;
                    let next = queue::next(txn, &e.id, now).await?;
                    let last = LastSeen {
                        device: Some(state.device_last_seen_at),
                        device_channel: state.device_channel_last_seen_at,
                    };
                    seen(txn, e, last, now, Some(next_push_at)).await?;
                    Ok::<_, CheckinError>((next, events))
                })
            })
            .await?;
        self.plugins.events_committed(events);
        Ok(match next {
            Some((_, cmd)) => {
                self.metrics.commands_delivered.inc();
                MdmResponse::Plist(cmd.raw)
            }
            None => MdmResponse::Empty,
        })
    }
}

impl CheckinService {
    /// An Idle that finds nothing to deliver, no NotNow to re-offer, no push state to reset and a
    /// last-seen time within [`SEEN_RESOLUTION_MS`] is answered from one read, without a transaction: the
    /// commonest message a fleet sends costs no write. Anything else takes the full path. Refusals are
    /// the same as the full path's.
    async fn idle_needs_nothing(
        &self,
        cert: &DeviceCert,
        e: &EnrollmentRef,
        now: i64,
    ) -> Result<bool, CheckinError> {
        let (state, channel) = channel_state(&self.storage.read(), cert.fingerprint(), e).await?;
        let fresh = |seen: i64| seen_recently(now, seen);
        Ok(!state.has_queued
            && !state.has_not_now
            && channel.push_attempts == 0
            && fresh(channel.last_seen_at)
            && fresh(state.device_last_seen_at)
            && state.device_channel_last_seen_at.is_none_or(fresh))
    }

    /// The event for a result of a command still pending for this channel; None for unknown or finished ones
    /// (repeats), which plugins need not see.
    async fn result_event(
        &self,
        cert: &DeviceCert,
        report: &CommandReport,
        status: plugins::types::CommandStatus,
        event_id: &str,
    ) -> Result<Option<plugins::types::CommandResultEvent>, CheckinError> {
        let r = &self.storage.read();
        let e = &report.enrollment;
        let uuid = report.command_uuid.as_deref().unwrap_or_default();
        let (device, item, cmd) = tokio::try_join!(
            authorize(r, cert.fingerprint(), e),
            async { Ok(queue::find_item(r, &e.id, uuid).await?) },
            async { Ok(queue::find_command(r, uuid).await?) },
        )?;
        let (Some(item), Some(cmd)) = (item, cmd) else {
            return Ok(None);
        };
        if !QueueStatus::parse(&item.status)?.is_pending() {
            return Ok(None);
        }
        Ok(Some(plugins::types::CommandResultEvent {
            event_id: event_id.to_string(),
            enrollment: convert::enrollment(e),
            device: convert::device_facts((&device).into()),
            command_uuid: uuid.to_string(),
            request_type: cmd.request_type,
            status,
            error_chain: convert::error_chain(&report.error_chain),
            report: convert::plist_tree(&Value::Dictionary(report.dict.clone())),
            raw: Some(report.raw.clone()),
            retry_of: cmd.retry_of,
        }))
    }
}

/// The message's own effect, in the check-in's transaction.
async fn apply_message<C: ConnectionTrait>(
    txn: &C,
    msg: &CheckinMessage,
    device: &Device,
    policy: UserAuthenticatePolicy,
    now: i64,
    next_push_at: i64,
) -> Result<MdmResponse, CheckinError> {
    let e = &msg.enrollment;
    Ok(match &msg.payload {
        CheckinPayload::TokenUpdate(t) => {
            token_update(txn, e, t, &msg.raw, now, next_push_at, Only::Any).await?;
            MdmResponse::Empty
        }
        CheckinPayload::CheckOut => {
            if e.kind.is_user_channel() {
                enrollments::disable(txn, &e.id, now).await?;
            } else {
                enrollments::disable_device(txn, &e.device_id, now).await?;
                devices::mark_checked_out(txn, &e.device_id, now).await?;
            }
            audit_device(
                txn,
                e,
                "enrollment.checkout",
                &e.id,
                serde_json::json!({}),
                now,
            )
            .await?;
            tracing::info!(enrollment = %e.id, "device checked out");
            MdmResponse::Empty
        }
        CheckinPayload::UserAuthenticate { digest_response } => {
            match policy {
                UserAuthenticatePolicy::Decline => {
                    return Err(CheckinError::UserAuthenticateDeclined)
                }
                UserAuthenticatePolicy::Accept => {
                    if digest_response.as_deref().unwrap_or("").is_empty() {
                        // First round: an empty challenge tells the device no digest is needed.
                        let mut d = Dictionary::new();
                        d.insert("DigestChallenge".into(), Value::String(String::new()));
                        MdmResponse::Plist(to_xml(&d))
                    } else {
                        MdmResponse::Empty
                    }
                }
            }
        }
        CheckinPayload::SetBootstrapToken { bootstrap_token } => {
            devices::set_bootstrap_token(txn, &e.device_id, bootstrap_token.clone(), now).await?;
            MdmResponse::Empty
        }
        CheckinPayload::GetBootstrapToken => {
            let mut d = Dictionary::new();
            if let Some(t) = &device.bootstrap_token {
                d.insert("BootstrapToken".into(), Value::Data(t.clone()));
            }
            MdmResponse::Plist(to_xml(&d))
        }
        // Answered before plugins ran and before this transaction.
        CheckinPayload::Authenticate(_)
        | CheckinPayload::DeclarativeManagement { .. }
        | CheckinPayload::GetToken { .. } => unreachable!("handled above"),
    })
}

/// A report's own effect, in its transaction: an Idle re-offers what the channel NotNow'd; a result is
/// recorded against its command (unknown and repeated results are logged and ignored).
async fn record_report<C: ConnectionTrait>(
    txn: &C,
    report: &CommandReport,
    state: &ChannelState,
    now: i64,
) -> Result<(), CheckinError> {
    let e = &report.enrollment;
    match report.status {
        ReportStatus::Idle => {
            if state.has_not_now {
                queue::reset_not_now(txn, &e.id, now).await?;
            }
        }
        status => {
            let uuid = report.command_uuid.as_deref().unwrap_or_default();
            let json = plist_json::plist_to_json(&Value::Dictionary(report.dict.clone()));
            let outcome = queue::record_report(
                txn,
                &e.id,
                uuid,
                queue_status(status),
                &report.raw,
                &json.to_string(),
                now,
            )
            .await?;
            match outcome {
                ReportOutcome::Recorded => {
                    if status == ReportStatus::Acknowledged {
                        learn_from_result(txn, &e.device_id, uuid, &report.dict, now).await?;
                    }
                    if status == ReportStatus::Error {
                        tracing::info!(enrollment = %e.id, command = uuid, chain = ?report.error_chain, "command failed on device");
                    }
                }
                ReportOutcome::Unknown => {
                    tracing::warn!(enrollment = %e.id, command = uuid, status = status.as_str(), "report for a command not queued to this enrollment; ignored")
                }
                ReportOutcome::AlreadyFinal => {
                    tracing::info!(enrollment = %e.id, command = uuid, "repeated report for a finished command; ignored")
                }
            }
        }
    }
    Ok(())
}

/// An audit entry of the device's own doing (its enrollment's life), in the message's transaction.
async fn audit_device<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    now: i64,
) -> Result<(), CheckinError> {
    let actor = format!("device:{}", e.device_id);
    audit_log::append(
        c,
        vec![NewEntry::new(now, actor, action, Some(target), detail)],
    )
    .await?;
    Ok(())
}

/// Refusals that do not depend on plugins, run before plugins and again inside the transaction:
/// - a certificate already bound to another device, or one our CA issued and then revoked (directly or an
///   identity it was renewed from), or issued against a token pinned to another serial number;
/// - for a known device: a serial number change (the hardware binding), and a new identity unless
///   [`new_identity_admitted`] (a stranger who knows a UDID and serial number must not take the device over).
///
/// True when the certificate was issued to renew this device's identity (the device keeps its queue).
async fn enrollment_checks<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    e: &EnrollmentRef,
    a: &Authenticate,
    now: i64,
) -> Result<bool, CheckinError> {
    let existing = devices::find(c, &e.device_id).await?;
    if let (Some(bound), Some(presented)) = (
        existing.as_ref().and_then(|d| d.serial_number.as_deref()),
        a.facts.serial_number.as_deref(),
    ) {
        if bound != presented {
            tracing::warn!(device = %e.device_id, bound, presented, "Authenticate refused: serial number changed");
            return Err(CheckinError::SerialMismatch {
                device: e.device_id.clone(),
                bound: bound.to_string(),
                presented: presented.to_string(),
            });
        }
    }
    if let Some(other) = devices::find_by_fingerprint(c, fingerprint).await? {
        if other.id != e.device_id {
            tracing::warn!(device = %e.device_id, bound_to = %other.id, "Authenticate refused: certificate reused");
            return Err(CheckinError::CertificateBoundElsewhere);
        }
    }
    let issued = issued_certs::find_by_fingerprint(c, fingerprint).await?;
    if let Some(issued) = &issued {
        // The certificate itself or an identity it was renewed from.
        if issued_certs::revoked_in_chain(c, fingerprint).await? {
            tracing::warn!(device = %e.device_id, serial = %issued.serial, "Authenticate refused: certificate revoked");
            return Err(CheckinError::CertificateRevoked);
        }
        if let Some(pinned) = &issued.pinned_serial_number {
            if a.facts.serial_number.as_deref() != Some(pinned.as_str()) {
                tracing::warn!(device = %e.device_id, pinned, presented = ?a.facts.serial_number, "Authenticate refused: identity issued for another serial number");
                return Err(CheckinError::IssuedForAnotherDevice(e.device_id.clone()));
            }
        }
    }
    let renewal = existing.is_some()
        && issued.as_ref().and_then(|i| i.renews_device.as_deref()) == Some(e.device_id.as_str());
    if let Some(device) = &existing {
        let same_identity = device.identity_fingerprint.as_deref() == Some(fingerprint);
        if !same_identity && !renewal {
            if let Err(why) = new_identity_admitted(device, issued.as_ref(), now) {
                tracing::warn!(device = %e.device_id, why, "Authenticate refused: a known device presented a new identity");
                return Err(CheckinError::ReenrollmentRefused(e.device_id.clone()));
            }
        }
    }
    Ok(renewal)
}

/// Whether a known device may take a new identity that is not a renewal of its own: an admin allowed it
/// (once, until a time), the device checked out (it removed its MDM profile itself: only the bound identity
/// can send that), or our CA issued the identity against an admin's enrollment token pinned to this device's
/// serial number. Anything else, a User Enrollment included (its EnrollmentID is new at every enrollment),
/// is refused: knowing a UDID and a serial number is not a credential. Err says which rule refused, for the
/// log.
fn new_identity_admitted(
    device: &Device,
    issued: Option<&issued_certs::IssuedCertificate>,
    now: i64,
) -> Result<(), &'static str> {
    if device
        .reenroll_allowed_until
        .is_some_and(|until| now <= until)
    {
        return Ok(());
    }
    if device.checked_out_at.is_some() {
        return Ok(());
    }
    let pinned = issued.and_then(|i| i.pinned_serial_number.as_deref());
    if pinned.is_some() && pinned == device.serial_number.as_deref() {
        return Ok(());
    }
    Err("not a renewal, no admin allowance, no check-out, no token pinned to its serial number")
}

/// Audit rows of plugins called for this message name its device and channel.
fn scope_of<'a>(e: &'a EnrollmentRef, event_id: &'a str) -> EventScope<'a> {
    EventScope {
        event_id,
        device_id: Some(&e.device_id),
        enrollment_id: Some(&e.id),
    }
}

fn queue_status(s: ReportStatus) -> QueueStatus {
    match s {
        ReportStatus::Acknowledged => QueueStatus::Acknowledged,
        ReportStatus::Error => QueueStatus::Error,
        ReportStatus::CommandFormatError => QueueStatus::CommandFormatError,
        ReportStatus::NotNow => QueueStatus::NotNow,
        ReportStatus::Idle => QueueStatus::Queued,
    }
}

/// A DeviceInformation result refreshes what we know of the device (OS, model, name).
async fn learn_from_result<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    command_uuid: &str,
    report: &Dictionary,
    now: i64,
) -> Result<(), CheckinError> {
    let Some(Value::Dictionary(q)) = report.get("QueryResponses") else {
        return Ok(());
    };
    let is_device_information = queue::find_command(c, command_uuid)
        .await?
        .is_some_and(|cmd| cmd.request_type == "DeviceInformation");
    if !is_device_information {
        return Ok(());
    }
    // A device's answer may be malformed; it is stored as received, and only well-formed facts are learnt.
    let Ok(facts) = DeviceFacts::from_dict(q) else {
        return Ok(());
    };
    devices::update_facts(c, device_id, facts, now).await?;
    Ok(())
}

/// A report's sender as [`authorize`] requires it, with its queue state and its channel (which must exist).
async fn channel_state<R: PointRead>(
    c: &R,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<(ChannelState, ChannelSeen), CheckinError> {
    let state = identified(
        checkin_state::load(c, &e.device_id, &e.id).await?,
        |s| s.identity_fingerprint.as_deref(),
        fingerprint,
        e,
    )?;
    let channel = state
        .channel
        .clone()
        .ok_or_else(|| CheckinError::UnknownEnrollment(e.id.clone()))?;
    Ok((state, channel))
}

/// The sender as a read found it (None: unknown device) must present the identity bound to it at
/// Authenticate; `bound` says where the read keeps that fingerprint.
fn identified<T>(
    found: Option<T>,
    bound: impl FnOnce(&T) -> Option<&str>,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<T, CheckinError> {
    let found = found.ok_or_else(|| CheckinError::UnknownDevice(e.device_id.clone()))?;
    if bound(&found) != Some(fingerprint) {
        tracing::warn!(device = %e.device_id, presented = fingerprint, "identity certificate does not match the bound one");
        return Err(CheckinError::IdentityMismatch(e.device_id.clone()));
    }
    Ok(found)
}

/// The device must exist and present the certificate bound to it at Authenticate.
async fn authorize<C: ConnectionTrait>(
    c: &C,
    fingerprint: &str,
    e: &EnrollmentRef,
) -> Result<Device, CheckinError> {
    identified(
        devices::find(c, &e.device_id).await?,
        |d| d.identity_fingerprint.as_deref(),
        fingerprint,
        e,
    )
}

/// Which TokenUpdates [`token_update`] stores.
enum Only<'a> {
    /// Any: a channel not stored yet is created.
    Any,
    /// One on a known channel of a device still bound to this identity.
    BoundTo(&'a str),
    /// One on a channel that has sent a TokenUpdate since its device authenticated.
    Repeated,
}

/// Also records the channel as checked in (see [`enrollments::apply_token_update`]). False (nothing
/// written) when `only` refuses it: the caller takes another path.
async fn token_update<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    t: &TokenUpdate,
    raw: &[u8],
    now: i64,
    next_push_at: i64,
    only: Only<'_>,
) -> Result<bool, CheckinError> {
    let facts = TokenUpdateFacts {
        topic: t.topic.clone(),
        push_magic: t.push_magic.clone(),
        token: t.token.clone(),
        awaiting_configuration: t.awaiting_configuration,
        raw: raw.to_vec(),
    };
    let next = Some(next_push_at);
    let count = match only {
        Only::Any => match enrollments::apply_token_update(c, e, facts, now, next).await {
            Ok(count) => Some(count),
            Err(StorageError::Conflict(why)) => {
                tracing::warn!(enrollment = %e.id, why, "TokenUpdate refused");
                return Err(CheckinError::UnknownEnrollment(e.id.clone()));
            }
            Err(other) => return Err(other.into()),
        },
        Only::BoundTo(fp) => {
            enrollments::apply_token_update_if_bound(c, e, &facts, fp, now, next).await?
        }
        Only::Repeated => {
            enrollments::apply_token_update_if_repeated(c, e, &facts, now, next).await?
        }
    };
    let Some(count) = count else {
        return Ok(false);
    };
    if let Some(unlock) = &t.unlock_token {
        if matches!(e.kind, EnrollmentKind::Device) {
            devices::set_unlock_token(c, &e.device_id, unlock.clone(), now).await?;
        }
    }
    tracing::info!(enrollment = %e.id, kind = e.kind.as_str(), count, "token update");
    Ok(true)
}

/// How stale a device's or channel's `last_seen_at` may get before a check-in rewrites it. Rewriting it on
/// every message would make each Idle a write; to the minute is what admins and plugins use it for.
pub const SEEN_RESOLUTION_MS: i64 = 60_000;

/// `seen` is within [`SEEN_RESOLUTION_MS`] of `now`: not worth a write.
fn seen_recently(now: i64, seen: i64) -> bool {
    now - seen < SEEN_RESOLUTION_MS
}

/// When a device and its device channel were last seen, as read in the transaction (None: not read).
struct LastSeen {
    device: Option<i64>,
    device_channel: Option<i64>,
}

/// The device is here. With `channel_next_push_at`, this channel is seen now with push attempts restarted
/// and no push owed before that time (one statement; None when the caller recorded it already, as a
/// TokenUpdate does). The device, and its device channel when the message came on a user channel, are
/// seen now unless `last` shows they were seen within [`SEEN_RESOLUTION_MS`].
async fn seen<C: ConnectionTrait>(
    c: &C,
    e: &EnrollmentRef,
    last: LastSeen,
    now: i64,
    channel_next_push_at: Option<i64>,
) -> Result<(), CheckinError> {
    if let Some(next_push_at) = channel_next_push_at {
        enrollments::checked_in(c, &e.id, now, next_push_at).await?;
    }
    let stale = |seen: Option<i64>| !seen.is_some_and(|t| seen_recently(now, t));
    if stale(last.device) {
        devices::touch(c, &e.device_id, now).await?;
    }
    if e.id != e.device_id && stale(last.device_channel) {
        enrollments::touch(c, &e.device_id, now).await?;
    }
    Ok(())
}

fn outcome<T>(r: &Result<T, CheckinError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => match e {
            CheckinError::Storage(_) => "error",
            CheckinError::UserAuthenticateDeclined => "declined",
            CheckinError::EnrollmentDenied(_) | CheckinError::PluginRefused(_) => "plugin",
            CheckinError::Protocol(_)
            | CheckinError::Unsupported(_)
            | CheckinError::AuthenticateOnUserChannel => "invalid",
            _ => "refused",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_device() -> Device {
        Device {
            id: "UDID-1".into(),
            serial_number: Some("C02SERIAL".into()),
            platform: None,
            model: None,
            model_name: None,
            product_name: None,
            device_name: None,
            os_version: None,
            build_version: None,
            imei: None,
            meid: None,
            identity_fingerprint: Some("bound".into()),
            identity_subject: None,
            identity_not_after: None,
            unlock_token: None,
            bootstrap_token: None,
            authenticate_raw: None,
            authenticated_at: 0,
            created_at: 0,
            updated_at: 0,
            last_seen_at: 0,
            renewal_requested_at: None,
            reenroll_allowed_until: None,
            checked_out_at: None,
        }
    }

    fn issued(pinned: Option<&str>) -> issued_certs::IssuedCertificate {
        issued_certs::IssuedCertificate {
            serial: "01".into(),
            fingerprint: "new".into(),
            subject: String::new(),
            not_before: 0,
            not_after: 0,
            issued_at: 0,
            challenge_id: None,
            pinned_serial_number: pinned.map(Into::into),
            renewal_of: None,
            renews_device: None,
            device_id: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_known_device_takes_a_new_identity_only_by_one_of_the_rules() {
        let now = 1_000;
        let d = known_device();
        // Knowing the UDID and serial number, with any certificate, ours or another CA's: refused.
        assert!(new_identity_admitted(&d, None, now).is_err());
        assert!(new_identity_admitted(&d, Some(&issued(None)), now).is_err());
        // Pinned to another serial number, or the device has none to match: refused.
        assert!(new_identity_admitted(&d, Some(&issued(Some("OTHER"))), now).is_err());
        let mut no_serial = known_device();
        no_serial.serial_number = None;
        assert!(new_identity_admitted(&no_serial, Some(&issued(Some("C02SERIAL"))), now).is_err());
        // An admin's token pinned to its serial number.
        assert!(new_identity_admitted(&d, Some(&issued(Some("C02SERIAL"))), now).is_ok());
        // An admin's allowance, until it lapses.
        let mut allowed = known_device();
        allowed.reenroll_allowed_until = Some(now);
        assert!(new_identity_admitted(&allowed, None, now).is_ok());
        assert!(new_identity_admitted(&allowed, None, now + 1).is_err());
        // The device checked out itself.
        let mut gone = known_device();
        gone.checked_out_at = Some(now - 1);
        assert!(new_identity_admitted(&gone, None, now).is_ok());
    }

    #[test]
    fn refusals_about_who_may_act_read_the_same() {
        let texts: Vec<String> = [
            CheckinError::UnknownDevice("A".into()),
            CheckinError::UnknownEnrollment("A:U".into()),
            CheckinError::IdentityMismatch("A".into()),
            CheckinError::CertificateBoundElsewhere,
            CheckinError::SerialMismatch {
                device: "A".into(),
                bound: "C02SERIAL".into(),
                presented: "X".into(),
            },
            CheckinError::ReenrollmentRefused("A".into()),
            CheckinError::IssuedForAnotherDevice("A".into()),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert!(texts.iter().all(|t| t == REFUSED), "{texts:?}");
    }
}
