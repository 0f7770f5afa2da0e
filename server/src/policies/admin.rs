//! What admins (and CI jobs) change: policies and their versions, each change with its audit entry in one
//! transaction. A version is checked whole before anything is written: the bundle's form, its
//! declarations, and its signature against the trusted signers.

use super::bundle::{self, BundleError};
use super::trust::{Trust, Untrusted};
use crate::groups::admin::check_name;
use crate::storage::audit_log::{self, NewEntry};
use crate::storage::policies::{self, Policy, PolicyVersion, VersionSummary};
use crate::storage::{groups, Storage, StorageError};
use sea_orm::ConnectionTrait;
use serde_json::json;

/// Who made a change, for the audit log (`api-key:<name>`).
pub type Actor = String;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no policy {0}")]
    NotFound(i64),
    #[error("no group {0}")]
    UnknownGroup(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("invalid bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error("signature refused: {0}")]
    Untrusted(#[from] Untrusted),
    #[error("version {0} exists with other content (a version never changes: give the new one another label)")]
    VersionTaken(String),
    #[error("no version {0}")]
    UnknownVersion(String),
    #[error("no rollout of policy {0}: activate a version first")]
    NoRollout(i64),
    /// The rollout is not in a state the request can act on.
    #[error("{0}")]
    Busy(String),
    /// A stored version no longer matches its digest: nothing was rolled out.
    #[error("{0}")]
    Tampered(String),
    #[error(transparent)]
    Ddm(#[from] crate::ddm::DdmError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sea_orm::DbErr> for PolicyError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

/// Create a policy targeting a group.
pub async fn create(
    storage: &Storage,
    name: String,
    target_group: i64,
    actor: Actor,
    now: i64,
) -> Result<Policy, PolicyError> {
    check_name(&name).map_err(|e| PolicyError::Invalid(e.to_string()))?;
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                if groups::find(txn, target_group).await?.is_none() {
                    return Err(PolicyError::UnknownGroup(target_group));
                }
                let p = policies::insert(txn, &name, target_group, now).await?;
                let detail = json!({"name": name, "target_group": target_group});
                audit(txn, now, actor, "policy.created", p.id, detail).await?;
                Ok(p)
            })
        })
        .await
}

/// A version as stored, or found stored already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub version: VersionSummary,
    /// False: this exact bundle was uploaded before (the same label and digest); nothing was written.
    pub created: bool,
}

/// Store a new version of a policy from its bundle. Uploading the same bundle again answers what is
/// stored; the same label with other content is refused.
pub async fn upload_version(
    storage: &Storage,
    policy_id: i64,
    zip: Vec<u8>,
    trust: &Trust,
    actor: Actor,
    now: i64,
) -> Result<Uploaded, PolicyError> {
    // Up to 32 MiB inflated and hashed: off the async workers.
    let (b, zip) = tokio::task::spawn_blocking(move || (bundle::read(&zip), zip))
        .await
        .map_err(|e| StorageError::Corrupt(format!("reading a bundle: {e}")))?;
    let b = b?;
    let signer = trust.signer(&b)?;
    let manifest = String::from_utf8_lossy(&b.files[bundle::MANIFEST]).into_owned();
    let row = PolicyVersion {
        policy_id,
        version: b.manifest.version.clone(),
        sha256: b.digest.clone(),
        manifest,
        bundle: zip,
        signer: signer.clone(),
        created_by: actor.clone(),
        created_at: now,
    };
    storage
        .transaction(move |txn| {
            Box::pin(async move {
                if policies::find(txn, policy_id).await?.is_none() {
                    return Err(PolicyError::NotFound(policy_id));
                }
                let label = row.version.clone();
                if let Some(stored) = policies::find_version(txn, policy_id, &label).await? {
                    if stored.sha256 != row.sha256 {
                        return Err(PolicyError::VersionTaken(label));
                    }
                    return Ok(Uploaded {
                        version: VersionSummary::of(stored),
                        created: false,
                    });
                }
                let detail = json!({"version": label, "sha256": row.sha256, "signer": row.signer});
                policies::insert_version(txn, row.clone()).await?;
                audit(
                    txn,
                    now,
                    actor,
                    "policy.version_uploaded",
                    policy_id,
                    detail,
                )
                .await?;
                Ok(Uploaded {
                    version: VersionSummary::of(row),
                    created: true,
                })
            })
        })
        .await
}

/// A stored version's bundle read again (off the async workers), its digest recomputed: the check made
/// wherever a version is used. A mismatch means the stored bytes changed under the database's own refusal.
pub async fn verify_stored(
    v: PolicyVersion,
) -> Result<(PolicyVersion, bundle::Bundle), PolicyError> {
    let (read, v) = tokio::task::spawn_blocking(move || (bundle::read(&v.bundle), v))
        .await
        .map_err(|e| StorageError::Corrupt(format!("reading a bundle: {e}")))?;
    let b = read?;
    if b.digest != v.sha256 {
        return Err(PolicyError::Storage(StorageError::Corrupt(format!(
            "policy {} version {}: the bundle's digest is {}, {} was recorded",
            v.policy_id, v.version, b.digest, v.sha256
        ))));
    }
    Ok((v, b))
}

pub(super) async fn audit<C: ConnectionTrait>(
    c: &C,
    now: i64,
    actor: Actor,
    action: &str,
    policy_id: i64,
    detail: serde_json::Value,
) -> Result<(), PolicyError> {
    let target = policy_id.to_string();
    let entry = NewEntry::new(now, actor, action, Some(&target), detail);
    audit_log::append(c, vec![entry]).await?;
    Ok(())
}
