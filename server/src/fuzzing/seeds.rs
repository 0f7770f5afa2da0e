//! Seed corpora for the fuzz targets, made with the builders the tests use, and a check that each entry point
//! takes its seeds all the way through (a target whose seeds stop at the first check fuzzes nothing).
//!
//! With `MDM_FUZZ_CORPUS=<dir>` the seeds, and the peer captures in `../shared/testdata/peers` when that
//! directory is present, are written to `<dir>/<target>/`. `fuzz/seed.sh` runs this.

use super::*;
use crate::identity::test_support::peers_dir;
use crate::protocol::to_xml;
use crate::scep::{build_request, csr_with_challenge};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use plist::{Dictionary, Value};
use std::path::{Path, PathBuf};

/// One seed: (target, file name, bytes).
type Seed = (&'static str, String, Vec<u8>);

fn dict(pairs: &[(&str, Value)]) -> Dictionary {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn binary(d: &Dictionary) -> Vec<u8> {
    let mut out = Vec::new();
    Value::Dictionary(d.clone())
        .to_writer_binary(&mut out)
        .unwrap();
    out
}

/// Each plist as XML and as a binary plist (devices send XML; the decoder takes both).
fn both(target: &'static str, named: Vec<(&str, Dictionary)>) -> Vec<Seed> {
    named
        .into_iter()
        .flat_map(|(name, d)| {
            [
                (target, format!("{name}.xml.plist"), to_xml(&d)),
                (target, format!("{name}.bin.plist"), binary(&d)),
            ]
        })
        .collect()
}

const UDID: &str = "0000FUZZ-0000-0000-0000-000000000001";

fn checkin_seeds() -> Vec<Seed> {
    let udid = ("UDID", s(UDID));
    let topic = ("Topic", s("com.apple.mgmt.External.fuzz"));
    let mt = |t: &str| ("MessageType", s(t));
    let data = |b: &[u8]| Value::Data(b.to_vec());
    both(
        "checkin",
        vec![
            (
                "authenticate",
                dict(&[
                    mt("Authenticate"),
                    udid.clone(),
                    topic.clone(),
                    ("SerialNumber", s("C02FUZZ")),
                    ("Model", s("MacBookPro18,3")),
                    ("ModelName", s("MacBook Pro")),
                    ("OSVersion", s("14.5")),
                    ("BuildVersion", s("23F79")),
                    ("ProductName", s("MacBookPro18,3")),
                    ("DeviceName", s("Fuzz's Mac")),
                    ("IMEI", s("35 000000 000000 0")),
                    ("MEID", s("35000000000000")),
                ]),
            ),
            (
                "token_update",
                dict(&[
                    mt("TokenUpdate"),
                    udid.clone(),
                    topic.clone(),
                    ("Token", data(&[7; 32])),
                    ("PushMagic", s("PM-FUZZ")),
                    ("UnlockToken", data(b"DATA\0\0\0\x04VERS")),
                    ("AwaitingConfiguration", Value::Boolean(true)),
                ]),
            ),
            (
                "check_out",
                dict(&[mt("CheckOut"), udid.clone(), topic.clone()]),
            ),
            (
                "user_token_update",
                dict(&[
                    mt("TokenUpdate"),
                    udid.clone(),
                    ("UserID", s("USER-1")),
                    ("UserShortName", s("fuzz")),
                    ("UserLongName", s("Fuzz User")),
                    topic.clone(),
                    ("Token", data(&[1; 32])),
                    ("PushMagic", s("PM")),
                ]),
            ),
            (
                "shared_ipad_user",
                dict(&[
                    mt("UserAuthenticate"),
                    udid.clone(),
                    ("UserID", s("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")),
                    ("UserShortName", s("student1")),
                    ("DigestResponse", s("")),
                ]),
            ),
            (
                "user_enrollment",
                dict(&[
                    mt("Authenticate"),
                    ("EnrollmentID", s("ENR-1")),
                    ("EnrollmentUserID", s("ENR-USER-1")),
                    topic.clone(),
                ]),
            ),
            (
                "set_bootstrap_token",
                dict(&[
                    mt("SetBootstrapToken"),
                    udid.clone(),
                    ("BootstrapToken", data(b"bootstrap")),
                ]),
            ),
            (
                "get_bootstrap_token",
                dict(&[mt("GetBootstrapToken"), udid.clone()]),
            ),
            (
                "declarative_management",
                dict(&[
                    mt("DeclarativeManagement"),
                    udid.clone(),
                    ("Endpoint", s("status")),
                    ("Data", data(br#"{"StatusItems":{}}"#)),
                ]),
            ),
            (
                "get_token",
                dict(&[
                    mt("GetToken"),
                    udid,
                    ("TokenServiceType", s("com.apple.maid")),
                ]),
            ),
        ],
    )
}

fn report_seeds() -> Vec<Seed> {
    let udid = ("UDID", s(UDID));
    let status = |v: &str| ("Status", s(v));
    let uuid = ("CommandUUID", s("6A2E1C3B-0000-4000-8000-000000000001"));
    let query_responses = dict(&[
        ("DeviceName", s("Fuzz")),
        ("OSVersion", s("17.5")),
        ("BatteryLevel", Value::Real(0.5)),
        ("IsSupervised", Value::Boolean(true)),
        ("DeviceCapacity", Value::Integer(64.into())),
        (
            "Nested",
            Value::Array(vec![Value::Dictionary(dict(&[("A", s("b"))]))]),
        ),
        ("When", Value::Date(std::time::UNIX_EPOCH.into())),
    ]);
    let error_chain = Value::Array(vec![Value::Dictionary(dict(&[
        ("ErrorCode", Value::Integer((-909).into())),
        ("ErrorDomain", s("NSOSStatusErrorDomain")),
        ("LocalizedDescription", s("Failed")),
        ("USEnglishDescription", s("Failed")),
    ]))]);
    both(
        "report",
        vec![
            ("idle", dict(&[status("Idle"), udid.clone()])),
            (
                "acknowledged",
                dict(&[
                    status("Acknowledged"),
                    udid.clone(),
                    uuid.clone(),
                    ("QueryResponses", Value::Dictionary(query_responses)),
                ]),
            ),
            (
                "error",
                dict(&[
                    status("Error"),
                    udid.clone(),
                    uuid.clone(),
                    ("ErrorChain", error_chain),
                ]),
            ),
            (
                "not_now",
                dict(&[status("NotNow"), udid.clone(), uuid.clone()]),
            ),
            (
                "user_channel",
                dict(&[
                    status("CommandFormatError"),
                    udid,
                    ("UserID", s("USER-1")),
                    uuid,
                ]),
            ),
        ],
    )
}

/// A throwaway CA and a device identity it issued (as SCEP would).
fn device() -> KeyPair {
    let ca = pki::generate(
        &pki::name("Fuzz Device CA", "fuzz").unwrap(),
        Usage::Ca,
        3650,
        None,
    )
    .unwrap();
    pki::generate(
        &pki::name(UDID, "fuzz").unwrap(),
        Usage::ClientAuth,
        3650,
        Some(&ca),
    )
    .unwrap()
}

/// Base64 of a detached SignedData over `body`, as a device makes it (`flags` picks the variant).
fn mdm_signature_of(signer: &KeyPair, body: &[u8], flags: Pkcs7Flags) -> String {
    let p7 = Pkcs7::sign(
        &signer.cert,
        &signer.key,
        &Stack::new().unwrap(),
        body,
        Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | flags,
    )
    .unwrap();
    STANDARD.encode(p7.to_der().unwrap())
}

fn split(header: &str, body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(header.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(body);
    out
}

fn signature_seeds(dev: &KeyPair) -> Vec<Seed> {
    let with_attrs = mdm_signature_of(dev, SIGNED_BODY, Pkcs7Flags::empty());
    // What devices send: no signed attributes.
    let plain = mdm_signature_of(dev, SIGNED_BODY, Pkcs7Flags::NOATTR);
    let folded: String = plain
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n ");
    let checkin_body = to_xml(&dict(&[
        ("MessageType", s("CheckOut")),
        ("UDID", s(UDID)),
        ("Topic", s("t")),
    ]));
    let checkin_sig = mdm_signature_of(dev, &checkin_body, Pkcs7Flags::NOATTR);
    vec![
        (
            "mdm_signature",
            "attrs.b64".into(),
            with_attrs.clone().into(),
        ),
        ("mdm_signature", "noattr.b64".into(), plain.clone().into()),
        ("mdm_signature", "folded.b64".into(), folded.into()),
        (
            "mdm_signature_split",
            "report".into(),
            split(&plain, SIGNED_BODY),
        ),
        (
            "mdm_signature_split",
            "report_attrs".into(),
            split(&with_attrs, SIGNED_BODY),
        ),
        (
            "mdm_signature_split",
            "checkin".into(),
            split(&checkin_sig, &checkin_body),
        ),
    ]
}

fn cert_header_seeds(dev: &KeyPair) -> Vec<Seed> {
    let der = dev.cert.to_der().unwrap();
    let pem = String::from_utf8(dev.cert.to_pem().unwrap()).unwrap();
    // nginx's $ssl_client_escaped_cert, and Go's url.QueryEscape.
    let nginx = pem
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace(' ', "%20")
        .replace('\n', "%0A");
    let go = pem
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace('\n', "%0A")
        .replace(' ', "+");
    vec![
        (
            "client_cert_header",
            "rfc9440".into(),
            format!(":{}:", STANDARD.encode(&der)).into(),
        ),
        ("client_cert_header", "pem".into(), pem.into()),
        ("client_cert_header", "nginx".into(), nginx.into()),
        ("client_cert_header", "go_query".into(), go.into()),
    ]
}

fn fuzz_ca() -> KeyPair {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/scep-ca.pem");
    scep_ca(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn scep_seeds(ca: &KeyPair, dev: &KeyPair) -> Vec<Seed> {
    let key = pki::generate_rsa(2048).unwrap();
    let subject = pki::name(UDID, "fuzz").unwrap();
    let csr = csr_with_challenge(&key, &subject, Some("one-time-challenge"))
        .unwrap()
        .to_der()
        .unwrap();
    let csr_no_challenge = csr_with_challenge(&key, &subject, None)
        .unwrap()
        .to_der()
        .unwrap();
    // PKCSReq is signed with a self-signed certificate for the new key.
    let self_signed = KeyPair {
        cert: pki::build_certificate(
            &subject,
            &key,
            Usage::ClientAuth,
            0,
            86_400,
            &pki::random_serial().unwrap(),
            None,
            Some(&key),
        )
        .unwrap(),
        key: key.clone(),
    };
    let req = |t, signer: &KeyPair, csr: &[u8], cipher| {
        build_request(t, signer, &ca.cert, csr, cipher, "FUZZ-TXN-1", &[9; 16]).unwrap()
    };
    vec![
        (
            "scep_pki_operation",
            "pkcsreq_aes256".into(),
            req(
                MessageType::PkcsReq,
                &self_signed,
                &csr,
                Cipher::aes_256_cbc(),
            ),
        ),
        (
            "scep_pki_operation",
            "pkcsreq_3des".into(),
            req(
                MessageType::PkcsReq,
                &self_signed,
                &csr,
                Cipher::des_ede3_cbc(),
            ),
        ),
        (
            "scep_pki_operation",
            "pkcsreq_no_challenge".into(),
            req(
                MessageType::PkcsReq,
                &self_signed,
                &csr_no_challenge,
                Cipher::aes_128_cbc(),
            ),
        ),
        (
            "scep_pki_operation",
            "renewalreq".into(),
            req(MessageType::RenewalReq, dev, &csr, Cipher::aes_256_cbc()),
        ),
        (
            "scep_pki_operation",
            "getcert".into(),
            req(MessageType::GetCert, dev, &csr, Cipher::aes_256_cbc()),
        ),
    ]
}

fn machine_info_seeds(dev: &KeyPair) -> Vec<Seed> {
    let info = to_xml(&dict(&[
        ("SERIAL", s("C02FUZZ")),
        ("UDID", s(UDID)),
        ("PRODUCT", s("iPhone14,2")),
        ("VERSION", s("21F90")),
    ]));
    let sign = |flags| {
        Pkcs7::sign(
            &dev.cert,
            &dev.key,
            &Stack::new().unwrap(),
            &info,
            Pkcs7Flags::BINARY | flags,
        )
        .unwrap()
        .to_der()
        .unwrap()
    };
    vec![
        ("machine_info", "signed".into(), sign(Pkcs7Flags::empty())),
        ("machine_info", "noattr".into(), sign(Pkcs7Flags::NOATTR)),
    ]
}

/// Attacks, not messages: binary plists that reference one object thousands of times (each about 10 KiB that
/// would decode to 2 MiB), as check-ins, reports and signed device information, so the fuzzers start from
/// the shape and look for a way past the decoded-bytes budget (a way past shows up as a timeout or the RSS
/// limit). Kept out of [`all`]: they are refused at the first check, as they must be.
fn attack_seeds(dev: &KeyPair) -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, bomb) in crate::protocol::bombs::expansion_bombs(2048, 1024) {
        let signed = Pkcs7::sign(
            &dev.cert,
            &dev.key,
            &Stack::new().unwrap(),
            &bomb,
            Pkcs7Flags::BINARY,
        )
        .unwrap()
        .to_der()
        .unwrap();
        out.push(("checkin", format!("bomb-{name}.bin.plist"), bomb.clone()));
        out.push(("report", format!("bomb-{name}.bin.plist"), bomb));
        out.push(("machine_info", format!("bomb-{name}"), signed));
    }
    out
}

const MANIFEST: &str = r#"{
  "id": "fuzz-plugin", "version": "1.0.0", "description": "seed",
  "hooks": ["on-checkin", "on-schedule", "decide-enrollment", "on-command-result"],
  "capabilities": ["kv", "http", "inventory", "commands", "events"],
  "http_allow": ["api.example.com", "*.example.org"],
  "sinks": ["webhook"],
  "schedules": [{"name": "hourly", "every_seconds": 3600}],
  "limits": {"timeout_ms": 200, "memory_mib": 32, "kv_max_keys": 100, "max_actions": 10},
  "failure_policy": {"decide-enrollment": "fail-closed", "on-checkin": "fail-open"},
  "default_config": {"a": [1, 2.5, "x", true]}
}"#;

fn manifest_seeds() -> Vec<Seed> {
    vec![
        ("plugin_manifest", "full".into(), MANIFEST.into()),
        (
            "plugin_manifest",
            "minimal".into(),
            br#"{"id":"a","version":"1","hooks":["on-checkin"]}"#.to_vec(),
        ),
    ]
}

fn admin_seeds(dev: &KeyPair) -> Vec<Seed> {
    let raw_cmd = String::from_utf8(to_xml(&dict(&[
        ("CommandUUID", s("C-1")),
        (
            "Command",
            Value::Dictionary(dict(&[("RequestType", s("ProfileList"))])),
        ),
    ])))
    .unwrap();
    let key_pem = String::from_utf8(dev.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let cert_pem = String::from_utf8(dev.cert.to_pem().unwrap()).unwrap();
    let json = |name: &str, v: serde_json::Value| {
        ("admin_api", name.to_string(), v.to_string().into_bytes())
    };
    let q = |name: &str, v: &str| ("admin_api", name.to_string(), v.as_bytes().to_vec());
    use serde_json::json;
    let enqueue = |name: &str, command: serde_json::Value| {
        json(name, json!({"ids": [UDID], "command": command}))
    };
    vec![
        json(
            "enqueue_lock",
            json!({
                "ids": [UDID, "U:1"],
                "command": {"RequestType": "DeviceLock", "PIN": "123456", "Message": "Call IT"},
                "priority": 5, "ttl_seconds": 3600, "no_push": true
            }),
        ),
        enqueue(
            "enqueue_info",
            json!({"RequestType": "DeviceInformation", "Queries": ["UDID", "OSVersion"]}),
        ),
        enqueue(
            "enqueue_profile",
            json!({"RequestType": "InstallProfile", "Payload": "Zm9vYmFy"}),
        ),
        enqueue(
            "enqueue_settings",
            json!({"RequestType": "Settings", "Settings": [
                {"Item": "DeviceName", "DeviceName": "x"},
                {"Item": "Bluetooth", "Enabled": true}
            ]}),
        ),
        enqueue(
            "enqueue_clear_passcode",
            json!({"RequestType": "ClearPasscode"}),
        ),
        enqueue(
            "enqueue_os_update",
            json!({"RequestType": "ScheduleOSUpdate", "Updates": [
                {"InstallAction": "InstallASAP", "ProductVersion": "17.5"}
            ]}),
        ),
        enqueue(
            "enqueue_erase",
            json!({"RequestType": "EraseDevice", "PIN": "123456", "ObliterationBehavior": "Default"}),
        ),
        json("enqueue_raw", json!({"ids": [UDID], "raw_plist": raw_cmd})),
        json("push", json!({"ids": [UDID]})),
        json("push_groups", json!({"ids": [], "groups": [1, 2]})),
        json("group_static", json!({"name": "Lab", "devices": [UDID]})),
        json(
            "group_dynamic",
            json!({"name": "Current iPhones", "rule": {"all": [
                {"fact": "platform", "op": "in", "value": ["iOS", "iPadOS"]},
                {"fact": "os_version", "op": "gte", "value": "17.10"},
                {"not": {"fact": "serial_number", "op": "prefix", "value": "C02"}},
                {"any": [
                    {"fact": "last_seen_at", "op": "within", "value": 86400},
                    {"fact": "attribute:ring", "op": "eq", "value": "pilot"},
                    {"fact": "ddm:passcode.is-compliant", "op": "eq", "value": false}
                ]}
            ]}}),
        ),
        json(
            "group_patch",
            json!({"name": "Lab 2", "add": [UDID], "remove": ["U:1"]}),
        ),
        q("query_groups_page", "cursor=3&limit=50"),
        json(
            "token",
            json!({"serial_number": "C02FUZZ", "ttl_seconds": 300, "label": "x"}),
        ),
        json("challenge", json!({"serial_number": "C02FUZZ"})),
        json(
            "key",
            json!({"name": "ci", "scopes": ["devices:read", "commands:write", "admin"]}),
        ),
        json(
            "settings",
            json!({"enabled": true, "priority": 3, "dry_run": false}),
        ),
        json(
            "upload",
            json!({
                "manifest": serde_json::from_str::<serde_json::Value>(MANIFEST).unwrap(),
                "wasm_base64": "AGFzbQ==", "config": {"k": "v"}, "approve_capabilities": ["kv", "http"]
            }),
        ),
        json(
            "push_cert",
            json!({"cert_pem": cert_pem, "key_pem": key_pem}),
        ),
        q(
            "query_list",
            "limit=10&cursor=abc&serial_number=C02&model=Mac",
        ),
        q(
            "query_time",
            "since=2024-01-01T00:00:00Z&until=2025-01-01T00:00:00%2B02:00&status=pending&plugin=p",
        ),
    ]
}

fn ddm_status_seeds() -> Vec<Seed> {
    use serde_json::json;
    let declaration = |id: &str, valid: &str, reasons: serde_json::Value| {
        json!({"identifier": id, "server-token": format!("{:064x}", id.len()), "active": valid == "valid",
               "valid": valid, "reasons": reasons})
    };
    let reason = json!([{"code": "Error.ConfigurationCannotBeApplied", "description": "d",
                         "details": {"Error": "e", "Identifier": "c2"}}]);
    let full = json!({
        "StatusItems": {
            "management": {
                "declarations": {
                    "activations": [declaration("a1", "valid", json!([]))],
                    "assets": [declaration("s1", "unknown", json!([]))],
                    "configurations": [declaration("c1", "valid", json!([])), declaration("c2", "invalid", reason)],
                    "management": []
                },
                "client-capabilities": {
                    "supported-versions": ["1.0.0"],
                    "supported-payloads": {"status-items": ["passcode.is-compliant"]},
                    "supported-features": {}
                }
            },
            "device": {
                "identifier": {"udid": UDID, "serial-number": "C02FUZZ"},
                "operating-system": {"version": "17.5", "build-version": "21F79",
                                     "supplemental": {"extra-version": "(a)"}},
                "power": {"battery-health": "normal"}
            },
            "passcode": {"is-compliant": true, "is-present": true},
            "test": {"integer-value": 3, "real-value": 2.5, "array-value": [1, "x"]},
            "vendor": {"new": {"item": [null, {"k": false}]}}
        },
        "Errors": [{"StatusItem": "test.error-value", "Reasons": [{"Code": "Error.X", "Description": "d"}]}],
        "FullReport": true
    });
    let incremental = json!({"StatusItems": {"passcode": {"is-compliant": false}}, "Errors": []});
    [("full", full), ("incremental", incremental)]
        .into_iter()
        .map(|(name, v)| {
            (
                "ddm_status",
                format!("{name}.json"),
                v.to_string().into_bytes(),
            )
        })
        .collect()
}

/// Bundles as `mdm-server policy pack` makes them, unsigned and signed.
fn policy_bundle_seeds() -> Vec<Seed> {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = serde_json::json!({"version": "2026.05",
        "declarations": ["declarations/passcode.json"], "profiles": ["profiles/wifi.mobileconfig"]});
    let declaration = serde_json::json!({"Type": "com.apple.configuration.passcode.settings",
        "Identifier": "com.example.passcode", "Payload": {"RequirePasscode": true}});
    for sub in ["declarations", "profiles"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("policy.json"), manifest.to_string()).unwrap();
    std::fs::write(
        dir.path().join("declarations/passcode.json"),
        declaration.to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles/wifi.mobileconfig"),
        crate::policies::profile::tests::wifi("com.example.wifi"),
    )
    .unwrap();
    let key = PKey::generate_ed25519().unwrap();
    let key = key.private_key_to_pem_pkcs8().unwrap();
    let pack = |key| crate::policies::pack::pack(dir.path(), key).unwrap().zip;
    vec![
        ("policy_bundle", "unsigned.zip".into(), pack(None)),
        ("policy_bundle", "signed.zip".into(), pack(Some(&key[..]))),
    ]
}

fn ddm_declaration_seeds() -> Vec<Seed> {
    use serde_json::json;
    let declaration = |t: &str, id: &str, payload: serde_json::Value| json!({"Type": t, "Identifier": id, "Payload": payload});
    let seeds = [
        (
            "passcode",
            declaration(
                "com.apple.configuration.passcode.settings",
                "com.example.passcode",
                json!({"RequirePasscode": true, "MinimumLength": 8, "MaximumFailedAttempts": 6,
                       "CustomRegex": {"Regex": "^.{8,}$", "Description": {"default": "8 or more"}}}),
            ),
        ),
        (
            "activation",
            declaration(
                "com.apple.activation.simple",
                "6B2F2C5E-0D3A-4C52-9E7B-2A1C1C2D3E4F",
                json!({"StandardConfigurations": ["com.example.passcode"],
                       "Predicate": "@status(device.model.family) == 'iPhone'"}),
            ),
        ),
        (
            "properties",
            declaration(
                "com.apple.management.properties",
                "props",
                json!({"site": "paris", "floor": 3, "ratio": 0.25, "tags": ["a", {"b": null}]}),
            ),
        ),
        (
            "mail",
            declaration(
                "com.apple.configuration.account.mail",
                "mail@example.com",
                json!({"IncomingServer": {"ServerType": "IMAP", "HostName": "imap.example.com",
                                          "AuthenticationMethod": "Password", "Port": 993},
                       "OutgoingServer": {"HostName": "smtp.example.com", "AuthenticationMethod": "None"}}),
            ),
        ),
        (
            "data_asset",
            declaration(
                "com.apple.asset.data",
                "asset:1",
                json!({"Reference": {"DataURL": "https://example.com/a.json", "ContentType": "application/json"},
                       "Authentication": {"Type": "None"}}),
            ),
        ),
    ];
    let mut out: Vec<Seed> = seeds
        .into_iter()
        .map(|(name, v)| {
            (
                "ddm_declaration",
                format!("{name}.json"),
                v.to_string().into_bytes(),
            )
        })
        .collect();
    // As the device is served it (with its ServerToken), which an admin may upload again.
    let served = Declaration::parse(&out[0].2).unwrap().to_device_json();
    out.push(("ddm_declaration", "served.json".into(), served));
    out
}

/// Every seed this module makes.
fn all() -> Vec<Seed> {
    let dev = device();
    let ca = fuzz_ca();
    [
        checkin_seeds(),
        report_seeds(),
        signature_seeds(&dev),
        cert_header_seeds(&dev),
        scep_seeds(&ca, &dev),
        machine_info_seeds(&dev),
        manifest_seeds(),
        admin_seeds(&dev),
        ddm_status_seeds(),
        ddm_declaration_seeds(),
        policy_bundle_seeds(),
    ]
    .concat()
}

/// Peer captures by target, read at run time (never copied into the repository).
fn peer_seeds(peers: &Path) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, dir: &str, keep: &dyn Fn(&str) -> bool| {
        let Ok(entries) = std::fs::read_dir(peers.join(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep(&name) {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    out.push((
                        target,
                        format!("peer-{}-{name}", dir.replace('/', "-")),
                        bytes,
                    ));
                }
            }
        }
    };
    let plist = |n: &str| n.ends_with(".plist");
    for dir in ["nanomdm/mdm", "micromdm/webhook-examples", "nanocmd"] {
        add("checkin", dir, &plist);
        add("report", dir, &plist);
    }
    add("mdm_signature", "nanomdm/cms", &|n| {
        n.ends_with(".header.b64")
    });
    add("client_cert_header", "nanomdm/certs", &|n| {
        n.starts_with("cert-header")
    });
    add("scep_pki_operation", "micromdm-scep", &|n| {
        n.ends_with(".der")
    });
    add("scep_pki_operation", "smallstep-scep", &|n| {
        n.ends_with(".der")
    });
    add("admin_api", "micromdm/mdm-command", &|n| {
        n.ends_with(".json")
    });
    add("ddm_status", "kmfddm", &|n| n.ends_with(".json"));
    // The one real signature whose body we have, as header and body together.
    if let (Ok(h), Ok(b)) = (
        std::fs::read_to_string(peers.join("nanomdm/cms/mdm-signature-2.header.b64")),
        std::fs::read(peers.join("nanomdm/cms/mdm-signature-2.body.plist")),
    ) {
        out.push((
            "mdm_signature_split",
            "peer-mdm-signature-2".into(),
            split(h.trim(), &b),
        ));
    }
    out
}

fn run(target: &str, data: &[u8], ca: &KeyPair) {
    match target {
        "checkin" => checkin(data),
        "report" => report(data),
        "mdm_signature" => mdm_signature_header(data),
        "mdm_signature_split" => mdm_signature_split(data),
        "client_cert_header" => client_cert_header(data),
        "scep_pki_operation" => scep_pki_operation(ca, data),
        "machine_info" => machine_info(data),
        "plugin_manifest" => plugin_manifest(data),
        "admin_api" => admin_api(data),
        "ddm_status" => ddm_status(data),
        "ddm_declaration" => ddm_declaration(data),
        "policy_bundle" => policy_bundle(data),
        other => panic!("no target {other}"),
    }
}

#[test]
fn seeds_reach_past_the_first_check() {
    let ca = fuzz_ca();
    for (target, name, data) in all() {
        run(target, &data, &ca);
        let deep = match target {
            "checkin" => CheckinMessage::decode(&data).is_ok(),
            "report" => CommandReport::decode(&data).is_ok(),
            "mdm_signature" => {
                verify_mdm_signature(std::str::from_utf8(&data).unwrap(), SIGNED_BODY).is_ok()
            }
            "mdm_signature_split" => {
                let n = usize::from(u16::from_le_bytes([data[0], data[1]]));
                verify_mdm_signature(
                    std::str::from_utf8(&data[2..2 + n]).unwrap(),
                    &data[2 + n..],
                )
                .is_ok()
            }
            "client_cert_header" => {
                parse_client_cert_header(std::str::from_utf8(&data).unwrap()).is_ok()
            }
            "scep_pki_operation" => PkiMessage::decode(&data).is_ok_and(|m| {
                m.signature_valid
                    && (m.message_type == MessageType::GetCert || m.decrypt_csr(&ca).is_ok())
            }),
            "machine_info" => machine_info::decode(&data).is_ok(),
            "plugin_manifest" => Manifest::parse(std::str::from_utf8(&data).unwrap()).is_ok(),
            // A rule seed is one the rule language accepts, so it reaches the evaluator.
            "admin_api" if name.starts_with("group_dynamic") => {
                field(&data, "rule").is_some_and(|r| crate::groups::Rule::from_json(&r).is_ok())
            }
            "admin_api" => {
                name.starts_with("query")
                    || serde_json::from_slice::<serde_json::Value>(&data).is_ok()
            }
            "ddm_status" => StatusReport::parse(&data).is_ok(),
            "ddm_declaration" => Declaration::parse(&data).is_ok(),
            "policy_bundle" => crate::policies::bundle::read(&data).is_ok(),
            _ => false,
        };
        assert!(deep, "seed {target}/{name} is refused early");
    }
}

#[test]
fn attack_seeds_are_refused_as_too_large() {
    let ca = fuzz_ca();
    let seeds = attack_seeds(&device());
    assert_eq!(seeds.len(), 18);
    for (target, name, data) in seeds {
        run(target, &data, &ca);
        let refused = match target {
            "checkin" => CheckinMessage::decode(&data).err(),
            "report" => CommandReport::decode(&data).err(),
            "machine_info" => machine_info::decode(&data)
                .err()
                .filter(|e| e.to_string().contains("expands"))
                .map(|_| crate::protocol::ProtocolError::TooLarge),
            _ => None,
        };
        assert_eq!(
            refused,
            Some(crate::protocol::ProtocolError::TooLarge),
            "{target}/{name}"
        );
    }
}

/// Writes the corpora when `MDM_FUZZ_CORPUS` names a directory (see `fuzz/seed.sh`); otherwise only runs
/// the peer captures through the entry points.
#[test]
fn seed_corpora() {
    let ca = fuzz_ca();
    let out = std::env::var_os("MDM_FUZZ_CORPUS").map(PathBuf::from);
    let mut seeds = if out.is_some() {
        [all(), attack_seeds(&device())].concat()
    } else {
        Vec::new()
    };
    match peers_dir() {
        Some(peers) => seeds.extend(peer_seeds(&peers)),
        None => println!("skipping peer captures: ../shared/testdata/peers not found"),
    }
    for (target, name, data) in &seeds {
        run(target, data, &ca);
        if let Some(dir) = &out {
            let dir = dir.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
    if let Some(dir) = out {
        println!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
}
