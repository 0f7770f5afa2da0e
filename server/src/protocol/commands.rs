//! Typed JSON command builders for the admin API.
//!
//! Admins can enqueue an MDM command either as a raw plist (handled elsewhere) or as a typed
//! JSON object such as `{"RequestType": "DeviceLock", "PIN": "123456", "Message": "Call IT"}`.
//! [`TypedCommand`] is that JSON object. Its field names are Apple's own key names, so Apple's
//! documentation (and the schemas in `apple/device-management`, `mdm/commands/*.yaml`) describes
//! them. [`TypedCommand::to_command_dict`] validates the values and produces the `Command`
//! dictionary of the MDM command plist, including its `RequestType` key.
//!
//! Keys that are `<data>` in a plist take standard base64 text in JSON (padding optional,
//! whitespace such as line breaks ignored).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use plist::{Dictionary, Value};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Standard alphabet; accepts input with or without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Queries sent by `DeviceInformation` when the admin leaves `Queries` out.
///
/// Apple's schema marks `Queries` as required, so we always send a list: general inventory
/// facts that every platform understands (a device skips queries it does not support, and
/// those its MDM access rights do not allow).
pub const DEFAULT_DEVICE_INFORMATION_QUERIES: &[&str] = &[
    "UDID",
    "DeviceName",
    "OSVersion",
    "BuildVersion",
    "SupplementalBuildVersion",
    "SupplementalOSVersionExtra",
    "ProductName",
    "Model",
    "ModelName",
    "ModelNumber",
    "SerialNumber",
    "DeviceCapacity",
    "AvailableDeviceCapacity",
    "BatteryLevel",
    "IsSupervised",
    "IsActivationLockEnabled",
    "IsAppleSilicon",
    "AwaitingConfiguration",
    "IMEI",
    "MEID",
    "ICCID",
    "WiFiMAC",
    "BluetoothMAC",
    "EthernetMAC",
    "HostName",
    "LocalHostName",
    "TimeZone",
];

/// The query a device needs in order to use `DeviceAttestationNonce`.
const ATTESTATION_QUERY: &str = "DevicePropertiesAttestation";

/// Largest `DeviceAttestationNonce` Apple accepts, in bytes.
const MAX_ATTESTATION_NONCE_LEN: usize = 32;

/// How deeply nested a free-form `Settings` item may be.
const MAX_SETTINGS_DEPTH: usize = 32;

/// Settings items whose keys are `<data>` in Apple's schema; JSON gives them as base64.
const SETTINGS_DATA_KEYS: &[(&str, &str)] = &[("Wallpaper", "Image")];

/// A typed command as the admin API accepts it: JSON like
/// `{"RequestType": "DeviceLock", "PIN": "123456", "Message": "Call IT"}`.
///
/// Field names are Apple's own key names (as in Apple's MDM command schemas), so Apple's
/// documentation applies. Unknown fields are rejected so typos fail loudly. Fields holding
/// binary data (`<data>` in Apple's schema) take standard base64 text.
//
// `remote = "Self"` makes serde generate inherent `TypedCommand::serialize`/`deserialize`
// functions instead of the trait impls; the trait impls below wrap them so that the variants
// without fields also reject unknown fields (serde ignores extra keys for internally tagged unit
// variants even with `deny_unknown_fields`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(remote = "Self", tag = "RequestType", deny_unknown_fields)]
pub enum TypedCommand {
    /// Asks the device for information about itself (name, OS version, serial number, network
    /// identifiers, ...). Requires the Query Device Information right, and for network facts the
    /// Query Network Information right. Supported on the user channel.
    DeviceInformation {
        /// The names of the facts to return, e.g. `["DeviceName", "OSVersion"]`. Apple's schema
        /// requires the key; when it is left out the server sends a general inventory list
        /// (`DEFAULT_DEVICE_INFORMATION_QUERIES`). A device ignores queries it does not support.
        #[serde(rename = "Queries", default, skip_serializing_if = "Option::is_none")]
        queries: Option<Vec<String>>,
        /// Base64 freshness code (1 to 32 bytes) to embed in a new device attestation
        /// (iOS 16, macOS 14, tvOS 16 and later). `Queries` must then contain
        /// `DevicePropertiesAttestation`; it is added automatically when `Queries` is left out.
        #[serde(
            rename = "DeviceAttestationNonce",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        #[schema(format = Byte)]
        device_attestation_nonce: Option<String>,
    },

    /// Asks the device for security information: passcode state, FileVault, firmware password,
    /// SIP, hardware encryption capabilities, bootstrap token state and so on. Requires the
    /// Query Security right.
    SecurityInfo,

    /// Lists the configuration profiles installed on the device. Requires the Inspect Profile
    /// Manifest right. Supported on the user channel.
    ProfileList {
        /// If `true`, list only profiles installed by MDM (iOS 13, macOS 10.15, tvOS 13 and
        /// later). User-enrolled devices always list only managed profiles.
        #[serde(
            rename = "ManagedOnly",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        managed_only: Option<bool>,
    },

    /// Installs a configuration profile. Requires the Profile Installation and Removal right.
    /// Supported on the user channel.
    InstallProfile {
        /// The profile as base64: either a plain `.mobileconfig` plist (XML or binary), or a
        /// signed and/or encrypted one. A plain plist must have `PayloadType` `Configuration`.
        #[serde(rename = "Payload")]
        #[schema(format = Byte)]
        payload: String,
    },

    /// Removes a configuration profile. Requires the Profile Installation and Removal right.
    /// Supported on the user channel.
    RemoveProfile {
        /// The `PayloadIdentifier` of the profile to remove.
        #[serde(rename = "Identifier")]
        identifier: String,
    },

    /// Lists the certificates installed on the device. Requires the Inspect Profile Manifest
    /// right.
    CertificateList {
        /// If `true`, list only certificates installed by MDM (iOS 13, macOS 10.15, tvOS 13 and
        /// later). User-enrolled devices always list only managed certificates.
        #[serde(
            rename = "ManagedOnly",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        managed_only: Option<bool>,
    },

    /// Lists installed third-party apps. Requires the Query Applications right.
    InstalledApplicationList {
        /// Only report these bundle identifiers (iOS 7, macOS 10.15, tvOS 10.2 and later).
        /// For a watchOS app use the watch app's own bundle identifier.
        #[serde(
            rename = "Identifiers",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        identifiers: Option<Vec<String>>,
        /// If `true`, only report managed apps, excluding those managed by Declarative Device
        /// Management.
        #[serde(
            rename = "ManagedAppsOnly",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        managed_apps_only: Option<bool>,
        /// Only return these keys for each app (`Identifier` is always returned). iOS 14 and
        /// tvOS 14 and later; ask only for what you need, as some values are slow to compute.
        #[serde(rename = "Items", default, skip_serializing_if = "Option::is_none")]
        items: Option<Vec<InstalledApplicationItem>>,
    },

    /// Locks the device immediately. Requires the Device Lock and Passcode Removal right.
    DeviceLock {
        /// macOS only: the six-digit PIN that unlocks the Mac (Find My PIN). Required by some
        /// Macs; the device reports this as `PINRequiredForDeviceLock`.
        #[serde(rename = "PIN", default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
        /// Message shown on the Lock screen (iOS 7, macOS 10.14 and later; ignored on Shared
        /// iPad).
        #[serde(rename = "Message", default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Phone number shown on the Lock screen (iOS 7, macOS 11.5 on Apple silicon and later;
        /// ignored on Shared iPad).
        #[serde(
            rename = "PhoneNumber",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        phone_number: Option<String>,
    },

    /// Erases the device. Requires the Device Erase right. This cannot be undone.
    EraseDevice {
        /// macOS only: the six-digit PIN for Find My, needed to unlock the Mac after erasure.
        /// Required by some Macs; the device reports this as `PINRequiredForEraseDevice`.
        #[serde(rename = "PIN", default, skip_serializing_if = "Option::is_none")]
        pin: Option<String>,
        /// iOS 11 and later: if `true`, keep the eSIM data plan.
        #[serde(
            rename = "PreserveDataPlan",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        preserve_data_plan: Option<bool>,
        /// iOS 11.3 and later: if `true`, disable Proximity Setup on the next boot and skip its
        /// Setup Assistant pane. Before iOS 14, don't combine it with other options.
        #[serde(
            rename = "DisallowProximitySetup",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        disallow_proximity_setup: Option<bool>,
        /// macOS 12 and later: what to do when Erase All Content and Settings can't run.
        #[serde(
            rename = "ObliterationBehavior",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        obliteration_behavior: Option<ObliterationBehavior>,
        /// iOS 17, Shared iPad and tvOS 18 and later: re-enroll automatically after the erase.
        #[serde(
            rename = "ReturnToService",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        return_to_service: Option<ReturnToService>,
    },

    /// Restarts the device. Requires the Device Lock right. Supervised iOS and tvOS, and macOS.
    RestartDevice {
        /// macOS 11.3 and later: if `true`, only ask the user to restart at their convenience.
        #[serde(
            rename = "NotifyUser",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        notify_user: Option<bool>,
        /// macOS 11 and later: if `true`, rebuild the kernel cache during the restart.
        #[serde(
            rename = "RebuildKernelCache",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        rebuild_kernel_cache: Option<bool>,
        /// macOS 11 and later: absolute paths of kexts to add to the auxiliary kernel cache.
        /// Only allowed with `RebuildKernelCache: true`.
        #[serde(rename = "KextPaths", default, skip_serializing_if = "Option::is_none")]
        kext_paths: Option<Vec<String>>,
    },

    /// Shuts the device down. Requires the Device Lock right. Supervised iOS, and macOS.
    ShutDownDevice,

    /// Removes the device passcode. Requires the Device Lock and Passcode Removal right. The
    /// server fills in the device's `UnlockToken` (from its TokenUpdate check-in), so this
    /// command is built separately for each device, and fails for a device that has not
    /// reported one.
    ClearPasscode,

    /// Schedules OS updates. Supervised iOS and tvOS, and macOS. Ignored when a Declarative
    /// Device Management software update enforcement policy is active.
    ScheduleOSUpdate {
        /// The updates to schedule (see `AvailableOSUpdates` for product keys and versions).
        #[serde(rename = "Updates")]
        updates: Vec<ScheduleOsUpdateItem>,
    },

    /// Lists the OS updates available to the device. Supervised iOS and tvOS, and macOS.
    AvailableOSUpdates,

    /// Tells a device held in Setup Assistant ("await configuration", Automated Device
    /// Enrollment) that the server has finished configuring it and setup can continue.
    DeviceConfigured,

    /// Changes device settings once (the user may be able to change them back). Requires the
    /// Apply Settings right.
    Settings {
        /// Settings items. Each is an object with an `Item` key naming the setting (for example
        /// `DeviceName`, `Bluetooth`, `Wallpaper`, `ApplicationConfiguration`, `TimeZone`,
        /// `MDMOptions`, `SharedDeviceConfiguration`, `AccessibilitySettings`), plus that item's
        /// keys as in Apple's documentation. Values may be strings, numbers, booleans, arrays
        /// and objects (no nulls). `Wallpaper`'s `Image` takes base64.
        #[serde(rename = "Settings")]
        #[schema(value_type = Vec<Object>)]
        settings: Vec<serde_json::Map<String, serde_json::Value>>,
    },
}

impl Serialize for TypedCommand {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TypedCommand::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for TypedCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        // serde would also accept the sequence form `["DeviceLock", ...]`; only take objects.
        let Some(object) = value.as_object() else {
            return Err(D::Error::custom(
                "expected an object with a RequestType key",
            ));
        };
        let command = TypedCommand::deserialize(&value).map_err(D::Error::custom)?;
        if !command.has_fields() {
            if let Some(extra) = object.keys().find(|k| k.as_str() != "RequestType") {
                return Err(D::Error::custom(format!(
                    "unknown field `{extra}`: {} takes no fields",
                    command.request_type()
                )));
            }
        }
        Ok(command)
    }
}

/// Fallback behavior of `EraseDevice` on a Mac with Apple silicon or a T2 chip when Erase All
/// Content and Settings (EACS) can't run (macOS 12 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum ObliterationBehavior {
    /// If the EACS preflight fails, answer `Error` and then obliterate anyway.
    Default,
    /// Never obliterate: answer `Error` if the EACS preflight fails.
    DoNotObliterate,
    /// If the EACS preflight fails, answer `Acknowledged` and obliterate.
    ObliterateWithWarning,
    /// Skip EACS and always obliterate.
    Always,
}

impl ObliterationBehavior {
    fn as_str(self) -> &'static str {
        match self {
            Self::Default => "Default",
            Self::DoNotObliterate => "DoNotObliterate",
            Self::ObliterateWithWarning => "ObliterateWithWarning",
            Self::Always => "Always",
        }
    }
}

/// `EraseDevice` Return to Service settings: re-enroll automatically after the erase.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReturnToService {
    /// If `true`, the device tries to re-enroll after the erase. All Activation Locks must be
    /// off for this to work.
    #[serde(rename = "Enabled")]
    pub enabled: bool,
    /// Base64 Wi-Fi profile to install after the erase; needed when the device has no Ethernet.
    #[serde(
        rename = "WiFiProfileData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(format = Byte)]
    pub wifi_profile_data: Option<String>,
    /// Base64 MDM enrollment profile to install after the erase. Required for unsupervised
    /// devices and for supervised devices not enrolled through Automated Device Enrollment.
    #[serde(
        rename = "MDMProfileData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(format = Byte)]
    pub mdm_profile_data: Option<String>,
}

/// One update for `ScheduleOSUpdate`. Give `ProductKey`, `ProductVersion`, or both.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOsUpdateItem {
    /// The product key of the update, as reported by `AvailableOSUpdates`.
    #[serde(
        rename = "ProductKey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_key: Option<String>,
    /// The version to update to, e.g. `17.5.1` (iOS 11.3, macOS 12, tvOS 12.2 and later; not
    /// for Rapid Security Responses). Required when `ProductKey` is absent.
    #[serde(
        rename = "ProductVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub product_version: Option<String>,
    /// What to do with the update.
    #[serde(rename = "InstallAction")]
    pub install_action: InstallAction,
    /// macOS 12 and later, with `InstallAction: InstallLater` and minor updates only: how many
    /// times (once a day) the user may postpone the update.
    #[serde(
        rename = "MaxUserDeferrals",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_user_deferrals: Option<u32>,
    /// macOS 12.3 and later, minor updates only: download and preparation priority (default
    /// `Low`).
    #[serde(rename = "Priority", default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<UpdatePriority>,
}

/// `ScheduleOSUpdate` install action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum InstallAction {
    /// Download or install the update, depending on the current state.
    Default,
    /// Download the update without installing it (iOS 9, macOS 11, tvOS 12 and later).
    DownloadOnly,
    /// iOS/tvOS: install a downloaded update. macOS: download it and start the restart countdown.
    #[serde(rename = "InstallASAP")]
    InstallAsap,
    /// macOS: download the update and notify the user.
    NotifyOnly,
    /// macOS: download the update and install it later.
    InstallLater,
    /// macOS 11 and later: like `Default`, then force a restart if needed (may lose data).
    InstallForceRestart,
}

impl InstallAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Default => "Default",
            Self::DownloadOnly => "DownloadOnly",
            Self::InstallAsap => "InstallASAP",
            Self::NotifyOnly => "NotifyOnly",
            Self::InstallLater => "InstallLater",
            Self::InstallForceRestart => "InstallForceRestart",
        }
    }
}

/// `ScheduleOSUpdate` download priority (macOS 12.3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum UpdatePriority {
    /// The default.
    Low,
    /// Download and prepare the update sooner.
    High,
}

impl UpdatePriority {
    fn as_str(self) -> &'static str {
        match self {
            Self::Low => "Low",
            Self::High => "High",
        }
    }
}

/// A key of `InstalledApplicationListResponse` items that `InstalledApplicationList` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[allow(missing_docs)]
pub enum InstalledApplicationItem {
    AdHocCodeSigned,
    AppStoreVendable,
    BetaApp,
    BundleSize,
    #[serde(rename = "DeviceBasedVPP")]
    DeviceBasedVpp,
    DistributorIdentifier,
    DynamicSize,
    ExternalVersionIdentifier,
    HasUpdateAvailable,
    Identifier,
    Installing,
    IsAppClip,
    IsValidated,
    Name,
    ShortVersion,
    Version,
}

impl InstalledApplicationItem {
    fn as_str(self) -> &'static str {
        match self {
            Self::AdHocCodeSigned => "AdHocCodeSigned",
            Self::AppStoreVendable => "AppStoreVendable",
            Self::BetaApp => "BetaApp",
            Self::BundleSize => "BundleSize",
            Self::DeviceBasedVpp => "DeviceBasedVPP",
            Self::DistributorIdentifier => "DistributorIdentifier",
            Self::DynamicSize => "DynamicSize",
            Self::ExternalVersionIdentifier => "ExternalVersionIdentifier",
            Self::HasUpdateAvailable => "HasUpdateAvailable",
            Self::Identifier => "Identifier",
            Self::Installing => "Installing",
            Self::IsAppClip => "IsAppClip",
            Self::IsValidated => "IsValidated",
            Self::Name => "Name",
            Self::ShortVersion => "ShortVersion",
            Self::Version => "Version",
        }
    }
}

/// Per-device facts some commands need.
#[derive(Debug, Default, Clone)]
pub struct CommandContext {
    /// The `UnlockToken` the device sent in its TokenUpdate check-in, if any.
    pub unlock_token: Option<Vec<u8>>,
}

/// Why a typed command could not be turned into a command dictionary.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A value is out of range, malformed, or inconsistent with another value.
    #[error("invalid {request_type} command: {reason}")]
    Invalid {
        /// The command's `RequestType`.
        request_type: &'static str,
        /// What is wrong, naming the offending key.
        reason: String,
    },
    /// The command embeds the device's `UnlockToken`, which the device never sent.
    #[error("{0} needs the device's UnlockToken, which this device has not reported")]
    MissingUnlockToken(&'static str),
}

impl TypedCommand {
    /// Apple's `RequestType` for this command.
    pub fn request_type(&self) -> &'static str {
        match self {
            Self::DeviceInformation { .. } => "DeviceInformation",
            Self::SecurityInfo => "SecurityInfo",
            Self::ProfileList { .. } => "ProfileList",
            Self::InstallProfile { .. } => "InstallProfile",
            Self::RemoveProfile { .. } => "RemoveProfile",
            Self::CertificateList { .. } => "CertificateList",
            Self::InstalledApplicationList { .. } => "InstalledApplicationList",
            Self::DeviceLock { .. } => "DeviceLock",
            Self::EraseDevice { .. } => "EraseDevice",
            Self::RestartDevice { .. } => "RestartDevice",
            Self::ShutDownDevice => "ShutDownDevice",
            Self::ClearPasscode => "ClearPasscode",
            Self::ScheduleOSUpdate { .. } => "ScheduleOSUpdate",
            Self::AvailableOSUpdates => "AvailableOSUpdates",
            Self::DeviceConfigured => "DeviceConfigured",
            Self::Settings { .. } => "Settings",
        }
    }

    /// Whether the variant has fields of its own besides `RequestType`.
    fn has_fields(&self) -> bool {
        match self {
            Self::SecurityInfo
            | Self::ShutDownDevice
            | Self::ClearPasscode
            | Self::AvailableOSUpdates
            | Self::DeviceConfigured => false,
            Self::DeviceInformation { .. }
            | Self::ProfileList { .. }
            | Self::InstallProfile { .. }
            | Self::RemoveProfile { .. }
            | Self::CertificateList { .. }
            | Self::InstalledApplicationList { .. }
            | Self::DeviceLock { .. }
            | Self::EraseDevice { .. }
            | Self::RestartDevice { .. }
            | Self::ScheduleOSUpdate { .. }
            | Self::Settings { .. } => true,
        }
    }

    /// `true` when the built dictionary depends on the device (`ClearPasscode` embeds that
    /// device's `UnlockToken`), so the caller must build one command per device instead of
    /// sharing one.
    pub fn is_device_specific(&self) -> bool {
        matches!(self, Self::ClearPasscode)
    }

    /// Validates the values (ranges, lengths and formats from Apple's schema) and builds the
    /// `Command` dictionary, including its `RequestType` key.
    pub fn to_command_dict(&self, ctx: &CommandContext) -> Result<Dictionary, CommandError> {
        let request_type = self.request_type();
        let mut b = Builder {
            request_type,
            dict: Dictionary::new(),
        };
        b.dict
            .insert("RequestType".to_owned(), Value::String(request_type.into()));
        match self {
            Self::DeviceInformation {
                queries,
                device_attestation_nonce,
            } => {
                let nonce = match device_attestation_nonce {
                    Some(text) => {
                        let nonce = b.base64("DeviceAttestationNonce", text)?;
                        if nonce.is_empty() || nonce.len() > MAX_ATTESTATION_NONCE_LEN {
                            return Err(b.invalid(format!(
                                "DeviceAttestationNonce must be 1 to {MAX_ATTESTATION_NONCE_LEN} bytes, got {}",
                                nonce.len()
                            )));
                        }
                        Some(nonce)
                    }
                    None => None,
                };
                let queries: Vec<String> = match queries {
                    Some(list) => {
                        if list.is_empty() {
                            return Err(b.invalid(
                                "Queries must not be empty (leave it out for the default list)"
                                    .into(),
                            ));
                        }
                        for q in list {
                            if q.is_empty() || !q.chars().all(|c| c.is_ascii_alphanumeric()) {
                                return Err(b.invalid(format!(
                                    "Queries entry {q:?} is not a query name (letters and digits only)"
                                )));
                            }
                        }
                        if nonce.is_some() && !list.iter().any(|q| q == ATTESTATION_QUERY) {
                            return Err(b.invalid(format!(
                                "DeviceAttestationNonce requires Queries to contain {ATTESTATION_QUERY}"
                            )));
                        }
                        list.clone()
                    }
                    None => {
                        let mut list: Vec<String> = DEFAULT_DEVICE_INFORMATION_QUERIES
                            .iter()
                            .map(|q| (*q).to_owned())
                            .collect();
                        if nonce.is_some() {
                            list.push(ATTESTATION_QUERY.to_owned());
                        }
                        list
                    }
                };
                b.strings("Queries", &queries);
                if let Some(nonce) = nonce {
                    b.set("DeviceAttestationNonce", Value::Data(nonce));
                }
            }
            Self::SecurityInfo
            | Self::ShutDownDevice
            | Self::AvailableOSUpdates
            | Self::DeviceConfigured => {}
            Self::ProfileList { managed_only } | Self::CertificateList { managed_only } => {
                b.opt_bool("ManagedOnly", *managed_only);
            }
            Self::InstallProfile { payload } => {
                let profile = b.base64("Payload", payload)?;
                check_profile(&profile).map_err(|e| b.invalid(e.to_string()))?;
                b.set("Payload", Value::Data(profile));
            }
            Self::RemoveProfile { identifier } => {
                if identifier.trim().is_empty() {
                    return Err(b.invalid("Identifier must not be empty".into()));
                }
                b.set("Identifier", Value::String(identifier.clone()));
            }
            Self::InstalledApplicationList {
                identifiers,
                managed_apps_only,
                items,
            } => {
                if let Some(ids) = identifiers {
                    if ids.is_empty() {
                        return Err(b.invalid(
                            "Identifiers must not be empty (leave it out to list all apps)".into(),
                        ));
                    }
                    if ids.iter().any(|id| id.trim().is_empty()) {
                        return Err(b.invalid("Identifiers entries must not be empty".into()));
                    }
                    b.strings("Identifiers", ids);
                }
                b.opt_bool("ManagedAppsOnly", *managed_apps_only);
                if let Some(items) = items {
                    let names: Vec<String> = items.iter().map(|i| i.as_str().to_owned()).collect();
                    b.strings("Items", &names);
                }
            }
            Self::DeviceLock {
                pin,
                message,
                phone_number,
            } => {
                if let Some(pin) = pin {
                    b.check_pin(pin)?;
                }
                b.opt_string("PIN", pin);
                b.opt_string("Message", message);
                b.opt_string("PhoneNumber", phone_number);
            }
            Self::EraseDevice {
                pin,
                preserve_data_plan,
                disallow_proximity_setup,
                obliteration_behavior,
                return_to_service,
            } => {
                if let Some(pin) = pin {
                    b.check_pin(pin)?;
                }
                b.opt_string("PIN", pin);
                b.opt_bool("PreserveDataPlan", *preserve_data_plan);
                b.opt_bool("DisallowProximitySetup", *disallow_proximity_setup);
                if let Some(ob) = obliteration_behavior {
                    b.set("ObliterationBehavior", Value::String(ob.as_str().into()));
                }
                if let Some(rts) = return_to_service {
                    let mut d = Dictionary::new();
                    d.insert("Enabled".to_owned(), Value::Boolean(rts.enabled));
                    for (key, value) in [
                        ("WiFiProfileData", &rts.wifi_profile_data),
                        ("MDMProfileData", &rts.mdm_profile_data),
                    ] {
                        if let Some(text) = value {
                            let path = format!("ReturnToService.{key}");
                            let data = b.base64(&path, text)?;
                            check_profile(&data).map_err(|e| b.invalid(format!("{path}: {e}")))?;
                            d.insert(key.to_owned(), Value::Data(data));
                        }
                    }
                    b.set("ReturnToService", Value::Dictionary(d));
                }
            }
            Self::RestartDevice {
                notify_user,
                rebuild_kernel_cache,
                kext_paths,
            } => {
                b.opt_bool("NotifyUser", *notify_user);
                b.opt_bool("RebuildKernelCache", *rebuild_kernel_cache);
                if let Some(paths) = kext_paths {
                    if *rebuild_kernel_cache != Some(true) {
                        return Err(b.invalid("KextPaths requires RebuildKernelCache: true".into()));
                    }
                    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                        return Err(
                            b.invalid(format!("KextPaths entry {bad:?} is not an absolute path"))
                        );
                    }
                    b.strings("KextPaths", paths);
                }
            }
            Self::ClearPasscode => match &ctx.unlock_token {
                Some(token) if !token.is_empty() => {
                    b.set("UnlockToken", Value::Data(token.clone()));
                }
                _ => return Err(CommandError::MissingUnlockToken(request_type)),
            },
            Self::ScheduleOSUpdate { updates } => {
                if updates.is_empty() {
                    return Err(b.invalid("Updates must not be empty".into()));
                }
                let mut list = Vec::with_capacity(updates.len());
                for (i, u) in updates.iter().enumerate() {
                    list.push(Value::Dictionary(b.os_update(i, u)?));
                }
                b.set("Updates", Value::Array(list));
            }
            Self::Settings { settings } => {
                if settings.is_empty() {
                    return Err(b.invalid("Settings must not be empty".into()));
                }
                let mut list = Vec::with_capacity(settings.len());
                for (i, item) in settings.iter().enumerate() {
                    let dict = settings_item(i, item).map_err(|e| b.invalid(e.to_string()))?;
                    list.push(Value::Dictionary(dict));
                }
                b.set("Settings", Value::Array(list));
            }
        }
        Ok(b.dict)
    }
}

/// Accumulates a command dictionary and builds errors tagged with the request type.
struct Builder {
    request_type: &'static str,
    dict: Dictionary,
}

impl Builder {
    fn invalid(&self, reason: String) -> CommandError {
        CommandError::Invalid {
            request_type: self.request_type,
            reason,
        }
    }

    fn set(&mut self, key: &str, value: Value) {
        self.dict.insert(key.to_owned(), value);
    }

    fn opt_bool(&mut self, key: &str, value: Option<bool>) {
        if let Some(v) = value {
            self.set(key, Value::Boolean(v));
        }
    }

    fn opt_string(&mut self, key: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.set(key, Value::String(v.clone()));
        }
    }

    fn strings(&mut self, key: &str, values: &[String]) {
        let list = values.iter().map(|v| Value::String(v.clone())).collect();
        self.set(key, Value::Array(list));
    }

    fn base64(&self, key: &str, text: &str) -> Result<Vec<u8>, CommandError> {
        decode_base64(text).map_err(|e| self.invalid(format!("{key} is not valid base64: {e}")))
    }

    /// Find My PINs are six digits (Apple: "The six-character PIN for Find My").
    fn check_pin(&self, pin: &str) -> Result<(), CommandError> {
        if pin.len() == 6 && pin.bytes().all(|c| c.is_ascii_digit()) {
            Ok(())
        } else {
            Err(self.invalid("PIN must be exactly 6 digits".into()))
        }
    }

    fn os_update(&self, i: usize, u: &ScheduleOsUpdateItem) -> Result<Dictionary, CommandError> {
        let non_empty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !non_empty(&u.product_key) && !non_empty(&u.product_version) {
            return Err(self.invalid(format!(
                "Updates[{i}] needs a non-empty ProductKey or ProductVersion"
            )));
        }
        if u.max_user_deferrals.is_some() && u.install_action != InstallAction::InstallLater {
            return Err(self.invalid(format!(
                "Updates[{i}].MaxUserDeferrals is only allowed with InstallAction InstallLater"
            )));
        }
        let mut d = Dictionary::new();
        if let Some(key) = &u.product_key {
            d.insert("ProductKey".to_owned(), Value::String(key.clone()));
        }
        if let Some(version) = &u.product_version {
            d.insert("ProductVersion".to_owned(), Value::String(version.clone()));
        }
        d.insert(
            "InstallAction".to_owned(),
            Value::String(u.install_action.as_str().into()),
        );
        if let Some(n) = u.max_user_deferrals {
            d.insert("MaxUserDeferrals".to_owned(), Value::Integer(n.into()));
        }
        if let Some(p) = u.priority {
            d.insert("Priority".to_owned(), Value::String(p.as_str().into()));
        }
        Ok(d)
    }
}

/// Decodes standard base64, with or without padding, ignoring ASCII whitespace (line breaks
/// from tools like `base64` or PEM-style wrapping).
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(compact.as_bytes())
}

/// Why a profile blob cannot be sent in an InstallProfile.
#[derive(Debug, thiserror::Error)]
enum UnfitProfile {
    #[error("profile is empty")]
    Empty,
    #[error("profile looks like a plist but does not parse: {0}")]
    Unparsable(super::ProtocolError),
    #[error("profile plist must be a dictionary with PayloadType \"Configuration\"")]
    NotConfiguration,
}

/// Checks a profile blob: it must not be empty, and if it is a plain (unsigned, XML or binary)
/// plist it must be a configuration profile. Signed (CMS) profiles are passed through as is.
fn check_profile(bytes: &[u8]) -> Result<(), UnfitProfile> {
    let start = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(bytes);
    let start = match start.iter().position(|c| !c.is_ascii_whitespace()) {
        Some(pos) => &start[pos..],
        None => return Err(UnfitProfile::Empty),
    };
    if !(start.starts_with(b"<") || start.starts_with(b"bplist")) {
        return Ok(());
    }
    let value = super::parse_value(bytes).map_err(UnfitProfile::Unparsable)?;
    let payload_type = value
        .as_dictionary()
        .and_then(|d| d.get("PayloadType"))
        .and_then(Value::as_string);
    if payload_type == Some("Configuration") {
        Ok(())
    } else {
        Err(UnfitProfile::NotConfiguration)
    }
}

/// Why a `Settings` item cannot become a plist dictionary; `path` names the offending key.
#[derive(Debug, thiserror::Error)]
enum SettingsError {
    #[error("{path}.Item must be a non-empty string")]
    ItemNotAString { path: String },
    #[error("{path} is missing its Item key")]
    NoItem { path: String },
    #[error("{path} is not valid base64: {source}")]
    Base64 {
        path: String,
        source: base64::DecodeError,
    },
    #[error("{path} must be a base64 string")]
    DataNotAString { path: String },
    #[error("{path} is nested too deeply")]
    TooDeep { path: String },
    #[error("{path} is null; plists have no null")]
    Null { path: String },
    #[error("{path} is not a representable number")]
    NotANumber { path: String },
}

/// Converts one JSON `Settings` item into a plist dictionary.
fn settings_item(
    index: usize,
    item: &serde_json::Map<String, serde_json::Value>,
) -> Result<Dictionary, SettingsError> {
    let path = format!("Settings[{index}]");
    let kind = match item.get("Item") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.as_str(),
        Some(_) => return Err(SettingsError::ItemNotAString { path }),
        None => return Err(SettingsError::NoItem { path }),
    };
    let mut dict = Dictionary::new();
    for (key, value) in item {
        let key_path = format!("{path}.{key}");
        let is_data = SETTINGS_DATA_KEYS
            .iter()
            .any(|(item_kind, data_key)| *item_kind == kind && data_key == key);
        let converted = if is_data {
            match value {
                serde_json::Value::String(text) => {
                    Value::Data(decode_base64(text).map_err(|source| SettingsError::Base64 {
                        path: key_path,
                        source,
                    })?)
                }
                _ => return Err(SettingsError::DataNotAString { path: key_path }),
            }
        } else {
            json_to_plist(value, &key_path, 1)?
        };
        dict.insert(key.clone(), converted);
    }
    Ok(dict)
}

/// Converts a JSON value to a plist value. Integers stay integers, other numbers become reals;
/// `null` has no plist equivalent and is rejected.
fn json_to_plist(
    value: &serde_json::Value,
    path: &str,
    depth: usize,
) -> Result<Value, SettingsError> {
    if depth > MAX_SETTINGS_DEPTH {
        return Err(SettingsError::TooDeep {
            path: path.to_owned(),
        });
    }
    Ok(match value {
        serde_json::Value::Null => {
            return Err(SettingsError::Null {
                path: path.to_owned(),
            })
        }
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i.into())
            } else if let Some(u) = n.as_u64() {
                Value::Integer(u.into())
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                Value::Real(f)
            } else {
                return Err(SettingsError::NotANumber {
                    path: path.to_owned(),
                });
            }
        }
        serde_json::Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| json_to_plist(v, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(map) => {
            let mut dict = Dictionary::new();
            for (k, v) in map {
                dict.insert(
                    k.clone(),
                    json_to_plist(v, &format!("{path}.{k}"), depth + 1)?,
                );
            }
            Value::Dictionary(dict)
        }
    })
}

/// Every `RequestType` this module supports. The conformance test checks that this list,
/// the variants in the generated OpenAPI schema and the spec-checked examples all agree.
pub const REQUEST_TYPES: [&str; 16] = [
    "DeviceInformation",
    "SecurityInfo",
    "ProfileList",
    "InstallProfile",
    "RemoveProfile",
    "CertificateList",
    "InstalledApplicationList",
    "DeviceLock",
    "EraseDevice",
    "RestartDevice",
    "ShutDownDevice",
    "ClearPasscode",
    "ScheduleOSUpdate",
    "AvailableOSUpdates",
    "DeviceConfigured",
    "Settings",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::{BTreeSet, HashMap};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    const UNLOCK_TOKEN: &[u8] = b"\x01\x02\x03unlock-token\xff";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn ctx() -> CommandContext {
        CommandContext {
            unlock_token: Some(UNLOCK_TOKEN.to_vec()),
        }
    }

    fn parse(value: serde_json::Value) -> Result<TypedCommand, serde_json::Error> {
        serde_json::from_value(value)
    }

    fn build(value: serde_json::Value) -> Result<Dictionary, CommandError> {
        parse(value)
            .expect("example must parse")
            .to_command_dict(&ctx())
    }

    fn reason_of(result: Result<Dictionary, CommandError>) -> String {
        match result {
            Err(CommandError::Invalid { reason, .. }) => reason,
            other => panic!("expected CommandError::Invalid, got {other:?}"),
        }
    }

    fn sample_profile() -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("PayloadType".into(), Value::String("Configuration".into()));
        d.insert(
            "PayloadIdentifier".into(),
            Value::String("com.example.profile".into()),
        );
        d.insert(
            "PayloadUUID".into(),
            Value::String("5A1F2C3D-0000-4000-8000-000000000001".into()),
        );
        d.insert("PayloadVersion".into(), Value::Integer(1.into()));
        d.insert("PayloadContent".into(), Value::Array(Vec::new()));
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, &Value::Dictionary(d)).expect("serialize profile");
        out
    }

    /// One example per variant, every field the variant supports set.
    fn full_examples() -> Vec<TypedCommand> {
        let profile = b64(&sample_profile());
        vec![
            TypedCommand::DeviceInformation {
                queries: Some(vec![
                    "DeviceName".into(),
                    "OSVersion".into(),
                    "SerialNumber".into(),
                    ATTESTATION_QUERY.into(),
                ]),
                device_attestation_nonce: Some(b64(&[7u8; 32])),
            },
            TypedCommand::SecurityInfo,
            TypedCommand::ProfileList {
                managed_only: Some(true),
            },
            TypedCommand::InstallProfile {
                payload: profile.clone(),
            },
            TypedCommand::RemoveProfile {
                identifier: "com.example.profile".into(),
            },
            TypedCommand::CertificateList {
                managed_only: Some(false),
            },
            TypedCommand::InstalledApplicationList {
                identifiers: Some(vec!["com.example.app".into()]),
                managed_apps_only: Some(true),
                items: Some(vec![
                    InstalledApplicationItem::AdHocCodeSigned,
                    InstalledApplicationItem::AppStoreVendable,
                    InstalledApplicationItem::BetaApp,
                    InstalledApplicationItem::BundleSize,
                    InstalledApplicationItem::DeviceBasedVpp,
                    InstalledApplicationItem::DistributorIdentifier,
                    InstalledApplicationItem::DynamicSize,
                    InstalledApplicationItem::ExternalVersionIdentifier,
                    InstalledApplicationItem::HasUpdateAvailable,
                    InstalledApplicationItem::Identifier,
                    InstalledApplicationItem::Installing,
                    InstalledApplicationItem::IsAppClip,
                    InstalledApplicationItem::IsValidated,
                    InstalledApplicationItem::Name,
                    InstalledApplicationItem::ShortVersion,
                    InstalledApplicationItem::Version,
                ]),
            },
            TypedCommand::DeviceLock {
                pin: Some("123456".into()),
                message: Some("Call IT".into()),
                phone_number: Some("+1 555 0100".into()),
            },
            TypedCommand::EraseDevice {
                pin: Some("654321".into()),
                preserve_data_plan: Some(true),
                disallow_proximity_setup: Some(true),
                obliteration_behavior: Some(ObliterationBehavior::DoNotObliterate),
                return_to_service: Some(ReturnToService {
                    enabled: true,
                    wifi_profile_data: Some(profile.clone()),
                    mdm_profile_data: Some(profile),
                }),
            },
            TypedCommand::RestartDevice {
                notify_user: Some(true),
                rebuild_kernel_cache: Some(true),
                kext_paths: Some(vec!["/Library/Extensions/Example.kext".into()]),
            },
            TypedCommand::ShutDownDevice,
            TypedCommand::ClearPasscode,
            TypedCommand::ScheduleOSUpdate {
                updates: vec![
                    ScheduleOsUpdateItem {
                        product_key: Some("MSU_UPDATE_22F_patch_13.4.1".into()),
                        product_version: Some("13.4.1".into()),
                        install_action: InstallAction::InstallLater,
                        max_user_deferrals: Some(3),
                        priority: Some(UpdatePriority::High),
                    },
                    ScheduleOsUpdateItem {
                        product_key: None,
                        product_version: Some("17.5".into()),
                        install_action: InstallAction::InstallAsap,
                        max_user_deferrals: None,
                        priority: None,
                    },
                ],
            },
            TypedCommand::AvailableOSUpdates,
            TypedCommand::DeviceConfigured,
            TypedCommand::Settings {
                settings: full_settings_items(),
            },
        ]
    }

    /// One item of every kind Apple's Settings schema lists.
    fn full_settings_items() -> Vec<serde_json::Map<String, serde_json::Value>> {
        let items = json!([
            {"Item": "Wallpaper", "Image": b64(b"\x89PNG\r\n\x1a\n"), "Where": 3},
            {"Item": "DataRoaming", "Enabled": false},
            {"Item": "VoiceRoaming", "Enabled": true},
            {"Item": "PersonalHotspot", "Enabled": false},
            {"Item": "Bluetooth", "Enabled": true},
            {"Item": "ApplicationConfiguration", "Identifier": "com.example.app",
             "Configuration": {"ServerURL": "https://example.com", "Retries": 3, "Ratio": 0.5,
                               "Flags": [true, false], "Nested": {"Key": "Value"}}},
            {"Item": "ApplicationAttributes", "Identifier": "com.example.app",
             "Attributes": {"VPNUUID": "5A1F2C3D-0000-4000-8000-000000000002",
                            "AssociatedDomains": ["example.com"],
                            "AssociatedDomainsEnableDirectDownloads": true,
                            "Removable": false, "Hideable": false, "Lockable": false}},
            {"Item": "DeviceName", "DeviceName": "Front desk iPad"},
            {"Item": "HostName", "HostName": "front-desk"},
            {"Item": "OrganizationInfo",
             "OrganizationInfo": {"OrganizationName": "Example Inc.",
                                  "OrganizationEmail": "it@example.com"}},
            {"Item": "MDMOptions",
             "MDMOptions": {"ActivationLockAllowedWhileSupervised": true,
                            "BootstrapTokenAllowed": true}},
            {"Item": "MaximumResidentUsers", "MaximumResidentUsers": 4},
            {"Item": "SharedDeviceConfiguration", "QuotaSize": 4096, "ResidentUsers": 4,
             "TemporarySessionOnly": false, "ManagedAppleIDDefaultDomains": ["example.com"],
             "AwaitUserConfiguration": {"Enabled": true},
             "PasscodePolicy": {"PasscodeLockGracePeriod": 300, "AutoLockTime": 120}},
            {"Item": "DiagnosticSubmission", "Enabled": false},
            {"Item": "AppAnalytics", "Enabled": false},
            {"Item": "PasscodeLockGracePeriod", "PasscodeLockGracePeriod": 60},
            {"Item": "TimeZone", "TimeZone": "Europe/Berlin"},
            {"Item": "SoftwareUpdateSettings", "RecommendationCadence": 1},
            {"Item": "AccessibilitySettings", "BoldTextEnabled": true, "TextSize": 6,
             "VoiceOverEnabled": false}
        ]);
        serde_json::from_value(items).expect("settings items")
    }

    // ---------------------------------------------------------------------------------------
    // JSON parsing
    // ---------------------------------------------------------------------------------------

    #[test]
    fn every_variant_parses_from_example_json() {
        let profile = b64(&sample_profile());
        let examples = [
            json!({"RequestType": "DeviceInformation", "Queries": ["DeviceName", "OSVersion"]}),
            json!({"RequestType": "SecurityInfo"}),
            json!({"RequestType": "ProfileList", "ManagedOnly": true}),
            json!({"RequestType": "InstallProfile", "Payload": profile}),
            json!({"RequestType": "RemoveProfile", "Identifier": "com.example.profile"}),
            json!({"RequestType": "CertificateList", "ManagedOnly": true}),
            json!({"RequestType": "InstalledApplicationList", "ManagedAppsOnly": true,
                   "Identifiers": ["com.example.app"], "Items": ["Name", "ShortVersion"]}),
            json!({"RequestType": "DeviceLock", "PIN": "123456", "Message": "Call IT",
                   "PhoneNumber": "+1 555 0100"}),
            json!({"RequestType": "EraseDevice", "PIN": "123456",
                   "ObliterationBehavior": "ObliterateWithWarning",
                   "ReturnToService": {"Enabled": true, "MDMProfileData": profile}}),
            json!({"RequestType": "RestartDevice", "NotifyUser": true}),
            json!({"RequestType": "ShutDownDevice"}),
            json!({"RequestType": "ClearPasscode"}),
            json!({"RequestType": "ScheduleOSUpdate",
                   "Updates": [{"ProductVersion": "17.5", "InstallAction": "InstallASAP"}]}),
            json!({"RequestType": "AvailableOSUpdates"}),
            json!({"RequestType": "DeviceConfigured"}),
            json!({"RequestType": "Settings",
                   "Settings": [{"Item": "DeviceName", "DeviceName": "iPad 7"}]}),
        ];
        let mut seen = BTreeSet::new();
        for example in examples {
            let expected = example["RequestType"].as_str().unwrap().to_owned();
            let command =
                parse(example.clone()).unwrap_or_else(|e| panic!("{expected} did not parse: {e}"));
            assert_eq!(command.request_type(), expected);
            let dict = command
                .to_command_dict(&ctx())
                .unwrap_or_else(|e| panic!("{expected} did not build: {e}"));
            assert_eq!(
                dict.get("RequestType").and_then(Value::as_string),
                Some(expected.as_str())
            );
            // Serializing gives back the admin's JSON.
            assert_eq!(serde_json::to_value(&command).unwrap(), example);
            seen.insert(expected);
        }
        assert_eq!(seen, REQUEST_TYPES.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn full_examples_round_trip_through_json() {
        for command in full_examples() {
            let text = serde_json::to_string(&command).unwrap();
            let back: TypedCommand = serde_json::from_str(&text).unwrap();
            assert_eq!(back, command, "{text}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for bad in [
            json!({"RequestType": "DeviceLock", "Pin": "123456"}),
            json!({"RequestType": "DeviceLock", "PIN": "123456", "Mesage": "typo"}),
            json!({"RequestType": "SecurityInfo", "Queries": ["x"]}),
            json!({"RequestType": "ClearPasscode", "UnlockToken": "AAAA"}),
            json!({"RequestType": "ShutDownDevice", "Foo": null}),
            json!({"RequestType": "EraseDevice",
                   "ReturnToService": {"Enabled": true, "WifiProfileData": "AAAA"}}),
            json!({"RequestType": "ScheduleOSUpdate",
                   "Updates": [{"ProductKey": "X", "InstallAction": "Default", "Extra": 1}]}),
        ] {
            let err = parse(bad.clone()).expect_err(&bad.to_string());
            assert!(err.to_string().contains("unknown field"), "{bad}: {err}");
        }
    }

    #[test]
    fn missing_required_fields_are_rejected() {
        for bad in [
            json!({"RequestType": "InstallProfile"}),
            json!({"RequestType": "RemoveProfile"}),
            json!({"RequestType": "ScheduleOSUpdate"}),
            json!({"RequestType": "ScheduleOSUpdate", "Updates": [{"ProductKey": "X"}]}),
            json!({"RequestType": "Settings"}),
            json!({"RequestType": "EraseDevice", "ReturnToService": {}}),
        ] {
            let err = parse(bad.clone()).expect_err(&bad.to_string());
            assert!(err.to_string().contains("missing field"), "{bad}: {err}");
        }
    }

    #[test]
    fn wrong_request_type_or_shape_is_rejected() {
        for bad in [
            json!({"RequestType": "Nope"}),
            json!({"RequestType": "devicelock"}),
            json!({"RequestType": 5}),
            json!({"PIN": "123456"}),
            json!(["DeviceLock"]),
            json!("DeviceLock"),
            json!(null),
            json!({"RequestType": "DeviceLock", "PIN": 123456}),
            json!({"RequestType": "ProfileList", "ManagedOnly": "yes"}),
            json!({"RequestType": "EraseDevice", "ObliterationBehavior": "Sometimes"}),
            json!({"RequestType": "InstalledApplicationList", "Items": ["Colour"]}),
            json!({"RequestType": "ScheduleOSUpdate",
                   "Updates": [{"ProductKey": "X", "InstallAction": "Now"}]}),
            json!({"RequestType": "ScheduleOSUpdate",
                   "Updates": [{"ProductKey": "X", "InstallAction": "InstallLater",
                                "MaxUserDeferrals": -1}]}),
            json!({"RequestType": "Settings", "Settings": ["DeviceName"]}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} was accepted");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Value validation and dictionary contents
    // ---------------------------------------------------------------------------------------

    #[test]
    fn device_lock_pin_must_be_six_digits() {
        for pin in [
            "12345",
            "1234567",
            "12345a",
            "",
            " 123456",
            "١٢٣٤٥٦",
            "1234",
        ] {
            let reason = reason_of(build(json!({"RequestType": "DeviceLock", "PIN": pin})));
            assert!(reason.contains("PIN"), "{pin:?}: {reason}");
            let reason = reason_of(build(json!({"RequestType": "EraseDevice", "PIN": pin})));
            assert!(reason.contains("PIN"), "{pin:?}: {reason}");
        }
        let dict = build(json!({"RequestType": "DeviceLock", "PIN": "012345"})).unwrap();
        assert_eq!(dict.get("PIN").and_then(Value::as_string), Some("012345"));
    }

    #[test]
    fn error_messages_name_the_command() {
        let err = build(json!({"RequestType": "DeviceLock", "PIN": "1"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid DeviceLock command: PIN must be exactly 6 digits"
        );
        let err = TypedCommand::ClearPasscode
            .to_command_dict(&CommandContext::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ClearPasscode needs the device's UnlockToken, which this device has not reported"
        );
    }

    #[test]
    fn bad_base64_is_rejected() {
        let reason = reason_of(build(
            json!({"RequestType": "InstallProfile", "Payload": "@@@"}),
        ));
        assert!(reason.contains("Payload is not valid base64"), "{reason}");
        let reason = reason_of(build(json!({"RequestType": "EraseDevice",
            "ReturnToService": {"Enabled": true, "WiFiProfileData": "no*pe"}})));
        assert!(
            reason.contains("ReturnToService.WiFiProfileData"),
            "{reason}"
        );
        let reason = reason_of(build(json!({"RequestType": "DeviceInformation",
            "Queries": [ATTESTATION_QUERY], "DeviceAttestationNonce": "%%"})));
        assert!(reason.contains("DeviceAttestationNonce"), "{reason}");
        let reason = reason_of(build(json!({"RequestType": "Settings",
            "Settings": [{"Item": "Wallpaper", "Image": "not base64!", "Where": 1}]})));
        assert!(reason.contains("Settings[0].Image"), "{reason}");
    }

    #[test]
    fn base64_padding_and_whitespace_are_tolerated() {
        let profile = sample_profile();
        let padded = b64(&profile);
        let unpadded = padded.trim_end_matches('=').to_owned();
        assert_ne!(padded, unpadded, "test profile length should need padding");
        let wrapped: String = padded
            .as_bytes()
            .chunks(64)
            .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
            .collect();
        for text in [padded, unpadded, wrapped] {
            let dict = build(json!({"RequestType": "InstallProfile", "Payload": text})).unwrap();
            assert_eq!(
                dict.get("Payload").and_then(Value::as_data),
                Some(profile.as_slice())
            );
        }
    }

    #[test]
    fn install_profile_payload_is_checked() {
        let empty = reason_of(build(
            json!({"RequestType": "InstallProfile", "Payload": ""}),
        ));
        assert!(empty.contains("empty"), "{empty}");
        let blank = reason_of(build(json!({"RequestType": "InstallProfile",
            "Payload": b64(b"  \n")})));
        assert!(blank.contains("empty"), "{blank}");
        let broken = reason_of(build(json!({"RequestType": "InstallProfile",
            "Payload": b64(b"<?xml version=\"1.0\"?><plist><dict><key>")})));
        assert!(broken.contains("does not parse"), "{broken}");
        let mut not_profile = Vec::new();
        plist::to_writer_xml(&mut not_profile, &Value::String("hi".into())).unwrap();
        let reason = reason_of(build(json!({"RequestType": "InstallProfile",
            "Payload": b64(&not_profile)})));
        assert!(reason.contains("Configuration"), "{reason}");
        // A binary plist profile is fine too.
        let parsed = Value::from_reader(std::io::Cursor::new(sample_profile())).unwrap();
        let mut binary = Vec::new();
        plist::to_writer_binary(&mut binary, &parsed).unwrap();
        build(json!({"RequestType": "InstallProfile", "Payload": b64(&binary)})).unwrap();
        // Signed profiles (CMS, DER) are opaque and passed through.
        let der = [0x30u8, 0x82, 0x01, 0x00, 0x06, 0x09];
        let dict = build(json!({"RequestType": "InstallProfile", "Payload": b64(&der)})).unwrap();
        assert_eq!(dict.get("Payload").and_then(Value::as_data), Some(&der[..]));
    }

    #[test]
    fn clear_passcode_uses_the_device_unlock_token() {
        let command = parse(json!({"RequestType": "ClearPasscode"})).unwrap();
        assert!(command.is_device_specific());
        for missing in [
            CommandContext::default(),
            CommandContext {
                unlock_token: Some(Vec::new()),
            },
        ] {
            match command.to_command_dict(&missing) {
                Err(CommandError::MissingUnlockToken(rt)) => assert_eq!(rt, "ClearPasscode"),
                other => panic!("expected MissingUnlockToken, got {other:?}"),
            }
        }
        let dict = command.to_command_dict(&ctx()).unwrap();
        assert_eq!(
            dict.get("UnlockToken").and_then(Value::as_data),
            Some(UNLOCK_TOKEN)
        );
        assert_eq!(dict.len(), 2);
    }

    #[test]
    fn only_clear_passcode_is_device_specific() {
        for command in full_examples() {
            assert_eq!(
                command.is_device_specific(),
                command.request_type() == "ClearPasscode",
                "{}",
                command.request_type()
            );
            if !command.is_device_specific() {
                // Commands shared between devices must not depend on the context.
                assert_eq!(
                    command.to_command_dict(&ctx()).unwrap(),
                    command.to_command_dict(&CommandContext::default()).unwrap(),
                );
            }
        }
    }

    #[test]
    fn optional_fields_left_out_are_omitted() {
        let dict = build(json!({"RequestType": "DeviceLock"})).unwrap();
        assert_eq!(dict.keys().collect::<Vec<_>>(), ["RequestType"]);
        let dict = build(json!({"RequestType": "EraseDevice", "PIN": null})).unwrap();
        assert_eq!(dict.keys().collect::<Vec<_>>(), ["RequestType"]);
        let dict = build(json!({"RequestType": "RestartDevice", "NotifyUser": false})).unwrap();
        assert_eq!(dict.get("NotifyUser"), Some(&Value::Boolean(false)));
        assert_eq!(dict.len(), 2);
    }

    #[test]
    fn device_information_queries() {
        let dict = build(json!({"RequestType": "DeviceInformation"})).unwrap();
        let queries: Vec<&str> = dict
            .get("Queries")
            .and_then(Value::as_array)
            .unwrap()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        assert_eq!(queries, DEFAULT_DEVICE_INFORMATION_QUERIES);
        assert!(!dict.contains_key("DeviceAttestationNonce"));

        // A nonce with the default list adds the attestation query.
        let dict = build(json!({"RequestType": "DeviceInformation",
            "DeviceAttestationNonce": b64(b"fresh")}))
        .unwrap();
        let queries = dict.get("Queries").and_then(Value::as_array).unwrap();
        assert!(queries.contains(&Value::String(ATTESTATION_QUERY.into())));
        assert_eq!(
            dict.get("DeviceAttestationNonce").and_then(Value::as_data),
            Some(&b"fresh"[..])
        );

        for (bad, needle) in [
            (json!({"Queries": []}), "empty"),
            (json!({"Queries": [""]}), "query name"),
            (json!({"Queries": ["Device Name"]}), "query name"),
            (
                json!({"Queries": ["DeviceName"], "DeviceAttestationNonce": b64(b"x")}),
                ATTESTATION_QUERY,
            ),
            (
                json!({"Queries": [ATTESTATION_QUERY], "DeviceAttestationNonce": b64(&[0; 33])}),
                "1 to 32 bytes",
            ),
            (
                json!({"Queries": [ATTESTATION_QUERY], "DeviceAttestationNonce": ""}),
                "1 to 32 bytes",
            ),
        ] {
            let mut command = bad.clone();
            command["RequestType"] = json!("DeviceInformation");
            let reason = reason_of(build(command));
            assert!(reason.contains(needle), "{bad}: {reason}");
        }
    }

    #[test]
    fn installed_application_list_filters() {
        let dict = build(json!({"RequestType": "InstalledApplicationList",
            "Items": ["DeviceBasedVPP", "Name"]}))
        .unwrap();
        assert_eq!(
            dict.get("Items"),
            Some(&Value::Array(vec![
                Value::String("DeviceBasedVPP".into()),
                Value::String("Name".into())
            ]))
        );
        for bad in [json!([]), json!([""]), json!(["  "])] {
            let reason = reason_of(build(json!({"RequestType": "InstalledApplicationList",
                "Identifiers": bad})));
            assert!(reason.contains("Identifiers"), "{reason}");
        }
    }

    #[test]
    fn remove_profile_needs_an_identifier() {
        let reason = reason_of(build(
            json!({"RequestType": "RemoveProfile", "Identifier": " "}),
        ));
        assert!(reason.contains("Identifier"), "{reason}");
    }

    #[test]
    fn restart_kext_paths_need_kernel_cache_rebuild() {
        for bad in [
            json!({"KextPaths": ["/Library/Extensions/A.kext"]}),
            json!({"KextPaths": ["/Library/Extensions/A.kext"], "RebuildKernelCache": false}),
        ] {
            let mut command = bad.clone();
            command["RequestType"] = json!("RestartDevice");
            let reason = reason_of(build(command));
            assert!(reason.contains("RebuildKernelCache"), "{bad}: {reason}");
        }
        let reason = reason_of(build(json!({"RequestType": "RestartDevice",
            "RebuildKernelCache": true, "KextPaths": ["A.kext"]})));
        assert!(reason.contains("absolute"), "{reason}");
    }

    #[test]
    fn schedule_os_update_rules() {
        for (updates, needle) in [
            (json!([]), "must not be empty"),
            (
                json!([{"InstallAction": "Default"}]),
                "ProductKey or ProductVersion",
            ),
            (
                json!([{"ProductKey": "", "InstallAction": "Default"}]),
                "ProductKey or ProductVersion",
            ),
            (
                json!([{"ProductKey": "K", "InstallAction": "Default", "MaxUserDeferrals": 2}]),
                "MaxUserDeferrals",
            ),
        ] {
            let reason = reason_of(build(json!({"RequestType": "ScheduleOSUpdate",
                "Updates": updates})));
            assert!(reason.contains(needle), "{reason}");
        }
        let dict = build(json!({"RequestType": "ScheduleOSUpdate", "Updates": [
            {"ProductKey": "K", "InstallAction": "InstallLater", "MaxUserDeferrals": 5,
             "Priority": "High"}]}))
        .unwrap();
        let update = dict.get("Updates").and_then(Value::as_array).unwrap()[0]
            .as_dictionary()
            .unwrap();
        assert_eq!(
            update.get("InstallAction").and_then(Value::as_string),
            Some("InstallLater")
        );
        assert_eq!(
            update
                .get("MaxUserDeferrals")
                .and_then(Value::as_unsigned_integer),
            Some(5)
        );
        assert_eq!(
            update.get("Priority").and_then(Value::as_string),
            Some("High")
        );
    }

    #[test]
    fn settings_items_are_converted() {
        let dict = build(json!({"RequestType": "Settings", "Settings": [
            {"Item": "ApplicationConfiguration", "Identifier": "com.example.app",
             "Configuration": {"I": -3, "U": u64::MAX, "R": 1.5, "B": true, "S": "s",
                               "A": [1, "two"], "D": {"E": {}}}},
            {"Item": "Wallpaper", "Image": b64(b"img"), "Where": 1}
        ]}))
        .unwrap();
        let items = dict.get("Settings").and_then(Value::as_array).unwrap();
        let config = items[0]
            .as_dictionary()
            .and_then(|d| d.get("Configuration"))
            .and_then(Value::as_dictionary)
            .unwrap();
        assert_eq!(config.get("I").and_then(Value::as_signed_integer), Some(-3));
        assert_eq!(
            config.get("U").and_then(Value::as_unsigned_integer),
            Some(u64::MAX)
        );
        assert_eq!(config.get("R").and_then(Value::as_real), Some(1.5));
        assert_eq!(config.get("B").and_then(Value::as_boolean), Some(true));
        assert_eq!(config.get("S").and_then(Value::as_string), Some("s"));
        assert_eq!(
            config.get("A").and_then(Value::as_array).map(Vec::len),
            Some(2)
        );
        assert!(config.get("D").and_then(Value::as_dictionary).is_some());
        let wallpaper = items[1].as_dictionary().unwrap();
        assert_eq!(
            wallpaper.get("Image").and_then(Value::as_data),
            Some(&b"img"[..])
        );
        assert_eq!(
            wallpaper.get("Where").and_then(Value::as_signed_integer),
            Some(1)
        );
    }

    #[test]
    fn settings_items_are_checked() {
        for (settings, needle) in [
            (json!([]), "must not be empty"),
            (json!([{"Enabled": true}]), "missing its Item"),
            (json!([{"Item": 3}]), "Item must be a non-empty string"),
            (json!([{"Item": ""}]), "Item must be a non-empty string"),
            (
                json!([{"Item": "DeviceName", "DeviceName": "x"}, {"Item": "TimeZone", "TimeZone": null}]),
                "Settings[1].TimeZone is null",
            ),
            (
                json!([{"Item": "ApplicationConfiguration", "Configuration": {"A": [1, null]}}]),
                "Settings[0].Configuration.A[1] is null",
            ),
            (
                json!([{"Item": "Wallpaper", "Image": 5, "Where": 1}]),
                "base64 string",
            ),
        ] {
            let reason = reason_of(build(
                json!({"RequestType": "Settings", "Settings": settings}),
            ));
            assert!(reason.contains(needle), "{reason}");
        }
        // Deeply nested values fail cleanly instead of recursing without bound.
        let mut deep = json!("leaf");
        for _ in 0..(MAX_SETTINGS_DEPTH + 5) {
            deep = json!([deep]);
        }
        let reason = reason_of(build(json!({"RequestType": "Settings",
            "Settings": [{"Item": "ApplicationConfiguration", "Configuration": {"X": deep}}]})));
        assert!(reason.contains("nested too deeply"), "{reason}");
    }

    #[test]
    fn hostile_json_does_not_panic() {
        let inputs = [
            "",
            "{",
            "[]",
            "{\"RequestType\":\"Settings\",\"Settings\":[{\"Item\":\"A\",\"X\":1e400}]}",
            "{\"RequestType\":\"Settings\",\"Settings\":[{\"Item\":\"A\",\"X\":-1.5e-300}]}",
            "{\"RequestType\":\"InstallProfile\",\"Payload\":\"PD94\"}",
            "{\"RequestType\":\"InstallProfile\",\"Payload\":\"YnBsaXN0MDA=\"}",
            "{\"RequestType\":\"DeviceInformation\",\"Queries\":[\"\\u0000\"]}",
            "{\"RequestType\":\"ScheduleOSUpdate\",\"Updates\":[{\"ProductKey\":\"K\",\"InstallAction\":\"InstallLater\",\"MaxUserDeferrals\":99999999999}]}",
        ];
        for input in inputs {
            if let Ok(command) = serde_json::from_str::<TypedCommand>(input) {
                let _ = command.to_command_dict(&CommandContext::default());
            }
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let input = format!(
            "{{\"RequestType\":\"Settings\",\"Settings\":[{{\"Item\":\"A\",\"X\":{deep}}}]}}"
        );
        assert!(serde_json::from_str::<TypedCommand>(&input).is_err());
    }

    // ---------------------------------------------------------------------------------------
    // Conformance with Apple's schemas (apple/device-management, mdm/commands/*.yaml)
    // ---------------------------------------------------------------------------------------

    const SPEC_SUBDIR: &str = "shared/spec/apple-device-management/mdm/commands";

    /// Finds Apple's command schemas by walking up from the crate directory.
    fn spec_commands_dir() -> Option<PathBuf> {
        let mut dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")));
        while let Some(d) = dir {
            let candidate = d.join(SPEC_SUBDIR);
            if candidate.is_dir() {
                return Some(candidate);
            }
            dir = d.parent();
        }
        None
    }

    /// The command schemas by `payload.requesttype`, loaded once.
    fn spec_by_request_type() -> &'static Result<HashMap<String, serde_yaml::Value>, String> {
        static SPECS: OnceLock<Result<HashMap<String, serde_yaml::Value>, String>> =
            OnceLock::new();
        SPECS.get_or_init(|| {
            let dir = spec_commands_dir().ok_or("spec directory not found")?;
            let mut specs = HashMap::new();
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
            for entry in entries {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path:?}: {e}"))?;
                let doc: serde_yaml::Value =
                    serde_yaml::from_str(&text).map_err(|e| format!("{path:?}: {e}"))?;
                if let Some(rt) = doc
                    .get("payload")
                    .and_then(|p| p.get("requesttype"))
                    .and_then(serde_yaml::Value::as_str)
                {
                    specs.insert(rt.to_owned(), doc);
                }
            }
            Ok(specs)
        })
    }

    /// Checks a `Command` dictionary against Apple's schema for `request_type`: every key is
    /// known (recursively), has the schema's type, respects `rangelist`/`range`, and every
    /// required key is present. `RequestType` itself is not part of `payloadkeys`.
    fn validate_against_spec(request_type: &str, dict: &Dictionary) -> Result<(), Vec<String>> {
        let specs = spec_by_request_type()
            .as_ref()
            .map_err(|e| vec![e.clone()])?;
        let spec = specs
            .get(request_type)
            .ok_or_else(|| vec![format!("no schema with requesttype {request_type}")])?;
        let empty = Vec::new();
        let keys = spec
            .get("payloadkeys")
            .and_then(serde_yaml::Value::as_sequence)
            .unwrap_or(&empty);
        let mut errors = Vec::new();
        let mut top = dict.clone();
        top.remove("RequestType");
        check_dict("", &top, keys, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn yaml_str<'a>(spec: &'a serde_yaml::Value, field: &str) -> Option<&'a str> {
        spec.get(field).and_then(serde_yaml::Value::as_str)
    }

    fn subkeys(spec: &serde_yaml::Value) -> &[serde_yaml::Value] {
        spec.get("subkeys")
            .and_then(serde_yaml::Value::as_sequence)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    fn check_dict(
        path: &str,
        dict: &Dictionary,
        keys: &[serde_yaml::Value],
        errors: &mut Vec<String>,
    ) {
        // A key named `ANY ...` stands for arbitrary keys.
        let wildcard = keys
            .iter()
            .find(|k| yaml_str(k, "key").is_some_and(|n| n.starts_with("ANY")));
        for (key, value) in dict {
            let key_path = join(path, key);
            match keys
                .iter()
                .find(|k| yaml_str(k, "key") == Some(key))
                .or(wildcard)
            {
                Some(spec) => check_value(&key_path, value, spec, errors),
                None => errors.push(format!("{key_path}: key not in Apple's schema")),
            }
        }
        for spec in keys {
            let Some(name) = yaml_str(spec, "key") else {
                continue;
            };
            if yaml_str(spec, "presence") == Some("required")
                && !name.starts_with("ANY")
                && !dict.contains_key(name)
            {
                errors.push(format!("{}: required key missing", join(path, name)));
            }
        }
    }

    fn check_value(path: &str, value: &Value, spec: &serde_yaml::Value, errors: &mut Vec<String>) {
        let ty = yaml_str(spec, "type").unwrap_or("<missing type>");
        let type_ok = match ty {
            "<string>" => matches!(value, Value::String(_)),
            "<integer>" => matches!(value, Value::Integer(_)),
            "<real>" => matches!(value, Value::Real(_)),
            "<boolean>" => matches!(value, Value::Boolean(_)),
            "<data>" => matches!(value, Value::Data(_)),
            "<date>" => matches!(value, Value::Date(_)),
            "<dictionary>" => matches!(value, Value::Dictionary(_)),
            "<array>" => matches!(value, Value::Array(_)),
            "<any>" => true,
            other => {
                errors.push(format!("{path}: schema has unknown type {other}"));
                return;
            }
        };
        if !type_ok {
            errors.push(format!("{path}: expected {ty}, got {value:?}"));
            return;
        }
        if let Some(allowed) = spec
            .get("rangelist")
            .and_then(serde_yaml::Value::as_sequence)
        {
            let in_list = allowed.iter().any(|a| match (value, a) {
                (Value::String(s), serde_yaml::Value::String(a)) => s == a,
                (Value::Integer(i), serde_yaml::Value::Number(a)) => {
                    i.as_signed().is_some() && i.as_signed() == a.as_i64()
                }
                (Value::Real(r), serde_yaml::Value::Number(a)) => Some(*r) == a.as_f64(),
                _ => false,
            });
            if !in_list {
                errors.push(format!("{path}: {value:?} is not in rangelist {allowed:?}"));
            }
        }
        if let Some(range) = spec.get("range") {
            let number = match value {
                Value::Integer(i) => i.as_signed().map(|i| i as f64),
                Value::Real(r) => Some(*r),
                _ => None,
            };
            if let Some(n) = number {
                let min = range.get("min").and_then(serde_yaml::Value::as_f64);
                let max = range.get("max").and_then(serde_yaml::Value::as_f64);
                if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                    errors.push(format!("{path}: {n} outside range {range:?}"));
                }
            }
        }
        match value {
            Value::Dictionary(d) => {
                let keys = subkeys(spec);
                if !keys.is_empty() {
                    check_dict(path, d, keys, errors);
                }
            }
            Value::Array(items) => {
                let candidates = subkeys(spec);
                if candidates.is_empty() {
                    return;
                }
                for (i, item) in items.iter().enumerate() {
                    check_array_item(&format!("{path}[{i}]"), item, candidates, errors);
                }
            }
            Value::String(s) if ty == "<string>" => {
                // A scalar with subkeys lists its possible values (e.g. DeviceInformation
                // Queries).
                let values = subkeys(spec);
                if !values.is_empty()
                    && !values
                        .iter()
                        .any(|v| yaml_str(v, "key").is_some_and(|k| k == s || k.starts_with("ANY")))
                {
                    errors.push(format!("{path}: {s:?} is not one of the schema's values"));
                }
            }
            _ => {}
        }
    }

    /// Array items match the single item schema, or, where Apple lists several (Settings), the
    /// one they fit best.
    fn check_array_item(
        path: &str,
        item: &Value,
        candidates: &[serde_yaml::Value],
        errors: &mut Vec<String>,
    ) {
        let mut best: Option<Vec<String>> = None;
        for candidate in candidates {
            let mut found = Vec::new();
            check_value(path, item, candidate, &mut found);
            if found.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| found.len() < b.len()) {
                best = Some(found);
            }
        }
        errors.extend(best.unwrap_or_default());
    }

    /// The `RequestType` values of the variants in the generated OpenAPI schema, so a variant
    /// added without a conformance example is noticed.
    fn schema_request_types() -> BTreeSet<String> {
        fn walk(v: &serde_json::Value, out: &mut BTreeSet<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(values) = map
                        .get("properties")
                        .and_then(|p| p.get("RequestType"))
                        .and_then(|r| r.get("enum"))
                        .and_then(serde_json::Value::as_array)
                    {
                        out.extend(values.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let schema = serde_json::to_value(<TypedCommand as utoipa::PartialSchema>::schema())
            .expect("schema serializes");
        let mut out = BTreeSet::new();
        walk(&schema, &mut out);
        out
    }

    #[test]
    fn every_variant_is_covered_by_the_conformance_examples() {
        let all: BTreeSet<String> = REQUEST_TYPES.iter().map(|s| s.to_string()).collect();
        let examples: Vec<String> = full_examples()
            .iter()
            .map(|c| c.request_type().to_owned())
            .collect();
        let covered: BTreeSet<String> = examples.iter().cloned().collect();
        assert_eq!(examples.len(), covered.len(), "duplicate examples");
        assert_eq!(covered, all);
        assert_eq!(schema_request_types(), all);
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn commands_conform_to_apples_schemas() {
        if spec_commands_dir().is_none() {
            println!("skipping: ../shared/spec/apple-device-management not found");
            return;
        }
        let mut checked = BTreeSet::new();
        let mut failures = Vec::new();
        let minimal_settings = TypedCommand::Settings {
            settings: serde_json::from_value(json!([{"Item": "Bluetooth", "Enabled": true}]))
                .unwrap(),
        };
        let extra = [
            // Defaults the server fills in must conform too.
            TypedCommand::DeviceInformation {
                queries: None,
                device_attestation_nonce: Some(b64(b"nonce")),
            },
            TypedCommand::EraseDevice {
                pin: None,
                preserve_data_plan: None,
                disallow_proximity_setup: None,
                obliteration_behavior: None,
                return_to_service: Some(ReturnToService {
                    enabled: false,
                    wifi_profile_data: None,
                    mdm_profile_data: None,
                }),
            },
            minimal_settings,
        ];
        for command in full_examples().into_iter().chain(extra) {
            let rt = command.request_type();
            let dict = command
                .to_command_dict(&ctx())
                .unwrap_or_else(|e| panic!("{rt} example did not build: {e}"));
            if let Err(errors) = validate_against_spec(rt, &dict) {
                failures.push(format!("{rt}: {errors:#?}"));
            }
            checked.insert(rt.to_owned());
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let all: BTreeSet<String> = REQUEST_TYPES.iter().map(|s| s.to_string()).collect();
        assert_eq!(checked, all);
    }

    /// Every builder of the plugin SDK makes a command this module accepts and that conforms to Apple's
    /// schema, and together they cover every `RequestType` here: a plugin author has a builder for each.
    #[test]
    fn the_plugin_sdk_has_a_conforming_builder_for_every_command() {
        use mdm_plugin_sdk::commands as sdk;
        use mdm_plugin_sdk::types::CommandSpec;
        let profile = sample_profile();
        let built = vec![
            sdk::device_information(&["OSVersion"]),
            sdk::device_information(&[]),
            sdk::device_attestation(&[7; 32], &["SerialNumber"]),
            sdk::security_info(),
            sdk::profile_list(),
            sdk::managed_profile_list(),
            sdk::install_profile(&profile),
            sdk::remove_profile("com.example.profile"),
            sdk::certificate_list(),
            sdk::managed_certificate_list(),
            sdk::installed_application_list(),
            sdk::installed_applications(&sdk::InstalledApps {
                identifiers: Some(vec!["com.example.app".into()]),
                managed_apps_only: Some(true),
                items: Some(vec!["Name".into(), "ShortVersion".into()]),
            }),
            sdk::device_lock(Some("123456"), Some("Call IT")),
            sdk::device_lock_with(&sdk::DeviceLock {
                pin: None,
                message: Some("Found? Call IT".into()),
                phone_number: Some("+1 555 0100".into()),
            }),
            sdk::erase_device(&sdk::EraseDevice::default()),
            sdk::erase_device(&sdk::EraseDevice {
                pin: Some("123456".into()),
                preserve_data_plan: Some(true),
                disallow_proximity_setup: Some(true),
                obliteration_behavior: Some(sdk::ObliterationBehavior::DoNotObliterate),
                return_to_service: Some(sdk::ReturnToService {
                    enabled: true,
                    wifi_profile: Some(profile.clone()),
                    mdm_profile: Some(profile.clone()),
                }),
            }),
            sdk::restart_device(),
            sdk::restart_device_with(&sdk::RestartDevice {
                notify_user: Some(true),
                rebuild_kernel_cache: Some(true),
                kext_paths: Some(vec!["/Library/Extensions/Example.kext".into()]),
            }),
            sdk::shut_down_device(),
            sdk::clear_passcode(),
            sdk::schedule_os_update(&[
                sdk::OsUpdate {
                    product_version: Some("17.5".into()),
                    install_action: sdk::InstallAction::InstallAsap,
                    ..sdk::OsUpdate::default()
                },
                sdk::OsUpdate {
                    product_key: Some("MSU_UPDATE_23F79_patch_14.5_minor".into()),
                    install_action: sdk::InstallAction::InstallLater,
                    max_user_deferrals: Some(3),
                    priority: Some(sdk::UpdatePriority::High),
                    ..sdk::OsUpdate::default()
                },
            ]),
            sdk::available_os_updates(),
            sdk::device_configured(),
            sdk::settings([json!({"Item": "DeviceName", "DeviceName": "Front desk"})]),
        ];
        let check_spec = spec_commands_dir().is_some();
        if !check_spec {
            println!("not checking against Apple's schemas: ../shared/spec/apple-device-management not found");
        }
        let mut covered = BTreeSet::new();
        let mut failures = Vec::new();
        for spec in built {
            let CommandSpec::TypedJson(text) = spec else {
                panic!("the SDK builds typed commands")
            };
            let command: TypedCommand = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the server refuses {text}: {e}"));
            let rt = command.request_type();
            let dict = command
                .to_command_dict(&ctx())
                .unwrap_or_else(|e| panic!("{text} did not build: {e}"));
            if check_spec {
                if let Err(errors) = validate_against_spec(rt, &dict) {
                    failures.push(format!("{text}: {errors:#?}"));
                }
            }
            covered.insert(rt.to_owned());
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let all: BTreeSet<String> = REQUEST_TYPES.iter().map(|s| s.to_string()).collect();
        assert_eq!(covered, all, "a command without an SDK builder");
    }

    #[test]
    fn spec_validator_catches_mistakes() {
        if spec_commands_dir().is_none() {
            println!("skipping: ../shared/spec/apple-device-management not found");
            return;
        }
        let good = build(json!({"RequestType": "DeviceLock", "PIN": "123456"})).unwrap();
        assert_eq!(validate_against_spec("DeviceLock", &good), Ok(()));

        let expect_error = |rt: &str, dict: &Dictionary, needle: &str| {
            let errors = validate_against_spec(rt, dict).expect_err(needle);
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle:?} not in {errors:?}"
            );
        };

        // An extra key.
        let mut extra = good.clone();
        extra.insert("Pin".into(), Value::String("123456".into()));
        expect_error("DeviceLock", &extra, "Pin: key not in Apple's schema");

        // A wrong type.
        let mut wrong = good.clone();
        wrong.insert("PIN".into(), Value::Integer(123456.into()));
        expect_error("DeviceLock", &wrong, "PIN: expected <string>");

        // A missing required key.
        let mut missing =
            build(json!({"RequestType": "RemoveProfile", "Identifier": "x"})).unwrap();
        missing.remove("Identifier");
        expect_error(
            "RemoveProfile",
            &missing,
            "Identifier: required key missing",
        );

        // Nested: a missing required key and a value outside the rangelist.
        let mut update = Dictionary::new();
        update.insert("ProductKey".into(), Value::String("K".into()));
        update.insert("Priority".into(), Value::String("Urgent".into()));
        let mut schedule = Dictionary::new();
        schedule.insert(
            "Updates".into(),
            Value::Array(vec![Value::Dictionary(update)]),
        );
        expect_error(
            "ScheduleOSUpdate",
            &schedule,
            "Updates[0].InstallAction: required key missing",
        );
        expect_error("ScheduleOSUpdate", &schedule, "Updates[0].Priority");

        // A nested type error inside a Settings item and an unknown query name.
        let mut settings = build(json!({"RequestType": "Settings",
            "Settings": [{"Item": "Wallpaper", "Image": b64(b"i"), "Where": 1}]}))
        .unwrap();
        if let Some(Value::Array(items)) = settings.get_mut("Settings") {
            if let Some(Value::Dictionary(item)) = items.first_mut() {
                item.insert("Where".into(), Value::String("1".into()));
            }
        }
        expect_error(
            "Settings",
            &settings,
            "Settings[0].Where: expected <integer>",
        );
        let queries = build(json!({"RequestType": "DeviceInformation",
            "Queries": ["DeviceNmae"]}))
        .unwrap();
        expect_error(
            "DeviceInformation",
            &queries,
            "\"DeviceNmae\" is not one of",
        );

        // Unknown command.
        assert!(validate_against_spec("NoSuchCommand", &Dictionary::new()).is_err());
    }
}
