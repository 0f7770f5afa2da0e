use sea_orm::entity::prelude::*;

/// An uploaded plugin: its component, manifest, admin settings and health.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plugins")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub version: String,
    pub description: String,
    /// The manifest as uploaded (JSON).
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub wasm_sha256: String,
    /// Admin-supplied configuration (JSON).
    pub config: String,
    pub enabled: bool,
    /// Lower runs first; ties run in id order.
    pub priority: i32,
    /// Actions are computed and audited but not applied; decisions are not enforced.
    pub dry_run: bool,
    /// Capabilities the admin approved (space-separated).
    pub approved: String,
    /// Bumped on every change, so replicas notice and reload.
    pub revision: i64,
    pub quarantined_at: Option<i64>,
    pub quarantine_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
