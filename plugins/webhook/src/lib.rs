//! MicroMDM-compatible webhook events, delivered through an event sink.
//!
//! Each check-in becomes `mdm.<MessageType>` (`mdm.Authenticate`, `mdm.TokenUpdate`,
//! `mdm.CheckOut`, `mdm.UserAuthenticate`, ...) with a `checkin_event`; each command result becomes
//! `mdm.Connect` with an `acknowledge_event`. `raw_payload` is the exact plist the device sent, as
//! base64. `event_id` is the server's event id (also in its logs and the plugin audit log).
//! `created_at` is left out: a plugin has no clock; the sink's delivery carries a timestamp.
//!
//! Configuration: `{"sink": "webhook"}`.

use mdm_plugin_sdk::prelude::*;
use mdm_plugin_sdk::{b64, serde_json::Value};
use serde::Deserialize;

/// Largest raw payload sent, in bytes: its base64 must fit the server's 256 KiB event payload.
pub const MAX_RAW: usize = 180 * 1024;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The event sink to deliver to.
    pub sink: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sink: "webhook".into(),
        }
    }
}

/// Checks a configuration.
pub fn validate(text: &str) -> PluginResult<()> {
    let c: Config = config::parse(text)?;
    if c.sink.trim().is_empty() {
        return Err("sink must name an event sink".into());
    }
    Ok(())
}

/// The raw payload as base64; `null` when absent (no `raw-payloads` grant) or too large.
fn raw_payload(raw: Option<&[u8]>) -> Value {
    match raw {
        Some(bytes) if bytes.len() <= MAX_RAW => Value::from(b64::encode(bytes)),
        _ => Value::Null,
    }
}

/// How the device is named: `udid`, or `enrollment_id` for a User Enrollment (as NanoMDM does).
fn device_ids(enrollment: &Enrollment, into: &mut mdm_plugin_sdk::serde_json::Map<String, Value>) {
    let key = if enrollment.kind.is_user_enrollment() {
        "enrollment_id"
    } else {
        "udid"
    };
    into.insert(key.into(), Value::from(enrollment.device_id.as_str()));
}

/// The topic and body of a check-in's webhook event.
pub fn checkin_event(event: &CheckinEvent) -> (String, Value) {
    let topic = format!("mdm.{}", event.kind.apple_name());
    let mut inner = mdm_plugin_sdk::serde_json::Map::new();
    device_ids(&event.enrollment, &mut inner);
    inner.insert("url_params".into(), Value::Null);
    inner.insert("raw_payload".into(), raw_payload(event.raw.as_deref()));
    if event.kind == CheckinKind::TokenUpdate {
        if let Some(count) = event.token_update_count {
            inner.insert("token_update_tally".into(), Value::from(count));
        }
    }
    let body = json!({
        "topic": topic,
        "event_id": event.event_id,
        "checkin_event": inner,
    });
    (topic, body)
}

/// The topic and body of a command result's webhook event (`mdm.Connect`).
pub fn acknowledge_event(event: &CommandResultEvent) -> (String, Value) {
    let topic = "mdm.Connect".to_owned();
    let mut inner = mdm_plugin_sdk::serde_json::Map::new();
    device_ids(&event.enrollment, &mut inner);
    inner.insert("status".into(), Value::from(event.status.apple_name()));
    inner.insert(
        "command_uuid".into(),
        Value::from(event.command_uuid.as_str()),
    );
    inner.insert("url_params".into(), Value::Null);
    inner.insert("raw_payload".into(), raw_payload(event.raw.as_deref()));
    let body = json!({
        "topic": topic,
        "event_id": event.event_id,
        "acknowledge_event": inner,
    });
    (topic, body)
}

fn emit(topic: &str, body: &Value, raw_len: Option<usize>) -> PluginResult<Vec<Action>> {
    if raw_len.is_some_and(|n| n > MAX_RAW) {
        warn!(
            "raw payload of {} bytes left out of {topic}",
            raw_len.unwrap_or_default()
        );
    }
    let config: Config = config::get()?;
    Ok(vec![actions::emit(&config.sink, topic, body)?])
}

struct Webhook;

impl Plugin for Webhook {
    fn on_checkin(event: CheckinEvent) -> PluginResult<Vec<Action>> {
        let (topic, body) = checkin_event(&event);
        emit(&topic, &body, event.raw.as_ref().map(Vec::len))
    }

    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        let (topic, body) = acknowledge_event(&event);
        emit(&topic, &body, event.raw.as_ref().map(Vec::len))
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config)
    }
}

export_plugin!(Webhook);

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json;
    use std::path::PathBuf;

    /// MicroMDM's documented webhook examples, from the shared test data (absent in a fresh clone).
    fn examples_dir() -> Option<PathBuf> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/testdata/peers/micromdm/webhook-examples");
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!("skipping: {} not found", dir.display());
            None
        }
    }

    fn example(dir: &std::path::Path, name: &str) -> (Value, Vec<u8>) {
        let json = std::fs::read_to_string(dir.join(format!("{name}.webhook.json"))).unwrap();
        let raw = std::fs::read(dir.join(format!("{name}.raw_payload.plist"))).unwrap();
        let mut value: Value = serde_json::from_str(&json).unwrap();
        // We leave created_at out (no clock in a plugin).
        value.as_object_mut().unwrap().remove("created_at");
        (value, raw)
    }

    #[test]
    fn matches_micromdm_checkin_examples() {
        let Some(dir) = examples_dir() else { return };
        for (name, kind) in [
            ("Authenticate", CheckinKind::Authenticate),
            ("TokenUpdate", CheckinKind::TokenUpdate),
            ("CheckOut", CheckinKind::CheckOut),
        ] {
            let (expected, raw) = example(&dir, name);
            let udid = expected["checkin_event"]["udid"].as_str().unwrap();
            let mut event = fixtures::checkin(kind, fixtures::device_enrollment(udid));
            event.event_id = expected["event_id"].as_str().unwrap().to_owned();
            event.raw = Some(raw);
            event.token_update_count = None;
            let (topic, body) = checkin_event(&event);
            assert_eq!(topic, format!("mdm.{name}"));
            assert_eq!(body, expected, "{name}");
        }
    }

    #[test]
    fn matches_micromdm_connect_example() {
        let Some(dir) = examples_dir() else { return };
        let (expected, raw) = example(&dir, "Connect");
        let ack = &expected["acknowledge_event"];
        let mut event = fixtures::command_result(
            fixtures::device_enrollment(ack["udid"].as_str().unwrap()),
            "DeviceInformation",
            CommandStatus::Acknowledged,
            &Plist::from_json(&json!({})).unwrap(),
        );
        event.event_id = expected["event_id"].as_str().unwrap().to_owned();
        event.command_uuid = ack["command_uuid"].as_str().unwrap().to_owned();
        event.raw = Some(raw);
        let (topic, body) = acknowledge_event(&event);
        assert_eq!(topic, "mdm.Connect");
        assert_eq!(body, expected);
    }

    #[test]
    fn shapes_without_test_data() {
        let mut event =
            fixtures::checkin(CheckinKind::TokenUpdate, fixtures::device_enrollment("U1"));
        event.raw = Some(b"<plist/>".to_vec());
        let (topic, body) = checkin_event(&event);
        assert_eq!(topic, "mdm.TokenUpdate");
        assert_eq!(
            body,
            json!({"topic": "mdm.TokenUpdate", "event_id": event.event_id,
                   "checkin_event": {"udid": "U1", "url_params": null,
                                     "raw_payload": "PHBsaXN0Lz4=", "token_update_tally": 1}})
        );
        // User Enrollment: enrollment_id instead of udid. No raw payload granted: null.
        let ue = Enrollment {
            kind: ChannelKind::UserEnrollmentDevice,
            ..fixtures::device_enrollment("ENR-1")
        };
        let (topic, body) = checkin_event(&fixtures::checkin(CheckinKind::UserAuthenticate, ue));
        assert_eq!(topic, "mdm.UserAuthenticate");
        assert_eq!(
            body["checkin_event"],
            json!({"enrollment_id": "ENR-1", "url_params": null, "raw_payload": null})
        );
        let result = fixtures::command_result(
            fixtures::user_enrollment("U1", "501"),
            "ProfileList",
            CommandStatus::NotNow,
            &Plist::from_json(&json!({})).unwrap(),
        );
        let (_, body) = acknowledge_event(&result);
        assert_eq!(body["acknowledge_event"]["status"], "NotNow");
        assert_eq!(body["acknowledge_event"]["udid"], "U1");
    }

    #[test]
    fn hook_emits_to_the_configured_sink() {
        mock::set_config(&json!({"sink": "siem"}));
        let mut event = fixtures::checkin(CheckinKind::CheckOut, fixtures::device_enrollment("U1"));
        event.raw = Some(vec![b'x'; MAX_RAW + 1]);
        let actions = Webhook::on_checkin(event).unwrap();
        let [Action::Emit(e)] = actions.as_slice() else {
            panic!("expected one emit: {actions:?}");
        };
        assert_eq!(
            (e.sink.as_str(), e.topic.as_str()),
            ("siem", "mdm.CheckOut")
        );
        let body: Value = serde_json::from_str(&e.payload_json).unwrap();
        assert_eq!(body["checkin_event"]["raw_payload"], Value::Null);
        assert_eq!(mock::logs().len(), 1);
        assert!(validate(r#"{"sink": ""}"#).is_err());
        assert!(validate(r#"{"sinks": "x"}"#).is_err());
        assert!(validate("{}").is_ok());
    }
}
