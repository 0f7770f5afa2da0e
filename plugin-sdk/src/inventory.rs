//! What the server knows of a device (capability `inventory`).

use crate::host::inventory as host;

pub use crate::bindings::mdm::plugin::inventory::DeviceInfo;

/// The device with this id (UDID or EnrollmentID), if the server knows it.
pub fn device(device_id: &str) -> Option<DeviceInfo> {
    host::get_device(device_id)
}

impl DeviceInfo {
    /// The value of a plugin-set attribute.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{self, fixtures};

    #[test]
    fn looks_devices_up() {
        assert_eq!(device("UDID-1"), None);
        mock::add_device(DeviceInfo {
            id: "UDID-1".into(),
            facts: fixtures::no_facts(),
            enabled: true,
            channels: vec![fixtures::device_enrollment("UDID-1")],
            attributes: vec![("inv.os_version".into(), "17.5".into())],
            last_seen_unix_ms: 0,
        });
        let info = device("UDID-1").unwrap();
        assert_eq!(info.attribute("inv.os_version"), Some("17.5"));
        assert_eq!(info.attribute("nope"), None);
    }
}
