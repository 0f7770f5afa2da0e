//! How a simulated device answers a command: realistic result payloads for the commands it knows, the
//! effects of InstallProfile/RemoveProfile on its own profile list, Error (with an ErrorChain, as devices
//! send) for RequestTypes it does not know, and NotNow or Error at configurable rates.

use super::profile::{InstalledProfile, SimDevice, APPS};
use crate::device::{Platform, ReceivedCommand};
use plist::{Dictionary, Value};

/// A small deterministic generator (SplitMix64): reproducible NotNow/Error draws per device.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// How often a device refuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behavior {
    /// Fraction of deliveries answered NotNow (the device is busy; the server offers it again at the next Idle).
    pub not_now_rate: f64,
    /// Fraction of known commands answered Error (as when a device declines).
    pub error_rate: f64,
}

/// A device's answer to one command.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `Acknowledged`, `Error` or `NotNow`.
    pub status: &'static str,
    pub extra: Dictionary,
}

/// The RequestTypes the simulator answers with a result; anything else gets Error.
pub const KNOWN: &[&str] = &[
    "DeviceInformation",
    "SecurityInfo",
    "ProfileList",
    "InstallProfile",
    "RemoveProfile",
    "InstalledApplicationList",
    "CertificateList",
];

fn error_chain(code: i64, domain: &str, description: &str) -> Dictionary {
    let mut item = Dictionary::new();
    item.insert("ErrorCode".into(), Value::Integer(code.into()));
    item.insert("ErrorDomain".into(), domain.into());
    item.insert("LocalizedDescription".into(), description.into());
    item.insert("USEnglishDescription".into(), description.into());
    let mut d = Dictionary::new();
    d.insert(
        "ErrorChain".into(),
        Value::Array(vec![Value::Dictionary(item)]),
    );
    d
}

fn ack(extra: Dictionary) -> Answer {
    Answer {
        status: "Acknowledged",
        extra,
    }
}

fn error(code: i64, domain: &str, description: &str) -> Answer {
    Answer {
        status: "Error",
        extra: error_chain(code, domain, description),
    }
}

/// Answer `cmd`, changing the device's profile list for InstallProfile/RemoveProfile.
pub fn answer(
    dev: &SimDevice,
    profiles: &mut Vec<InstalledProfile>,
    cmd: &ReceivedCommand,
    behavior: &Behavior,
    rng: &mut Rng,
) -> Answer {
    if rng.chance(behavior.not_now_rate) {
        return Answer {
            status: "NotNow",
            extra: Dictionary::new(),
        };
    }
    if !KNOWN.contains(&cmd.request_type.as_str()) {
        return error(
            12021,
            "MCMDMErrorDomain",
            &format!("Unknown command “{}”.", cmd.request_type),
        );
    }
    if rng.chance(behavior.error_rate) {
        return error(
            12000,
            "MCMDMErrorDomain",
            "The device declined the command.",
        );
    }
    match cmd.request_type.as_str() {
        "DeviceInformation" => ack(device_information(dev, &cmd.command)),
        "SecurityInfo" => ack(security_info(dev, profiles)),
        "ProfileList" | "InstallProfile" | "RemoveProfile" => {
            answer_profile_command(profiles, cmd).expect("a profile command")
        }
        "InstalledApplicationList" => ack(installed_apps(&cmd.command)),
        "CertificateList" => ack(certificate_list(dev)),
        _ => unreachable!("checked against KNOWN"),
    }
}

/// Answer a profile command (ProfileList, InstallProfile, RemoveProfile) against the device's profiles;
/// None for any other command.
pub fn answer_profile_command(
    profiles: &mut Vec<InstalledProfile>,
    cmd: &ReceivedCommand,
) -> Option<Answer> {
    Some(match cmd.request_type.as_str() {
        "ProfileList" => ack(profile_list(profiles)),
        "InstallProfile" => install_profile(profiles, &cmd.command),
        "RemoveProfile" => remove_profile(profiles, &cmd.command),
        _ => return None,
    })
}

/// The value a device reports for one DeviceInformation query; None for queries it does not answer
/// (devices leave those out).
fn query(dev: &SimDevice, q: &str) -> Option<Value> {
    let hw = dev.hw;
    let ios = hw.platform == Platform::Ios;
    let s = |v: &str| Some(Value::String(v.to_string()));
    match q {
        "UDID" => s(&dev.udid),
        "DeviceName" => s(&dev.device_name),
        "OSVersion" => s(hw.os_version),
        "BuildVersion" => s(hw.build_version),
        "ProductName" => s(hw.product_name),
        "Model" => s(hw.model),
        "ModelName" => s(hw.model_name),
        "ModelNumber" => s(hw.model_number),
        "SerialNumber" => s(&dev.serial),
        "DeviceCapacity" => Some(Value::Real(hw.capacity_gb)),
        "AvailableDeviceCapacity" => Some(Value::Real(hw.capacity_gb * 0.41)),
        "BatteryLevel" if ios => Some(Value::Real(0.73)),
        "IsSupervised" => Some(Value::Boolean(true)),
        "IsActivationLockEnabled" => Some(Value::Boolean(false)),
        "IsAppleSilicon" if !ios => Some(Value::Boolean(hw.apple_silicon)),
        "AwaitingConfiguration" => Some(Value::Boolean(false)),
        "IMEI" => dev.imei.as_deref().and_then(s),
        "ICCID" if dev.imei.is_some() => s("89 01 260 123456789012 3"),
        "WiFiMAC" => s(&dev.wifi_mac),
        "BluetoothMAC" => s(&dev.bluetooth_mac),
        "EthernetMAC" if !ios => s("a0:ce:c8:12:34:56"),
        "HostName" if !ios => s(&format!("{}.local", dev.serial)),
        "LocalHostName" if !ios => s(&dev.serial),
        "TimeZone" => s("Europe/Berlin"),
        _ => None,
    }
}

fn device_information(dev: &SimDevice, command: &Dictionary) -> Dictionary {
    let mut responses = Dictionary::new();
    if let Some(Value::Array(queries)) = command.get("Queries") {
        for q in queries.iter().filter_map(Value::as_string) {
            if let Some(v) = query(dev, q) {
                responses.insert(q.to_string(), v);
            }
        }
    }
    let mut d = Dictionary::new();
    d.insert("QueryResponses".into(), Value::Dictionary(responses));
    d
}

fn security_info(dev: &SimDevice, profiles: &[InstalledProfile]) -> Dictionary {
    let mut info = Dictionary::new();
    let has_passcode_profile = profiles.iter().any(|p| {
        p.payload_types
            .iter()
            .any(|t| t == "com.apple.mobiledevice.passwordpolicy")
    });
    match dev.platform() {
        Platform::Ios => {
            info.insert("HardwareEncryptionCaps".into(), Value::Integer(3.into()));
            info.insert("PasscodePresent".into(), Value::Boolean(true));
            info.insert("PasscodeCompliant".into(), Value::Boolean(true));
            info.insert("PasscodeCompliantWithProfiles".into(), Value::Boolean(true));
            info.insert(
                "PasscodeLockGracePeriodEnforced".into(),
                Value::Integer(if has_passcode_profile { 0 } else { 60 }.into()),
            );
        }
        Platform::MacOs => {
            info.insert("FDE_Enabled".into(), Value::Boolean(true));
            info.insert("FDE_HasPersonalRecoveryKey".into(), Value::Boolean(true));
            info.insert(
                "SystemIntegrityProtectionEnabled".into(),
                Value::Boolean(true),
            );
            let mut fw = Dictionary::new();
            fw.insert("FirewallEnabled".into(), Value::Boolean(true));
            fw.insert("BlockAllIncoming".into(), Value::Boolean(false));
            fw.insert("StealthMode".into(), Value::Boolean(false));
            info.insert("FirewallSettings".into(), Value::Dictionary(fw));
            let mut sb = Dictionary::new();
            sb.insert("SecureBootLevel".into(), "full".into());
            sb.insert("ExternalBootLevel".into(), "disallowed".into());
            info.insert("SecureBoot".into(), Value::Dictionary(sb));
        }
    }
    let mut d = Dictionary::new();
    d.insert("SecurityInfo".into(), Value::Dictionary(info));
    d
}

fn profile_list(profiles: &[InstalledProfile]) -> Dictionary {
    let list = profiles
        .iter()
        .map(|p| {
            let mut d = Dictionary::new();
            d.insert("PayloadIdentifier".into(), p.identifier.clone().into());
            d.insert("PayloadUUID".into(), p.uuid.clone().into());
            d.insert("PayloadDisplayName".into(), p.display_name.clone().into());
            d.insert("PayloadVersion".into(), Value::Integer(1.into()));
            d.insert("PayloadRemovalDisallowed".into(), Value::Boolean(false));
            d.insert("IsEncrypted".into(), Value::Boolean(false));
            d.insert("IsManaged".into(), Value::Boolean(p.managed));
            let content = p
                .payload_types
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut c = Dictionary::new();
                    c.insert("PayloadType".into(), t.clone().into());
                    c.insert(
                        "PayloadIdentifier".into(),
                        format!("{}.{i}", p.identifier).into(),
                    );
                    c.insert("PayloadVersion".into(), Value::Integer(1.into()));
                    Value::Dictionary(c)
                })
                .collect();
            d.insert("PayloadContent".into(), Value::Array(content));
            Value::Dictionary(d)
        })
        .collect();
    let mut d = Dictionary::new();
    d.insert("ProfileList".into(), Value::Array(list));
    d
}

fn install_profile(profiles: &mut Vec<InstalledProfile>, command: &Dictionary) -> Answer {
    let Some(Value::Data(payload)) = command.get("Payload") else {
        return error(4001, "MCProfileErrorDomain", "The profile is missing.");
    };
    let Ok(Value::Dictionary(p)) = Value::from_reader(std::io::Cursor::new(payload)) else {
        return error(
            1000,
            "MCProfileErrorDomain",
            "The profile cannot be read (it may be signed or encrypted for another device).",
        );
    };
    let (Some(identifier), Some("Configuration")) = (
        p.get("PayloadIdentifier").and_then(Value::as_string),
        p.get("PayloadType").and_then(Value::as_string),
    ) else {
        return error(
            1001,
            "MCProfileErrorDomain",
            "The profile is not a configuration profile.",
        );
    };
    let payload_types = match p.get("PayloadContent") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_dictionary()?.get("PayloadType")?.as_string())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let installed = InstalledProfile {
        identifier: identifier.to_string(),
        uuid: p
            .get("PayloadUUID")
            .and_then(Value::as_string)
            .unwrap_or_default()
            .to_string(),
        display_name: p
            .get("PayloadDisplayName")
            .and_then(Value::as_string)
            .unwrap_or(identifier)
            .to_string(),
        payload_types,
        managed: true,
    };
    // Installing a profile with an identifier already present replaces it.
    profiles.retain(|x| x.identifier != installed.identifier);
    profiles.push(installed);
    ack(Dictionary::new())
}

fn remove_profile(profiles: &mut Vec<InstalledProfile>, command: &Dictionary) -> Answer {
    let Some(id) = command.get("Identifier").and_then(Value::as_string) else {
        return error(
            12022,
            "MCMDMErrorDomain",
            "The command is missing the Identifier.",
        );
    };
    let before = profiles.len();
    profiles.retain(|p| p.identifier != id || !p.managed);
    if profiles.len() == before {
        return error(
            1003,
            "MCProfileErrorDomain",
            &format!("The profile “{id}” is not installed."),
        );
    }
    ack(Dictionary::new())
}

fn installed_apps(command: &Dictionary) -> Dictionary {
    let only: Option<Vec<&str>> = match command.get("Identifiers") {
        Some(Value::Array(ids)) => Some(ids.iter().filter_map(Value::as_string).collect()),
        _ => None,
    };
    let list = APPS
        .iter()
        .filter(|a| only.as_ref().is_none_or(|ids| ids.contains(&a.identifier)))
        .map(|a| {
            let mut d = Dictionary::new();
            d.insert("Identifier".into(), a.identifier.into());
            d.insert("Name".into(), a.name.into());
            d.insert("Version".into(), a.version.into());
            d.insert("ShortVersion".into(), a.short_version.into());
            d.insert("BundleSize".into(), Value::Integer(a.size.into()));
            d.insert("DynamicSize".into(), Value::Integer((a.size / 7).into()));
            d.insert("IsValidated".into(), Value::Boolean(true));
            d.insert("Installing".into(), Value::Boolean(false));
            Value::Dictionary(d)
        })
        .collect();
    let mut d = Dictionary::new();
    d.insert("InstalledApplicationList".into(), Value::Array(list));
    d
}

fn certificate_list(dev: &SimDevice) -> Dictionary {
    let mut identity = Dictionary::new();
    identity.insert("CommonName".into(), dev.udid.clone().into());
    identity.insert("IsIdentity".into(), Value::Boolean(true));
    identity.insert(
        "Data".into(),
        Value::Data(dev.identity.cert.to_der().expect("der")),
    );
    let mut d = Dictionary::new();
    d.insert(
        "CertificateList".into(),
        Value::Array(vec![Value::Dictionary(identity)]),
    );
    d
}
