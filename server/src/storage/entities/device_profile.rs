use sea_orm::entity::prelude::*;

/// Where the reconciler stands with one profile on one device (`policies::reconciler`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "device_profiles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub device_id: String,
    /// The profile's `PayloadIdentifier`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub identifier: String,
    /// The policy whose version wants it (or wanted it, while it is removed).
    pub policy_id: i64,
    /// That version's set.
    pub set_name: String,
    /// The `PayloadUUID` the device must list.
    pub payload_uuid: String,
    /// pending, verified, failed, removing, removed.
    pub state: String,
    /// The InstallProfile or RemoveProfile queued for it and not yet answered.
    pub command_uuid: Option<String>,
    /// The last command was acknowledged; a ProfileList is to confirm it.
    pub acknowledged: bool,
    /// Failed attempts since it was last wanted afresh.
    pub attempts: i32,
    /// No new attempt before this time (backoff after a failure).
    pub next_attempt_at: Option<i64>,
    /// When a ProfileList was last queued for it.
    pub listed_at: Option<i64>,
    /// The device's last error chain (JSON).
    pub error: Option<String>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
