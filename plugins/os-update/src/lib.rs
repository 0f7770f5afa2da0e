//! When a device reports an OS below the minimum, schedule an update to the target version and tell a sink.
//!
//! Configuration: `{"minimum_os": "17.0", "target_os": "17.5"}`. On an acknowledged `DeviceInformation`
//! whose `QueryResponses.OSVersion` is below `minimum_os` (compared number by number): a `ScheduleOSUpdate`
//! to `target_os` (`InstallASAP`) for that channel, and an `os.update-scheduled` event to the `os-alerts`
//! sink with the device, its version and the target.
//!
//! The same workflow is written in Python (`plugins/os-update-py`) and JavaScript
//! (`plugins/os-update-js`); `tests/tests/suite/plugin_languages.rs` checks the three answer alike.

use mdm_plugin_sdk::commands::{InstallAction, OsUpdate};
use mdm_plugin_sdk::prelude::*;
use serde::Deserialize;

/// The sink the manifest names.
pub const SINK: &str = "os-alerts";

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub minimum_os: String,
    pub target_os: String,
}

struct OsUpdatePlugin;

impl Plugin for OsUpdatePlugin {
    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        if event.request_type != "DeviceInformation" || !event.is_acknowledged() {
            return Ok(Vec::new());
        }
        let report = event.report()?;
        let Some(os) = report
            .path(&["QueryResponses", "OSVersion"])
            .and_then(Plist::as_str)
        else {
            return Ok(Vec::new());
        };
        let config: Config = config::get()?;
        if !older(os, &config.minimum_os) {
            return Ok(Vec::new());
        }
        info!("scheduling an OS update"; device_id = event.enrollment.device_id, os = os);
        let update = OsUpdate {
            product_version: Some(config.target_os.clone()),
            install_action: InstallAction::InstallAsap,
            ..OsUpdate::default()
        };
        Ok(vec![
            actions::enqueue(
                [event.enrollment.id.as_str()],
                commands::schedule_os_update(&[update]),
            ),
            actions::emit(
                SINK,
                "os.update-scheduled",
                json!({"device_id": event.enrollment.device_id, "os_version": os,
                    "target_os": config.target_os}),
            ),
        ])
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        let config: Config = config::parse(config)?;
        for (key, v) in [
            ("minimum_os", &config.minimum_os),
            ("target_os", &config.target_os),
        ] {
            if version(v).is_empty() {
                return Err(PluginError::new(format!(
                    "{key} must be a version such as \"17.0\""
                )));
            }
        }
        Ok(())
    }
}

export_plugin!(OsUpdatePlugin);

/// A version's leading numbers: `17.4.1` is `[17, 4, 1]`.
fn version(v: &str) -> Vec<u64> {
    v.split('.').map_while(|p| p.parse().ok()).collect()
}

/// Whether `os` is below `minimum`, number by number.
pub fn older(os: &str, minimum: &str) -> bool {
    version(os) < version(minimum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};

    fn info(os: &str) -> CommandResultEvent {
        fixtures::command_result(
            fixtures::device_enrollment("UDID-1"),
            "DeviceInformation",
            CommandStatus::Acknowledged,
            &json!({"QueryResponses": {"OSVersion": os}}),
        )
    }

    #[test]
    fn an_old_os_gets_an_update_and_an_event() {
        mock::reset();
        mock::set_config(&json!({"minimum_os": "17.0", "target_os": "17.5"}));
        let actions = OsUpdatePlugin::on_command_result(info("16.7.2")).unwrap();
        assert_eq!(actions.len(), 2);
        let Action::Enqueue(e) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(e.enrollment_ids, ["UDID-1"]);
        assert_eq!(
            e.command.typed_json().unwrap(),
            json!({"RequestType": "ScheduleOSUpdate",
                "Updates": [{"ProductVersion": "17.5", "InstallAction": "InstallASAP"}]})
        );
        let Action::Emit(ev) = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            (ev.sink.as_str(), ev.topic.as_str()),
            (SINK, "os.update-scheduled")
        );
        assert!(OsUpdatePlugin::on_command_result(info("17.0"))
            .unwrap()
            .is_empty());
        assert!(OsUpdatePlugin::on_command_result(info("26.1"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn versions_compare_as_numbers_and_configurations_are_checked() {
        assert!(older("9.3", "17.0") && older("16.7.2", "17.0"));
        assert!(!older("17.0", "17.0") && !older("17.0.1", "17"));
        assert!(
            OsUpdatePlugin::validate_config(r#"{"minimum_os": "17.0", "target_os": "17.5"}"#)
                .is_ok()
        );
        assert!(
            OsUpdatePlugin::validate_config(r#"{"minimum_os": "x", "target_os": "17.5"}"#).is_err()
        );
        assert!(OsUpdatePlugin::validate_config(r#"{"minimum_os": "17.0"}"#).is_err());
    }
}
