use sea_orm::entity::prelude::*;

/// An enrollment's DDM sync state.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ddm_enrollments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub enrollment_id: String,
    pub announced_token: Option<String>,
    pub announced_at: Option<i64>,
    pub synced_token: Option<String>,
    pub synced_at: Option<i64>,
    pub status_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
