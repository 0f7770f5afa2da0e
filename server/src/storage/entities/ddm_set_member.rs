use sea_orm::entity::prelude::*;

/// A declaration in a set.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ddm_set_members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub set_name: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub identifier: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
