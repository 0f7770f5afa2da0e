use sea_orm::entity::prelude::*;

/// An event waiting for (or done with) delivery to an admin-configured sink.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub plugin_id: String,
    pub sink: String,
    pub topic: String,
    pub payload: String,
    pub attempts: i32,
    /// When the next delivery attempt is due (also the lease a worker takes).
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// Events with the same key (the device they are about) are delivered in id order.
    pub ordering_key: Option<String>,
    /// Globally unique (a UUID); None for rows written before ids were (their row id serves).
    pub event_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
