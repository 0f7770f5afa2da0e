//! What each enrollment's device reported (per declaration, and the latest value of each status item) and
//! its sync state (the token last announced to it, when it last synced and reported).

use super::super::entities::ddm_declaration_status::{self as decl, Entity as DeclStatus};
use super::super::entities::ddm_enrollment::{self as state, Entity as States};
use super::super::entities::ddm_status_item::{self as item, Entity as Items};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::{StorageError, StorageResult, Writes};
use super::ROWS_PER_INSERT;
use crate::protocol::ddm::{Category, DeclarationStatus};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::BTreeMap;

pub use super::super::entities::ddm_declaration_status::Model as ReportedDeclaration;
pub use super::super::entities::ddm_enrollment::Model as SyncState;
pub use super::super::entities::ddm_status_item::Model as ReportedItem;

pub fn category_of(s: &str) -> StorageResult<Category> {
    Category::parse(s).ok_or_else(|| StorageError::Corrupt(format!("unknown DDM category {s:?}")))
}

/// One enrollment's sync state, if it has any.
pub async fn sync_state<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
) -> StorageResult<Option<SyncState>> {
    Ok(States::find_by_id(enrollment_id.to_string()).one(c).await?)
}

/// Every enrollment with a sync state: those that take part in DDM.
pub async fn enrollments<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<String>> {
    Ok(States::find()
        .select_only()
        .column(state::Column::EnrollmentId)
        .order_by_asc(state::Column::EnrollmentId)
        .into_tuple()
        .all(c)
        .await?)
}

fn blank_state(enrollment_id: &str) -> state::ActiveModel {
    state::ActiveModel {
        enrollment_id: Set(enrollment_id.to_string()),
        announced_token: Set(None),
        announced_at: Set(None),
        synced_token: Set(None),
        synced_at: Set(None),
        status_at: Set(None),
    }
}

/// Record that the device fetched its tokens or manifest at `token`. What it was told is now what was
/// announced, so a change back to it needs no new sync.
pub async fn set_synced<W: Writes>(
    w: &W,
    enrollment_id: &str,
    token: &str,
    now: i64,
) -> StorageResult<()> {
    States::insert(state::ActiveModel {
        announced_token: Set(Some(token.to_string())),
        announced_at: Set(Some(now)),
        synced_token: Set(Some(token.to_string())),
        synced_at: Set(Some(now)),
        ..blank_state(enrollment_id)
    })
    .on_conflict(
        OnConflict::column(state::Column::EnrollmentId)
            .update_columns([
                state::Column::AnnouncedToken,
                state::Column::AnnouncedAt,
                state::Column::SyncedToken,
                state::Column::SyncedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(w.connection())
    .await?;
    Ok(())
}

/// What the device last reported of each declaration.
pub async fn declarations<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
) -> StorageResult<Vec<ReportedDeclaration>> {
    Ok(DeclStatus::find()
        .filter(decl::Column::EnrollmentId.eq(enrollment_id))
        .order_by_asc(decl::Column::Identifier)
        .all(c)
        .await?)
}

/// The latest value of each status item the device reported.
pub async fn items<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
) -> StorageResult<Vec<ReportedItem>> {
    Ok(Items::find()
        .filter(item::Column::EnrollmentId.eq(enrollment_id))
        .order_by_asc(item::Column::Name)
        .all(c)
        .await?)
}

/// Store a status report: each declaration's state replaces what was stored for it, each item's value
/// replaces the item's. A full report replaces everything the device had reported.
pub async fn record_report<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
    declarations: &[DeclarationStatus],
    items: &BTreeMap<String, serde_json::Value>,
    full: bool,
    now: i64,
) -> StorageResult<()> {
    if full {
        remove_reports(c, &[enrollment_id.to_string()]).await?;
    }
    for chunk in declarations.chunks(ROWS_PER_INSERT) {
        DeclStatus::insert_many(chunk.iter().map(|d| decl::ActiveModel {
            enrollment_id: Set(enrollment_id.to_string()),
            identifier: Set(d.identifier.clone()),
            category: Set(d.category.as_str().to_string()),
            active: Set(d.active),
            valid: Set(d.valid.as_str().to_string()),
            server_token: Set(d.server_token.clone()),
            reasons: Set(serde_json::Value::Array(d.reasons.clone()).to_string()),
            reported_at: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([decl::Column::EnrollmentId, decl::Column::Identifier])
                .update_columns([
                    decl::Column::Category,
                    decl::Column::Active,
                    decl::Column::Valid,
                    decl::Column::ServerToken,
                    decl::Column::Reasons,
                    decl::Column::ReportedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    let items: Vec<_> = items.iter().collect();
    for chunk in items.chunks(ROWS_PER_INSERT) {
        Items::insert_many(chunk.iter().map(|(name, value)| item::ActiveModel {
            enrollment_id: Set(enrollment_id.to_string()),
            name: Set((*name).clone()),
            value: Set(value.to_string()),
            reported_at: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([item::Column::EnrollmentId, item::Column::Name])
                .update_columns([item::Column::Value, item::Column::ReportedAt])
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    States::insert(state::ActiveModel {
        status_at: Set(Some(now)),
        ..blank_state(enrollment_id)
    })
    .on_conflict(
        OnConflict::column(state::Column::EnrollmentId)
            .update_column(state::Column::StatusAt)
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// What these enrollments' devices reported of one declaration.
pub async fn of_declaration<C: ConnectionTrait>(
    c: &C,
    identifier: &str,
) -> StorageResult<Vec<ReportedDeclaration>> {
    Ok(DeclStatus::find()
        .filter(decl::Column::Identifier.eq(identifier))
        .all(c)
        .await?)
}

async fn remove_reports<C: ConnectionTrait>(c: &C, enrollment_ids: &[String]) -> StorageResult<()> {
    for chunk in enrollment_ids.chunks(IDS_PER_STATEMENT) {
        DeclStatus::delete_many()
            .filter(decl::Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
        Items::delete_many()
            .filter(item::Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(())
}

pub(super) async fn remove_all<C: ConnectionTrait>(
    c: &C,
    enrollment_ids: &[String],
) -> StorageResult<()> {
    remove_reports(c, enrollment_ids).await?;
    for chunk in enrollment_ids.chunks(IDS_PER_STATEMENT) {
        States::delete_many()
            .filter(state::Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(())
}
