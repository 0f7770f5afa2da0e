//! Policies and their versions. A version is written once and never changed: the database refuses an
//! update or a delete (see the `m0012_policies` migration); an attempt surfaces as [`StorageError::Corrupt`]
//! naming the refusal, since nothing in the server issues one.

use super::entities::policy::{ActiveModel, Column, Entity};
use super::entities::policy_version::{self as version, Entity as Versions};
use super::{StorageError, StorageResult};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

pub use super::entities::policy::Model as Policy;
pub use super::entities::policy_version::Model as PolicyVersion;

/// Store a new policy. A name already taken is a `Conflict`.
pub async fn insert<C: ConnectionTrait>(
    c: &C,
    name: &str,
    target_group: i64,
    now: i64,
) -> StorageResult<Policy> {
    if find_by_name(c, name).await?.is_some() {
        return Err(name_taken(name));
    }
    let inserted = Entity::insert(ActiveModel {
        name: Set(name.to_string()),
        target_group: Set(target_group),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    })
    .exec(c)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => name_taken(name),
        _ => StorageError::Db(e),
    })?;
    find(c, inserted.last_insert_id)
        .await?
        .ok_or_else(|| StorageError::Corrupt("a policy vanished as it was created".into()))
}

fn name_taken(name: &str) -> StorageError {
    StorageError::Conflict(format!("a policy named {name:?} exists"))
}

pub async fn find<C: ConnectionTrait>(c: &C, id: i64) -> StorageResult<Option<Policy>> {
    Ok(Entity::find_by_id(id).one(c).await?)
}

pub async fn find_by_name<C: ConnectionTrait>(c: &C, name: &str) -> StorageResult<Option<Policy>> {
    Ok(Entity::find().filter(Column::Name.eq(name)).one(c).await?)
}

/// Policies in id order after the cursor `after`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    after: Option<i64>,
    limit: u64,
) -> StorageResult<Vec<Policy>> {
    Ok(Entity::find()
        .filter(Column::Id.gt(after.unwrap_or(0)))
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(c)
        .await?)
}

/// The names of the policies using a group, as their target or as a stage of their rollout (which may
/// then not be deleted).
pub async fn using<C: ConnectionTrait>(c: &C, group_id: i64) -> StorageResult<Vec<String>> {
    use super::entities::policy_rollout as rollout;
    let staged = sea_orm::sea_query::Query::select()
        .column(rollout::Column::PolicyId)
        .from(rollout::Entity)
        .cond_where(
            sea_orm::Condition::any()
                .add(rollout::Column::PilotGroup.eq(group_id))
                .add(rollout::Column::CanaryGroup.eq(group_id)),
        )
        .to_owned();
    Ok(Entity::find()
        .select_only()
        .column(Column::Name)
        .filter(
            sea_orm::Condition::any()
                .add(Column::TargetGroup.eq(group_id))
                .add(Column::Id.in_subquery(staged)),
        )
        .order_by_asc(Column::Name)
        .into_tuple()
        .all(c)
        .await?)
}

/// Store a version, once. A version label already stored for the policy is a `Conflict`.
pub async fn insert_version<C: ConnectionTrait>(c: &C, v: PolicyVersion) -> StorageResult<()> {
    let label = v.version.clone();
    let row = version::ActiveModel {
        policy_id: Set(v.policy_id),
        version: Set(v.version),
        sha256: Set(v.sha256),
        manifest: Set(v.manifest),
        bundle: Set(v.bundle),
        signer: Set(v.signer),
        created_by: Set(v.created_by),
        created_at: Set(v.created_at),
    };
    Versions::insert(row)
        .exec_without_returning(c)
        .await
        .map_err(|e| match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                StorageError::Conflict(format!("version {label} exists"))
            }
            _ => StorageError::Db(e),
        })?;
    Ok(())
}

/// One version, bundle included.
pub async fn find_version<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    label: &str,
) -> StorageResult<Option<PolicyVersion>> {
    Ok(Versions::find_by_id((policy_id, label.to_string()))
        .one(c)
        .await?)
}

/// A version as listed: everything but the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    pub version: String,
    pub sha256: String,
    pub signer: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

impl VersionSummary {
    pub fn of(v: PolicyVersion) -> Self {
        Self {
            version: v.version,
            sha256: v.sha256,
            signer: v.signer,
            created_by: v.created_by,
            created_at: v.created_at,
        }
    }
}

/// A policy's newest versions, newest first (at most `limit`).
pub async fn versions<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    limit: u64,
) -> StorageResult<Vec<VersionSummary>> {
    let rows: Vec<(String, String, Option<String>, String, i64)> = Versions::find()
        .select_only()
        .columns([
            version::Column::Version,
            version::Column::Sha256,
            version::Column::Signer,
            version::Column::CreatedBy,
            version::Column::CreatedAt,
        ])
        .filter(version::Column::PolicyId.eq(policy_id))
        .order_by_desc(version::Column::CreatedAt)
        .order_by_desc(version::Column::Version)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(version, sha256, signer, created_by, created_at)| VersionSummary {
                version,
                sha256,
                signer,
                created_by,
                created_at,
            },
        )
        .collect())
}
