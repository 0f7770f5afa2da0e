//! The plugin audit log: every decision and action of every plugin call, and every fault.

use super::audit_log::NewEntry;
use super::entities::plugin_audit::{ActiveModel, Column, Entity, Model};
use super::StorageResult;
use super::Writes;
use sea_orm::{
    ActiveValue::NotSet, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};

pub use super::entities::plugin_audit::Model as AuditRow;

/// Store plugin audit rows, and the same events for the hash-chained audit log (pending until
/// [`super::audit_log::seal`] chains them), in `c`'s transaction.
pub async fn insert_many<W: Writes>(c: &W, rows: Vec<Model>) -> StorageResult<()> {
    let c = c.connection();
    super::batch::execute(c, insert_statements(c.get_database_backend(), rows)).await
}

/// The inserts [`insert_many`] runs, for a caller that sends them with other writes.
pub fn insert_statements(backend: DbBackend, rows: Vec<Model>) -> Vec<Statement> {
    let chained = rows
        .iter()
        .map(|r| NewEntry {
            at: r.created_at,
            actor: format!("plugin:{}", r.plugin_id),
            action: format!("plugin.{}", r.kind),
            target: r.device_id.clone(),
            detail: serde_json::json!({
                "hook": r.hook,
                "event_id": r.event_id,
                "enrollment_id": r.enrollment_id,
                "outcome": r.outcome,
                "detail": r.detail,
            }),
        })
        .collect();
    let mut out = super::audit_log::append_statements(backend, chained);
    for chunk in rows.chunks(200) {
        let ams = chunk.iter().cloned().map(|r| ActiveModel {
            id: NotSet,
            plugin_id: Set(r.plugin_id),
            hook: Set(r.hook),
            event_id: Set(r.event_id),
            device_id: Set(r.device_id),
            enrollment_id: Set(r.enrollment_id),
            kind: Set(r.kind),
            outcome: Set(r.outcome),
            detail: Set(r.detail),
            created_at: Set(r.created_at),
        });
        out.push(Entity::insert_many(ams).build(backend));
    }
    out
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub plugin_id: Option<String>,
    pub device_id: Option<String>,
    pub hook: Option<String>,
    /// Rows older than this id (newest first paging).
    pub before_id: Option<i64>,
    pub limit: u64,
}

/// Newest first.
pub async fn list<C: ConnectionTrait>(c: &C, f: &AuditFilter) -> StorageResult<Vec<Model>> {
    let mut cond = Condition::all();
    if let Some(p) = &f.plugin_id {
        cond = cond.add(Column::PluginId.eq(p.as_str()));
    }
    if let Some(d) = &f.device_id {
        cond = cond.add(Column::DeviceId.eq(d.as_str()));
    }
    if let Some(h) = &f.hook {
        cond = cond.add(Column::Hook.eq(h.as_str()));
    }
    if let Some(b) = f.before_id {
        cond = cond.add(Column::Id.lt(b));
    }
    Ok(Entity::find()
        .filter(cond)
        .order_by_desc(Column::Id)
        .limit(f.limit)
        .all(c)
        .await?)
}
