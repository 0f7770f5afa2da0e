//! Every error to HTTP status mapping lives here.
//!
//! Devices are never answered 401 (it makes them drop their enrollment): identity problems are 403 (without
//! Apple's unenroll body) or 400. Server-side failures are 500 with no details; the details go to the log.

use crate::checkin::CheckinError;
use crate::enroll::EnrollError;
use crate::identity::IdentityError;
use crate::queue::QueueError;
use crate::scep::ScepError;
use crate::storage::StorageError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to a device, as plain text.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no device identity: send an Mdm-Signature header or a client certificate")]
    MissingIdentity,
    #[error("a client certificate issued by this server's CA is required")]
    ClientCertificateRequired,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Checkin(#[from] CheckinError),
}

impl ResponseError for DeviceError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeviceError::MissingIdentity => StatusCode::BAD_REQUEST,
            DeviceError::ClientCertificateRequired => StatusCode::FORBIDDEN,
            DeviceError::Identity(e) => identity_status(e),
            DeviceError::Checkin(e) => match e {
                CheckinError::Protocol(_)
                | CheckinError::Ddm(_)
                | CheckinError::NoTokenProvider(_)
                | CheckinError::AuthenticateOnUserChannel => StatusCode::BAD_REQUEST,
                CheckinError::Identity(e) => identity_status(e),
                CheckinError::UnknownDevice(_)
                | CheckinError::UnknownEnrollment(_)
                | CheckinError::IdentityMismatch(_)
                | CheckinError::CertificateBoundElsewhere
                | CheckinError::SerialMismatch { .. }
                | CheckinError::ReenrollmentRefused(_)
                | CheckinError::IssuedForAnotherDevice(_) => StatusCode::FORBIDDEN,
                CheckinError::UserAuthenticateDeclined => StatusCode::GONE,
                CheckinError::NoSuchDeclaration => StatusCode::NOT_FOUND,
                CheckinError::EnrollmentDenied(_) | CheckinError::CertificateRevoked => {
                    StatusCode::FORBIDDEN
                }
                // A fail-closed plugin could not decide: the device retries later, nothing was stored.
                CheckinError::PluginRefused(_) => StatusCode::SERVICE_UNAVAILABLE,
                // Races the storage settles (another device bound the certificate first, a revocation
                // committed meanwhile): the same refusal the checks before the write would have given.
                CheckinError::Storage(
                    StorageError::IdentityBoundElsewhere | StorageError::IdentityRevoked,
                ) => StatusCode::FORBIDDEN,
                CheckinError::Storage(StorageError::Unavailable(_)) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                CheckinError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let refused_by_plugin =
            matches!(self, DeviceError::Checkin(CheckinError::PluginRefused(_)));
        if refused_by_plugin {
            // A 503 whose reason the device (and its admin) should see.
            tracing::info!(status = status.as_u16(), error = %self, "device request refused");
            return HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string());
        }
        // The body says what is wrong in terms the device already knows; what the server has stored (the
        // bound serial number, whether a UDID is enrolled) goes only to the log, with the details.
        if !status.is_server_error() {
            tracing::info!(status = status.as_u16(), error = %self, detail = ?self, "device request refused");
            return HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string());
        }
        plain(status, self, "device request")
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

impl ResponseError for ScepError {
    fn status_code(&self) -> StatusCode {
        match self {
            ScepError::Malformed(_) => StatusCode::BAD_REQUEST,
            ScepError::Reply(_) | ScepError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        plain(self.status_code(), self, "SCEP request")
    }
}

impl ResponseError for EnrollError {
    fn status_code(&self) -> StatusCode {
        match self {
            EnrollError::TokenRequired | EnrollError::Token(_) => StatusCode::FORBIDDEN,
            EnrollError::MachineInfo(_) => StatusCode::BAD_REQUEST,
            // Nothing to enroll into yet; the operator has to act, the device can try again.
            EnrollError::NoTopic | EnrollError::TooManyChallenges { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EnrollError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            EnrollError::Profile(_) | EnrollError::Enqueue(_) | EnrollError::Storage(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let EnrollError::TooManyChallenges { retry_after_secs }
        | EnrollError::RateLimited { retry_after_secs } = self
        {
            return HttpResponse::build(status)
                .insert_header(("Retry-After", retry_after_secs.to_string()))
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string());
        }
        if let EnrollError::NoTopic = self {
            // The operator's to fix, and nothing secret: say it.
            tracing::warn!(error = %self, "enrollment unavailable");
            return HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string());
        }
        if status != StatusCode::FORBIDDEN {
            return plain(status, self, "enrollment");
        }
        // A person in a browser reads this one.
        tracing::info!(error = %self, "enrollment refused");
        let why = match self {
            EnrollError::TokenRequired => "This enrollment link needs a token. Ask your administrator for a new link.".to_string(),
            other => format!("This enrollment link cannot be used: its {other}. Ask your administrator for a new link."),
        };
        HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Enrollment refused</title></head>\
                 <body><h1>Enrollment refused</h1><p>{why}</p></body></html>"
            ))
    }
}

/// Plain-text error: the message for client errors, nothing but "internal error" for server errors.
fn plain(status: StatusCode, e: &dyn std::fmt::Display, what: &str) -> HttpResponse {
    let text = if status.is_server_error() {
        tracing::error!(error = %e, "{what} failed");
        "internal error".to_string()
    } else {
        tracing::info!(status = status.as_u16(), error = %e, "{what} refused");
        e.to_string()
    };
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(text)
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
    /// A method the path does not answer; the methods it does go in `Allow`.
    #[error("this path answers only {}", .0.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))]
    MethodNotAllowed(Vec<actix_web::http::Method>),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plugin(#[from] crate::plugins::admin::PluginError),
    #[error(transparent)]
    Push(#[from] crate::push::service::PushServiceError),
    #[error(transparent)]
    Ddm(#[from] crate::ddm::DdmError),
    #[error(transparent)]
    Group(#[from] crate::groups::admin::GroupError),
    #[error(transparent)]
    Policy(#[from] crate::policies::admin::PolicyError),
    #[error(transparent)]
    Sink(#[from] crate::plugins::sinks::SinkError),
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
            ApiError::MethodNotAllowed(_) => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Queue(q) => match q {
                QueueError::NotFound(_) => (S::NOT_FOUND, "not_found"),
                QueueError::Storage(s) => storage_code(s),
                QueueError::UnknownGroups(_) | QueueError::TooManyGroups(_) => {
                    (S::BAD_REQUEST, "bad_request")
                }
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
            ApiError::Ddm(d) => ddm_code(d),
            ApiError::Group(g) => group_code(g),
            ApiError::Policy(p) => policy_code(p),
            ApiError::Sink(s) => sink_code(s),
        }
    }
}

fn ddm_code(d: &crate::ddm::DdmError) -> (StatusCode, &'static str) {
    use crate::ddm::DdmError as D;
    match d {
        D::UnknownSet(_)
        | D::UnknownEnrollment(_)
        | D::UnknownDeclaration(_)
        | D::UnknownGroup(_) => (StatusCode::NOT_FOUND, "not_found"),
        D::InUse { .. } => (StatusCode::CONFLICT, "in_use"),
        D::OwnedByPolicy(..) => (StatusCode::CONFLICT, "owned_by_policy"),
        D::Declaration(_) => (StatusCode::BAD_REQUEST, "invalid_declaration"),
        D::UnknownMembers(_) | D::Reserved(_) | D::BadName(_) | D::Status(_) | D::BadRequest(_) => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        D::Storage(s) => storage_code(s),
    }
}

fn sink_code(s: &crate::plugins::sinks::SinkError) -> (StatusCode, &'static str) {
    use crate::plugins::sinks::SinkError as E;
    match s {
        E::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        E::Configured(_) => (StatusCode::CONFLICT, "configured"),
        E::InUse { .. } => (StatusCode::CONFLICT, "in_use"),
        E::Storage(e) => storage_code(e),
    }
}

fn group_code(g: &crate::groups::admin::GroupError) -> (StatusCode, &'static str) {
    use crate::groups::admin::GroupError as G;
    match g {
        G::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        G::Rule(_) => (StatusCode::BAD_REQUEST, "invalid_rule"),
        G::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        G::TooManyGroups => (StatusCode::CONFLICT, "too_many_groups"),
        G::Storage(s) => storage_code(s),
    }
}

fn policy_code(p: &crate::policies::admin::PolicyError) -> (StatusCode, &'static str) {
    use crate::policies::admin::PolicyError as P;
    match p {
        P::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        P::UnknownGroup(_) | P::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        P::Bundle(_) => (StatusCode::BAD_REQUEST, "invalid_bundle"),
        P::Untrusted(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
        P::VersionTaken(_) => (StatusCode::CONFLICT, "version_exists"),
        P::UnknownVersion(_) | P::NoRollout(_) => (StatusCode::NOT_FOUND, "not_found"),
        P::Busy(_) => (StatusCode::CONFLICT, "conflict"),
        P::Tampered(_) => (StatusCode::CONFLICT, "tampered"),
        P::Ddm(d) => ddm_code(d),
        P::Storage(s) => storage_code(s),
    }
}

fn storage_code(s: &StorageError) -> (StatusCode, &'static str) {
    match s {
        StorageError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        StorageError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
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
        if let ApiError::MethodNotAllowed(allow) = self {
            res.insert_header(actix_web::http::header::Allow(allow.clone()));
        }
        res.json(ErrorBody { error, code })
    }
}
