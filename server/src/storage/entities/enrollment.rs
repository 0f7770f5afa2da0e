use sea_orm::entity::prelude::*;

/// One command channel: the device channel or a user channel of a device.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "enrollments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub device_id: String,
    pub kind: String,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub user_long_name: Option<String>,
    /// False after Authenticate until TokenUpdate, and after CheckOut.
    pub enabled: bool,
    pub topic: Option<String>,
    pub push_magic: Option<String>,
    pub token: Option<Vec<u8>>,
    pub awaiting_configuration: Option<bool>,
    pub token_update_count: i32,
    pub token_update_raw: Option<Vec<u8>>,
    pub last_push_at: Option<i64>,
    /// When a push is next due if commands are still pending (re-push with backoff).
    pub next_push_at: Option<i64>,
    /// Pushes since the device last checked in.
    pub push_attempts: i32,
    /// APNs said the token is dead; no pushes until the next TokenUpdate.
    pub token_dead_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
