//! APNs push: the [`Pusher`] trait and its a2 implementation, push certificates (upload, validation,
//! topic) and the sealing of their private keys at rest.

pub mod apns;
pub mod cert;
pub mod seal;
/// The push worker and certificate store (written alongside, in this directory, by the server's
/// integration; not part of the scratch crate).
pub mod service;

pub use apns::{ApnsEnvironment, ApnsPusher, PushOutcome, PushTarget, Pusher, RecordingPusher};
pub use cert::{topic_of, PushCertError, PushCertificate, MDM_TOPIC_PREFIX};
pub use seal::{KeySealer, SealError, MIN_SECRET_LEN};

/// Setting up APNs for a topic failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// a2 could not build a TLS client from the certificate and key.
    #[error("cannot create the APNs client for this push certificate: {0}")]
    Client(String),
}
