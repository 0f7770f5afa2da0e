//! Configuration profiles policies install: each activated version's profiles as devices are sent them
//! (`policy_profiles`, by the version's set) and, per device and profile identifier, where the
//! reconciler stands (`device_profiles`). The reconciler's rules are `policies::reconciler`'s; this
//! file only reads and writes.

use super::entities::ddm_assignment::{self as assignment, Entity as Assignments};
use super::entities::device::{self, Entity as Devices};
use super::entities::device_profile::{self as row, Entity as Rows};
use super::entities::policy_profile::{self as version, Entity as Versions};
use super::queue::IDS_PER_STATEMENT;
use super::StorageResult;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

pub use super::entities::device_profile::Model as DeviceProfile;
pub use super::entities::policy_profile::Model as VersionProfile;

/// Rows per multi-row upsert (thirteen values each).
const ROWS_PER_UPSERT: usize = 1_000;

/// Store a version's profiles (once: a version never changes).
pub async fn put_version<C: ConnectionTrait>(
    c: &C,
    rows: Vec<VersionProfile>,
) -> StorageResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    Versions::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
        .on_conflict(
            OnConflict::columns([version::Column::SetName, version::Column::Identifier])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(c)
        .await?;
    Ok(())
}

/// Drop the stored profiles of a policy's versions other than `keep` (sets no device holds any more).
pub async fn prune_versions<C: ConnectionTrait>(
    c: &C,
    policy_id: i64,
    keep: &[String],
) -> StorageResult<()> {
    Versions::delete_many()
        .filter(version::Column::PolicyId.eq(policy_id))
        .filter(version::Column::SetName.is_not_in(keep.iter().cloned()))
        .exec(c)
        .await?;
    Ok(())
}

/// A version's profiles, without their content, by identifier.
pub async fn of_version<C: ConnectionTrait>(
    c: &C,
    set_name: &str,
) -> StorageResult<Vec<(String, String)>> {
    Ok(Versions::find()
        .select_only()
        .columns([version::Column::Identifier, version::Column::PayloadUuid])
        .filter(version::Column::SetName.eq(set_name))
        .order_by_asc(version::Column::Identifier)
        .into_tuple()
        .all(c)
        .await?)
}

/// What `InstallProfile` carries for a version's profile.
pub async fn content<C: ConnectionTrait>(
    c: &C,
    set_name: &str,
    identifier: &str,
) -> StorageResult<Option<Vec<u8>>> {
    Ok(Versions::find()
        .select_only()
        .column(version::Column::Content)
        .filter(version::Column::SetName.eq(set_name))
        .filter(version::Column::Identifier.eq(identifier))
        .into_tuple()
        .one(c)
        .await?)
}

/// Whether any profile is stored or tracked at all: when neither is, holdings changes cost nothing more.
pub async fn in_use<C: ConnectionTrait>(c: &C) -> StorageResult<bool> {
    let version = Versions::find()
        .select_only()
        .column(version::Column::SetName)
        .limit(1)
        .into_tuple::<String>()
        .one(c)
        .await?;
    if version.is_some() {
        return Ok(true);
    }
    let tracked = Rows::find()
        .select_only()
        .column(row::Column::DeviceId)
        .limit(1)
        .into_tuple::<String>()
        .one(c)
        .await?;
    Ok(tracked.is_some())
}

/// A profile a device's held sets want: (device, profile of a version it holds).
pub struct Wanted {
    pub device_id: String,
    pub policy_id: i64,
    pub set_name: String,
    pub identifier: String,
    pub payload_uuid: String,
    /// The platforms the profile installs on, comma-separated.
    pub platforms: String,
    /// The device's platform, when known.
    pub device_platform: Option<String>,
}

/// The columns [`wanted`] reads, in order.
type WantedRow = (String, i64, String, String, String, String, Option<String>);

/// The profiles the sets held by `devices` (assigned to their device channels) want, with each device's
/// platform.
pub async fn wanted<C: ConnectionTrait>(c: &C, devices: &[String]) -> StorageResult<Vec<Wanted>> {
    let v = |col: version::Column| Expr::col((Versions, col));
    let mut out = Vec::new();
    for chunk in devices.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<WantedRow> = Assignments::find()
            .select_only()
            .column(assignment::Column::EnrollmentId)
            .column_as(v(version::Column::PolicyId), "policy_id")
            .column_as(v(version::Column::SetName), "set_name")
            .column_as(v(version::Column::Identifier), "identifier")
            .column_as(v(version::Column::PayloadUuid), "payload_uuid")
            .column_as(v(version::Column::Platforms), "platforms")
            .column_as(
                Expr::col((Devices, device::Column::Platform)),
                "device_platform",
            )
            .join(
                sea_orm::JoinType::InnerJoin,
                Assignments::belongs_to(Versions)
                    .from(assignment::Column::SetName)
                    .to(version::Column::SetName)
                    .into(),
            )
            .join(
                sea_orm::JoinType::LeftJoin,
                Assignments::belongs_to(Devices)
                    .from(assignment::Column::EnrollmentId)
                    .to(device::Column::Id)
                    .into(),
            )
            .filter(assignment::Column::EnrollmentId.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(c)
            .await?;
        out.extend(rows.into_iter().map(
            |(
                device_id,
                policy_id,
                set_name,
                identifier,
                payload_uuid,
                platforms,
                device_platform,
            )| {
                Wanted {
                    device_id,
                    policy_id,
                    set_name,
                    identifier,
                    payload_uuid,
                    platforms,
                    device_platform,
                }
            },
        ));
    }
    Ok(out)
}

/// The tracked profiles of `devices`, by device then identifier.
pub async fn of_devices<C: ConnectionTrait>(
    c: &C,
    devices: &[String],
) -> StorageResult<Vec<DeviceProfile>> {
    let mut out = Vec::new();
    for chunk in devices.chunks(IDS_PER_STATEMENT) {
        out.extend(
            Rows::find()
                .filter(row::Column::DeviceId.is_in(chunk.iter().cloned()))
                .all(c)
                .await?,
        );
    }
    out.sort_by(|a, b| (&a.device_id, &a.identifier).cmp(&(&b.device_id, &b.identifier)));
    Ok(out)
}

/// The tracked profile an InstallProfile or RemoveProfile queued to `device` was for.
pub async fn by_command<C: ConnectionTrait>(
    c: &C,
    device_id: &str,
    command_uuid: &str,
) -> StorageResult<Option<DeviceProfile>> {
    Ok(Rows::find()
        .filter(row::Column::CommandUuid.eq(command_uuid))
        .filter(row::Column::DeviceId.eq(device_id))
        .one(c)
        .await?)
}

/// Write tracked profiles as given (inserted or replaced whole).
pub async fn save<C: ConnectionTrait>(c: &C, rows: Vec<DeviceProfile>) -> StorageResult<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_UPSERT).collect();
        Rows::insert_many(chunk.into_iter().map(IntoActiveModel::into_active_model))
            .on_conflict(
                OnConflict::columns([row::Column::DeviceId, row::Column::Identifier])
                    .update_columns([
                        row::Column::PolicyId,
                        row::Column::SetName,
                        row::Column::PayloadUuid,
                        row::Column::State,
                        row::Column::CommandUuid,
                        row::Column::Acknowledged,
                        row::Column::Attempts,
                        row::Column::NextAttemptAt,
                        row::Column::ListedAt,
                        row::Column::Error,
                        row::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

/// A ProfileList was queued to `devices`: their profiles still to be settled say when.
pub async fn mark_listed<C: ConnectionTrait>(
    c: &C,
    devices: &[String],
    unsettled: &[&str],
    now: i64,
) -> StorageResult<()> {
    for chunk in devices.chunks(IDS_PER_STATEMENT) {
        Rows::update_many()
            .col_expr(row::Column::ListedAt, Expr::value(now))
            .filter(row::Column::DeviceId.is_in(chunk.iter().cloned()))
            .filter(row::Column::State.is_in(unsettled.iter().copied()))
            .exec(c)
            .await?;
    }
    Ok(())
}

/// Which tracked profiles make their devices due for a list.
#[derive(Debug, Clone, Copy)]
pub struct Due<'a> {
    /// The states still to be settled.
    pub unsettled: &'a [&'a str],
    pub now: i64,
    /// No command out, not backing off, and no list asked for since this time.
    pub listed_before: i64,
    /// Or a command out, unanswered and unlisted since this time.
    pub stale_before: i64,
}

/// Devices with tracked profiles `due` says are due, at most `limit`, by device.
pub async fn due<C: ConnectionTrait>(
    c: &C,
    due: Due<'_>,
    limit: u64,
) -> StorageResult<Vec<String>> {
    let listed_before = |t: i64| {
        Condition::any()
            .add(row::Column::ListedAt.is_null())
            .add(row::Column::ListedAt.lte(t))
    };
    let idle = Condition::all()
        .add(row::Column::CommandUuid.is_null())
        .add(
            Condition::any()
                .add(row::Column::NextAttemptAt.is_null())
                .add(row::Column::NextAttemptAt.lte(due.now)),
        )
        .add(listed_before(due.listed_before));
    let stale = Condition::all()
        .add(row::Column::CommandUuid.is_not_null())
        .add(row::Column::UpdatedAt.lte(due.stale_before))
        .add(listed_before(due.stale_before));
    Ok(Rows::find()
        .select_only()
        .column(row::Column::DeviceId)
        .distinct()
        .filter(row::Column::State.is_in(due.unsettled.iter().copied()))
        .filter(Condition::any().add(idle).add(stale))
        .order_by_asc(row::Column::DeviceId)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?)
}

/// The tracked profiles of a policy's version (`set_name`), for its rollout's figures.
pub async fn of_set<C: ConnectionTrait>(
    c: &C,
    set_name: &str,
) -> StorageResult<Vec<DeviceProfile>> {
    Ok(Rows::find()
        .filter(row::Column::SetName.eq(set_name))
        .all(c)
        .await?)
}

/// Forget what is tracked of these devices (they unenrolled or enroll afresh: what they had is gone).
pub async fn forget<C: ConnectionTrait>(c: &C, devices: &[String]) -> StorageResult<()> {
    for chunk in devices.chunks(IDS_PER_STATEMENT) {
        Rows::delete_many()
            .filter(row::Column::DeviceId.is_in(chunk.iter().cloned()))
            .exec(c)
            .await?;
    }
    Ok(())
}
