//! Declarative Device Management's tables: declarations, sets of them, sets assigned to enrollments, each
//! enrollment's sync state and what its device reported. Reads take any connection; writes a [`Writes`]
//! or a transaction's connection, so a change and the sync it causes commit together (see `crate::ddm`).

pub mod assignments;
pub mod audience;
pub mod declarations;
pub mod sets;
pub mod status;

use super::StorageResult;
use sea_orm::ConnectionTrait;

/// Rows per multi-row insert: each row binds a handful of values, and this keeps a statement well under
/// SQLite's bind limit.
const ROWS_PER_INSERT: usize = 2_000;

/// An enrollment unenrolled (CheckOut, or a device authenticating afresh): its assignments, sync state and
/// reported status go, so a device that enrolls again starts clean.
pub async fn forget_enrollments<C: ConnectionTrait>(
    c: &C,
    enrollment_ids: &[String],
) -> StorageResult<()> {
    assignments::remove_all(c, enrollment_ids).await?;
    status::remove_all(c, enrollment_ids).await
}
