//! Every error to HTTP status mapping lives here.
//!
//! Devices are never answered 401 (it makes them drop their enrollment): identity problems are 403 (without
//! Apple's unenroll body) or 400. Server-side failures are 500 with no details; the details go to the log.

use crate::checkin::CheckinError;
use crate::identity::IdentityError;
use crate::queue::QueueError;
use crate::storage::StorageError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to a device, as plain text.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no device identity: send an Mdm-Signature header or a client certificate")]
    MissingIdentity,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Checkin(#[from] CheckinError),
}

impl ResponseError for DeviceError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeviceError::MissingIdentity => StatusCode::BAD_REQUEST,
            DeviceError::Identity(e) => identity_status(e),
            DeviceError::Checkin(e) => match e {
                CheckinError::Protocol(_)
                | CheckinError::Unsupported(_)
                | CheckinError::AuthenticateOnUserChannel => StatusCode::BAD_REQUEST,
                CheckinError::Identity(e) => identity_status(e),
                CheckinError::UnknownDevice(_)
                | CheckinError::UnknownEnrollment(_)
                | CheckinError::IdentityMismatch(_)
                | CheckinError::CertificateBoundElsewhere
                | CheckinError::SerialMismatch { .. } => StatusCode::FORBIDDEN,
                CheckinError::UserAuthenticateDeclined => StatusCode::GONE,
                CheckinError::EnrollmentDenied(_) => StatusCode::FORBIDDEN,
                // A fail-closed plugin could not decide: the device retries later, nothing was stored.
                CheckinError::PluginRefused(_) => StatusCode::SERVICE_UNAVAILABLE,
                CheckinError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let refused_by_plugin =
            matches!(self, DeviceError::Checkin(CheckinError::PluginRefused(_)));
        let text = if status.is_server_error() && !refused_by_plugin {
            tracing::error!(error = %self, "device request failed");
            "internal error".to_string()
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "device request refused");
            self.to_string()
        };
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(text)
    }
}

fn identity_status(e: &IdentityError) -> StatusCode {
    match e {
        IdentityError::MalformedSignature(_) | IdentityError::MalformedCertificate(_) => {
            StatusCode::BAD_REQUEST
        }
        IdentityError::SignatureMismatch
        | IdentityError::NoSignerCertificate
        | IdentityError::Untrusted(_)
        | IdentityError::Expired => StatusCode::FORBIDDEN,
    }
}

/// An error answered to an admin, as JSON `{"error": "...", "code": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key lacks the {0} scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plugin(#[from] crate::plugins::admin::PluginError),
    #[error(transparent)]
    Push(#[from] crate::push::service::PushServiceError),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A stable machine-readable code.
    pub code: &'static str,
}

impl ApiError {
    fn code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (S::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ApiError::Queue(q) => match q {
                QueueError::NotFound(_) => (S::NOT_FOUND, "not_found"),
                QueueError::Storage(s) => storage_code(s),
                QueueError::NoIds
                | QueueError::TooManyIds(_)
                | QueueError::RawCommand(_)
                | QueueError::Command(_)
                | QueueError::BadPriority
                | QueueError::BadTtl => (S::BAD_REQUEST, "invalid_command"),
            },
            ApiError::Storage(s) => storage_code(s),
            ApiError::Push(p) => match p {
                crate::push::service::PushServiceError::Certificate(_) => {
                    (S::BAD_REQUEST, "invalid_certificate")
                }
                crate::push::service::PushServiceError::Storage(s) => storage_code(s),
            },
            ApiError::Plugin(p) => match p {
                crate::plugins::admin::PluginError::Invalid(_) => {
                    (S::BAD_REQUEST, "invalid_plugin")
                }
                crate::plugins::admin::PluginError::NotFound(_) => (S::NOT_FOUND, "not_found"),
                crate::plugins::admin::PluginError::Storage(s) => storage_code(s),
            },
        }
    }
}

fn storage_code(s: &StorageError) -> (StatusCode, &'static str) {
    match s {
        StorageError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code();
        let error = if status.is_server_error() {
            tracing::error!(error = %self, "admin request failed");
            "internal error".to_string()
        } else {
            self.to_string()
        };
        let mut res = HttpResponse::build(status);
        if status == StatusCode::UNAUTHORIZED {
            res.insert_header(("WWW-Authenticate", "Bearer, Basic realm=\"mdm-server\""));
        }
        res.json(ErrorBody { error, code })
    }
}
