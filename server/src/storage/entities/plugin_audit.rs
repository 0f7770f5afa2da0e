use sea_orm::entity::prelude::*;

/// What a plugin decided or asked for, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plugin_audit")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub plugin_id: String,
    pub hook: String,
    pub event_id: String,
    pub device_id: Option<String>,
    pub enrollment_id: Option<String>,
    /// `decision`, `enqueue`, `retry`, `push`, `set-attribute`, `clear-attribute`, `emit`, or `call`.
    pub kind: String,
    /// `applied`, `dry-run`, `rejected`, `skipped`, `error`, `timeout`, `trap`, `quarantined`, ...
    pub outcome: String,
    /// Details as JSON.
    pub detail: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
