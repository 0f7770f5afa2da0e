//! What a check-in's sender is, in one read beside the writer: the identity bound to the device (checked
//! before any plugin runs), the facts plugins are told, the channel's TokenUpdate count and when the device
//! was last seen. With plugins a TokenUpdate reads it before its transaction, which then writes without
//! reading (see [`super::enrollments::apply_token_update_if_bound`]). Before, the event took two reads (the
//! whole device row and the whole channel row).

use super::entities::device::{self, Entity as Devices};
use super::entities::enrollment::{self, Entity as Enrollments};
use super::point_reads::{Fields, PointRead};
use super::StorageResult;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};

/// The facts plugins are told about a device: what Authenticate and DeviceInformation reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescribedDevice {
    pub serial_number: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
}

impl DescribedDevice {
    fn read(row: &Fields<'_>) -> StorageResult<Self> {
        Ok(Self {
            serial_number: row.get("serial_number")?,
            platform: row.get("platform")?,
            model: row.get("model")?,
            model_name: row.get("model_name")?,
            product_name: row.get("product_name")?,
            device_name: row.get("device_name")?,
            os_version: row.get("os_version")?,
            build_version: row.get("build_version")?,
        })
    }
}

impl From<&device::Model> for DescribedDevice {
    fn from(d: &device::Model) -> Self {
        Self {
            serial_number: d.serial_number.clone(),
            platform: d.platform.clone(),
            model: d.model.clone(),
            model_name: d.model_name.clone(),
            product_name: d.product_name.clone(),
            device_name: d.device_name.clone(),
            os_version: d.os_version.clone(),
            build_version: d.build_version.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSubject {
    /// The fingerprint bound at Authenticate.
    pub identity_fingerprint: Option<String>,
    pub device: DescribedDevice,
    /// TokenUpdates stored for the channel so far; None when it has sent none.
    pub token_update_count: Option<i32>,
    /// When the device was last seen, for the check-in's throttled last-seen write.
    pub last_seen_at: i64,
}

/// None when the device is unknown. A point read: on every check-in plugins hear of.
pub async fn load<R: PointRead>(
    r: &R,
    device_id: &str,
    enrollment_id: &str,
) -> StorageResult<Option<EventSubject>> {
    let ch = Alias::new("ch");
    let q = Query::select()
        .columns([
            (Devices, device::Column::IdentityFingerprint),
            (Devices, device::Column::SerialNumber),
            (Devices, device::Column::Platform),
            (Devices, device::Column::Model),
            (Devices, device::Column::ModelName),
            (Devices, device::Column::ProductName),
            (Devices, device::Column::DeviceName),
            (Devices, device::Column::OsVersion),
            (Devices, device::Column::BuildVersion),
            (Devices, device::Column::LastSeenAt),
        ])
        .expr_as(
            Expr::col((ch.clone(), enrollment::Column::TokenUpdateCount)),
            Alias::new("channel_token_updates"),
        )
        .from(Devices)
        .join_as(
            JoinType::LeftJoin,
            Enrollments,
            ch.clone(),
            // The channel must be this device's: a channel id never reaches another device's channel.
            Expr::col((ch.clone(), enrollment::Column::Id))
                .eq(enrollment_id)
                .and(
                    Expr::col((ch, enrollment::Column::DeviceId))
                        .equals((Devices, device::Column::Id)),
                ),
        )
        .and_where(Expr::col((Devices, device::Column::Id)).eq(device_id))
        .to_owned();
    r.one(&q, |row| {
        Ok(EventSubject {
            identity_fingerprint: row.get("identity_fingerprint")?,
            device: DescribedDevice::read(row)?,
            token_update_count: row.get("channel_token_updates")?,
            last_seen_at: row.get("last_seen_at")?,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::devices::{self, DeviceFacts};
    use crate::storage::enrollments::{self, TokenUpdateFacts};
    use crate::storage::testing::{authenticated_device, device_channel, test_databases};

    #[tokio::test]
    async fn reads_identity_facts_and_the_channels_token_update_count() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            assert_eq!(load(db, "D1", "D1").await.unwrap(), None, "unknown device");
            let facts = DeviceFacts {
                serial_number: Some("C02XYZ".into()),
                model: Some("MacBookPro18,3".into()),
                os_version: Some("14.5".into()),
                ..Default::default()
            };
            authenticated_device(db, "D1", "fp1", facts, 1_000)
                .await
                .unwrap();
            let before = load(db, "D1", "D1").await.unwrap().unwrap();
            assert_eq!(before.identity_fingerprint.as_deref(), Some("fp1"));
            assert_eq!(
                before.device,
                DescribedDevice::from(&devices::find(db, "D1").await.unwrap().unwrap()),
                "the same facts as the whole row"
            );
            assert_eq!(before.device.serial_number.as_deref(), Some("C02XYZ"));
            assert_eq!(before.device.os_version.as_deref(), Some("14.5"));
            assert_eq!(before.token_update_count, None, "no channel yet");
            assert_eq!(before.last_seen_at, 1_000);

            let e = device_channel("D1");
            for n in 1..=2 {
                let tu = TokenUpdateFacts {
                    topic: "t".into(),
                    push_magic: "m".into(),
                    token: vec![n; 32],
                    awaiting_configuration: None,
                    raw: vec![],
                };
                enrollments::apply_token_update(db, &e, tu, 2_000, None)
                    .await
                    .unwrap();
                let got = load(db, "D1", "D1").await.unwrap().unwrap();
                assert_eq!(got.token_update_count, Some(i32::from(n)));
            }
            let user = load(db, "D1", "U1").await.unwrap().unwrap();
            assert_eq!(
                user.token_update_count, None,
                "another channel is looked up by its own id"
            );
            tdb.cleanup().await;
        }
    }
}
