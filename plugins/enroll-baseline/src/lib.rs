//! Queues a baseline once per enrollment: DeviceInformation, SecurityInfo, and one InstallProfile per
//! configured profile, on the device channel's first TokenUpdate.
//!
//! "Once" is a claim on the KV key `baseline:<device-id>` by compare-and-swap, so that replicas and
//! repeated TokenUpdates cannot queue it twice. An Authenticate (the device enrolling again) deletes
//! the key, so a re-enrolled device gets its baseline again.
//!
//! Configuration: `{"profiles": ["<base64 of a .mobileconfig>", ...]}`.

use mdm_plugin_sdk::prelude::*;
use mdm_plugin_sdk::{b64, serde_json::Value};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// Profiles to install, each a base64 `.mobileconfig` (plain or signed).
    #[serde(default)]
    pub profiles: Vec<String>,
}

/// What a check-in calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do.
    Nothing,
    /// The device (re-)enrolled: forget that it had its baseline (delete this key).
    Forget(String),
    /// First TokenUpdate: claim this key, and queue the baseline if the claim succeeds.
    Claim(String),
}

/// The KV key that records that a device got its baseline.
pub fn baseline_key(device_id: &str) -> String {
    format!("baseline:{device_id}")
}

/// What to do for a check-in: only device channels (`device`, `user-enrollment-device`) count.
pub fn plan(event: &CheckinEvent) -> Plan {
    if !event.enrollment.is_device_channel() {
        return Plan::Nothing;
    }
    match event.kind {
        CheckinKind::Authenticate => Plan::Forget(baseline_key(&event.enrollment.device_id)),
        CheckinKind::TokenUpdate if event.is_first_token_update() => {
            Plan::Claim(baseline_key(&event.enrollment.device_id))
        }
        _ => Plan::Nothing,
    }
}

/// The configured profiles, decoded.
pub fn decode_profiles(config: &Config) -> PluginResult<Vec<Vec<u8>>> {
    config
        .profiles
        .iter()
        .enumerate()
        .map(|(i, p)| match b64::decode(p) {
            Ok(bytes) if !bytes.is_empty() => Ok(bytes),
            Ok(_) => Err(PluginError::new(format!("profiles[{i}] is empty"))),
            Err(e) => Err(e.context(format_args!("profiles[{i}]"))),
        })
        .collect()
}

/// The baseline for one enrollment: DeviceInformation (the server's default queries), SecurityInfo,
/// then each profile in order.
pub fn baseline_actions(enrollment_id: &str, profiles: &[Vec<u8>]) -> Vec<Action> {
    let mut specs = vec![commands::device_information(&[]), commands::security_info()];
    specs.extend(profiles.iter().map(commands::install_profile));
    specs
        .into_iter()
        .map(|spec| actions::enqueue([enrollment_id], spec))
        .collect()
}

/// Checks a configuration: an object whose `profiles` is an array of base64 strings.
pub fn validate(text: &str) -> PluginResult<()> {
    let value: Value = config::parse(text)?;
    let object = value
        .as_object()
        .ok_or("configuration must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| k.as_str() != "profiles") {
        return Err(format!("unknown setting {unknown:?} (expected only \"profiles\")").into());
    }
    let config: Config = config::parse(text)?;
    decode_profiles(&config)?;
    Ok(())
}

struct EnrollBaseline;

impl Plugin for EnrollBaseline {
    fn on_checkin(event: CheckinEvent) -> PluginResult<Vec<Action>> {
        match plan(&event) {
            Plan::Nothing => Ok(Vec::new()),
            Plan::Forget(key) => {
                kv::delete(&key)?;
                Ok(Vec::new())
            }
            Plan::Claim(key) => {
                // Decode first: a bad configuration must not use up the claim.
                let profiles = decode_profiles(&config::get::<Config>()?)?;
                if !kv::cas(&key, None, event.event_id.as_bytes(), None)? {
                    return Ok(Vec::new());
                }
                info!("queueing the baseline"; device_id = event.enrollment.device_id, profiles = profiles.len());
                Ok(baseline_actions(&event.enrollment.id, &profiles))
            }
        }
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config)
    }
}

export_plugin!(EnrollBaseline);

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::json;

    fn checkin(kind: CheckinKind, enrollment: Enrollment) -> CheckinEvent {
        fixtures::checkin(kind, enrollment)
    }

    fn user_enrollment_device(id: &str) -> Enrollment {
        Enrollment {
            kind: ChannelKind::UserEnrollmentDevice,
            ..fixtures::device_enrollment(id)
        }
    }

    #[test]
    fn plans() {
        let dev = fixtures::device_enrollment("UDID-1");
        assert_eq!(
            plan(&checkin(CheckinKind::Authenticate, dev.clone())),
            Plan::Forget("baseline:UDID-1".into())
        );
        assert_eq!(
            plan(&checkin(CheckinKind::TokenUpdate, dev.clone())),
            Plan::Claim("baseline:UDID-1".into())
        );
        assert_eq!(
            plan(&checkin(
                CheckinKind::TokenUpdate,
                user_enrollment_device("ENR-1")
            )),
            Plan::Claim("baseline:ENR-1".into())
        );
        let mut second = checkin(CheckinKind::TokenUpdate, dev.clone());
        second.token_update_count = Some(2);
        assert_eq!(plan(&second), Plan::Nothing);
        assert_eq!(plan(&checkin(CheckinKind::CheckOut, dev)), Plan::Nothing);
        let user = fixtures::user_enrollment("UDID-1", "501");
        assert_eq!(
            plan(&checkin(CheckinKind::TokenUpdate, user)),
            Plan::Nothing
        );
    }

    #[test]
    fn baseline_is_inventory_then_profiles() {
        let actions = baseline_actions("UDID-1", &[b"one".to_vec(), b"two".to_vec()]);
        let expected: Vec<Action> = [
            commands::device_information(&[]),
            commands::security_info(),
            commands::install_profile(b"one"),
            commands::install_profile(b"two"),
        ]
        .into_iter()
        .map(|spec| actions::enqueue(["UDID-1"], spec))
        .collect();
        assert_eq!(actions, expected);
    }

    #[test]
    fn validates_configuration() {
        assert!(validate(r#"{"profiles": []}"#).is_ok());
        assert!(validate(r#"{"profiles": ["PHBsaXN0Lz4="]}"#).is_ok());
        assert!(validate("{}").is_ok());
        assert!(validate(r#"{"profiles": ["not base64!"]}"#).is_err());
        assert!(validate(r#"{"profiles": [""]}"#).is_err());
        assert!(validate(r#"{"profiles": "x"}"#).is_err());
        assert!(validate(r#"{"profile": []}"#).is_err());
        assert!(validate("[]").is_err());
    }

    #[test]
    fn queues_once_and_again_after_reenrollment() {
        mock::set_config(&json!({"profiles": [b64::encode(b"<plist/>")]}));
        let dev = fixtures::device_enrollment("UDID-1");
        let first =
            EnrollBaseline::on_checkin(checkin(CheckinKind::TokenUpdate, dev.clone())).unwrap();
        assert_eq!(first.len(), 3);
        assert!(mock::kv_snapshot().contains_key("baseline:UDID-1"));
        // A replayed first TokenUpdate (another replica, a retry) finds the claim taken.
        let again =
            EnrollBaseline::on_checkin(checkin(CheckinKind::TokenUpdate, dev.clone())).unwrap();
        assert!(again.is_empty());
        // Re-enrollment: Authenticate forgets the claim, the next first TokenUpdate queues again.
        EnrollBaseline::on_checkin(checkin(CheckinKind::Authenticate, dev.clone())).unwrap();
        assert!(mock::kv_snapshot().is_empty());
        let after = EnrollBaseline::on_checkin(checkin(CheckinKind::TokenUpdate, dev)).unwrap();
        assert_eq!(after, first);
    }

    #[test]
    fn bad_configuration_keeps_the_claim() {
        mock::set_config(&json!({"profiles": ["%%%"]}));
        let dev = fixtures::device_enrollment("UDID-1");
        assert!(EnrollBaseline::on_checkin(checkin(CheckinKind::TokenUpdate, dev)).is_err());
        assert!(mock::kv_snapshot().is_empty());
    }
}
