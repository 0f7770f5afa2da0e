use sea_orm::entity::prelude::*;

/// A secret that works once before it expires: a SCEP challenge or an enrollment token. Only its SHA-256 is
/// stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "one_time_secrets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// `challenge` or `token`.
    pub kind: String,
    #[sea_orm(unique)]
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// Only this device (by serial number) may use it.
    pub serial_number: Option<String>,
    /// A challenge made to renew this device's identity: the device keeps its queue when it re-authenticates.
    pub renewal_for: Option<String>,
    /// The enrollment token whose profile download made this challenge.
    pub token_id: Option<String>,
    pub label: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
