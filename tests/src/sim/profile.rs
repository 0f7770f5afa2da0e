//! What a simulated device is: hardware and OS from a small catalogue of real iOS and macOS models, its
//! identity, push token, installed profiles, apps and certificates, and the check-in messages it sends
//! (Authenticate, TokenUpdate, Idle) with the keys real devices put in them.

use crate::device::{random_bytes, xml, Identity, Platform, TOPIC};
use plist::{Dictionary, Value};

/// A hardware model with the facts Authenticate and DeviceInformation report.
#[derive(Debug)]
pub struct Hardware {
    pub platform: Platform,
    pub product_name: &'static str,
    pub model: &'static str,
    pub model_name: &'static str,
    pub model_number: &'static str,
    pub os_version: &'static str,
    pub build_version: &'static str,
    pub capacity_gb: f64,
    pub apple_silicon: bool,
}

const CATALOGUE: &[Hardware] = &[
    Hardware {
        platform: Platform::Ios,
        product_name: "iPhone14,2",
        model: "MLPF3",
        model_name: "iPhone",
        model_number: "MLPF3LL/A",
        os_version: "17.5.1",
        build_version: "21F90",
        capacity_gb: 128.0,
        apple_silicon: true,
    },
    Hardware {
        platform: Platform::Ios,
        product_name: "iPhone15,3",
        model: "MQ9T3",
        model_name: "iPhone",
        model_number: "MQ9T3ZD/A",
        os_version: "18.1",
        build_version: "22B83",
        capacity_gb: 256.0,
        apple_silicon: true,
    },
    Hardware {
        platform: Platform::Ios,
        product_name: "iPad13,18",
        model: "MPQ03",
        model_name: "iPad",
        model_number: "MPQ03LL/A",
        os_version: "17.6",
        build_version: "21G80",
        capacity_gb: 64.0,
        apple_silicon: true,
    },
    Hardware {
        platform: Platform::MacOs,
        product_name: "MacBookPro18,3",
        model: "MacBookPro18,3",
        model_name: "MacBook Pro",
        model_number: "MKGR3LL/A",
        os_version: "14.5",
        build_version: "23F79",
        capacity_gb: 512.0,
        apple_silicon: true,
    },
    Hardware {
        platform: Platform::MacOs,
        product_name: "Mac14,2",
        model: "Mac14,2",
        model_name: "MacBook Air",
        model_number: "MLY33LL/A",
        os_version: "15.1",
        build_version: "24B83",
        capacity_gb: 256.0,
        apple_silicon: true,
    },
    Hardware {
        platform: Platform::MacOs,
        product_name: "iMac19,1",
        model: "iMac19,1",
        model_name: "iMac",
        model_number: "MRR12LL/A",
        os_version: "13.6.9",
        build_version: "22G830",
        capacity_gb: 1000.0,
        apple_silicon: false,
    },
];

/// A configuration profile installed on the device.
#[derive(Debug, Clone)]
pub struct InstalledProfile {
    pub identifier: String,
    pub uuid: String,
    pub display_name: String,
    pub payload_types: Vec<String>,
    pub managed: bool,
}

/// An app installed on the device.
#[derive(Debug, Clone)]
pub struct App {
    pub identifier: &'static str,
    pub name: &'static str,
    pub version: &'static str,
    pub short_version: &'static str,
    pub size: i64,
}

pub const APPS: &[App] = &[
    App {
        identifier: "com.microsoft.Outlook",
        name: "Microsoft Outlook",
        version: "4.2432.0",
        short_version: "4.2432.0",
        size: 412_331_008,
    },
    App {
        identifier: "com.tinyspeck.chatlyio",
        name: "Slack",
        version: "24.10.10",
        short_version: "24.10.10",
        size: 201_457_664,
    },
    App {
        identifier: "com.google.chrome.ios",
        name: "Google Chrome",
        version: "130.0.6723.90",
        short_version: "130.0",
        size: 298_156_032,
    },
    App {
        identifier: "us.zoom.videomeetings",
        name: "Zoom",
        version: "6.2.11",
        short_version: "6.2.11",
        size: 187_904_000,
    },
];

/// A simulated device's fixed identity and hardware (its changing state lives in `DeviceState`).
pub struct SimDevice {
    pub index: usize,
    pub udid: String,
    pub serial: String,
    pub hw: &'static Hardware,
    pub device_name: String,
    pub identity: Identity,
    /// SHA-256 of the certificate DER, as the server pins it.
    pub fingerprint: String,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Vec<u8>,
    pub wifi_mac: String,
    pub bluetooth_mac: String,
    pub imei: Option<String>,
}

/// `ios_percent` of devices are iPhones/iPads, the rest Macs.
pub fn hardware_for(index: usize, ios_percent: u8) -> &'static Hardware {
    let ios = (index * 37 % 100) < usize::from(ios_percent);
    let pool: Vec<&'static Hardware> = CATALOGUE
        .iter()
        .filter(|h| (h.platform == Platform::Ios) == ios)
        .collect();
    pool[index % pool.len()]
}

/// A UDID in the form the platform uses: `00008030-001A35E11A88802E` on iPhones and iPads since 2018, a
/// UUID on Macs.
pub fn new_udid(platform: Platform) -> String {
    match platform {
        Platform::Ios => format!(
            "{}-{}",
            hex::encode_upper(random_bytes(4)),
            hex::encode_upper(random_bytes(8))
        ),
        Platform::MacOs => uuid::Uuid::new_v4().to_string().to_uppercase(),
    }
}

fn mac_address(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl SimDevice {
    pub fn new(index: usize, hw: &'static Hardware, identity: Identity) -> Self {
        Self::with_udid(index, hw, identity, new_udid(hw.platform))
    }

    pub fn with_udid(
        index: usize,
        hw: &'static Hardware,
        identity: Identity,
        udid: String,
    ) -> Self {
        // Serial numbers are unique per run: a prefix the serial-allowlist example accepts, then the index.
        let serial = format!("C02{:09}", index);
        let fingerprint = identity.fingerprint();
        let device_name = match hw.platform {
            Platform::Ios => format!("{}'s {}", name_of(index), hw.model_name),
            Platform::MacOs => format!("{}'s {}", name_of(index), hw.model_name),
        };
        Self {
            index,
            serial,
            hw,
            device_name,
            fingerprint,
            identity,
            token: random_bytes(32),
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            unlock_token: random_bytes(64),
            wifi_mac: mac_address(&random_bytes(6)),
            bluetooth_mac: mac_address(&random_bytes(6)),
            imei: (hw.platform == Platform::Ios && hw.model_name == "iPhone").then(|| {
                let d = random_bytes(7);
                format!(
                    "35 {:06} {:06} {}",
                    u32::from_be_bytes([0, d[0], d[1], d[2]]) % 1_000_000,
                    u32::from_be_bytes([0, d[3], d[4], d[5]]) % 1_000_000,
                    d[6] % 10
                )
            }),
            udid,
        }
    }

    pub fn platform(&self) -> Platform {
        self.hw.platform
    }

    fn base(&self, message_type: &str) -> Dictionary {
        let mut d = Dictionary::new();
        d.insert("MessageType".into(), message_type.into());
        d.insert("UDID".into(), self.udid.clone().into());
        d.insert("Topic".into(), TOPIC.into());
        d
    }

    /// Authenticate as the device sends it right after installing the enrollment profile.
    pub fn authenticate(&self) -> Vec<u8> {
        let mut d = self.base("Authenticate");
        d.insert("BuildVersion".into(), self.hw.build_version.into());
        d.insert("DeviceName".into(), self.device_name.clone().into());
        d.insert("Model".into(), self.hw.model.into());
        d.insert("ModelName".into(), self.hw.model_name.into());
        d.insert("OSVersion".into(), self.hw.os_version.into());
        d.insert("ProductName".into(), self.hw.product_name.into());
        d.insert("SerialNumber".into(), self.serial.clone().into());
        if let Some(imei) = &self.imei {
            d.insert("IMEI".into(), imei.clone().into());
            d.insert("MEID".into(), "".into());
        }
        xml(d)
    }

    /// The device channel's TokenUpdate: a 32-byte APNs token, PushMagic, and on iOS the UnlockToken.
    pub fn token_update(&self) -> Vec<u8> {
        let mut d = self.base("TokenUpdate");
        d.insert("Token".into(), Value::Data(self.token.clone()));
        d.insert("PushMagic".into(), self.push_magic.clone().into());
        if self.hw.platform == Platform::Ios {
            d.insert("UnlockToken".into(), Value::Data(self.unlock_token.clone()));
        }
        d.insert("AwaitingConfiguration".into(), false.into());
        xml(d)
    }

    pub fn idle(&self) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("Status".into(), "Idle".into());
        d.insert("UDID".into(), self.udid.clone().into());
        xml(d)
    }

    /// A command report: `status` for `uuid` with the response keys in `extra`.
    pub fn report(&self, status: &str, uuid: &str, extra: Dictionary) -> Vec<u8> {
        let mut d = Dictionary::new();
        d.insert("Status".into(), status.into());
        d.insert("UDID".into(), self.udid.clone().into());
        d.insert("CommandUUID".into(), uuid.into());
        for (k, v) in extra {
            d.insert(k, v);
        }
        xml(d)
    }

    pub fn sign(&self, body: &[u8]) -> String {
        self.identity.sign(body)
    }

    /// What the device starts with: the enrollment profile (and, on some, a Wi-Fi profile).
    pub fn initial_profiles(&self) -> Vec<InstalledProfile> {
        let mut v = vec![InstalledProfile {
            identifier: "com.example.mdm.enrollment".into(),
            uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
            display_name: "MDM Enrollment".into(),
            payload_types: vec![
                "com.apple.mdm".into(),
                "com.apple.security.scep".into(),
                "com.apple.security.root".into(),
            ],
            managed: false,
        }];
        if self.index.is_multiple_of(3) {
            v.push(InstalledProfile {
                identifier: "com.example.wifi.corp".into(),
                uuid: uuid::Uuid::new_v4().to_string().to_uppercase(),
                display_name: "Corporate Wi-Fi".into(),
                payload_types: vec!["com.apple.wifi.managed".into()],
                managed: true,
            });
        }
        v
    }
}

fn name_of(index: usize) -> &'static str {
    const NAMES: &[&str] = &[
        "Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie",
    ];
    NAMES[index % NAMES.len()]
}
