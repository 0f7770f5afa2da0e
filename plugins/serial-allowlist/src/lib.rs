//! Allows an enrollment only when the device's serial number starts with a configured prefix.
//!
//! Configuration: `{"prefixes": ["C02", "F4"]}`. Matching ignores ASCII case. A device without a
//! serial number is denied, and so is every device while the list is empty.

use mdm_plugin_sdk::prelude::*;
use mdm_plugin_sdk::serde_json::Value;
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// Allowed serial-number prefixes.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

struct SerialAllowList;

impl Plugin for SerialAllowList {
    fn decide_enrollment(request: EnrollmentRequest) -> PluginResult<Decision> {
        let config: Config = config::get()?;
        let decision = decide(&config, request.device.serial_number.as_deref());
        if let Decision::Deny(reason) = &decision {
            info!("{reason}"; device_id = request.enrollment.device_id);
        }
        Ok(decision)
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config).map_err(PluginError::from)
    }
}

export_plugin!(SerialAllowList);

/// The decision for a device with this serial number.
pub fn decide(config: &Config, serial: Option<&str>) -> Decision {
    let Some(serial) = serial.map(str::trim).filter(|s| !s.is_empty()) else {
        return Decision::Deny("the device sent no serial number".into());
    };
    let allowed = config.prefixes.iter().any(|prefix| {
        serial
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    });
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(format!("serial number {serial} is not allowed"))
    }
}

/// Checks a configuration: an object whose `prefixes` is an array of non-empty strings.
pub fn validate(text: &str) -> Result<(), String> {
    let value: Value = mdm_plugin_sdk::serde_json::from_str(text)
        .map_err(|e| format!("configuration is not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("configuration must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| k.as_str() != "prefixes") {
        return Err(format!(
            "unknown setting {unknown:?} (expected only \"prefixes\")"
        ));
    }
    let prefixes = object
        .get("prefixes")
        .and_then(Value::as_array)
        .ok_or("\"prefixes\" must be an array of non-empty strings")?;
    for (i, prefix) in prefixes.iter().enumerate() {
        match prefix.as_str() {
            Some(p) if !p.trim().is_empty() => {}
            _ => return Err(format!("prefixes[{i}] must be a non-empty string")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::json;

    fn config(prefixes: &[&str]) -> Config {
        Config {
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn allows_listed_prefixes() {
        let c = config(&["C02", "F4"]);
        assert_eq!(decide(&c, Some("C02XK1ABJGH5")), Decision::Allow);
        assert_eq!(decide(&c, Some("F4KXYZ")), Decision::Allow);
        assert_eq!(decide(&c, Some("c02xk1")), Decision::Allow);
    }

    #[test]
    fn denies_others_and_missing_serials() {
        let c = config(&["C02"]);
        assert_eq!(
            decide(&c, Some("DMPXYZ")),
            Decision::Deny("serial number DMPXYZ is not allowed".into())
        );
        assert_eq!(
            decide(&c, Some("C0")),
            Decision::Deny("serial number C0 is not allowed".into())
        );
        assert!(matches!(decide(&c, None), Decision::Deny(_)));
        assert!(matches!(decide(&c, Some("  ")), Decision::Deny(_)));
        assert!(matches!(
            decide(&config(&[]), Some("C02X")),
            Decision::Deny(_)
        ));
        // A multi-byte serial must not panic on a char boundary.
        assert!(matches!(decide(&c, Some("Ä02")), Decision::Deny(_)));
    }

    #[test]
    fn validates_configuration() {
        assert_eq!(validate(r#"{"prefixes": ["C02", "F4"]}"#), Ok(()));
        assert_eq!(validate(r#"{"prefixes": []}"#), Ok(()));
        assert!(validate("[]").is_err());
        assert!(validate("{").is_err());
        assert!(validate("{}").is_err());
        assert!(validate(r#"{"prefixes": "C02"}"#).is_err());
        assert_eq!(
            validate(r#"{"prefixes": ["C02", ""]}"#),
            Err("prefixes[1] must be a non-empty string".into())
        );
        assert!(validate(r#"{"prefixes": [3]}"#).is_err());
        assert!(validate(r#"{"prefix": ["C02"]}"#).is_err());
    }

    #[test]
    fn hook_reads_config_and_logs_denials() {
        mock::set_config(&json!({"prefixes": ["C02"]}));
        let allowed = fixtures::enrollment_request("UDID-1", Some("C02ABC"));
        assert_eq!(
            SerialAllowList::decide_enrollment(allowed),
            Ok(Decision::Allow)
        );
        let denied = fixtures::enrollment_request("UDID-2", Some("XYZ"));
        assert_eq!(
            SerialAllowList::decide_enrollment(denied),
            Ok(Decision::Deny("serial number XYZ is not allowed".into()))
        );
        let logs = mock::logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].fields, vec![("device_id".into(), "UDID-2".into())]);
    }
}
