//! Plugins as stored: component, manifest, admin settings, quarantine; and their schedules.

use super::entities::plugin::{ActiveModel, Column, Entity, Model};
use super::entities::plugin_schedule::{self, Entity as Schedules};
use super::StorageResult;
use super::Writes;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder, QuerySelect, Select,
};

pub use super::entities::plugin::Model as Plugin;

/// A plugin as listings show it: everything but the component's bytes, and their count.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Listed {
    pub id: String,
    pub version: String,
    pub description: String,
    pub manifest: String,
    pub wasm_sha256: String,
    pub wasm_bytes: i64,
    pub config: String,
    pub enabled: bool,
    pub priority: i32,
    pub dry_run: bool,
    pub approved: String,
    pub revision: i64,
    pub quarantined_at: Option<i64>,
    pub quarantine_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Every column of [`Listed`]: the component is measured in the database, not read.
fn listing() -> Select<Entity> {
    use Column as C;
    Entity::find()
        .select_only()
        .columns([
            C::Id,
            C::Version,
            C::Description,
            C::Manifest,
            C::WasmSha256,
            C::Config,
            C::Enabled,
            C::Priority,
            C::DryRun,
            C::Approved,
            C::Revision,
            C::QuarantinedAt,
            C::QuarantineReason,
            C::CreatedAt,
            C::UpdatedAt,
        ])
        .column_as(
            Expr::cust(r#"CAST(LENGTH("wasm") AS BIGINT)"#),
            "wasm_bytes",
        )
}

pub async fn find<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<Option<Model>> {
    Ok(Entity::find_by_id(id.to_string()).one(c).await?)
}

/// Every plugin as listed, in run order (priority, then id).
pub async fn list<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<Listed>> {
    Ok(listing()
        .order_by_asc(Column::Priority)
        .order_by_asc(Column::Id)
        .into_model()
        .all(c)
        .await?)
}

/// One plugin as listed.
pub async fn find_listed<C: ConnectionTrait>(c: &C, id: &str) -> StorageResult<Option<Listed>> {
    Ok(listing()
        .filter(Column::Id.eq(id))
        .into_model()
        .one(c)
        .await?)
}

/// (id, revision) of every plugin: a cheap way for a replica to notice changes.
pub async fn revisions<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<(String, i64)>> {
    Ok(Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::Revision)
        .order_by_asc(Column::Id)
        .into_tuple()
        .all(c)
        .await?)
}

/// Insert a new plugin or replace an existing one's component, manifest and approvals (keeping its admin
/// settings unless `settings` says otherwise). Bumps the revision.
pub async fn upsert<W: Writes>(c: &W, p: Model) -> StorageResult<()> {
    let c = c.connection();
    // Insert if absent, else update in one statement that bumps the stored revision: two uploads of one
    // plugin at once (an admin retrying, two replicas) then neither fails on the primary key (a 500) nor
    // lands both on the same revision, which replicas that loaded the first would take for unchanged.
    let inserted = Entity::insert(ActiveModel::from(p.clone()).reset_all())
        .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
        .exec_without_returning(c)
        .await?;
    if inserted == 1 {
        return Ok(());
    }
    Entity::update_many()
        .col_expr(Column::Version, Expr::value(p.version))
        .col_expr(Column::Description, Expr::value(p.description))
        .col_expr(Column::Manifest, Expr::value(p.manifest))
        .col_expr(Column::Wasm, Expr::value(p.wasm))
        .col_expr(Column::WasmSha256, Expr::value(p.wasm_sha256))
        .col_expr(Column::Config, Expr::value(p.config))
        .col_expr(Column::Approved, Expr::value(p.approved))
        .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
        .col_expr(Column::QuarantinedAt, Expr::value(Option::<i64>::None))
        .col_expr(
            Column::QuarantineReason,
            Expr::value(Option::<String>::None),
        )
        .col_expr(Column::UpdatedAt, Expr::value(p.updated_at))
        .filter(Column::Id.eq(p.id))
        .exec(c)
        .await?;
    Ok(())
}

/// Admin settings; `None` leaves a setting as it is. Enabling clears a quarantine. Returns false when there
/// is no such plugin.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    pub enabled: Option<bool>,
    pub priority: Option<i32>,
    pub dry_run: Option<bool>,
    pub config: Option<String>,
}

pub async fn update_settings<W: Writes>(
    c: &W,
    id: &str,
    s: Settings,
    now: i64,
) -> StorageResult<bool> {
    let c = c.connection();
    let Some(old) = find(c, id).await? else {
        return Ok(false);
    };
    let mut am: ActiveModel = old.clone().into();
    if let Some(e) = s.enabled {
        am.enabled = Set(e);
        if e {
            am.quarantined_at = Set(None);
            am.quarantine_reason = Set(None);
        }
    }
    if let Some(p) = s.priority {
        am.priority = Set(p);
    }
    if let Some(d) = s.dry_run {
        am.dry_run = Set(d);
    }
    if let Some(cfg) = s.config {
        am.config = Set(cfg);
    }
    am.revision = Set(old.revision + 1);
    am.updated_at = Set(now);
    am.update(c).await?;
    Ok(true)
}

/// Quarantine a plugin (circuit breaker). Only the first quarantine of a revision is recorded.
pub async fn quarantine<W: Writes>(c: &W, id: &str, reason: &str, now: i64) -> StorageResult<bool> {
    let c = c.connection();
    Ok(Entity::update_many()
        .col_expr(Column::QuarantinedAt, Expr::value(now))
        .col_expr(Column::QuarantineReason, Expr::value(reason))
        .col_expr(Column::Revision, Expr::col(Column::Revision).add(1))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::QuarantinedAt.is_null())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

pub async fn delete<W: Writes>(c: &W, id: &str) -> StorageResult<bool> {
    let c = c.connection();
    Schedules::delete_many()
        .filter(plugin_schedule::Column::PluginId.eq(id))
        .exec(c)
        .await?;
    Ok(Entity::delete_by_id(id.to_string())
        .exec(c)
        .await?
        .rows_affected
        > 0)
}

/// Make sure a schedule exists; a new one first fires at `first_run_at`.
pub async fn ensure_schedule<W: Writes>(
    c: &W,
    plugin_id: &str,
    name: &str,
    first_run_at: i64,
) -> StorageResult<()> {
    let c = c.connection();
    Schedules::insert(plugin_schedule::ActiveModel {
        plugin_id: Set(plugin_id.to_string()),
        name: Set(name.to_string()),
        next_run_at: Set(first_run_at),
    })
    .on_conflict(
        OnConflict::columns([
            plugin_schedule::Column::PluginId,
            plugin_schedule::Column::Name,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn due_schedules<C: ConnectionTrait>(
    c: &C,
    now: i64,
) -> StorageResult<Vec<plugin_schedule::Model>> {
    Ok(Schedules::find()
        .filter(plugin_schedule::Column::NextRunAt.lte(now))
        .all(c)
        .await?)
}

/// Claim one tick of a schedule: move `next_run_at` from `seen` to `next`. Exactly one claimant wins, across
/// replicas: the row is locked `FOR UPDATE SKIP LOCKED` on PostgreSQL (a replica claiming it at the same
/// moment skips it rather than waits), and the update only matches while the row still holds `seen`.
pub async fn claim_schedule<W: Writes>(
    c: &W,
    plugin_id: &str,
    name: &str,
    seen: i64,
    next: i64,
) -> StorageResult<bool> {
    let c = c.connection();
    use plugin_schedule::Column as S;
    let tick = Query::select()
        .column(S::PluginId)
        .from(Schedules)
        .and_where(S::PluginId.eq(plugin_id))
        .and_where(S::Name.eq(name))
        .and_where(S::NextRunAt.eq(seen))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    Ok(Schedules::update_many()
        .col_expr(S::NextRunAt, Expr::value(next))
        .filter(S::PluginId.eq(plugin_id))
        .filter(S::Name.eq(name))
        .filter(S::NextRunAt.eq(seen))
        .filter(S::PluginId.in_subquery(tick))
        .exec(c)
        .await?
        .rows_affected
        == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::test_databases;

    fn plugin(id: &str, version: &str) -> Model {
        Model {
            id: id.into(),
            version: version.into(),
            description: String::new(),
            manifest: "{}".into(),
            wasm: vec![0],
            wasm_sha256: "00".into(),
            config: "{}".into(),
            enabled: true,
            priority: 0,
            dry_run: false,
            approved: "[]".into(),
            revision: 1,
            quarantined_at: None,
            quarantine_reason: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn uploads_of_one_plugin_at_once_both_land_on_their_own_revision() {
        use sea_orm::TransactionTrait;
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            if tdb.schema.is_some() {
                // The first upload's insert is not committed yet when the second one runs.
                let first = s.db().begin().await.unwrap();
                upsert(&first, plugin("p", "1")).await.unwrap();
                let other = crate::storage::Storage::connect(&tdb.url, tdb.schema.as_deref())
                    .await
                    .unwrap();
                let second = tokio::spawn(async move {
                    let r = upsert(other.db(), plugin("p", "2")).await;
                    (r, other)
                });
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                first.commit().await.unwrap();
                let (r, _other) = second.await.unwrap();
                r.unwrap();
            } else {
                upsert(s.db(), plugin("p", "1")).await.unwrap();
                upsert(s.db(), plugin("p", "2")).await.unwrap();
            }
            let stored = find(s.db(), "p").await.unwrap().unwrap();
            assert_eq!((stored.version.as_str(), stored.revision), ("2", 2));
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn a_listing_measures_the_component_without_reading_it() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let mut b = plugin("b", "1");
            b.wasm = vec![7; 1000];
            b.priority = -1;
            upsert(s.db(), plugin("a", "1")).await.unwrap();
            upsert(s.db(), b).await.unwrap();
            let listed = list(s.db()).await.unwrap();
            let got: Vec<(&str, i64)> = listed
                .iter()
                .map(|p| (p.id.as_str(), p.wasm_bytes))
                .collect();
            assert_eq!(got, [("b", 1000), ("a", 1)], "run order, sizes");
            let a = find_listed(s.db(), "a").await.unwrap().unwrap();
            let stored = find(s.db(), "a").await.unwrap().unwrap();
            assert_eq!(
                (a.manifest, a.wasm_sha256, a.revision),
                (stored.manifest, stored.wasm_sha256, stored.revision)
            );
            assert!(find_listed(s.db(), "zz").await.unwrap().is_none());
            tdb.cleanup().await;
        }
    }

    #[tokio::test]
    async fn a_schedule_tick_is_claimed_once() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            ensure_schedule(db, "p", "nightly", 100).await.unwrap();
            ensure_schedule(db, "p", "nightly", 999).await.unwrap();
            let due = due_schedules(db, 100).await.unwrap();
            assert_eq!(
                (due.len(), due[0].next_run_at),
                (1, 100),
                "ensure keeps the first time"
            );
            assert!(claim_schedule(db, "p", "nightly", 100, 200).await.unwrap());
            assert!(
                !claim_schedule(db, "p", "nightly", 100, 200).await.unwrap(),
                "a second replica loses"
            );
            assert!(due_schedules(db, 150).await.unwrap().is_empty());
            tdb.cleanup().await;
        }
    }
}
