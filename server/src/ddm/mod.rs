//! Declarative Device Management: what each enrollment should have (the built-in declarations and those
//! of the sets assigned to it), the sync a change to it causes, and the device's side of the protocol.
//! The JSON shapes and checks are in `protocol::ddm`; the tables in `storage::ddm`.

pub mod admin;
pub mod assignments;
pub mod builtin;
pub mod device;
pub mod effective;
pub mod sync;
pub mod views;

pub use assignments::{assign_set, group_set, unassign_set};

use crate::protocol::ddm::{DeclarationError, StatusError};
use crate::storage::enqueue::QueueError;
use crate::storage::StorageError;

/// Identifiers starting with this are the server's own (built-in) declarations; uploads may not use it.
pub const BUILTIN_PREFIX: &str = "mdm.builtin.";

/// Set names starting with this are policies' own (`policies::materialize`); admins and plugins may not
/// write or assign them.
pub const POLICY_SET_PREFIX: &str = "mdm.policy.";

const BUILTIN_RESERVED: &str =
    "identifiers starting with mdm.builtin. are reserved for the server's own declarations";
const POLICY_SET_RESERVED: &str =
    "set names starting with mdm.policy. are policies' own: they change only through policy versions";

impl DdmError {
    /// An upload or deletion naming a built-in declaration.
    pub fn builtin_reserved() -> Self {
        Self::Reserved(BUILTIN_RESERVED)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DdmError {
    #[error("no set named {0}")]
    UnknownSet(String),
    #[error("no enrollment {0}")]
    UnknownEnrollment(String),
    #[error("no group {0}")]
    UnknownGroup(i64),
    #[error("no declaration {0}")]
    UnknownDeclaration(String),
    #[error("unknown declarations in the set: {}", .0.join(", "))]
    UnknownMembers(Vec<String>),
    #[error("declaration {identifier} is in use by sets {}", .sets.join(", "))]
    InUse {
        identifier: String,
        sets: Vec<String>,
    },
    /// A name or identifier the server keeps for its own declarations or a policy's.
    #[error("{0}")]
    Reserved(&'static str),
    /// A declaration a policy's versions own: it changes only with a new version.
    #[error(
        "declaration {0} belongs to policy {1}: it changes only with a new version of the policy"
    )]
    OwnedByPolicy(String, i64),
    #[error("invalid name: {0}")]
    BadName(String),
    #[error(transparent)]
    Declaration(#[from] DeclarationError),
    #[error("invalid status report: {0}")]
    Status(#[from] StatusError),
    #[error("invalid DeclarativeManagement request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sea_orm::DbErr> for DdmError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Storage(e.into())
    }
}

impl From<QueueError> for DdmError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Storage(s) => Self::Storage(s),
            other => Self::Storage(StorageError::Corrupt(other.to_string())),
        }
    }
}

/// Set names: what an admin or a plugin types and an API path carries. 1 to 128 characters of letters,
/// digits and `.`, `_`, `-`, not starting with [`POLICY_SET_PREFIX`].
pub fn check_set_name(name: &str) -> Result<(), DdmError> {
    if name.starts_with(POLICY_SET_PREFIX) {
        return Err(DdmError::Reserved(POLICY_SET_RESERVED));
    }
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(DdmError::BadName(
            "a set name is 1 to 128 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}
