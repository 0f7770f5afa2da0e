//! The embedded SCEP CA (RFC 8894) that issues device identity certificates.
//!
//! `GetCACaps`, `GetCACert`, and `PKIOperation` with PKCSReq (against a one-time challenge) and RenewalReq
//! (signed by a certificate we issued). Every request that is a SCEP message gets a signed CertRep, success
//! or failure; anything else is `Malformed` (HTTP 400). Nothing is issued unless every check passes, and the
//! challenge is used up in the same transaction that records the certificate.

pub mod message;

pub use crate::openssl_ffi::csr_with_challenge;
pub use message::{
    build_request, read_cert_rep, CertRep, CertRepError, FailInfo, MessageType, PkiMessage,
};

use crate::clock::SharedClock;
use crate::config::ScepConfig;
use crate::metrics::Metrics;
use crate::openssl_ffi;
use crate::pki::{self, KeyPair, PkiError, Usage};
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::issued_certs::{self, IssuedCertificate};
use crate::storage::secrets::{self, SecretKind, SecretScope};
use crate::storage::{Storage, StorageError};
use message::Malformed;
use openssl::x509::X509;
use sea_orm::DatabaseTransaction;
use secrecy::ExposeSecret;
use std::path::Path;
use std::sync::Arc;

/// What `GetCACaps` advertises.
pub const CA_CAPS: &str = "POSTPKIOperation\nSHA-256\nSHA-1\nAES\nDES3\nSCEPStandard\nRenewal\n";

#[derive(Debug, thiserror::Error)]
pub enum ScepError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    #[error("building the reply: {0}")]
    Reply(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sea_orm::DbErr> for ScepError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

pub struct ScepService {
    ca: KeyPair,
    chain: Vec<X509>,
    storage: Storage,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    config: ScepConfig,
}

/// The CA: configured files, or generated once into the data dir (key encrypted under `secret`).
/// The CA from its configured files, or generated in `data_dir` on first start, valid from `now_unix` (the
/// server's clock, which checks the chains of the identities it issues).
pub fn load_ca(
    config: &ScepConfig,
    data_dir: &Path,
    secret: &str,
    now_unix: i64,
) -> Result<KeyPair, PkiError> {
    pki::configured_or_generated(
        (
            config.ca_cert_file.as_deref(),
            config.ca_key_file.as_deref(),
        ),
        config.ca_key_passphrase.as_ref().map(|p| p.expose_secret()),
        data_dir,
        "scep-ca",
        secret,
        || {
            let subject = pki::name(&config.ca_common_name, &config.organization)?;
            pki::generate_at(&subject, Usage::Ca, config.ca_validity_days, None, now_unix)
        },
    )
}

impl ScepService {
    pub fn new(
        ca: KeyPair,
        storage: Storage,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        config: ScepConfig,
    ) -> Result<Self, PkiError> {
        // A configured CA file may hold the chain above the issuing CA (first): kept for GetCACert and for
        // the certificates that go with signed profiles.
        let chain = match &config.ca_cert_file {
            Some(f) => {
                let pem = std::fs::read(f).map_err(|err| PkiError::Io(f.clone(), err))?;
                let all = X509::stack_from_pem(&pem)
                    .map_err(|e| PkiError::crypto(format!("{}", f.display()), e))?;
                all.into_iter().skip(1).collect()
            }
            None => Vec::new(),
        };
        Ok(Self {
            ca,
            chain,
            storage,
            clock,
            metrics,
            config,
        })
    }

    /// The issuing CA followed by the rest of its configured chain.
    pub fn ca_chain(&self) -> Vec<&X509> {
        std::iter::once(&self.ca.cert).chain(&self.chain).collect()
    }

    pub fn ca(&self) -> &KeyPair {
        &self.ca
    }

    pub fn ca_cert(&self) -> &X509 {
        &self.ca.cert
    }

    /// What `GetCACert` answers, with its content type: our CA (DER) alone, or, when the configured CA file
    /// holds a chain (the issuing CA first, then its intermediates and root), a certs-only PKCS#7 of all of
    /// them.
    pub fn ca_cert_response(&self) -> Result<(&'static str, Vec<u8>), PkiError> {
        let e = |e| PkiError::crypto("GetCACert", e);
        if self.chain.is_empty() {
            return Ok((
                "application/x-x509-ca-cert",
                self.ca.cert.to_der().map_err(e)?,
            ));
        }
        let refs: Vec<&openssl::x509::X509Ref> =
            self.ca_chain().into_iter().map(|c| c.as_ref()).collect();
        let p7 = openssl_ffi::certs_only(&refs)
            .and_then(|p| p.to_der())
            .map_err(e)?;
        Ok(("application/x-x509-ca-ra-cert", p7))
    }

    /// A fresh one-time challenge for an enrollment profile (or the API).
    pub async fn new_challenge(&self, scope: SecretScope) -> Result<String, StorageError> {
        let ttl = self.config.challenge_ttl_secs as i64 * 1000;
        let (_, secret) = secrets::create(
            &self.storage,
            SecretKind::Challenge,
            scope,
            ttl,
            self.clock.now_ms(),
        )
        .await?;
        Ok(secret)
    }

    /// Handle a PKIOperation message; the answer is a DER CertRep.
    pub async fn pki_operation(&self, body: &[u8]) -> Result<Vec<u8>, ScepError> {
        let msg = PkiMessage::decode(body).inspect_err(|e| {
            tracing::warn!(error = %e, "SCEP request refused");
            self.metrics.scep("malformed");
        })?;
        let answered = self.answer(&msg).await;
        match &answered {
            Ok((_, issued)) => self.metrics.scep(if *issued { "issued" } else { "failed" }),
            Err(_) => self.metrics.enrollment_step("scep", Some("error")),
        }
        answered.map(|(reply, _)| reply)
    }

    /// The CertRep for a decoded request, and whether it issued a certificate.
    async fn answer(&self, msg: &PkiMessage) -> Result<(Vec<u8>, bool), ScepError> {
        let outcome = self.process(msg).await?;
        let reply = match &outcome {
            Ok((cert, cipher)) => message::cert_rep(&self.ca, msg, Ok((cert, *cipher))),
            Err(info) => message::cert_rep(&self.ca, msg, Err(*info)),
        }
        .map_err(|e| ScepError::Reply(crate::identity::openssl_reasons(&e)))?;
        Ok((reply, outcome.is_ok()))
    }

    async fn process(
        &self,
        msg: &PkiMessage,
    ) -> Result<Result<(X509, openssl::symm::Cipher), FailInfo>, ScepError> {
        let refuse = |info: FailInfo, why: &str| {
            tracing::warn!(transaction = %msg.transaction_id, kind = ?msg.message_type, fail_info = ?info, reason = why, "SCEP request failed");
            Ok(Err(info))
        };
        if !matches!(
            msg.message_type,
            MessageType::PkcsReq | MessageType::RenewalReq
        ) {
            return refuse(FailInfo::BadRequest, "unsupported messageType");
        }
        if !msg.signature_valid {
            return refuse(FailInfo::BadMessageCheck, "signature does not verify");
        }
        let csr = match msg.decrypt_csr(&self.ca) {
            Ok(c) => c,
            Err((info, why)) => return refuse(info, &why),
        };
        let now = self.clock.now_ms();
        let cipher = csr.cipher;
        let issuer = Issuer {
            ca: self.ca.clone(),
            validity_days: self.config.validity_days,
        };
        let (kind, signer) = (msg.message_type, msg.signer.clone());
        let issued = self
            .storage
            .transaction(move |txn| Box::pin(issuer.issue_in(txn, kind, signer, csr, now)))
            .await;
        match issued {
            Ok(cert) => Ok(Ok((cert, cipher))),
            Err(NotIssued::Refused(info, why)) => refuse(info, &why),
            Err(NotIssued::Failed(e)) => Err(e),
        }
    }

    /// Revoke a certificate we issued. A device bound to it loses that binding, so it can no longer check
    /// in with it (and Authenticate refuses revoked certificates). None if there is no such unrevoked one.
    pub async fn revoke(&self, serial: &str) -> Result<Option<IssuedCertificate>, StorageError> {
        let now = self.clock.now_ms();
        let owned = serial.to_string();
        let revoked = self
            .storage
            .transaction(move |txn| Box::pin(revoke_in(txn, owned, now)))
            .await?;
        let Some(chain) = revoked else {
            return Ok(None);
        };
        let renewals = renewal_serials(&chain);
        tracing::warn!(serial, renewals = ?renewals, "identity certificate revoked");
        Ok(chain.into_iter().next())
    }
}

/// The serials of a revoked chain's renewals (everything after the certificate revoked).
fn renewal_serials(chain: &[IssuedCertificate]) -> Vec<&str> {
    chain[1..].iter().map(|c| c.serial.as_str()).collect()
}

/// Revoke `serial` and every renewal descending from it (whoever held it could have renewed it), unbind
/// them and audit it, in `txn`. The revoked chain, `serial` first; None if there is no such unrevoked one.
async fn revoke_in(
    txn: &DatabaseTransaction,
    serial: String,
    now: i64,
) -> Result<Option<Vec<IssuedCertificate>>, StorageError> {
    let Some(chain) = issued_certs::revoke_chain(txn, &serial, now).await? else {
        return Ok(None);
    };
    let fingerprints: Vec<String> = chain.iter().map(|c| c.fingerprint.clone()).collect();
    crate::storage::devices::unbind_identity(txn, &fingerprints, now).await?;
    let renewals = renewal_serials(&chain);
    audit_log::append(
        txn,
        vec![NewEntry::new(
            now,
            "system",
            "identity.revoke",
            Some(&serial),
            serde_json::json!({
                "device_id": chain[0].device_id,
                "renewals_revoked": renewals,
            }),
        )],
    )
    .await?;
    Ok(Some(chain))
}

/// Why a request's transaction issued nothing: a refusal (rolled back, answered with a failure CertRep)
/// or an error.
enum NotIssued {
    Refused(FailInfo, String),
    Failed(ScepError),
}

fn refused(info: FailInfo, why: &str) -> NotIssued {
    NotIssued::Refused(info, why.to_string())
}

impl From<ScepError> for NotIssued {
    fn from(e: ScepError) -> Self {
        Self::Failed(e)
    }
}

impl From<StorageError> for NotIssued {
    fn from(e: StorageError) -> Self {
        Self::Failed(e.into())
    }
}

/// What issuing needs of the service, owned by the transaction that issues.
struct Issuer {
    ca: KeyPair,
    validity_days: u32,
}

impl Issuer {
    /// Check the request and record the certificate it gets, in `txn`: the challenge is used up in the
    /// same transaction, and a refusal rolls everything back.
    async fn issue_in(
        self,
        txn: &DatabaseTransaction,
        kind: MessageType,
        signer: X509,
        csr: message::Csr,
        now: i64,
    ) -> Result<X509, NotIssued> {
        let (challenge_id, pinned, renewal_of, renews_device) = match kind {
            MessageType::RenewalReq => {
                let Some(old) = self.our_valid_certificate(txn, &signer, now).await? else {
                    return Err(refused(
                        FailInfo::BadCertId,
                        "renewal signed by a certificate we did not issue, or revoked or expired",
                    ));
                };
                (
                    None,
                    old.pinned_serial_number,
                    Some(old.serial),
                    old.device_id.or(old.renews_device),
                )
            }
            _ => {
                let Some(challenge) = csr.challenge.as_deref() else {
                    return Err(refused(FailInfo::BadRequest, "no challengePassword"));
                };
                let s = match secrets::consume(txn, SecretKind::Challenge, challenge, None, now)
                    .await?
                {
                    Ok(s) => s,
                    Err(r) => return Err(refused(FailInfo::BadRequest, &format!("challenge {r}"))),
                };
                // A renewal challenge descends from the identity the device has bound now (it was
                // delivered to that identity): record it, so revoking that identity revokes this one.
                let mut renewal_of = None;
                if let Some(device) = &s.renewal_for {
                    if let Some(bound) = issued_certs::bound_to_device(txn, device).await? {
                        if issued_certs::revoked_in_chain(txn, &bound.fingerprint).await? {
                            return Err(refused(
                                FailInfo::BadRequest,
                                "renewal of a revoked identity",
                            ));
                        }
                        renewal_of = Some(bound.serial);
                    }
                    // Revoked (and so unbound) after the challenge was made: it went to the revoked
                    // identity.
                    if issued_certs::device_revoked_since(txn, device, s.created_at).await? {
                        return Err(refused(
                            FailInfo::BadRequest,
                            "renewal challenge issued to a since revoked identity",
                        ));
                    }
                }
                (Some(s.id), s.serial_number, renewal_of, s.renewal_for)
            }
        };
        let issued = self.issue(&csr.req, now).map_err(|e| {
            tracing::error!(error = %e, "issuing a certificate failed");
            ScepError::Reply(e.to_string())
        })?;
        let record = IssuedCertificate {
            serial: pki::serial_hex(&issued).map_err(|e| ScepError::Reply(e.to_string()))?,
            fingerprint: pki::fingerprint(&issued).map_err(|e| ScepError::Reply(e.to_string()))?,
            subject: crate::identity::DeviceCert::from_x509(issued.clone())
                .and_then(|c| c.subject())
                .unwrap_or_default(),
            not_before: pki::unix_time(issued.not_before()).unwrap_or(0) * 1000,
            not_after: pki::unix_time(issued.not_after()).unwrap_or(0) * 1000,
            issued_at: now,
            challenge_id,
            pinned_serial_number: pinned,
            renewal_of,
            renews_device,
            device_id: None,
            revoked_at: None,
        };
        tracing::info!(serial = %record.serial, subject = %record.subject, renewal = record.renewal_of.is_some(), "issued a device identity certificate");
        audit_log::append(
            txn,
            vec![NewEntry::new(
                now,
                "scep",
                "identity.issue",
                Some(&record.serial),
                serde_json::json!({
                    "subject": record.subject,
                    "fingerprint": record.fingerprint,
                    "challenge_id": record.challenge_id,
                    "renewal_of": record.renewal_of,
                    "renews_device": record.renews_device,
                }),
            )],
        )
        .await?;
        issued_certs::insert(txn, record).await?;
        Ok(issued)
    }

    /// The record of `cert` if we issued it, it is still valid, and neither it nor any identity it was
    /// renewed from is revoked. Its row stays locked until the transaction ends, so a concurrent revocation
    /// of its chain either is seen here or sees the renewal (see [`issued_certs::lock_by_fingerprint`]).
    async fn our_valid_certificate<C: sea_orm::ConnectionTrait>(
        &self,
        c: &C,
        cert: &X509,
        now: i64,
    ) -> Result<Option<IssuedCertificate>, ScepError> {
        let ca_key = self
            .ca
            .cert
            .public_key()
            .map_err(|e| ScepError::Reply(e.to_string()))?;
        if !cert.verify(&ca_key).unwrap_or(false) {
            let _ = openssl::error::ErrorStack::get();
            return Ok(None);
        }
        let Ok(fp) = pki::fingerprint(cert) else {
            return Ok(None);
        };
        let Some(record) = issued_certs::lock_by_fingerprint(c, &fp)
            .await?
            .filter(|r| r.revoked_at.is_none() && r.not_after > now)
        else {
            return Ok(None);
        };
        if issued_certs::revoked_in_chain(c, &fp).await? {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// A client-auth certificate for the CSR's subject and key, signed by the CA.
    fn issue(&self, req: &openssl::x509::X509Req, now_ms: i64) -> Result<X509, PkiError> {
        let key = req
            .public_key()
            .map_err(|e| PkiError::crypto("CSR key", e))?;
        let now = now_ms / 1000;
        pki::build_certificate(
            req.subject_name(),
            &key,
            Usage::ClientAuth,
            now - 3600,
            now + self.validity_days as i64 * 86_400,
            &pki::random_serial()?,
            Some(&self.ca),
            None,
        )
    }
}

#[cfg(test)]
mod tests;
