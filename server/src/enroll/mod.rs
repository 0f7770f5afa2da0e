//! Enrollment: the signed enrollment profile (`/enroll`), one-time enrollment tokens, and automatic renewal
//! of device identities before they expire.
//!
//! Renewal: N days before a device's identity certificate expires, the device is sent an InstallProfile
//! with a fresh enrollment profile whose SCEP challenge is marked as a renewal of that device. The device
//! replaces its MDM profile, obtains a new identity from our CA and authenticates again; because the new
//! certificate was issued for that renewal (or by SCEP RenewalReq with the old identity), the Authenticate
//! keeps the device's command queue instead of clearing it, and binds the new certificate.

/// The source of the InstallProfile commands that renew a device's identity.
pub const RENEWAL_COMMAND_SOURCE: &str = "identity-renewal";

pub mod machine_info;
pub mod profile;

use crate::clock::SharedClock;
use crate::config::EnrollConfig;
use crate::metrics::Metrics;
use crate::pki::{self, KeyPair, PkiError, Usage};
use crate::protocol::commands::TypedCommand;
use crate::queue::{CommandSpec, EnqueueRequest, QueueError, QueueService};
use crate::scep::ScepService;
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::secrets::{self, OneTimeSecret, Refusal, SecretKind, SecretScope};
use crate::storage::{devices, push, Storage, StorageError};
use base64::Engine as _;
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;

pub use machine_info::{MachineInfo, MachineInfoError};
pub use profile::ProfileError;

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("an enrollment token is required")]
    TokenRequired,
    #[error("enrollment token {0}")]
    Token(Refusal),
    #[error("no push certificate: upload one before enrolling devices")]
    NoTopic,
    /// `enroll.max_anonymous_challenges` unused challenges are outstanding.
    #[error("too many enrollment profiles are waiting to be used; try again later")]
    TooManyChallenges { retry_after_secs: u64 },
    /// `enroll.anonymous_per_client_per_minute` from this address.
    #[error("too many enrollment profile downloads from this address; try again later")]
    RateLimited { retry_after_secs: u64 },
    #[error("device information: {0}")]
    MachineInfo(MachineInfoError),
    #[error("enrollment profile: {0}")]
    Profile(ProfileError),
    /// The renewal's InstallProfile could not be queued.
    #[error("enrollment profile: {0}")]
    Enqueue(QueueError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Who is asking for a profile.
#[derive(Debug, Default)]
pub struct ProfileRequest {
    pub token: Option<String>,
    pub machine_info: Option<MachineInfo>,
}

pub struct EnrollService {
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    scep: Arc<ScepService>,
    signer: KeyPair,
    config: EnrollConfig,
    /// The URL profiles point devices at: `enroll.public_url`, or on a loopback-only development server its
    /// listen address. Fixed at start, never taken from a request (see `http::peer`).
    base_url: String,
}

/// The profile-signing identity: configured files, or generated once into the data dir, issued by the CA.
pub fn load_signer(
    config: &EnrollConfig,
    ca: &KeyPair,
    data_dir: &Path,
    secret: &str,
) -> Result<KeyPair, PkiError> {
    pki::configured_or_generated(
        (
            config.signing_cert_file.as_deref(),
            config.signing_key_file.as_deref(),
        ),
        config
            .signing_key_passphrase
            .as_ref()
            .map(|p| p.expose_secret()),
        data_dir,
        "profile-signing",
        secret,
        || {
            let subject = pki::name("MDM Profile Signing", &config.organization)?;
            pki::generate(&subject, Usage::ProfileSigning, 825, Some(ca))
        },
    )
}

impl EnrollService {
    pub fn new(
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        scep: Arc<ScepService>,
        signer: KeyPair,
        config: EnrollConfig,
        base_url: String,
    ) -> Self {
        Self {
            storage,
            clock,
            metrics,
            scep,
            signer,
            config,
            base_url,
        }
    }

    /// The URL profiles and enrollment links point at.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A signed enrollment profile with a fresh SCEP challenge. A token, when given (or required), is used up
    /// here; a serial-pinned token needs device information naming that serial.
    pub async fn profile(&self, req: ProfileRequest) -> Result<Vec<u8>, EnrollError> {
        let res = self.profile_inner(req).await;
        let outcome = match &res {
            Ok(_) => "served",
            Err(
                EnrollError::TokenRequired
                | EnrollError::Token(_)
                | EnrollError::TooManyChallenges { .. }
                | EnrollError::RateLimited { .. },
            ) => "refused",
            Err(_) => "failed",
        };
        self.metrics.enrollment_profile(outcome);
        res
    }

    async fn profile_inner(&self, req: ProfileRequest) -> Result<Vec<u8>, EnrollError> {
        let serial = req
            .machine_info
            .as_ref()
            .and_then(|m| m.serial_number.clone());
        let token = match req.token.as_deref() {
            Some(t) => Some(self.use_token(t, serial.as_deref()).await?),
            None if self.config.require_token => return Err(EnrollError::TokenRequired),
            None => None,
        };
        if token.is_none() {
            self.room_for_anonymous_challenge().await?;
        }
        let scope = SecretScope {
            // A pinned token pins the identity too: only that serial number may authenticate with it.
            serial_number: token.as_ref().and_then(|t| t.serial_number.clone()),
            token_id: token.map(|t| t.id),
            ..Default::default()
        };
        self.signed_profile(&self.base_url, scope).await
    }

    /// Anyone may download a profile (unless `require_token`), and each holds a fresh challenge row until it
    /// is used or expires: at `max_anonymous_challenges` unused ones, the expired among them are deleted
    /// now, and if that frees nothing the download is refused (503) until the oldest expires. Concurrent
    /// downloads may each pass the count, so the bound can be passed by the requests in flight, no more.
    async fn room_for_anonymous_challenge(&self) -> Result<(), EnrollError> {
        let storage = &self.storage;
        let cap = self.config.max_anonymous_challenges;
        if secrets::unused_anonymous_challenges(&storage.read(), cap).await? < cap {
            return Ok(());
        }
        let now = self.clock.now_ms();
        secrets::purge_expired_challenges(storage, now).await?;
        if secrets::unused_anonymous_challenges(&storage.read(), cap).await? < cap {
            return Ok(());
        }
        let oldest = secrets::oldest_unused_anonymous_challenge_expiry(&storage.read())
            .await?
            .unwrap_or(now);
        let retry_after_secs = ((oldest - now).max(0) as u64).div_ceil(1000).max(1);
        tracing::warn!(
            cap,
            retry_after_secs,
            "enrollment refused: enroll.max_anonymous_challenges unused challenges outstanding"
        );
        Err(EnrollError::TooManyChallenges { retry_after_secs })
    }

    async fn use_token(
        &self,
        token: &str,
        serial: Option<&str>,
    ) -> Result<OneTimeSecret, EnrollError> {
        let now = self.clock.now_ms();
        match secrets::consume(&self.storage, SecretKind::Token, token, serial, now).await? {
            Ok(t) => {
                let entry = NewEntry::new(
                    now,
                    "enroll",
                    "enrollment.token_used",
                    Some(&t.id),
                    serde_json::json!({"serial_number": serial, "label": t.label}),
                );
                audit_log::append(&self.storage, vec![entry]).await?;
                Ok(t)
            }
            Err(r) => {
                tracing::warn!(reason = %r, serial = %serial.unwrap_or("-"), "enrollment token refused");
                Err(EnrollError::Token(r))
            }
        }
    }

    async fn signed_profile(
        &self,
        base_url: &str,
        scope: SecretScope,
    ) -> Result<Vec<u8>, EnrollError> {
        let topic = self.topic().await?;
        let challenge = self.scep.new_challenge(scope).await?;
        let unsigned = profile::build(&profile::ProfileSpec {
            base_url: base_url.trim_end_matches('/'),
            topic: &topic,
            challenge: &challenge,
            ca: self.scep.ca_cert(),
            sign_message: self.config.sign_message,
            organization: &self.config.organization,
        })
        .map_err(EnrollError::Profile)?;
        profile::sign(&unsigned, &self.signer, &self.scep.ca_chain()).map_err(EnrollError::Profile)
    }

    /// The configured topic, else the topic of the stored push certificate that expires last.
    async fn topic(&self) -> Result<String, EnrollError> {
        if let Some(t) = &self.config.topic {
            return Ok(t.clone());
        }
        push::certs(&self.storage.read())
            .await?
            .into_iter()
            .max_by_key(|c| c.not_after)
            .map(|c| c.topic)
            .ok_or(EnrollError::NoTopic)
    }

    /// A one-time enrollment token; returns its record and the token (shown once).
    pub async fn create_token(
        &self,
        serial_number: Option<String>,
        ttl_secs: Option<u64>,
        label: Option<String>,
    ) -> Result<(OneTimeSecret, String), StorageError> {
        let ttl = ttl_secs.unwrap_or(self.config.token_ttl_secs) as i64 * 1000;
        secrets::create(
            &self.storage,
            SecretKind::Token,
            SecretScope {
                serial_number,
                label,
                ..Default::default()
            },
            ttl,
            self.clock.now_ms(),
        )
        .await
    }

    /// Queue a fresh enrollment profile for devices whose identity expires within the renewal window and
    /// that were not sent one in the last day. Each device is claimed with a conditional update, so replicas
    /// running this at once queue one renewal per device. Returns how many were queued.
    pub async fn renew_expiring(&self, queue: &QueueService) -> Result<usize, EnrollError> {
        let days = i64::from(self.config.renew_days_before_expiry);
        if days == 0 {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let window_end = now + days * 86_400_000;
        let retry_before = now - 86_400_000;
        let storage = &self.storage;
        let expiring = devices::identity_expiring(&storage.read(), window_end).await?;
        self.metrics.identities_expiring.set(expiring as i64);
        let Some(base) = &self.config.public_url else {
            if expiring > 0 {
                tracing::warn!(
                    expiring,
                    "device identities expire soon but enroll.public_url is not set: cannot renew them"
                );
            }
            return Ok(0);
        };
        let mut queued = 0;
        for d in devices::renewal_candidates(&storage.read(), window_end, retry_before, 100).await?
        {
            if !devices::claim_renewal(storage, &d.id, d.renewal_requested_at, now).await? {
                continue;
            }
            let scope = SecretScope {
                serial_number: d.serial_number.clone(),
                renewal_for: Some(d.id.clone()),
                ..Default::default()
            };
            let signed = self.signed_profile(base.expose_secret(), scope).await?;
            let outcome = queue
                .enqueue(EnqueueRequest {
                    ids: vec![d.id.clone()],
                    groups: Vec::new(),
                    command: CommandSpec::Typed(TypedCommand::InstallProfile {
                        payload: base64::engine::general_purpose::STANDARD.encode(&signed),
                    }),
                    priority: 0,
                    ttl_seconds: None,
                    source: RENEWAL_COMMAND_SOURCE.into(),
                    no_push: false,
                })
                .await
                .map_err(EnrollError::Enqueue)?;
            if outcome.queued_ids().next().is_some() {
                let entry = NewEntry::new(
                    now,
                    "system",
                    "identity.renewal_queued",
                    Some(&d.id),
                    serde_json::json!({"not_after": d.identity_not_after, "command_uuids": outcome.command_uuids}),
                );
                audit_log::append(storage, vec![entry]).await?;
                queued += 1;
                self.metrics.identity_renewals.inc();
                tracing::info!(device = %d.id, not_after = %d.identity_not_after.map(crate::clock::to_rfc3339).unwrap_or_default(), "identity renewal queued");
            }
        }
        Ok(queued)
    }
}
