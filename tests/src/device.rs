//! A simulated device: its own RSA key and certificate, building Apple's check-in and report plists and
//! signing each body with a detached CMS signature (`Mdm-Signature`), as devices do with SignMessage.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::{X509NameBuilder, X509};
use plist::{Dictionary, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Ios,
    MacOs,
}

/// The CA that issues the test devices' identities; one per test process.
pub fn test_device_ca() -> &'static Identity {
    static CA: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    CA.get_or_init(|| Identity::self_signed("mdm-tests device CA"))
}

/// Write [`test_device_ca`] into `dir` for a server's `identity.device_ca_file`; returns the file.
pub fn write_test_device_ca(dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("test-device-ca.pem");
    std::fs::write(&file, test_device_ca().cert.to_pem()?)?;
    Ok(file)
}

/// A key pair and certificate, as a device identity.
#[derive(Clone)]
pub struct Identity {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl Identity {
    /// A device identity issued by [`test_device_ca`], which every [`crate::harness::TestServer`] trusts (as
    /// `identity.device_ca_file`), as the server's own SCEP CA would issue it.
    pub fn generate(common_name: &str) -> Self {
        Self::build(common_name, Some(test_device_ca()))
    }

    /// A self-signed certificate (marked as a CA, so it can also issue): what a stranger can make.
    pub fn self_signed(common_name: &str) -> Self {
        Self::build(common_name, None)
    }

    /// A certificate issued by `ca` (as our SCEP CA or an organisation's CA would).
    pub fn issued_by(ca: &Identity, common_name: &str) -> Self {
        Self::build(common_name, Some(ca))
    }

    fn build(common_name: &str, ca: Option<&Identity>) -> Self {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let mut name = X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", common_name).expect("cn");
        let name = name.build();
        let mut b = X509::builder().expect("x509");
        b.set_version(2).expect("version");
        let mut serial = BigNum::new().expect("bn");
        serial
            .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
            .expect("serial");
        b.set_serial_number(&serial.to_asn1_integer().expect("serial"))
            .expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(ca.map_or(&*name, |c| c.cert.subject_name()))
            .expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        // Valid from a day before the tests' clock starts (the server checks validity with its own clock)
        // until five years from now.
        let not_before = crate::harness::START_MS / 1000 - 86_400;
        b.set_not_before(&Asn1Time::from_unix(not_before).expect("time"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(5 * 365).expect("time"))
            .expect("na");
        if ca.is_none() {
            // A CA for tests: mark it as one so OpenSSL accepts it as an issuer.
            let bc = openssl::x509::extension::BasicConstraints::new()
                .critical()
                .ca()
                .build()
                .expect("bc");
            b.append_extension(bc).expect("ext");
        }
        b.sign(ca.map_or(&key, |c| &c.key), MessageDigest::sha256())
            .expect("sign");
        Self {
            key,
            cert: b.build(),
        }
    }

    /// Base64 of a detached CMS SignedData over `body`, carrying this certificate.
    pub fn sign(&self, body: &[u8]) -> String {
        let certs = Stack::new().expect("stack");
        let p7 = Pkcs7::sign(
            &self.cert,
            &self.key,
            &certs,
            body,
            Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
        )
        .expect("pkcs7 sign");
        STANDARD.encode(p7.to_der().expect("der"))
    }

    /// SHA-256 of the certificate's DER, as the server records it.
    pub fn fingerprint(&self) -> String {
        hex::encode(openssl::sha::sha256(&self.cert.to_der().expect("der")))
    }
}

/// A macOS user logged in on a simulated Mac (a user channel).
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub short_name: String,
    pub long_name: String,
    pub token: Vec<u8>,
}

impl User {
    pub fn new(short_name: &str) -> Self {
        Self {
            user_id: uuid::Uuid::new_v4().to_string().to_uppercase(),
            short_name: short_name.to_string(),
            long_name: format!("{short_name} Appleseed"),
            token: random_bytes(32),
        }
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    openssl::rand::rand_bytes(&mut b).expect("rand");
    b
}

pub const TOPIC: &str = "com.apple.mgmt.External.e3b8ceac-1f18-2c8e-8a63-dd17d99435d9";

#[derive(Clone)]
pub struct Device {
    pub udid: String,
    pub serial: String,
    pub platform: Platform,
    pub identity: Identity,
    pub token: Vec<u8>,
    pub push_magic: String,
    pub unlock_token: Vec<u8>,
}

impl Device {
    pub fn new(platform: Platform) -> Self {
        let udid = match platform {
            // Old iOS devices have 40-hex UDIDs; Macs and newer devices UUIDs.
            Platform::Ios => hex::encode(random_bytes(20)),
            Platform::MacOs => uuid::Uuid::new_v4().to_string().to_uppercase(),
        };
        let serial = format!("SIM{}", hex::encode_upper(random_bytes(5)));
        Self {
            identity: Identity::generate(&udid),
            udid,
            serial,
            platform,
            token: random_bytes(32),
            push_magic: uuid::Uuid::new_v4().to_string().to_uppercase(),
            unlock_token: random_bytes(64),
        }
    }

    fn base(&self, message_type: Option<&str>) -> Dictionary {
        let mut d = Dictionary::new();
        if let Some(t) = message_type {
            d.insert("MessageType".into(), t.into());
        }
        d.insert("UDID".into(), self.udid.clone().into());
        d
    }

    fn with_user(mut d: Dictionary, user: Option<&User>) -> Dictionary {
        if let Some(u) = user {
            d.insert("UserID".into(), u.user_id.clone().into());
            d.insert("UserShortName".into(), u.short_name.clone().into());
            d.insert("UserLongName".into(), u.long_name.clone().into());
        }
        d
    }

    pub fn authenticate(&self) -> Vec<u8> {
        let mut d = self.base(Some("Authenticate"));
        d.insert("Topic".into(), TOPIC.into());
        d.insert("SerialNumber".into(), self.serial.clone().into());
        match self.platform {
            Platform::Ios => {
                d.insert("ProductName".into(), "iPhone14,2".into());
                d.insert("OSVersion".into(), "17.5".into());
                d.insert("BuildVersion".into(), "21F79".into());
                d.insert("IMEI".into(), "35 000000 000000 0".into());
            }
            Platform::MacOs => {
                d.insert("Model".into(), "MacBookPro18,3".into());
                d.insert("ModelName".into(), "MacBook Pro".into());
                d.insert("DeviceName".into(), "Sim Mac".into());
                d.insert("OSVersion".into(), "14.5".into());
                d.insert("BuildVersion".into(), "23F79".into());
            }
        }
        xml(d)
    }

    pub fn token_update(&self, user: Option<&User>) -> Vec<u8> {
        let mut d = Self::with_user(self.base(Some("TokenUpdate")), user);
        d.insert("Topic".into(), TOPIC.into());
        d.insert(
            "Token".into(),
            Value::Data(user.map_or(self.token.clone(), |u| u.token.clone())),
        );
        d.insert("PushMagic".into(), self.push_magic.clone().into());
        if user.is_none() && self.platform == Platform::Ios {
            d.insert("UnlockToken".into(), Value::Data(self.unlock_token.clone()));
        }
        d.insert("AwaitingConfiguration".into(), false.into());
        xml(d)
    }

    pub fn checkout(&self) -> Vec<u8> {
        xml(self.base(Some("CheckOut")))
    }

    pub fn user_authenticate(&self, user: &User, digest_response: Option<&str>) -> Vec<u8> {
        let mut d = Self::with_user(self.base(Some("UserAuthenticate")), Some(user));
        if let Some(r) = digest_response {
            d.insert("DigestResponse".into(), r.into());
        }
        xml(d)
    }

    pub fn set_bootstrap_token(&self, token: &[u8]) -> Vec<u8> {
        let mut d = self.base(Some("SetBootstrapToken"));
        d.insert("BootstrapToken".into(), Value::Data(token.to_vec()));
        xml(d)
    }

    pub fn get_bootstrap_token(&self) -> Vec<u8> {
        xml(self.base(Some("GetBootstrapToken")))
    }

    pub fn message(&self, message_type: &str) -> Vec<u8> {
        xml(self.base(Some(message_type)))
    }

    pub fn idle(&self, user: Option<&User>) -> Vec<u8> {
        let mut d = Self::with_user(self.base(None), user);
        d.insert("Status".into(), "Idle".into());
        xml(d)
    }

    /// A command result. `extra` adds response keys (e.g. QueryResponses, ErrorChain).
    pub fn report(
        &self,
        user: Option<&User>,
        status: &str,
        command_uuid: &str,
        extra: Dictionary,
    ) -> Vec<u8> {
        let mut d = Self::with_user(self.base(None), user);
        d.insert("Status".into(), status.into());
        d.insert("CommandUUID".into(), command_uuid.into());
        for (k, v) in extra {
            d.insert(k, v);
        }
        xml(d)
    }

    pub fn sign(&self, body: &[u8]) -> String {
        self.identity.sign(body)
    }
}

pub fn xml(d: Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dictionary(d).to_writer_xml(&mut out).expect("plist");
    out
}

/// A command as the device received it.
#[derive(Debug, Clone)]
pub struct ReceivedCommand {
    pub uuid: String,
    pub request_type: String,
    pub command: Dictionary,
}

impl ReceivedCommand {
    /// Parse a command plist, checking the envelope is what Apple devices require.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let v = plist::Value::from_reader(std::io::Cursor::new(body)).map_err(|e| e.to_string())?;
        let d = v.into_dictionary().ok_or("command is not a dictionary")?;
        let uuid = d
            .get("CommandUUID")
            .and_then(Value::as_string)
            .ok_or("no CommandUUID")?
            .to_string();
        let command = d
            .get("Command")
            .and_then(Value::as_dictionary)
            .ok_or("no Command dictionary")?
            .clone();
        let request_type = command
            .get("RequestType")
            .and_then(Value::as_string)
            .ok_or("no RequestType")?
            .to_string();
        Ok(Self {
            uuid,
            request_type,
            command,
        })
    }
}
