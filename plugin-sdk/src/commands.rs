//! Typed MDM command builders.
//!
//! Each returns a [`CommandSpec`] for [`actions::enqueue`](crate::actions::enqueue). Typed commands
//! are the JSON the server's admin API takes: `{"RequestType": "<Name>", "<AppleKey>": value, ...}`
//! with Apple's key names; `<data>` values are standard base64 text. The server validates the JSON
//! when it applies the action, so a mistake surfaces in the plugin audit log, not at build time.
//!
//! ```
//! use mdm_plugin_sdk::commands;
//! let spec = commands::device_information(&["OSVersion", "SerialNumber"]);
//! # let _ = spec;
//! ```

use serde_json::{json, Map, Value};

use crate::types::CommandSpec;

/// A typed command from any JSON object with a `RequestType` key, for commands without a builder
/// here: `typed(json!({"RequestType": "AvailableOSUpdates"}))`.
pub fn typed(command: Value) -> CommandSpec {
    CommandSpec::TypedJson(command.to_string())
}

/// A raw command plist: a whole command envelope (`Command` and `CommandUUID`) or a bare `Command`
/// dictionary, XML or binary. The server checks and completes it.
pub fn raw(plist: impl Into<Vec<u8>>) -> CommandSpec {
    CommandSpec::RawPlist(plist.into())
}

fn request(request_type: &str) -> Map<String, Value> {
    let mut command = Map::new();
    command.insert("RequestType".into(), Value::from(request_type));
    command
}

fn spec(command: Map<String, Value>) -> CommandSpec {
    typed(Value::Object(command))
}

/// `DeviceInformation` for these queries (Apple's names: `OSVersion`, `SerialNumber`,
/// `BatteryLevel`, ...). An empty list leaves `Queries` out, and the server then asks for its
/// general inventory list.
pub fn device_information(queries: &[&str]) -> CommandSpec {
    let mut command = request("DeviceInformation");
    if !queries.is_empty() {
        command.insert("Queries".into(), json!(queries));
    }
    spec(command)
}

/// `SecurityInfo`: passcode, FileVault, SIP, firewall, secure boot and so on.
pub fn security_info() -> CommandSpec {
    spec(request("SecurityInfo"))
}

/// `ProfileList`: the configuration profiles installed.
pub fn profile_list() -> CommandSpec {
    spec(request("ProfileList"))
}

/// `InstallProfile` with this profile (a `.mobileconfig`, plain or signed), sent as base64
/// `Payload`.
pub fn install_profile(profile: impl AsRef<[u8]>) -> CommandSpec {
    let mut command = request("InstallProfile");
    command.insert("Payload".into(), Value::from(crate::b64::encode(profile)));
    spec(command)
}

/// `RemoveProfile` for the profile with this `PayloadIdentifier`.
pub fn remove_profile(identifier: &str) -> CommandSpec {
    let mut command = request("RemoveProfile");
    command.insert("Identifier".into(), Value::from(identifier));
    spec(command)
}

/// `CertificateList`: the certificates installed.
pub fn certificate_list() -> CommandSpec {
    spec(request("CertificateList"))
}

/// `InstalledApplicationList`: the apps installed.
pub fn installed_application_list() -> CommandSpec {
    spec(request("InstalledApplicationList"))
}

/// `DeviceLock`, with an optional `PIN` (macOS: the six-digit Find My PIN) and lock-screen
/// `Message`.
pub fn device_lock(pin: Option<&str>, message: Option<&str>) -> CommandSpec {
    let mut command = request("DeviceLock");
    if let Some(pin) = pin {
        command.insert("PIN".into(), Value::from(pin));
    }
    if let Some(message) = message {
        command.insert("Message".into(), Value::from(message));
    }
    spec(command)
}

/// `RestartDevice`.
pub fn restart_device() -> CommandSpec {
    spec(request("RestartDevice"))
}

/// `ShutDownDevice`.
pub fn shut_down_device() -> CommandSpec {
    spec(request("ShutDownDevice"))
}

/// `DeviceConfigured`: lets a device waiting in Setup Assistant (`AwaitingConfiguration`) go on.
pub fn device_configured() -> CommandSpec {
    spec(request("DeviceConfigured"))
}

impl CommandSpec {
    /// The JSON of a typed command (`None` for a raw plist or unparsable text).
    pub fn typed_json(&self) -> Option<Value> {
        match self {
            CommandSpec::TypedJson(text) => serde_json::from_str(text).ok(),
            CommandSpec::RawPlist(_) => None,
        }
    }

    /// The `RequestType` of a typed command.
    pub fn request_type(&self) -> Option<String> {
        self.typed_json()?
            .get("RequestType")?
            .as_str()
            .map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(spec: CommandSpec) -> Value {
        spec.typed_json().expect("a typed command")
    }

    #[test]
    fn json_shapes_use_apple_keys() {
        assert_eq!(
            json_of(device_information(&["OSVersion", "SerialNumber"])),
            json!({"RequestType": "DeviceInformation", "Queries": ["OSVersion", "SerialNumber"]})
        );
        assert_eq!(
            json_of(device_information(&[])),
            json!({"RequestType": "DeviceInformation"})
        );
        assert_eq!(
            json_of(security_info()),
            json!({"RequestType": "SecurityInfo"})
        );
        assert_eq!(
            json_of(profile_list()),
            json!({"RequestType": "ProfileList"})
        );
        assert_eq!(
            json_of(install_profile(b"foobarbaz")),
            json!({"RequestType": "InstallProfile", "Payload": "Zm9vYmFyYmF6"})
        );
        assert_eq!(
            json_of(remove_profile("com.example.wifi")),
            json!({"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"})
        );
        assert_eq!(
            json_of(certificate_list()),
            json!({"RequestType": "CertificateList"})
        );
        assert_eq!(
            json_of(installed_application_list()),
            json!({"RequestType": "InstalledApplicationList"})
        );
        assert_eq!(
            json_of(device_lock(Some("123456"), Some("Call IT"))),
            json!({"RequestType": "DeviceLock", "PIN": "123456", "Message": "Call IT"})
        );
        assert_eq!(
            json_of(device_lock(None, None)),
            json!({"RequestType": "DeviceLock"})
        );
        assert_eq!(
            json_of(restart_device()),
            json!({"RequestType": "RestartDevice"})
        );
        assert_eq!(
            json_of(shut_down_device()),
            json!({"RequestType": "ShutDownDevice"})
        );
        assert_eq!(
            json_of(device_configured()),
            json!({"RequestType": "DeviceConfigured"})
        );
        assert_eq!(
            json_of(typed(
                json!({"RequestType": "RestartDevice", "NotifyUser": true})
            )),
            json!({"RequestType": "RestartDevice", "NotifyUser": true})
        );
    }

    #[test]
    fn raw_and_request_type() {
        assert_eq!(
            raw(b"<plist/>".to_vec()),
            CommandSpec::RawPlist(b"<plist/>".to_vec())
        );
        assert_eq!(raw(&b"x"[..]).request_type(), None);
        assert_eq!(
            security_info().request_type().as_deref(),
            Some("SecurityInfo")
        );
    }
}
