use sea_orm::entity::prelude::*;

/// A command as enqueued: stored once however many channels it is queued to.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub uuid: String,
    pub request_type: String,
    /// The exact plist bytes devices receive.
    pub raw: Vec<u8>,
    pub priority: i32,
    pub source: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// For a copy queued by a plugin's retry: the original command (first of the chain).
    pub retry_of: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
