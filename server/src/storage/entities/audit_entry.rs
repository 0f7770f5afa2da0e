use sea_orm::entity::prelude::*;

/// One audit record. `hash` = SHA-256 over the previous row's hash and this row's fields, so editing or
/// removing a row breaks the chain from there on.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    pub at: i64,
    /// `api-key:<id>`, `device:<id>`, `plugin:<id>`, `scep`, `system`.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// JSON.
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
