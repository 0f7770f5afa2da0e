//! Assigning sets to enrollments and to device groups, from the admin API and from plugins' actions
//! alike: the change and the sync it causes, in the caller's transaction.

use super::{check_set_name, sync, DdmError};
use crate::storage::ddm::audience::Audience;
use crate::storage::ddm::{assignments, sets};
use crate::storage::{enrollments, groups};
use sea_orm::ConnectionTrait;

/// Assign a set to an enrollment and queue the sync that causes. Ok(true) if it was not assigned already.
pub async fn assign_set<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    set_name: &str,
    now_ms: i64,
) -> Result<bool, DdmError> {
    known(c, enrollment_id, set_name).await?;
    let changed = assignments::assign(c, enrollment_id, set_name, now_ms).await?;
    if changed {
        sync::announce(
            c,
            Audience::Ids(&[enrollment_id.to_string()]),
            false,
            now_ms,
        )
        .await?;
    }
    Ok(changed)
}

/// Remove a set from an enrollment and queue the sync that causes. Ok(true) if it was assigned.
pub async fn unassign_set<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    set_name: &str,
    now_ms: i64,
) -> Result<bool, DdmError> {
    known(c, enrollment_id, set_name).await?;
    let changed = assignments::unassign(c, enrollment_id, set_name).await?;
    if changed {
        sync::announce(
            c,
            Audience::Ids(&[enrollment_id.to_string()]),
            false,
            now_ms,
        )
        .await?;
    }
    Ok(changed)
}

/// Assign (`assign`) a set to a group, whose members' device channels then hold it, or unassign it; the
/// members it changes are synced. Ok(true) if that changed anything.
pub async fn group_set<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    set_name: &str,
    assign: bool,
    now_ms: i64,
) -> Result<bool, DdmError> {
    known_group(c, group_id, set_name).await?;
    let changed = if assign {
        assignments::assign_group(c, group_id, set_name, now_ms).await?
    } else {
        assignments::unassign_group(c, group_id, set_name).await?
    };
    if changed {
        sync::announce(c, Audience::InGroup(group_id), false, now_ms).await?;
    }
    Ok(changed)
}

async fn known_group<C: ConnectionTrait>(
    c: &C,
    group_id: i64,
    set_name: &str,
) -> Result<(), DdmError> {
    check_set_name(set_name)?;
    if !sets::exists(c, set_name).await? {
        return Err(DdmError::UnknownSet(set_name.to_string()));
    }
    if groups::find(c, group_id).await?.is_none() {
        return Err(DdmError::UnknownGroup(group_id));
    }
    Ok(())
}

async fn known<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    set_name: &str,
) -> Result<(), DdmError> {
    check_set_name(set_name)?;
    if !sets::exists(c, set_name).await? {
        return Err(DdmError::UnknownSet(set_name.to_string()));
    }
    if enrollments::find(c, enrollment_id).await?.is_none() {
        return Err(DdmError::UnknownEnrollment(enrollment_id.to_string()));
    }
    Ok(())
}
