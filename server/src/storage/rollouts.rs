//! Policy rollouts: each policy's current one, the devices it reached, and the policies' holdings — the
//! assignments of a version's set (`mdm.policy.<policy>.<version>`) to device channels, which are how a
//! version reaches a device (every DDM read already answers for assignments).

use super::entities::ddm_assignment::{self as assignment, Entity as Assignments};
use super::entities::ddm_declaration_status::{self as status, Entity as Statuses};
use super::entities::policy;
use super::entities::policy_rollout::{Column, Entity};
use super::entities::policy_rollout_device::{self as reached, Entity as Reached};
use super::queue::IDS_PER_STATEMENT;
use super::StorageResult;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::BTreeMap;

pub use super::entities::policy_rollout::Model as Rollout;

/// Rows per multi-row insert (four values each).
const ROWS_PER_INSERT: usize = 2_000;

pub async fn find<C: ConnectionTrait>(c: &C, policy_id: i64) -> StorageResult<Option<Rollout>> {
    Ok(Entity::find_by_id(policy_id).one(c).await?)
}

/// Rollouts in a state, by policy.
pub async fn in_state<C: ConnectionTrait>(c: &C, state: &str) -> StorageResult<Vec<Rollout>> {
    Ok(Entity::find()
        .filter(Column::State.eq(state))
        .order_by_asc(Column::PolicyId)
        .all(c)
        .await?)
}

/// Start a policy's rollout afresh in place of `replacing` (the rollout as read; None: there was none):
/// the row replaced, the devices the previous one reached forgotten. False, with nothing written, when
/// the policy's rollout is no longer what was read (another activation got there first).
pub async fn start<C: ConnectionTrait>(
    c: &C,
    r: Rollout,
    replacing: Option<&Rollout>,
) -> StorageResult<bool> {
    if let Some(old) = replacing {
        let gone = Entity::delete_many()
            .filter(Column::PolicyId.eq(old.policy_id))
            .filter(Column::StartedAt.eq(old.started_at))
            .filter(Column::Version.eq(old.version.clone()))
            .filter(Column::State.eq(old.state.clone()))
            .exec(c)
            .await?;
        if gone.rows_affected != 1 {
            return Ok(false);
        }
    }
    Reached::delete_many()
        .filter(reached::Column::PolicyId.eq(r.policy_id))
        .exec(c)
        .await?;
    let inserted = Entity::insert(r.into_active_model())
        .on_conflict(OnConflict::column(Column::PolicyId).do_nothing().to_owned())
        .exec_without_returning(c)
        .await?;
    Ok(inserted == 1)
}

/// Move a rollout on (its stage, state, reason, stage start), only if it is still at `stage` in `state`
/// as read: false if another writer moved it first (a replica's round, an admin), and nothing changed.
pub async fn move_on<C: ConnectionTrait>(
    c: &C,
    from: &Rollout,
    to: &Rollout,
) -> StorageResult<bool> {
    let done = Entity::update_many()
        .col_expr(Column::Stage, Expr::value(to.stage))
        .col_expr(Column::State, Expr::value(to.state.clone()))
        .col_expr(Column::Reason, Expr::value(to.reason.clone()))
        .col_expr(Column::StageStartedAt, Expr::value(to.stage_started_at))
        .col_expr(Column::UpdatedAt, Expr::value(to.updated_at))
        .filter(Column::PolicyId.eq(from.policy_id))
        .filter(Column::Stage.eq(from.stage))
        .filter(Column::State.eq(from.state.clone()))
        .filter(Column::Version.eq(from.version.clone()))
        .filter(Column::StartedAt.eq(from.started_at))
        .exec(c)
        .await?;
    Ok(done.rows_affected == 1)
}

/// The devices a rollout reached, with the stage that reached each.
pub async fn reached<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
) -> StorageResult<BTreeMap<String, i32>> {
    let rows: Vec<(String, i32)> = Reached::find()
        .select_only()
        .columns([reached::Column::DeviceId, reached::Column::Stage])
        .filter(reached::Column::PolicyId.eq(policy_id))
        .into_tuple()
        .all(c)
        .await?;
    Ok(rows.into_iter().collect())
}

pub async fn add_reached<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    devices: &[(String, i32)],
    now: i64,
) -> StorageResult<()> {
    for chunk in devices.chunks(ROWS_PER_INSERT) {
        Reached::insert_many(chunk.iter().map(|(d, stage)| reached::ActiveModel {
            policy_id: Set(policy_id),
            device_id: Set(d.clone()),
            stage: Set(*stage),
            reached_at: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([reached::Column::PolicyId, reached::Column::DeviceId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

pub async fn remove_reached<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    devices: &[String],
) -> StorageResult<()> {
    for chunk in devices.chunks(IDS_PER_STATEMENT) {
        Reached::delete_many()
            .filter(reached::Column::PolicyId.eq(policy_id))
            .filter(reached::Column::DeviceId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// The policy's sets (those starting with `set_prefix`) assigned to device channels: of `devices`, or of
/// every device when None. Pairs of (device, set), sorted.
pub async fn holdings<C: ConnectionTrait>(
    c: &C,
    set_prefix: &str,
    devices: Option<&[String]>,
) -> StorageResult<Vec<(String, String)>> {
    let like = assignment::Column::SetName.like(format!("{set_prefix}%"));
    let q = || {
        Assignments::find()
            .select_only()
            .columns([
                assignment::Column::EnrollmentId,
                assignment::Column::SetName,
            ])
            .filter(like.clone())
    };
    let mut out: Vec<(String, String)> = Vec::new();
    match devices {
        None => out = q().into_tuple().all(c).await?,
        Some(ids) => {
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                let rows: Vec<(String, String)> = q()
                    .filter(assignment::Column::EnrollmentId.is_in(chunk.iter().cloned()))
                    .into_tuple()
                    .all(c)
                    .await?;
                out.extend(rows);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Take sets from devices and give sets to devices: (device, set) pairs.
pub async fn change_holdings<C: ConnectionTrait>(
    c: &C,
    remove: &[(String, String)],
    add: &[(String, String)],
    now: i64,
) -> StorageResult<()> {
    let mut by_set: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (device, set) in remove {
        by_set.entry(set).or_default().push(device);
    }
    for (set, devices) in by_set {
        for chunk in devices.chunks(IDS_PER_STATEMENT) {
            Assignments::delete_many()
                .filter(assignment::Column::SetName.eq(set))
                .filter(assignment::Column::EnrollmentId.is_in(chunk.iter().copied()))
                .exec(c)
                .await?;
        }
    }
    for chunk in add.chunks(ROWS_PER_INSERT) {
        Assignments::insert_many(chunk.iter().map(|(device, set)| assignment::ActiveModel {
            enrollment_id: Set(device.clone()),
            set_name: Set(set.clone()),
            created_at: Set(now),
        }))
        .on_conflict(
            OnConflict::columns([
                assignment::Column::EnrollmentId,
                assignment::Column::SetName,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    }
    Ok(())
}

/// The policies whose rollouts `group_ids` take part in (as target, pilot or canary group).
pub async fn involving<C: ConnectionTrait>(c: &C, group_ids: &[i64]) -> StorageResult<Vec<i64>> {
    let targets = Query::select()
        .column(policy::Column::Id)
        .from(policy::Entity)
        .and_where(policy::Column::TargetGroup.is_in(group_ids.iter().copied()))
        .to_owned();
    let ids: Vec<i64> = Entity::find()
        .select_only()
        .column(Column::PolicyId)
        .filter(
            Condition::any()
                .add(Column::PolicyId.in_subquery(targets))
                .add(Column::PilotGroup.is_in(group_ids.iter().copied()))
                .add(Column::CanaryGroup.is_in(group_ids.iter().copied())),
        )
        .order_by_asc(Column::PolicyId)
        .into_tuple()
        .all(c)
        .await?;
    Ok(ids)
}

/// What a reached device reported of one declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub device_id: String,
    pub identifier: String,
    pub active: bool,
    pub valid: String,
    pub server_token: String,
    pub reasons: String,
}

/// What the devices a rollout reached reported of `identifiers` (its version's declarations).
pub async fn reports<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    identifiers: &[String],
) -> StorageResult<Vec<Reported>> {
    let q = Query::select()
        .columns([
            (Statuses, status::Column::EnrollmentId),
            (Statuses, status::Column::Identifier),
            (Statuses, status::Column::Active),
            (Statuses, status::Column::Valid),
            (Statuses, status::Column::ServerToken),
            (Statuses, status::Column::Reasons),
        ])
        .from(Statuses)
        .inner_join(
            Reached,
            Expr::col((Reached, reached::Column::DeviceId))
                .equals((Statuses, status::Column::EnrollmentId)),
        )
        .and_where(Expr::col((Reached, reached::Column::PolicyId)).eq(policy_id))
        .and_where(
            Expr::col((Statuses, status::Column::Identifier))
                .is_in(identifiers.iter().map(String::as_str)),
        )
        .to_owned();
    let mut out = Vec::new();
    for row in c.query_all(&q).await? {
        out.push(Reported {
            device_id: row.try_get_by_index(0)?,
            identifier: row.try_get_by_index(1)?,
            active: row.try_get_by_index(2)?,
            valid: row.try_get_by_index(3)?,
            server_token: row.try_get_by_index(4)?,
            reasons: row.try_get_by_index(5)?,
        });
    }
    Ok(out)
}

/// Drop the rows of a policy's past versions' sets (all but `keep`) and of its declarations no set holds
/// any more: they reach no one.
pub async fn prune<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    set_prefix: &str,
    keep: &[String],
) -> StorageResult<()> {
    use super::entities::{ddm_declaration, ddm_set, ddm_set_member};
    let gone: Vec<String> = ddm_set::Entity::find()
        .select_only()
        .column(ddm_set::Column::Name)
        .filter(ddm_set::Column::Name.like(format!("{set_prefix}%")))
        .filter(ddm_set::Column::Name.is_not_in(keep.iter().cloned()))
        .into_tuple()
        .all(c)
        .await?;
    for name in &gone {
        super::ddm::sets::delete(c, name).await?;
    }
    let held = Query::select()
        .column(ddm_set_member::Column::Identifier)
        .from(ddm_set_member::Entity)
        .to_owned();
    ddm_declaration::Entity::delete_many()
        .filter(ddm_declaration::Column::PolicyId.eq(policy_id))
        .filter(ddm_declaration::Column::Identifier.not_in_subquery(held))
        .exec(c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    fn rollout(policy_id: i64) -> Rollout {
        Rollout {
            policy_id,
            version: "1".into(),
            previous: None,
            stage: 0,
            state: "running".into(),
            reason: None,
            stage_started_at: 0,
            soak_secs: 60,
            max_failure_ratio: 0.005,
            min_reported_ratio: 0.9,
            pilot_percent: 10,
            canary_percent: 25,
            pilot_group: None,
            canary_group: None,
            started_by: "test".into(),
            started_at: 0,
            updated_at: 0,
        }
    }

    /// Two rounds (two replicas, or a round and an admin) that read the rollout at the same stage: only
    /// the first move lands, so a stage is never entered twice or skipped.
    #[tokio::test]
    async fn a_step_lands_only_from_where_it_was_read() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            let group = crate::storage::groups::insert(
                db,
                "g",
                crate::storage::groups::GroupKind::Static,
                None,
                0,
            )
            .await
            .unwrap();
            let policy = crate::storage::policies::insert(db, "p", group.id, 0)
                .await
                .unwrap();
            let read = rollout(policy.id);
            assert!(start(db, read.clone(), None).await.unwrap());
            assert!(
                !start(db, read.clone(), None).await.unwrap(),
                "one was started meanwhile"
            );
            let promoted = Rollout {
                stage: 1,
                stage_started_at: 5,
                ..read.clone()
            };
            assert!(move_on(db, &read, &promoted).await.unwrap());
            assert!(
                !move_on(db, &read, &promoted).await.unwrap(),
                "read before the first step"
            );
            let halted = Rollout {
                state: "halted".into(),
                ..read.clone()
            };
            assert!(!move_on(db, &read, &halted).await.unwrap());
            assert_eq!(find(db, policy.id).await.unwrap().unwrap(), promoted);
            // Activations replace the rollout they read, once.
            let again = Rollout {
                started_at: 9,
                ..read.clone()
            };
            assert!(
                !start(db, again.clone(), Some(&halted)).await.unwrap(),
                "not what is stored"
            );
            assert!(start(db, again.clone(), Some(&promoted)).await.unwrap());
            assert!(
                !start(db, again.clone(), Some(&promoted)).await.unwrap(),
                "replaced already"
            );
            // A new rollout of the policy is not the one read either.
            assert!(!move_on(db, &read, &promoted).await.unwrap());
            tdb.cleanup().await;
        }
    }
}
