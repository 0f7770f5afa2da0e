use sea_orm::entity::prelude::*;

/// A version of a policy: the bundle as uploaded, its digest and who signed it. Never updated or deleted
/// (the database refuses it).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "policy_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub policy_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: String,
    pub sha256: String,
    /// `policy.json` as uploaded.
    pub manifest: String,
    pub bundle: Vec<u8>,
    pub signer: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
