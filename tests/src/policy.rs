//! Policy folders as a CI job checks them out of git: what the policy tests pack, sign and upload.

use serde_json::json;
use std::path::Path;

/// A configuration profile (plain XML) with one Wi-Fi payload.
pub const PROFILE: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>"#,
    r#"<key>PayloadType</key><string>Configuration</string><key>PayloadIdentifier</key><string>com.example.wifi</string>"#,
    r#"<key>PayloadUUID</key><string>9E0F6C4A-2B1D-4E3F-A5B6-C7D8E9F0A1B2</string><key>PayloadContent</key><array><dict>"#,
    r#"<key>PayloadType</key><string>com.apple.wifi.managed</string><key>PayloadIdentifier</key><string>com.example.wifi.1</string>"#,
    r#"</dict></array></dict></plist>"#
);

/// A version's folder: a passcode configuration with `minimum_length` and the activation that applies
/// it, and with `profile` the Wi-Fi profile.
pub fn folder(dir: &Path, version: &str, minimum_length: i64, profile: bool) {
    let mut manifest = json!({"version": version,
        "declarations": ["declarations/passcode.json", "declarations/activation.json"]});
    let passcode = json!({"Type": "com.apple.configuration.passcode.settings",
        "Identifier": "com.example.passcode",
        "Payload": {"RequirePasscode": true, "MinimumLength": minimum_length}});
    let activation = json!({"Type": "com.apple.activation.simple", "Identifier": "com.example.activation",
        "Payload": {"StandardConfigurations": ["com.example.passcode"]}});
    std::fs::create_dir_all(dir.join("declarations")).unwrap();
    std::fs::write(dir.join("declarations/passcode.json"), passcode.to_string()).unwrap();
    std::fs::write(
        dir.join("declarations/activation.json"),
        activation.to_string(),
    )
    .unwrap();
    if profile {
        manifest["profiles"] = json!(["profiles/wifi.mobileconfig"]);
        std::fs::create_dir_all(dir.join("profiles")).unwrap();
        std::fs::write(dir.join("profiles/wifi.mobileconfig"), PROFILE).unwrap();
    }
    std::fs::write(dir.join("policy.json"), manifest.to_string()).unwrap();
}
