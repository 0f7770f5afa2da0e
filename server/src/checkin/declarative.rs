//! The `DeclarativeManagement` check-in: the device fetching its tokens, manifest and declarations, and
//! reporting status. Who may ask is decided as for every message (the identity bound to the device, and a
//! channel of that device); what is answered is `crate::ddm::device`'s.

use super::{authorize, CheckinError, CheckinService, MdmResponse};
use crate::ddm::device::{self, Endpoint};
use crate::ddm::DdmError;
use crate::identity::DeviceCert;
use crate::protocol::ddm::StatusReport;
use crate::protocol::CheckinMessage;
use crate::storage::event_subject;

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
        let found = event_subject::load(&self.storage.read(), &e.device_id, &e.id).await?;
        let subject = authorize::identified(
            found,
            |s| s.identity_fingerprint.as_deref(),
            cert.fingerprint(),
            e,
        )?;
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
                let data = data.ok_or_else(|| DdmError::BadRequest("a status report needs Data".into()))?;
                let report = StatusReport::parse(data).map_err(DdmError::from)?;
                self.status_report(&e.id, report, now).await?;
                return Ok(MdmResponse::Empty);
            }
        };
        Ok(MdmResponse::Json(body))
    }

    /// Store a status report, after the plugins that hear status changes have been asked.
    async fn status_report(
        &self,
        enrollment_id: &str,
        report: StatusReport,
        now: i64,
    ) -> Result<(), CheckinError> {
        let id = enrollment_id.to_string();
        self.storage
            .transaction(move |txn| {
                Box::pin(async move {
                    device::record(txn, &id, &report, now).await?;
                    Ok::<_, CheckinError>(())
                })
            })
            .await
    }
}
