//! Hardware and OS facts a device reports: the same keys in Authenticate and in a DeviceInformation answer's
//! QueryResponses.

use super::fields::opt_nonempty_str;
use super::platform::platform_of;
use super::ProtocolError;
use plist::Dictionary;

/// `None` means "not reported". Every field is optional: real devices omit keys Apple marks required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    pub serial_number: Option<String>,
    pub model: Option<String>,
    pub model_name: Option<String>,
    pub product_name: Option<String>,
    pub device_name: Option<String>,
    pub os_version: Option<String>,
    pub build_version: Option<String>,
    pub imei: Option<String>,
    pub meid: Option<String>,
}

impl DeviceFacts {
    /// Read the facts from a dictionary (an Authenticate message, or QueryResponses). A key with the wrong
    /// type is an error; a missing or empty one is absent.
    pub fn from_dict(d: &Dictionary) -> Result<Self, ProtocolError> {
        Ok(Self {
            serial_number: opt_nonempty_str(d, "SerialNumber")?,
            model: opt_nonempty_str(d, "Model")?,
            model_name: opt_nonempty_str(d, "ModelName")?,
            product_name: opt_nonempty_str(d, "ProductName")?,
            device_name: opt_nonempty_str(d, "DeviceName")?,
            os_version: opt_nonempty_str(d, "OSVersion")?,
            build_version: opt_nonempty_str(d, "BuildVersion")?,
            imei: opt_nonempty_str(d, "IMEI")?,
            meid: opt_nonempty_str(d, "MEID")?,
        })
    }

    /// The OS family (iOS, iPadOS, macOS, tvOS, watchOS, visionOS), from the model identifiers.
    pub fn platform(&self) -> Option<String> {
        platform_of(
            self.product_name.as_deref(),
            self.model.as_deref(),
            self.model_name.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_facts_and_refuses_wrong_types() {
        let mut d = Dictionary::new();
        d.insert("SerialNumber".into(), "C02".into());
        d.insert("Model".into(), "MacBookPro18,3".into());
        d.insert("DeviceName".into(), "".into());
        let f = DeviceFacts::from_dict(&d).unwrap();
        assert_eq!(f.serial_number.as_deref(), Some("C02"));
        assert_eq!(f.device_name, None, "empty means absent");
        assert_eq!(f.platform().as_deref(), Some("macOS"));
        d.insert("OSVersion".into(), 17.into());
        assert!(DeviceFacts::from_dict(&d).is_err());
    }
}
