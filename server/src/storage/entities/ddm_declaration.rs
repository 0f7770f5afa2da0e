use sea_orm::entity::prelude::*;

/// A declaration as uploaded, its payload in canonical JSON and its ServerToken computed over it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ddm_declarations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub identifier: String,
    pub builtin: bool,
    pub declaration_type: String,
    pub category: String,
    pub payload: String,
    pub server_token: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The policy whose versions it belongs to (None: an admin's or the server's own).
    pub policy_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
