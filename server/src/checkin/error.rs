//! Why a check-in or report was refused, and how each refusal is counted.

use crate::ddm::DdmError;
use crate::identity::IdentityError;
use crate::protocol::ProtocolError;
use crate::storage::StorageError;

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
    #[error("{0}")]
    EnrollmentDenied(String),
    #[error("the identity certificate has been revoked")]
    CertificateRevoked,
    #[error("{0}")]
    PluginRefused(String),
    /// GetToken with no plugin providing the service's tokens.
    #[error("GetToken: {0}")]
    NoTokenProvider(&'static str),
    /// A declaration the enrollment does not hold (or that does not exist: the device cannot tell).
    #[error("no such declaration")]
    NoSuchDeclaration,
    #[error(transparent)]
    Ddm(DdmError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<DdmError> for CheckinError {
    fn from(e: DdmError) -> Self {
        match e {
            DdmError::Storage(s) => Self::Storage(s),
            other => Self::Ddm(other),
        }
    }
}

/// What a device is told when its identity may not act for the enrollment it names.
pub(super) const REFUSED: &str = "this identity certificate may not act for this enrollment";

/// The metrics label of a check-in's outcome.
pub(super) fn outcome<T>(r: &Result<T, CheckinError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => match e {
            CheckinError::Storage(_) => "error",
            CheckinError::UserAuthenticateDeclined => "declined",
            CheckinError::EnrollmentDenied(_) | CheckinError::PluginRefused(_) => "plugin",
            CheckinError::Protocol(_)
            | CheckinError::Ddm(_)
            | CheckinError::NoTokenProvider(_)
            | CheckinError::NoSuchDeclaration
            | CheckinError::AuthenticateOnUserChannel => "invalid",
            _ => "refused",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
