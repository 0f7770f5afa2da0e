//! The `DeclarativeManagement` check-in: the device fetching its tokens, manifest and declarations, and
//! reporting status. Who may ask is decided as for every message (the identity bound to the device, and a
//! channel of that device); what is answered is `crate::ddm::device`'s.

use super::listeners::scope_of;
use super::{authorize, CheckinError, CheckinService, MdmResponse};
use crate::ddm::device::{self, Endpoint, StatusChanges};
use crate::ddm::DdmError;
use crate::identity::DeviceCert;
use crate::plugins::{self, convert, event, Hook, HookRun};
use crate::protocol::ddm::StatusReport;
use crate::protocol::{CheckinMessage, EnrollmentRef};

impl CheckinService {
    pub(super) async fn declarative(
        &self,
        cert: &DeviceCert,
        msg: &CheckinMessage,
        endpoint: Option<&str>,
        data: Option<&[u8]>,
    ) -> Result<MdmResponse, CheckinError> {
        let endpoint = endpoint.ok_or_else(|| DdmError::BadRequest("no Endpoint".into()))?;
        let endpoint = Endpoint::parse(endpoint)?;
        let e = &msg.enrollment;
        let subject = authorize::sender(&self.storage.read(), cert.fingerprint(), e).await?;
        if subject.token_update_count.is_none() {
            return Err(CheckinError::UnknownEnrollment(e.id.clone()));
        }
        let now = self.clock.now_ms();
        let body = match endpoint {
            Endpoint::Tokens => device::tokens(&self.storage, &e.id, now).await?,
            Endpoint::DeclarationItems => {
                device::declaration_items(&self.storage, &e.id, now).await?
            }
            Endpoint::Declaration {
                category,
                identifier,
            } => device::declaration(&self.storage.read(), &e.id, category, &identifier)
                .await?
                .ok_or(CheckinError::NoSuchDeclaration)?,
            Endpoint::Status => {
                let data =
                    data.ok_or_else(|| DdmError::BadRequest("a status report needs Data".into()))?;
                let report = StatusReport::parse(data).map_err(DdmError::from)?;
                self.status_report(e, report, now).await?;
                return Ok(MdmResponse::Empty);
            }
        };
        Ok(MdmResponse::Json(body))
    }

    /// Store a status report, after the plugins that hear status changes have been asked (outside the
    /// transaction, as for every check-in); their actions are applied in the transaction that stores it.
    async fn status_report(
        &self,
        e: &EnrollmentRef,
        report: StatusReport,
        now: i64,
    ) -> Result<(), CheckinError> {
        let event_id = plugins::new_event_id();
        let run = if self.plugins.subscribed(Hook::OnDdmStatus).is_empty() {
            HookRun::default()
        } else {
            let changes = device::changes(&self.storage.read(), &e.id, &report).await?;
            if changes.is_empty() {
                HookRun::default()
            } else {
                let event = status_event(e, changes, &event_id);
                let mut run = self
                    .plugins
                    .on_ddm_status(event, scope_of(e, &event_id))
                    .await;
                self.refuse_if(&mut run).await?;
                run
            }
        };
        let invalid = (report.declarations.iter())
            .filter(|d| d.valid == crate::protocol::ddm::Validity::Invalid)
            .count();
        let plugins = self.plugins.clone();
        let (e, event_id) = (e.clone(), event_id.clone());
        let events = self
            .storage
            .transaction(move |txn| {
                Box::pin(async move {
                    device::record(txn, &e.id, &report, now).await?;
                    // Status items are facts of the device (on its device channel) that rules read.
                    let items_changed = report.full || !report.items.is_empty();
                    if items_changed && !e.kind.is_user_channel() {
                        crate::groups::follow_facts(txn, &e.device_id, now).await?;
                    }
                    let hook = Hook::OnDdmStatus.as_str();
                    let events = plugins
                        .apply(txn, run, hook, scope_of(&e, &event_id), now)
                        .await?;
                    Ok::<_, CheckinError>(events)
                })
            })
            .await?;
        self.plugins.events_committed(events);
        self.metrics
            .service
            .ddm_status_errors
            .inc_by(invalid as u64);
        Ok(())
    }

    /// A GetToken check-in: the token a plugin provides for the service, else a 400 naming why.
    pub(super) async fn get_token(
        &self,
        cert: &DeviceCert,
        msg: &CheckinMessage,
        token_service_type: Option<&str>,
    ) -> Result<MdmResponse, CheckinError> {
        let e = &msg.enrollment;
        authorize::sender(&self.storage.read(), cert.fingerprint(), e).await?;
        let service =
            token_service_type.ok_or(CheckinError::NoTokenProvider("no TokenServiceType"))?;
        let event_id = plugins::new_event_id();
        let token = self
            .plugins
            .provide_token(&convert::enrollment(e), service, scope_of(e, &event_id))
            .await?
            .ok_or(CheckinError::NoTokenProvider(
                "no plugin provides tokens for this TokenServiceType",
            ))?;
        let mut answer = plist::Dictionary::new();
        answer.insert("TokenData".into(), plist::Value::Data(token));
        let mut body = Vec::new();
        plist::Value::Dictionary(answer)
            .to_writer_xml(&mut body)
            .map_err(|e| {
                CheckinError::Storage(crate::storage::StorageError::Corrupt(e.to_string()))
            })?;
        Ok(MdmResponse::Plist(body))
    }
}

/// What plugins hear of a status report: the declarations and status items whose state changed.
fn status_event(
    e: &EnrollmentRef,
    changes: StatusChanges,
    event_id: &str,
) -> event::DdmStatusEvent {
    let state = |s: device::DeclarationState| event::DeclarationState {
        active: s.active,
        valid: s.valid,
        server_token: s.server_token,
        reasons_json: s.reasons,
    };
    event::DdmStatusEvent {
        event_id: event_id.to_string(),
        enrollment: convert::enrollment(e),
        declarations: changes
            .declarations
            .into_iter()
            .map(|d| event::DeclarationChange {
                identifier: d.identifier,
                category: d.category.as_str().to_string(),
                old: d.old.map(state),
                new: state(d.new),
            })
            .collect(),
        items: changes
            .items
            .into_iter()
            .map(|i| event::StatusItemChange {
                name: i.name,
                old_json: i.old,
                new_json: i.new,
            })
            .collect(),
    }
}
