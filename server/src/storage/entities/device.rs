use sea_orm::entity::prelude::*;

/// A physical device (or a User Enrollment), keyed by UDID or EnrollmentID.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub serial_number: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
    /// SHA-256 (hex) of the identity certificate bound at Authenticate.
    #[sea_orm(unique)]
    pub identity_fingerprint: Option<String>,
    pub identity_subject: Option<String>,
    pub identity_not_after: Option<i64>,
    pub unlock_token: Option<Vec<u8>>,
    pub bootstrap_token: Option<Vec<u8>>,
    pub authenticate_raw: Option<Vec<u8>>,
    pub authenticated_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_seen_at: i64,
    /// When an identity renewal (a fresh enrollment profile) was last queued for this device.
    pub renewal_requested_at: Option<i64>,
    /// Until when an admin allows this device to enroll again with a new identity (once).
    pub reenroll_allowed_until: Option<i64>,
    /// When the device checked out (removed its MDM profile); cleared at its next Authenticate.
    pub checked_out_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
