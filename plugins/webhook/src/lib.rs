//! MicroMDM-compatible webhook events, delivered through an event sink.
//!
//! Each check-in becomes `mdm.<MessageType>` (`mdm.Authenticate`, `mdm.TokenUpdate`,
//! `mdm.CheckOut`, `mdm.UserAuthenticate`, ...) with a `checkin_event`; each command result becomes
//! `mdm.Connect` with an `acknowledge_event`. `raw_payload` is the exact plist the device sent, as
//! base64. `event_id` is the server's event id (also in its logs and the plugin audit log).
//! `created_at` is when the plugin built the event, from the wall clock, in RFC 3339 UTC as
//! MicroMDM writes it (Go's `RFC3339Nano`: `2026-11-22T23:15:00Z`, `2018-08-13T14:30:16.13272395Z`).
//!
//! Configuration: `{"sink": "webhook"}`.

use std::time::{SystemTime, UNIX_EPOCH};

use mdm_plugin_sdk::prelude::*;
use mdm_plugin_sdk::{b64, serde_json::Value};
use serde::Deserialize;

/// Largest raw payload sent, in bytes: its base64 must fit the server's 256 KiB event payload
/// (`actions::MAX_EVENT_PAYLOAD`).
pub const MAX_RAW: usize = 180 * 1024;

/// The civil date `(year, month 1-12, day 1-31)` of a day counted from 1970-01-01 (proleptic
/// Gregorian calendar; negative days are before 1970).
///
/// Howard Hinnant's `civil_from_days`: shift the year to start on March 1st, so that the leap day
/// is the last of its year, then split the days into 400-year eras (146097 days each), years of
/// the era, and days of the year.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Unix time as RFC 3339 in UTC, the way Go's `RFC3339Nano` (and so MicroMDM) writes it: whole
/// seconds as `2026-11-22T23:15:00Z`, a fraction with its trailing zeros dropped as
/// `2018-08-13T14:30:16.13272395Z`. `None` outside the years 0000 to 9999, which RFC 3339 cannot
/// write, or when `nanos` is not below one second.
pub fn rfc3339(unix_seconds: i64, nanos: u32) -> Option<String> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (hour, minute, second) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    Some(text)
}

/// The wall clock as [`rfc3339`] text; `None` if it reads outside the years 0000 to 9999.
pub fn now_rfc3339() -> Option<String> {
    let (secs, nanos) = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()),
        // Before 1970: count back whole seconds, then forward the fraction.
        Err(e) => {
            let d = e.duration();
            let back = i64::try_from(d.as_secs()).ok()?;
            match d.subsec_nanos() {
                0 => (-back, 0),
                n => (-back - 1, 1_000_000_000 - n),
            }
        }
    };
    rfc3339(secs, nanos)
}

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

/// Puts `created_at` into a body when there is one.
fn with_created_at(mut body: Value, created_at: Option<&str>) -> Value {
    if let (Some(at), Some(object)) = (created_at, body.as_object_mut()) {
        object.insert("created_at".into(), Value::from(at));
    }
    body
}

/// The topic and body of a check-in's webhook event, created at `created_at` (RFC 3339; left out
/// when `None`).
pub fn checkin_event(event: &CheckinEvent, created_at: Option<&str>) -> (String, Value) {
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
    (topic, with_created_at(body, created_at))
}

/// The topic and body of a command result's webhook event (`mdm.Connect`), created at
/// `created_at` (RFC 3339; left out when `None`).
pub fn acknowledge_event(event: &CommandResultEvent, created_at: Option<&str>) -> (String, Value) {
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
    (topic, with_created_at(body, created_at))
}

fn emit(topic: &str, body: &Value, raw_len: Option<usize>) -> PluginResult<Vec<Action>> {
    if raw_len.is_some_and(|n| n > MAX_RAW) {
        warn!(
            "raw payload of {} bytes left out of {topic}",
            raw_len.unwrap_or_default()
        );
    }
    let config: Config = config::get()?;
    Ok(vec![actions::emit(&config.sink, topic, body.clone())])
}

struct Webhook;

impl Plugin for Webhook {
    fn on_checkin(event: CheckinEvent) -> PluginResult<Vec<Action>> {
        let (topic, body) = checkin_event(&event, now_rfc3339().as_deref());
        emit(&topic, &body, event.raw.as_ref().map(Vec::len))
    }

    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        let (topic, body) = acknowledge_event(&event, now_rfc3339().as_deref());
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
        (serde_json::from_str(&json).unwrap(), raw)
    }

    #[test]
    fn rfc3339_of_known_instants() {
        for (secs, nanos, text) in [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_795_389_300, 0, "2026-11-22T23:15:00Z"),
            (1_795_216_500, 0, "2026-11-20T23:15:00Z"),
            (1_709_210_096, 0, "2024-02-29T12:34:56Z"),
            (1_709_251_199, 0, "2024-02-29T23:59:59Z"),
            (1_709_251_200, 0, "2024-03-01T00:00:00Z"),
            (951_782_400, 0, "2000-02-29T00:00:00Z"),
            (-2_203_891_200, 0, "1900-03-01T00:00:00Z"),
            (-2_203_891_201, 0, "1900-02-28T23:59:59Z"),
            (-1, 0, "1969-12-31T23:59:59Z"),
            (-1, 500_000_000, "1969-12-31T23:59:59.5Z"),
            (1_534_170_616, 132_723_950, "2018-08-13T14:30:16.13272395Z"),
            (1_534_170_616, 1, "2018-08-13T14:30:16.000000001Z"),
            (
                253_402_300_799,
                999_999_999,
                "9999-12-31T23:59:59.999999999Z",
            ),
            (-62_167_219_200, 0, "0000-01-01T00:00:00Z"),
        ] {
            assert_eq!(
                rfc3339(secs, nanos).as_deref(),
                Some(text),
                "{secs}.{nanos}"
            );
        }
        assert_eq!(rfc3339(253_402_300_800, 0), None);
        assert_eq!(rfc3339(-62_167_219_201, 0), None);
        assert_eq!(rfc3339(0, 1_000_000_000), None);
        assert_eq!(rfc3339(i64::MAX, 0), None);
        assert_eq!(rfc3339(i64::MIN, 0), None);
    }

    #[test]
    fn civil_dates_match_a_day_by_day_calendar() {
        // Walk 1600-01-01 to 2400-12-31 one day at a time with month lengths and leap rules.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1600i64, 1u32, 1u32);
        for days in -135_140i64..=157_419 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!((y, m, d), (2401, 1, 1));
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
            let (topic, body) = checkin_event(&event, expected["created_at"].as_str());
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
            &json!({}),
        );
        event.event_id = expected["event_id"].as_str().unwrap().to_owned();
        event.command_uuid = ack["command_uuid"].as_str().unwrap().to_owned();
        event.raw = Some(raw);
        let (topic, body) = acknowledge_event(&event, expected["created_at"].as_str());
        assert_eq!(topic, "mdm.Connect");
        assert_eq!(body, expected);
    }

    #[test]
    fn shapes_without_test_data() {
        let mut event =
            fixtures::checkin(CheckinKind::TokenUpdate, fixtures::device_enrollment("U1"));
        event.raw = Some(b"<plist/>".to_vec());
        let (topic, body) = checkin_event(&event, Some("2026-11-22T23:15:00Z"));
        assert_eq!(topic, "mdm.TokenUpdate");
        assert_eq!(
            body,
            json!({"topic": "mdm.TokenUpdate", "event_id": event.event_id,
                   "created_at": "2026-11-22T23:15:00Z",
                   "checkin_event": {"udid": "U1", "url_params": null,
                                     "raw_payload": "PHBsaXN0Lz4=", "token_update_tally": 1}})
        );
        // User Enrollment: enrollment_id instead of udid. No raw payload granted: null.
        let ue = Enrollment {
            kind: ChannelKind::UserEnrollmentDevice,
            ..fixtures::device_enrollment("ENR-1")
        };
        let (topic, body) =
            checkin_event(&fixtures::checkin(CheckinKind::UserAuthenticate, ue), None);
        assert_eq!(topic, "mdm.UserAuthenticate");
        assert!(body.get("created_at").is_none());
        assert_eq!(
            body["checkin_event"],
            json!({"enrollment_id": "ENR-1", "url_params": null, "raw_payload": null})
        );
        let result = fixtures::command_result(
            fixtures::user_enrollment("U1", "501"),
            "ProfileList",
            CommandStatus::NotNow,
            &json!({}),
        );
        let (_, body) = acknowledge_event(&result, None);
        assert_eq!(body["acknowledge_event"]["status"], "NotNow");
        assert_eq!(body["acknowledge_event"]["udid"], "U1");
    }

    #[test]
    fn hook_emits_to_the_configured_sink() {
        mock::set_config(&json!({"sink": "siem"}));
        let mut event = fixtures::checkin(CheckinKind::CheckOut, fixtures::device_enrollment("U1"));
        event.raw = Some(vec![b'x'; MAX_RAW + 1]);
        let before = now_rfc3339().unwrap();
        let actions = Webhook::on_checkin(event).unwrap();
        let after = now_rfc3339().unwrap();
        let [Action::Emit(e)] = actions.as_slice() else {
            panic!("expected one emit: {actions:?}");
        };
        assert_eq!(
            (e.sink.as_str(), e.topic.as_str()),
            ("siem", "mdm.CheckOut")
        );
        let body: Value = serde_json::from_str(&e.payload_json).unwrap();
        assert_eq!(body["checkin_event"]["raw_payload"], Value::Null);
        // created_at is the wall clock; compare to the minute, where the width is fixed.
        let at = body["created_at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() >= 20, "{at}");
        assert!(
            before[..16] <= at[..16] && at[..16] <= after[..16],
            "{before} {at} {after}"
        );
        assert_eq!(mock::logs().len(), 1);
        assert!(validate(r#"{"sink": ""}"#).is_err());
        assert!(validate(r#"{"sinks": "x"}"#).is_err());
        assert!(validate("{}").is_ok());
    }
}
