//! Typed MDM command builders: one for every command the server's typed API knows.
//!
//! Each returns a [`CommandSpec`] for [`actions::enqueue`](crate::actions::enqueue). Typed commands
//! are the JSON the server's admin API takes: `{"RequestType": "<Name>", "<AppleKey>": value, ...}`
//! with Apple's key names; `<data>` values are standard base64 text. The server validates the JSON
//! when it applies the action (a mistake is refused, audited and logged), and its tests check that every
//! builder here makes a command it accepts and that conforms to Apple's schema.
//!
//! Commands with options take a struct whose `Default` leaves every option out:
//!
//! ```
//! use mdm_plugin_sdk::commands::{self, InstallAction, OsUpdate};
//! let info = commands::device_information(&["OSVersion", "SerialNumber"]);
//! let update = commands::schedule_os_update(&[OsUpdate {
//!     product_version: Some("17.5".into()),
//!     install_action: InstallAction::InstallAsap,
//!     ..OsUpdate::default()
//! }]);
//! # let _ = (info, update);
//! ```

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::types::CommandSpec;

/// A typed command from any JSON object with a `RequestType` key: `typed(json!({"RequestType":
/// "AvailableOSUpdates"}))`. Prefer the builders, which cannot misspell a key.
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

/// A command whose options are a struct serialized with Apple's keys.
fn with_options(request_type: &str, options: &impl Serialize) -> CommandSpec {
    let mut command = request(request_type);
    if let Ok(Value::Object(fields)) = serde_json::to_value(options) {
        command.extend(fields);
    }
    spec(command)
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

/// `DeviceInformation` asking for a device attestation embedding `nonce` (1 to 32 bytes; iOS 16, macOS
/// 14, tvOS 16 and later), with these other queries.
pub fn device_attestation(nonce: &[u8], queries: &[&str]) -> CommandSpec {
    let mut all: Vec<&str> = queries.to_vec();
    if !all.contains(&"DevicePropertiesAttestation") {
        all.push("DevicePropertiesAttestation");
    }
    let mut command = request("DeviceInformation");
    command.insert("Queries".into(), json!(all));
    command.insert(
        "DeviceAttestationNonce".into(),
        Value::from(crate::b64::encode(nonce)),
    );
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

/// `ProfileList` of only the profiles MDM installed (`ManagedOnly`).
pub fn managed_profile_list() -> CommandSpec {
    let mut command = request("ProfileList");
    command.insert("ManagedOnly".into(), Value::Bool(true));
    spec(command)
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

/// `CertificateList` of only the certificates MDM installed (`ManagedOnly`).
pub fn managed_certificate_list() -> CommandSpec {
    let mut command = request("CertificateList");
    command.insert("ManagedOnly".into(), Value::Bool(true));
    spec(command)
}

/// `InstalledApplicationList`: the apps installed.
pub fn installed_application_list() -> CommandSpec {
    spec(request("InstalledApplicationList"))
}

/// What [`installed_applications`] asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstalledApps {
    /// Only these bundle identifiers.
    #[serde(rename = "Identifiers", skip_serializing_if = "Option::is_none")]
    pub identifiers: Option<Vec<String>>,
    /// Only managed apps (not those Declarative Device Management manages).
    #[serde(rename = "ManagedAppsOnly", skip_serializing_if = "Option::is_none")]
    pub managed_apps_only: Option<bool>,
    /// Only these keys of each app (Apple's names: `Name`, `ShortVersion`, `BundleSize`, ...;
    /// `Identifier` always comes). iOS 14, tvOS 14 and later.
    #[serde(rename = "Items", skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<String>>,
}

/// `InstalledApplicationList` with options.
pub fn installed_applications(options: &InstalledApps) -> CommandSpec {
    with_options("InstalledApplicationList", options)
}

/// `DeviceLock`, with an optional `PIN` (macOS: the six-digit Find My PIN) and lock-screen
/// `Message`.
pub fn device_lock(pin: Option<&str>, message: Option<&str>) -> CommandSpec {
    device_lock_with(&DeviceLock {
        pin: pin.map(str::to_owned),
        message: message.map(str::to_owned),
        phone_number: None,
    })
}

/// What [`device_lock_with`] sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeviceLock {
    /// macOS: the six-digit PIN that unlocks the Mac.
    #[serde(rename = "PIN", skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// Shown on the Lock screen.
    #[serde(rename = "Message", skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Shown on the Lock screen.
    #[serde(rename = "PhoneNumber", skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// `DeviceLock` with every option.
pub fn device_lock_with(options: &DeviceLock) -> CommandSpec {
    with_options("DeviceLock", options)
}

/// macOS: what `EraseDevice` does on a Mac that cannot erase all content and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ObliterationBehavior {
    /// Obliterate only when erasing fails.
    Default,
    /// Never obliterate.
    DoNotObliterate,
    /// Obliterate after a warning when erasing fails.
    ObliterateWithWarning,
    /// Always obliterate.
    Always,
}

/// Return to Service: the device re-enrolls by itself after the erase (iOS 17, macOS 14 and later).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReturnToService {
    /// Re-enroll after the erase.
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    /// A Wi-Fi profile to join with (base64 of its bytes is sent; give the bytes).
    #[serde(
        rename = "WiFiProfileData",
        skip_serializing_if = "Option::is_none",
        with = "opt_b64"
    )]
    pub wifi_profile: Option<Vec<u8>>,
    /// The enrollment profile to use (give the bytes).
    #[serde(
        rename = "MDMProfileData",
        skip_serializing_if = "Option::is_none",
        with = "opt_b64"
    )]
    pub mdm_profile: Option<Vec<u8>>,
}

/// What [`erase_device`] sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EraseDevice {
    /// macOS: the six-digit Find My PIN.
    #[serde(rename = "PIN", skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
    /// iOS: keep the cellular data plan.
    #[serde(rename = "PreserveDataPlan", skip_serializing_if = "Option::is_none")]
    pub preserve_data_plan: Option<bool>,
    /// iOS: no Quick Start proximity setup after the erase.
    #[serde(
        rename = "DisallowProximitySetup",
        skip_serializing_if = "Option::is_none"
    )]
    pub disallow_proximity_setup: Option<bool>,
    /// macOS: when to obliterate.
    #[serde(
        rename = "ObliterationBehavior",
        skip_serializing_if = "Option::is_none"
    )]
    pub obliteration_behavior: Option<ObliterationBehavior>,
    /// Re-enroll by itself after the erase.
    #[serde(rename = "ReturnToService", skip_serializing_if = "Option::is_none")]
    pub return_to_service: Option<ReturnToService>,
}

/// `EraseDevice`: wipes the device. Irreversible; the server asks for no confirmation.
pub fn erase_device(options: &EraseDevice) -> CommandSpec {
    with_options("EraseDevice", options)
}

/// `RestartDevice`.
pub fn restart_device() -> CommandSpec {
    spec(request("RestartDevice"))
}

/// What [`restart_device_with`] sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RestartDevice {
    /// macOS: let the user delay the restart.
    #[serde(rename = "NotifyUser", skip_serializing_if = "Option::is_none")]
    pub notify_user: Option<bool>,
    /// macOS (Apple silicon): rebuild the kernel cache.
    #[serde(rename = "RebuildKernelCache", skip_serializing_if = "Option::is_none")]
    pub rebuild_kernel_cache: Option<bool>,
    /// macOS (Apple silicon, with `rebuild_kernel_cache`): kexts to add to the auxiliary kernel
    /// collection.
    #[serde(rename = "KextPaths", skip_serializing_if = "Option::is_none")]
    pub kext_paths: Option<Vec<String>>,
}

/// `RestartDevice` with options.
pub fn restart_device_with(options: &RestartDevice) -> CommandSpec {
    with_options("RestartDevice", options)
}

/// `ShutDownDevice`.
pub fn shut_down_device() -> CommandSpec {
    spec(request("ShutDownDevice"))
}

/// `ClearPasscode`: removes the passcode (iOS; the server adds the device's UnlockToken).
pub fn clear_passcode() -> CommandSpec {
    spec(request("ClearPasscode"))
}

/// How an OS update is applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum InstallAction {
    /// Download, then install as the device's settings say.
    #[default]
    Default,
    /// Download only.
    DownloadOnly,
    /// Install as soon as possible.
    #[serde(rename = "InstallASAP")]
    InstallAsap,
    /// Download and tell the user (macOS).
    NotifyOnly,
    /// Download and install later, the user able to defer (macOS).
    InstallLater,
    /// Install and restart, forced (macOS).
    InstallForceRestart,
}

/// How urgent an OS update is (macOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpdatePriority {
    /// Apple's default.
    Low,
    /// Install ahead of other work.
    High,
}

/// One update of [`schedule_os_update`]: the product key from `AvailableOSUpdates`, or a version.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OsUpdate {
    /// The update's `ProductKey`, as `AvailableOSUpdates` reports it.
    #[serde(rename = "ProductKey", skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    /// The OS version to update to, e.g. `17.5`.
    #[serde(rename = "ProductVersion", skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    /// How it is applied.
    #[serde(rename = "InstallAction")]
    pub install_action: InstallAction,
    /// macOS with `InstallLater`: how often the user may defer.
    #[serde(rename = "MaxUserDeferrals", skip_serializing_if = "Option::is_none")]
    pub max_user_deferrals: Option<u32>,
    /// macOS: how urgent.
    #[serde(rename = "Priority", skip_serializing_if = "Option::is_none")]
    pub priority: Option<UpdatePriority>,
}

/// `ScheduleOSUpdate` of these updates (supervised devices).
pub fn schedule_os_update(updates: &[OsUpdate]) -> CommandSpec {
    let mut command = request("ScheduleOSUpdate");
    command.insert("Updates".into(), json!(updates));
    spec(command)
}

/// `AvailableOSUpdates`: the updates the device could install.
pub fn available_os_updates() -> CommandSpec {
    spec(request("AvailableOSUpdates"))
}

/// `DeviceConfigured`: lets a device waiting in Setup Assistant (`AwaitingConfiguration`) go on.
pub fn device_configured() -> CommandSpec {
    spec(request("DeviceConfigured"))
}

/// `Settings` with these items, each an object with Apple's `Item` and its keys, e.g.
/// `json!({"Item": "DeviceName", "DeviceName": "Front desk"})`.
pub fn settings(items: impl IntoIterator<Item = Value>) -> CommandSpec {
    let mut command = request("Settings");
    command.insert("Settings".into(), Value::Array(items.into_iter().collect()));
    spec(command)
}

/// `<data>` values: bytes given, base64 sent.
mod opt_b64 {
    pub fn serialize<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&crate::b64::encode(bytes)),
            None => s.serialize_none(),
        }
    }
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
    fn options_are_sent_with_apple_keys_and_only_when_given() {
        assert_eq!(
            json_of(device_attestation(b"n", &["SerialNumber"])),
            json!({"RequestType": "DeviceInformation", "DeviceAttestationNonce": "bg==",
                "Queries": ["SerialNumber", "DevicePropertiesAttestation"]})
        );
        assert_eq!(
            json_of(managed_profile_list()),
            json!({"RequestType": "ProfileList", "ManagedOnly": true})
        );
        assert_eq!(
            json_of(erase_device(&EraseDevice::default())),
            json!({"RequestType": "EraseDevice"})
        );
        let rts = EraseDevice {
            obliteration_behavior: Some(ObliterationBehavior::DoNotObliterate),
            return_to_service: Some(ReturnToService {
                enabled: true,
                wifi_profile: Some(b"wifi".to_vec()),
                mdm_profile: None,
            }),
            ..EraseDevice::default()
        };
        assert_eq!(
            json_of(erase_device(&rts)),
            json!({"RequestType": "EraseDevice", "ObliterationBehavior": "DoNotObliterate",
                "ReturnToService": {"Enabled": true, "WiFiProfileData": "d2lmaQ=="}})
        );
        let update = OsUpdate {
            product_version: Some("17.5".into()),
            install_action: InstallAction::InstallAsap,
            priority: Some(UpdatePriority::High),
            ..OsUpdate::default()
        };
        assert_eq!(
            json_of(schedule_os_update(&[update])),
            json!({"RequestType": "ScheduleOSUpdate", "Updates": [{"ProductVersion": "17.5",
                "InstallAction": "InstallASAP", "Priority": "High"}]})
        );
        assert_eq!(
            json_of(settings([
                json!({"Item": "DeviceName", "DeviceName": "Lobby"})
            ])),
            json!({"RequestType": "Settings", "Settings": [{"Item": "DeviceName", "DeviceName": "Lobby"}]})
        );
        assert_eq!(
            json_of(restart_device_with(&RestartDevice {
                notify_user: Some(true),
                ..RestartDevice::default()
            })),
            json!({"RequestType": "RestartDevice", "NotifyUser": true})
        );
        for (spec, rt) in [
            (clear_passcode(), "ClearPasscode"),
            (available_os_updates(), "AvailableOSUpdates"),
            (managed_certificate_list(), "CertificateList"),
            (
                installed_applications(&InstalledApps::default()),
                "InstalledApplicationList",
            ),
            (device_lock_with(&DeviceLock::default()), "DeviceLock"),
        ] {
            assert_eq!(spec.request_type().as_deref(), Some(rt));
        }
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
