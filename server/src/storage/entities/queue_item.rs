use sea_orm::entity::prelude::*;

/// One command queued to one channel, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "command_queue")]
pub struct Model {
    /// Monotonic sequence: the tie-breaker for delivery order (never a timestamp).
    #[sea_orm(primary_key)]
    pub id: i64,
    pub enrollment_id: String,
    pub command_uuid: String,
    pub priority: i32,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
    /// Not delivered before this time (a plugin's retry with backoff).
    pub not_before: Option<i64>,
    pub delivered_at: Option<i64>,
    pub delivery_count: i32,
    pub completed_at: Option<i64>,
    pub result_raw: Option<Vec<u8>>,
    pub result_json: Option<String>,
}

/// Lets delivery read a queue row and its command body in one query (no foreign key is implied: the schema
/// is the migrations').
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::command::Entity",
        from = "Column::CommandUuid",
        to = "super::command::Column::Uuid"
    )]
    Command,
}

impl Related<super::command::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Command.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
