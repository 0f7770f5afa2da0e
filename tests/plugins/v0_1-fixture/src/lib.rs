//! A plugin built against `mdm:plugin@0.1` (`wit/v0.1/`), kept to prove that a component built before 0.2
//! keeps loading and running: it uses every 0.1 import but `http` (config, kv, inventory, metrics, log)
//! and answers every 0.1 hook. Its actions depend on what the imports return, so a test sees whether each
//! import reached the host.
//!
//! - `decide-enrollment`: deny when the serial number starts with the `deny_prefix` setting, else abstain.
//! - `on-checkin`: count the device's check-ins in kv (`seen:<device>`), then set the device attribute
//!   named by the `attribute` setting to `<kind>:<count>:<channels>`, `channels` being how many channels
//!   inventory knows for the device.
//! - `on-command-result`: set `<attribute>.result` to `<RequestType>:<status>`.

wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "plugin",
});

use exports::mdm::plugin::hooks::Guest;
use mdm::plugin::log::Level;
use mdm::plugin::types::{
    Action, CheckinEvent, CheckinKind, CommandResultEvent, CommandStatus, Decision,
    DeviceAttribute, EnrollmentRequest, ScheduleEvent,
};

struct Fixture;

fn setting(key: &str, default: &str) -> String {
    serde_json::from_str::<serde_json::Value>(&mdm::plugin::config::get())
        .ok()
        .and_then(|v| v.get(key).and_then(|s| s.as_str()).map(str::to_string))
        .unwrap_or_else(|| default.to_string())
}

fn checkin_name(k: CheckinKind) -> &'static str {
    match k {
        CheckinKind::Authenticate => "authenticate",
        CheckinKind::TokenUpdate => "token-update",
        CheckinKind::CheckOut => "check-out",
        CheckinKind::UserAuthenticate => "user-authenticate",
        CheckinKind::SetBootstrapToken => "set-bootstrap-token",
        CheckinKind::GetBootstrapToken => "get-bootstrap-token",
        CheckinKind::DeclarativeManagement => "declarative-management",
        CheckinKind::GetToken => "get-token",
    }
}

fn status_name(s: CommandStatus) -> &'static str {
    match s {
        CommandStatus::Acknowledged => "acknowledged",
        CommandStatus::Error => "error",
        CommandStatus::CommandFormatError => "command-format-error",
        CommandStatus::NotNow => "not-now",
    }
}

/// This device's check-ins so far, this one included.
fn count(device_id: &str) -> Result<u64, String> {
    let key = format!("seen:{device_id}");
    let before = mdm::plugin::kv::get(&key)
        .map_err(|e| format!("kv get: {e:?}"))?
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let now = before + 1;
    mdm::plugin::kv::set(&key, now.to_string().as_bytes(), None)
        .map_err(|e| format!("kv set: {e:?}"))?;
    Ok(now)
}

impl Guest for Fixture {
    fn decide_enrollment(req: EnrollmentRequest) -> Result<Decision, String> {
        let prefix = setting("deny_prefix", "");
        match req.device.serial_number {
            Some(serial) if !prefix.is_empty() && serial.starts_with(&prefix) => {
                Ok(Decision::Deny(format!("serial number {serial} is denied")))
            }
            _ => Ok(Decision::Abstain),
        }
    }

    fn on_checkin(event: CheckinEvent) -> Result<Vec<Action>, String> {
        let device_id = event.enrollment.device_id;
        let n = count(&device_id)?;
        let channels =
            mdm::plugin::inventory::get_device(&device_id).map_or(0, |d| d.channels.len());
        mdm::plugin::metrics::counter_add("checkins", 1);
        let kind = checkin_name(event.kind);
        mdm::plugin::log::log(
            Level::Info,
            "check-in counted",
            &[("count".to_string(), n.to_string())],
        );
        Ok(vec![Action::SetAttribute(DeviceAttribute {
            device_id,
            key: setting("attribute", "v01"),
            value: format!("{kind}:{n}:{channels}"),
        })])
    }

    fn on_command_result(event: CommandResultEvent) -> Result<Vec<Action>, String> {
        Ok(vec![Action::SetAttribute(DeviceAttribute {
            device_id: event.enrollment.device_id,
            key: format!("{}.result", setting("attribute", "v01")),
            value: format!("{}:{}", event.request_type, status_name(event.status)),
        })])
    }

    fn on_schedule(_: ScheduleEvent) -> Result<Vec<Action>, String> {
        Ok(Vec::new())
    }

    fn validate_config(config: String) -> Result<(), String> {
        match serde_json::from_str::<serde_json::Value>(&config) {
            Ok(serde_json::Value::Object(_)) => Ok(()),
            Ok(_) => Err("the configuration is a JSON object".into()),
            Err(e) => Err(format!("config is not JSON: {e}")),
        }
    }
}

export!(Fixture);
