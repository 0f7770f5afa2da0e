//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), one per parser that takes outside
//! input. Each does with the bytes what the server does with a request, up to the first I/O, and asserts what
//! must hold for any input. Bad input must come back as an error: a panic here is a bug in the server.
//!
//! Not an API: hidden from the docs, and it changes with the parsers. See docs/RELIABILITY.md ("Fuzzing").

use crate::enroll::machine_info;
use crate::identity::{parse_client_cert_header, verify_mdm_signature, DeviceCert};
use crate::pki::{self, KeyPair, Usage};
use crate::plugins::manifest::{Hook, Manifest};
use crate::protocol::checkin::CheckinPayload;
use crate::protocol::commands::{CommandContext, TypedCommand};
use crate::protocol::ddm::{
    self, Category, Declaration, DeclarationError, StatusReport, MAX_DECLARATION_BYTES,
};
use crate::protocol::report::ReportStatus;
use crate::protocol::{
    parse_dictionary, plist_json, CheckinMessage, CommandEnvelope, CommandReport,
};
use crate::scep::message::{cert_rep, FailInfo, MessageType, PkiMessage};
use openssl::pkey::PKey;
use openssl::x509::X509;

/// The body the `mdm_signature` target's signatures are checked against (an Idle report), so that the
/// seed signatures, made over it, verify.
pub const SIGNED_BODY: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>\
<key>Status</key><string>Idle</string><key>UDID</key><string>0000FUZZ-0000-0000-0000-000000000001</string>\
</dict></plist>\n";

/// A check-in body (`PUT` to the CheckInURL).
pub fn checkin(data: &[u8]) {
    if let Ok(m) = CheckinMessage::decode(data) {
        // The exact bytes are stored and forwarded to plugins; the channel id keys every table.
        assert_eq!(m.raw, data);
        assert!(!m.enrollment.id.is_empty(), "empty enrollment id");
        let _ = m.payload.message_type();
        // A DeclarativeManagement's Data is a status report, parsed next.
        if let CheckinPayload::DeclarativeManagement { data: Some(d), .. } = &m.payload {
            assert!(d.len() <= ddm::MAX_STATUS_REPORT_BYTES, "unbounded Data");
            ddm_status(d);
        }
    }
}

/// A DDM status report (the `Data` of a DeclarativeManagement check-in).
pub fn ddm_status(data: &[u8]) {
    let Ok(r) = StatusReport::parse(data) else {
        return;
    };
    assert!(r.declarations.len() <= ddm::MAX_STATUS_DECLARATIONS);
    assert!(r.items.len() <= ddm::MAX_STATUS_ITEMS);
    assert!(r.errors.len() <= ddm::MAX_STATUS_ERRORS);
    assert!(
        !r.items.contains_key("management.declarations"),
        "declarations kept as an item"
    );
    // What is stored of it, as JSON.
    serde_json::to_string(&r).expect("serialize a status report");
}

/// A policy version's bundle as uploaded (`policies::bundle::read`): a zip from outside.
pub fn policy_bundle(data: &[u8]) {
    use crate::policies::bundle;
    let Ok(b) = bundle::read(data) else {
        return;
    };
    for path in b.files.keys() {
        bundle::check_path(path).expect("accepted paths follow the rule");
    }
    let total: u64 = b.files.values().map(|f| f.len() as u64).sum();
    assert!(total <= bundle::MAX_CONTENT_BYTES);
    assert_eq!(
        b.digest,
        bundle::sha256_hex(bundle::canonical_form(&b.files).as_bytes())
    );
    // The same files check again to the same bundle, whatever archive carried them.
    let again = bundle::from_files(b.files.clone(), b.signature.clone())
        .expect("accepted files check again");
    assert_eq!(again.digest, b.digest);
}

/// An admin's declaration upload (`Declaration::parse`).
pub fn ddm_declaration(data: &[u8]) {
    let Ok(d) = Declaration::parse(data) else {
        return;
    };
    ddm::check_identifier(&d.identifier).expect("accepted identifier follows the rule");
    assert_eq!(Category::of_type(&d.declaration_type), Some(d.category));
    assert_eq!(d.server_token.len(), 64);
    // Stored as its parts and read back, it is the same declaration.
    let stored = Declaration::from_stored(
        d.identifier.as_str(),
        d.declaration_type.as_str(),
        &d.payload_json(),
        d.server_token.as_str(),
    )
    .expect("stored declaration reads back");
    assert_eq!(stored, d);
    // What the device is served uploads again as the same declaration, its ServerToken matching (unless
    // the canonical form outgrew the limit: numbers like 1E2 are written longer, as 100.0).
    let served = d.to_device_json();
    match Declaration::parse(&served) {
        Ok(again) => assert_eq!(again, d),
        Err(DeclarationError::TooLarge) => assert!(served.len() > MAX_DECLARATION_BYTES),
        Err(e) => panic!("served declaration refused: {e}"),
    }
}

/// A command report body (`PUT` to the ServerURL).
pub fn report(data: &[u8]) {
    if let Ok(r) = CommandReport::decode(data) {
        assert_eq!(r.raw, data);
        assert!(!r.enrollment.id.is_empty(), "empty enrollment id");
        assert!(
            r.status == ReportStatus::Idle || r.command_uuid.is_some(),
            "a result without CommandUUID"
        );
        // A result is stored as JSON beside the raw plist.
        let json = plist_json::plist_to_json(&plist::Value::Dictionary(r.dict.clone()));
        let _ = json.to_string();
    }
}

/// An `Mdm-Signature` header over [`SIGNED_BODY`]. Header values reach the server as text.
pub fn mdm_signature_header(data: &[u8]) {
    if let Ok(header) = std::str::from_utf8(data) {
        mdm_signature(header, SIGNED_BODY);
    }
}

/// An `Mdm-Signature` header and the body it claims to sign: the first two bytes (little endian) are the
/// header's length, the header follows, the rest is the body.
pub fn mdm_signature_split(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    if let Ok(header) = std::str::from_utf8(header) {
        mdm_signature(header, body);
        // Once the signature is checked, the body is decoded as one or the other.
        checkin(body);
        report(body);
    }
}

fn mdm_signature(header: &str, body: &[u8]) {
    if let Ok(cert) = verify_mdm_signature(header, body) {
        assert_eq!(cert.fingerprint().len(), 64);
        // What the server logs and compares next.
        let _ = cert.subject();
        let _ = cert.not_after_unix();
    }
}

/// A client certificate forwarded by a TLS-terminating proxy.
pub fn client_cert_header(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cert) = parse_client_cert_header(value) {
        // Only canonical DER is accepted, so one certificate has one fingerprint however it came.
        let again = DeviceCert::from_der(cert.der()).expect("accepted certificate re-parses");
        assert_eq!(again.fingerprint(), cert.fingerprint());
        let _ = cert.subject();
        let _ = cert.not_after_unix();
    }
}

/// The SCEP CA the `scep_pki_operation` target decrypts with: a PEM certificate and an unencrypted PEM key
/// (fixed, so that seed requests enveloped to it decrypt from one run to the next).
pub fn scep_ca(pem: &[u8]) -> KeyPair {
    KeyPair {
        cert: X509::from_pem(pem).expect("fuzz CA certificate"),
        key: PKey::private_key_from_pem(pem).expect("fuzz CA key"),
    }
}

/// A SCEP PKIOperation body, handled as `ScepService::pki_operation` does minus the challenge lookup:
/// decode, check, decrypt the CSR, issue, and build the CertRep.
pub fn scep_pki_operation(ca: &KeyPair, data: &[u8]) {
    let Ok(msg) = PkiMessage::decode(data) else {
        return;
    };
    assert!(!msg.transaction_id.is_empty() && msg.transaction_id.len() <= 256);
    assert!((1..=64).contains(&msg.sender_nonce.len()));
    let outcome = if !matches!(
        msg.message_type,
        MessageType::PkcsReq | MessageType::RenewalReq
    ) {
        Err(FailInfo::BadRequest)
    } else if !msg.signature_valid {
        Err(FailInfo::BadMessageCheck)
    } else {
        match msg.decrypt_csr(ca) {
            Ok(csr) => issue(ca, &csr.req).map(|c| (c, csr.cipher)),
            Err((info, _)) => Err(info),
        }
    };
    match outcome {
        // Encrypting to a requester's certificate may fail (e.g. a key type that cannot be encrypted to).
        Ok((issued, cipher)) => {
            let _ = DeviceCert::from_x509(issued.clone()).map(|c| c.subject());
            let _ = cert_rep(ca, &msg, Ok((&issued, cipher)));
        }
        // Every decoded request gets a signed failure reply: it is made of our own attributes and the
        // request's transaction id and nonce, so building it must not fail (that would be a 500).
        Err(info) => {
            cert_rep(ca, &msg, Err(info)).expect("failure CertRep");
        }
    }
}

/// As `ScepService::issue`: a client certificate for the CSR's subject and key, signed by the CA.
fn issue(ca: &KeyPair, req: &openssl::x509::X509Req) -> Result<X509, FailInfo> {
    let key = req.public_key().map_err(|_| FailInfo::BadRequest)?;
    let serial = pki::random_serial().map_err(|_| FailInfo::BadRequest)?;
    pki::build_certificate(
        req.subject_name(),
        &key,
        Usage::ClientAuth,
        0,
        86_400,
        &serial,
        Some(ca),
        None,
    )
    .map_err(|_| FailInfo::BadRequest)
}

/// A signed device-information blob (`/enroll` body or `x-apple-aspen-deviceinfo` header).
pub fn machine_info(data: &[u8]) {
    let _ = machine_info::decode(data);
}

/// A plugin manifest (uploaded through the admin API or read from the plugin directory).
pub fn plugin_manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::parse(text) else {
        return;
    };
    // The manifest is stored as JSON and parsed again on every load: what was accepted once must load.
    let stored = serde_json::to_string(&m).expect("serialize manifest");
    Manifest::parse(&stored).expect("stored manifest loads");
    for h in Hook::ALL {
        let _ = (m.subscribes(h), m.policy(h));
    }
    let _ = m.http_allows("api.example.com");
}

/// An admin API request: the input as each JSON body type (and its checks that need no database), and as
/// each query string.
pub fn admin_api(data: &[u8]) {
    use crate::http::api::{commands, devices, enrollment, groups, keys, plugins, push};
    use actix_web::web::Query;

    fn json<T: serde::de::DeserializeOwned>(data: &[u8]) -> bool {
        serde_json::from_slice::<T>(data).is_ok()
    }
    if json::<commands::EnqueueBody>(data) {
        enqueue(data);
    }
    if json::<plugins::UploadBody>(data) {
        if let Some(m) = field(data, "manifest") {
            plugin_manifest(m.to_string().as_bytes());
        }
    }
    if json::<push::CertUpload>(data) {
        push_cert(data);
    }
    if json::<groups::CreateGroup>(data) || json::<groups::PatchGroup>(data) {
        if let Some(rule) = field(data, "rule") {
            group_rule(&rule);
        }
    }
    json::<push::PushBody>(data);
    json::<enrollment::TokenRequest>(data);
    json::<enrollment::ChallengeRequest>(data);
    json::<keys::CreateKey>(data);
    json::<plugins::SettingsBody>(data);
    json::<serde_json::Value>(data);

    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Query::<devices::ListQuery>::from_query(q);
    let _ = Query::<commands::StatusQuery>::from_query(q);
    let _ = Query::<commands::QueueQuery>::from_query(q);
    let _ = Query::<enrollment::TokenListQuery>::from_query(q);
    let _ = Query::<enrollment::CertListQuery>::from_query(q);
    let _ = Query::<enrollment::ExpiringQuery>::from_query(q);
    let _ = Query::<plugins::AuditQuery>::from_query(q);
    let _ = Query::<groups::IdPageQuery>::from_query(q);
    let _ = Query::<groups::MembersQuery>::from_query(q);
}

/// A dynamic group's rule, as an admin sends it: one that is accepted keeps its meaning in its canonical
/// form (what is stored) and evaluates, for any facts, without failing.
pub fn group_rule(v: &serde_json::Value) {
    use crate::groups::{Facts, Rule};
    let Ok(rule) = Rule::from_json(v) else {
        return;
    };
    let canonical = rule.to_json();
    let again = Rule::from_json(&canonical).expect("a rule's canonical form is accepted");
    assert_eq!(again.to_json(), canonical, "the canonical form is stable");
    // Facts made of the rule's own values, so tests can hold, and empty ones.
    let mut facts = Facts::default();
    for t in rule.tests() {
        let text = t.value.as_str().map(str::to_string);
        facts.os_version = facts.os_version.or(text.clone());
        facts.serial_number = facts.serial_number.or(text.clone());
        let name = t.fact.name();
        if let Some(key) = name.strip_prefix("ddm:") {
            facts.ddm.insert(key.to_string(), t.value.clone());
        }
        if let (Some(key), Some(text)) = (name.strip_prefix("attribute:"), text) {
            facts.attributes.insert(key.to_string(), text);
        }
    }
    for (f, now) in [
        (&Facts::default(), 0),
        (&facts, i64::MAX),
        (&facts, i64::MIN),
    ] {
        rule.matches(f, now);
    }
}

fn field(data: &[u8], name: &str) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
    v.get_mut(name)
        .map(serde_json::Value::take)
        .filter(|v| !v.is_null())
}

/// What `queue::enqueue` builds before touching the database: the command envelope devices receive.
fn enqueue(data: &[u8]) {
    let typed = field(data, "command").and_then(|c| serde_json::from_value::<TypedCommand>(c).ok());
    if let Some(typed) = typed {
        for ctx in [
            CommandContext::default(),
            CommandContext {
                unlock_token: Some(vec![1, 2, 3]),
            },
        ] {
            if let Ok(dict) = typed.to_command_dict(&ctx) {
                if let Ok(env) = CommandEnvelope::new("FUZZ-UUID".into(), dict) {
                    assert_eq!(env.request_type, typed.request_type());
                    device_can_read(&env);
                }
            }
        }
    }
    if let Some(serde_json::Value::String(raw)) = field(data, "raw_plist") {
        if let Ok(env) = CommandEnvelope::from_raw(raw.as_bytes(), || "FUZZ-UUID".into()) {
            device_can_read(&env);
            let _ = env.with_uuid("FUZZ-RETRY");
        }
    }
}

/// A queued command must be a plist the device (and our retry path) can parse.
fn device_can_read(env: &CommandEnvelope) {
    let dict = parse_dictionary(&env.raw).expect("queued command parses");
    assert!(matches!(
        dict.get("Command"),
        Some(plist::Value::Dictionary(_))
    ));
}

fn push_cert(data: &[u8]) {
    // PKCS#12 is left out: its key derivation cost is the uploader's to choose (an admin), which makes
    // runs time out rather than find bugs.
    let (Some(serde_json::Value::String(cert)), Some(serde_json::Value::String(key))) =
        (field(data, "cert_pem"), field(data, "key_pem"))
    else {
        return;
    };
    // No password either: an encrypted PKCS#8 key names its own iteration count.
    let _ = crate::push::cert::PushCertificate::from_pem(
        cert.as_bytes(),
        key.as_bytes(),
        None,
        1_700_000_000,
    );
}

#[cfg(test)]
mod seeds;
