//! Command reports: an Idle, or a command's result. Authorize, ask plugins about a pending command's
//! result, then one transaction that records it and picks the next command.

use super::authorize::{self, channel_state};
use super::fast_paths::{self, LastSeen};
use super::listeners::scope_of;
use super::{CheckinError, CheckinService, MdmResponse};
use crate::identity::DeviceCert;
use crate::plugins::{self, convert, Hook, HookInput, HookRun};
use crate::protocol::{plist_json, CommandReport, DeviceFacts, ReportStatus};
use crate::storage::checkin::{self as store, CommandResult};
use crate::storage::checkin_state::ChannelState;
use crate::storage::queue::{self, Command, Finished, QueueItem, QueueStatus, ReportOutcome};
use plist::Value;
use sea_orm::ConnectionTrait;

impl CheckinService {
    /// A command report (Idle or a command's result); answers with the next command, if any.
    #[tracing::instrument(name = "report", level = "debug", skip_all)]
    pub async fn report(
        &self,
        cert: &DeviceCert,
        body: &[u8],
    ) -> Result<MdmResponse, CheckinError> {
        let started = std::time::Instant::now();
        let res = self.report_inner(cert, body).await;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.checkin_handled("CommandReport", seconds);
        res
    }

    async fn report_inner(
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
        if report.status == ReportStatus::Idle && self.idle_answered(cert, e, now).await? {
            return Ok(MdmResponse::Empty);
        }
        let event_id = plugins::new_event_id();
        let run = self.ask_about_result(cert, &report, &event_id).await?;
        let (next, finished) = self
            .commit_report(cert, report, run, now, &event_id)
            .await?;
        if let Some(f) = finished {
            self.metrics.command_finished(&f, now);
        }
        Ok(match next {
            Some((item, cmd)) => {
                self.metrics.commands_delivered.inc();
                if item.delivery_count == 0 {
                    let m = &self.metrics;
                    m.command_delivered(&cmd.request_type, item.priority, item.created_at, now);
                }
                MdmResponse::Plist(cmd.raw)
            }
            None => MdmResponse::Empty,
        })
    }

    /// The plugins on `on-command-result`, for a result of a command still pending for this channel;
    /// nothing for an Idle, a NotNow, or an unknown or finished command (a repeat).
    async fn ask_about_result(
        &self,
        cert: &DeviceCert,
        report: &CommandReport,
        event_id: &str,
    ) -> Result<HookRun, CheckinError> {
        let Some(status) = convert::command_status(report.status) else {
            return Ok(HookRun::default());
        };
        if self.plugins.subscribed(Hook::OnCommandResult).is_empty() {
            return Ok(HookRun::default());
        }
        let Some(event) = self.result_event(cert, report, status, event_id).await? else {
            return Ok(HookRun::default());
        };
        let scope = scope_of(&report.enrollment, event_id);
        let input = HookInput::CommandResult(event);
        let mut run = (self.plugins)
            .run_hook(Hook::OnCommandResult, input, scope)
            .await;
        self.refuse_if(&mut run).await?;
        Ok(run)
    }

    /// The event for a result of a command still pending for this channel; None for unknown or finished
    /// ones.
    async fn result_event(
        &self,
        cert: &DeviceCert,
        report: &CommandReport,
        status: plugins::event::CommandStatus,
        event_id: &str,
    ) -> Result<Option<plugins::event::CommandResultEvent>, CheckinError> {
        let r = &self.storage.read();
        let e = &report.enrollment;
        let uuid = report.command_uuid.as_deref().unwrap_or_default();
        let (device, item, cmd) = tokio::try_join!(
            authorize::authorize(r, cert.fingerprint(), e),
            async { Ok(queue::find_item(r, &e.id, uuid).await?) },
            async { Ok(queue::find_command(r, uuid).await?) },
        )?;
        let (Some(item), Some(cmd)) = (item, cmd) else {
            return Ok(None);
        };
        if !QueueStatus::parse(&item.status)?.is_pending() {
            return Ok(None);
        }
        Ok(Some(plugins::event::CommandResultEvent {
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

    /// Authorize again, record the report and the plugins' actions, and pick the next command (its stored
    /// plist), in one transaction.
    async fn commit_report(
        &self,
        cert: &DeviceCert,
        report: CommandReport,
        run: HookRun,
        now: i64,
        event_id: &str,
    ) -> Result<(Option<(QueueItem, Command)>, Option<Finished>), CheckinError> {
        let plugins = self.plugins.clone();
        let fingerprint = cert.fingerprint().to_string();
        let next_push_at = now + self.repush_interval_ms;
        let event_id = event_id.to_string();
        let (next, finished, events) = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let e = &report.enrollment;
                    let (state, _) = channel_state(txn, &fingerprint, e).await?;
                    let finished = record(txn, &report, &state, now).await?;
                    let scope = scope_of(e, &event_id);
                    let hook = Hook::OnCommandResult.as_str();
                    let events = plugins.apply(txn, run, hook, scope, now).await?;
                    let next = queue::next(txn, &e.id, now).await?;
                    let last = LastSeen {
                        device: Some(state.device_last_seen_at),
                        device_channel: state.device_channel_last_seen_at,
                    };
                    let seen = fast_paths::seen(e, last, now, Some(next_push_at));
                    store::seen(txn, e, seen, now).await?;
                    Ok::<_, CheckinError>((next, finished, events))
                })
            })
            .await?;
        self.plugins.events_committed(events);
        Ok((next, finished))
    }
}

/// A report's own effect: an Idle re-offers what the channel NotNow'd; a result is recorded against its
/// command (unknown and repeated results are logged and ignored). Answers the command a final result
/// finished.
async fn record<C: ConnectionTrait>(
    txn: &C,
    report: &CommandReport,
    state: &ChannelState,
    now: i64,
) -> Result<Option<Finished>, CheckinError> {
    let e = &report.enrollment;
    let status = report.status;
    if status == ReportStatus::Idle {
        if state.has_not_now {
            queue::reset_not_now(txn, &e.id, now).await?;
        }
        return Ok(None);
    }
    let uuid = report.command_uuid.as_deref().unwrap_or_default();
    let result = CommandResult {
        command_uuid: uuid,
        status: queue_status(status),
        raw: &report.raw,
        json: plist_json::plist_to_json(&Value::Dictionary(report.dict.clone())).to_string(),
        facts: learnt_facts(report),
    };
    let recorded = store::command_result(txn, e, result, now).await?;
    let outcome = recorded.outcome;
    crate::groups::sync_members(txn, &recorded.memberships, now).await?;
    if outcome == ReportOutcome::Recorded {
        let (status, chain) = (queue_status(status), &report.error_chain);
        crate::policies::reconciler::on_report(txn, e, uuid, status, &report.dict, chain, now)
            .await?;
    }
    match outcome {
        ReportOutcome::Recorded if status == ReportStatus::Error => {
            tracing::info!(enrollment = %e.id, command = uuid, chain = ?report.error_chain, "command failed on device")
        }
        ReportOutcome::Recorded => {}
        ReportOutcome::Unknown => {
            tracing::warn!(enrollment = %e.id, command = uuid, status = status.as_str(), "report for a command not queued to this enrollment; ignored")
        }
        ReportOutcome::AlreadyFinal => {
            tracing::info!(enrollment = %e.id, command = uuid, "repeated report for a finished command; ignored")
        }
    }
    Ok(recorded.finished)
}

/// What an acknowledged result tells of the device (a DeviceInformation answer's QueryResponses). A
/// device's answer may be malformed: it is stored as received, and only well-formed facts are learnt.
fn learnt_facts(report: &CommandReport) -> Option<DeviceFacts> {
    if report.status != ReportStatus::Acknowledged {
        return None;
    }
    match report.dict.get("QueryResponses") {
        Some(Value::Dictionary(q)) => DeviceFacts::from_dict(q).ok(),
        _ => None,
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
