//! The enrollment profile: a `.mobileconfig` with a SCEP payload (the device's identity) and the MDM payload
//! that uses it, CMS-signed so the device shows who it comes from.

use crate::pki::KeyPair;
use crate::protocol::to_xml;
use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use plist::{Dictionary, Value};

/// The profile's identifier. It stays the same across downloads so that a renewal profile replaces the
/// installed one instead of being refused as a second MDM profile.
pub const PROFILE_IDENTIFIER: &str = "mdm-server.enrollment";
pub const CONTENT_TYPE: &str = "application/x-apple-aspen-config";

/// MDM protocol features we implement, announced in the MDM payload.
pub const SERVER_CAPABILITIES: [&str; 2] = [
    "com.apple.mdm.per-user-connections",
    "com.apple.mdm.bootstraptoken",
];

/// All access rights (8191): every query and action MDM can be granted.
pub const ACCESS_RIGHTS_ALL: i64 = 8191;

pub struct ProfileSpec<'a> {
    /// `https://host[:port]`, no trailing slash.
    pub base_url: &'a str,
    pub topic: &'a str,
    pub challenge: &'a str,
    /// The SCEP CA, pinned in the SCEP payload by its fingerprint.
    pub ca: &'a X509,
    pub sign_message: bool,
    pub organization: &'a str,
}

/// Why a profile could not be built or signed: OpenSSL failed (memory or encoding), nothing the request
/// chose.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Encoding(#[from] ErrorStack),
    #[error("{}", crate::identity::openssl_reasons(.0))]
    Signing(ErrorStack),
}

/// The unsigned profile as an XML plist.
pub fn build(spec: &ProfileSpec<'_>) -> Result<Vec<u8>, ProfileError> {
    let scep_uuid = upper_uuid();
    let ca_der = spec.ca.to_der()?;

    let mut scep_content = Dictionary::new();
    scep_content.insert("URL".into(), format!("{}/scep", spec.base_url).into());
    scep_content.insert("Name".into(), spec.organization.into());
    scep_content.insert("Challenge".into(), spec.challenge.into());
    scep_content.insert("Keysize".into(), Value::Integer(2048.into()));
    scep_content.insert("Key Type".into(), "RSA".into());
    // Signing (Mdm-Signature, TLS client auth) and encryption (the CertRep is enveloped to this key).
    scep_content.insert("Key Usage".into(), Value::Integer(5.into()));
    // SHA-1: the digest every iOS and macOS version accepts here (it pins what GetCACert returns).
    scep_content.insert(
        "CAFingerprint".into(),
        Value::Data(openssl::sha::sha1(&ca_der).to_vec()),
    );
    let subject = Value::Array(vec![Value::Array(vec![Value::Array(vec![
        "CN".into(),
        format!("MDM Identity {}", upper_uuid()).into(),
    ])])]);
    scep_content.insert("Subject".into(), subject);
    let mut scep = payload(
        "com.apple.security.scep",
        &scep_uuid,
        &format!("{PROFILE_IDENTIFIER}.scep"),
        "Device identity",
    );
    scep.insert("PayloadContent".into(), Value::Dictionary(scep_content));

    let mut mdm = payload(
        "com.apple.mdm",
        &upper_uuid(),
        &format!("{PROFILE_IDENTIFIER}.mdm"),
        "Device management",
    );
    mdm.insert("IdentityCertificateUUID".into(), scep_uuid.into());
    mdm.insert("Topic".into(), spec.topic.into());
    mdm.insert(
        "ServerURL".into(),
        format!("{}/mdm/connect", spec.base_url).into(),
    );
    mdm.insert(
        "CheckInURL".into(),
        format!("{}/mdm/checkin", spec.base_url).into(),
    );
    mdm.insert("SignMessage".into(), Value::Boolean(spec.sign_message));
    mdm.insert(
        "AccessRights".into(),
        Value::Integer(ACCESS_RIGHTS_ALL.into()),
    );
    mdm.insert("CheckOutWhenRemoved".into(), Value::Boolean(true));
    mdm.insert(
        "ServerCapabilities".into(),
        Value::Array(SERVER_CAPABILITIES.iter().map(|c| (*c).into()).collect()),
    );

    let mut top = payload(
        "Configuration",
        &upper_uuid(),
        PROFILE_IDENTIFIER,
        &format!("{} device management", spec.organization),
    );
    top.insert("PayloadOrganization".into(), spec.organization.into());
    top.insert(
        "PayloadDescription".into(),
        "Enrolls this device in device management.".into(),
    );
    top.insert(
        "PayloadContent".into(),
        Value::Array(vec![Value::Dictionary(scep), Value::Dictionary(mdm)]),
    );
    Ok(to_xml(&top))
}

/// CMS SignedData over the profile (content embedded), with the signer's chain.
pub fn sign(profile: &[u8], signer: &KeyPair, chain: &[&X509]) -> Result<Vec<u8>, ProfileError> {
    let mut certs = Stack::new()?;
    for c in chain {
        certs.push((*c).clone())?;
    }
    Pkcs7::sign(
        &signer.cert,
        &signer.key,
        &certs,
        profile,
        Pkcs7Flags::BINARY,
    )
    .and_then(|p| p.to_der())
    .map_err(ProfileError::Signing)
}

fn payload(kind: &str, uuid: &str, identifier: &str, name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), kind.into());
    d.insert("PayloadVersion".into(), Value::Integer(1.into()));
    d.insert("PayloadUUID".into(), uuid.into());
    d.insert("PayloadIdentifier".into(), identifier.into());
    d.insert("PayloadDisplayName".into(), name.into());
    d
}

fn upper_uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}
