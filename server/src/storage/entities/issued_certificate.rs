use sea_orm::entity::prelude::*;

/// A certificate our SCEP CA issued.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "issued_certificates")]
pub struct Model {
    /// Uppercase hex.
    #[sea_orm(primary_key, auto_increment = false)]
    pub serial: String,
    /// SHA-256 (hex) of the DER: what a device is bound to at Authenticate.
    #[sea_orm(unique)]
    pub fingerprint: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued_at: i64,
    /// The challenge it was issued against (PKCSReq).
    pub challenge_id: Option<String>,
    /// The challenge was pinned to this serial number: only that device may authenticate with it.
    pub pinned_serial_number: Option<String>,
    /// The certificate it renews (RenewalReq).
    pub renewal_of: Option<String>,
    /// Issued to renew this device's identity: the device keeps its command queue at re-Authenticate.
    pub renews_device: Option<String>,
    /// The device that authenticated with it.
    pub device_id: Option<String>,
    pub revoked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
