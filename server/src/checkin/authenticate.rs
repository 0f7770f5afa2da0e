//! Authenticate: who may take this identity for the device, the plugins' enrollment decision, then one
//! transaction that binds the identity and resets the enrollment.

use super::listeners::scope_of;
use super::{authorize, CheckinError, CheckinService, MdmResponse};
use crate::enroll::RENEWAL_COMMAND_SOURCE;
use crate::identity::DeviceCert;
use crate::plugins::{self, convert, CheckinMessageKind, Hook, HookInput, HookRun};
use crate::protocol::checkin::Authenticate;
use crate::protocol::CheckinMessage;
use crate::storage::checkin::{self as store, AuthenticateRecord};
use crate::storage::devices::AuthenticateFacts;

impl CheckinService {
    /// Bind the identity to the device, reset the enrollment: every channel disabled until TokenUpdate and
    /// every pending command canceled (a renewal of the device's own identity keeps its queue).
    pub(super) async fn authenticate(
        &self,
        cert: &DeviceCert,
        msg: &CheckinMessage,
        a: &Authenticate,
    ) -> Result<MdmResponse, CheckinError> {
        let now = self.clock.now_ms();
        let e = &msg.enrollment;
        if e.kind.is_user_channel() {
            return Err(CheckinError::AuthenticateOnUserChannel);
        }
        let fingerprint = cert.fingerprint();
        authorize::enrollment_checks(&self.storage.read(), fingerprint, e, a, now).await?;
        let event_id = plugins::new_event_id();
        let scope = scope_of(e, &event_id);
        let facts = convert::facts(&a.facts, a.facts.platform());
        let mut decision = self
            .plugins
            .decide_enrollment(
                HookInput::Enrollment(plugins::event::EnrollmentRequest {
                    event_id: event_id.clone(),
                    enrollment: convert::enrollment(e),
                    device: facts.clone(),
                    identity_fingerprint: fingerprint.to_string(),
                    raw: Some(msg.raw.clone()),
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
        let listeners = (self.plugins).hearing_checkin(CheckinMessageKind::Authenticate);
        let event = plugins::event::CheckinEvent {
            event_id: event_id.clone(),
            kind: plugins::event::CheckinKind::Authenticate,
            enrollment: convert::enrollment(e),
            device: facts,
            token_update_count: None,
            awaiting_configuration: None,
            raw: Some(msg.raw.clone()),
        };
        let run = self.ask(&listeners, event, scope).await?;
        let plugins_said = (decision, run);
        let (canceled, renewal) = (self)
            .commit_authenticate(cert, msg, a, plugins_said, now, &event_id)
            .await?;
        tracing::info!(device = %e.device_id, serial = %a.facts.serial_number.as_deref().unwrap_or("-"), canceled, renewal, "device authenticated");
        Ok(MdmResponse::Empty)
    }

    /// The checks again, then the binding and reset with the plugins' actions, in one transaction. Returns
    /// (commands canceled, whether this was a renewal). The two runs are the plugins' enrollment decision and
    /// what those hearing Authenticate asked for.
    async fn commit_authenticate(
        &self,
        cert: &DeviceCert,
        msg: &CheckinMessage,
        a: &Authenticate,
        (decision, run): (HookRun, HookRun),
        now: i64,
        event_id: &str,
    ) -> Result<(u64, bool), CheckinError> {
        let plugins = self.plugins.clone();
        let fingerprint = cert.fingerprint().to_string();
        let subject = cert.subject()?;
        let not_after = cert.not_after_unix().ok().map(|s| s * 1000);
        let (e, a, raw) = (msg.enrollment.clone(), a.clone(), msg.raw.clone());
        let event_id = event_id.to_string();
        let (canceled, renewal, events) = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    let renewal =
                        authorize::enrollment_checks(txn, &fingerprint, &e, &a, now).await?;
                    let rec = AuthenticateRecord {
                        facts: AuthenticateFacts {
                            facts: a.facts,
                            identity_fingerprint: fingerprint,
                            identity_subject: subject,
                            identity_not_after: not_after,
                            raw,
                            renewal,
                        },
                        renewal_commands_source: RENEWAL_COMMAND_SOURCE,
                    };
                    let canceled = store::authenticate(txn, &e, rec, now).await?;
                    let scope = scope_of(&e, &event_id);
                    let mut events = (plugins)
                        .apply(txn, decision, Hook::DecideEnrollment.as_str(), scope, now)
                        .await?;
                    let heard = plugins.apply(txn, run, Hook::OnCheckin.as_str(), scope, now);
                    events.extend(heard.await?);
                    Ok::<_, CheckinError>((canceled, renewal, events))
                })
            })
            .await?;
        self.plugins.events_committed(events);
        Ok((canceled, renewal))
    }
}
