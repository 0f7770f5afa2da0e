use sea_orm::entity::prelude::*;

/// A profile of a policy version, as devices holding the version's set are sent it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "policy_profiles")]
pub struct Model {
    /// The version's set (`mdm.policy.<policy>.<version>`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub set_name: String,
    /// Its `PayloadIdentifier`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub identifier: String,
    pub policy_id: i64,
    /// The `PayloadUUID` a device lists it by once installed.
    pub payload_uuid: String,
    /// SHA-256 of the file as uploaded.
    pub sha256: String,
    /// The platforms it installs on, comma-separated (Apple's names: iOS, macOS, tvOS, ...).
    pub platforms: String,
    /// What `InstallProfile` carries.
    pub content: Vec<u8>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
