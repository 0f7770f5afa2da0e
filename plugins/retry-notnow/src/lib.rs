//! Retries commands a device answered `NotNow` or `Error`, with exponential backoff, and raises an
//! alert when the attempts run out.
//!
//! Each failed attempt is counted in KV (`attempts:<enrollment-id>:<original-command-uuid>`). While
//! the count is below `max_attempts`, the plugin asks for a retry after
//! `base_delay_seconds * 2^(count-1)` seconds; at `max_attempts` it emits
//! `command.retries_exhausted` to `alert_sink` (once). An acknowledged result deletes the counter.
//! `CommandFormatError` is not retried: the command itself is wrong.
//!
//! A command still pending (NotNow) is held back and keeps its CommandUUID. A command that ended with
//! an error is queued again as a copy with a new CommandUUID, and the copy's result names the
//! original in `retry_of`; counting by `retry_of` (or, for the original, its own CommandUUID) carries
//! the count across copies.
//!
//! Configuration: `{"max_attempts": 3, "base_delay_seconds": 60, "alert_sink": "alerts"}`.

use mdm_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// The alert's topic.
pub const TOPIC: &str = "command.retries_exhausted";
/// Counters expire after a week without failures.
pub const COUNTER_TTL: u32 = 7 * 86_400;
/// The longest delay asked for.
pub const MAX_DELAY: u32 = 7 * 86_400;

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Failed attempts before the alert (1 to 50).
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles (1 to 86400).
    pub base_delay_seconds: u32,
    /// The event sink for alerts.
    pub alert_sink: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_attempts: 3,
            base_delay_seconds: 60,
            alert_sink: "alerts".into(),
        }
    }
}

/// Checks a configuration.
pub fn validate(text: &str) -> PluginResult<()> {
    let c: Config = config::parse(text)?;
    if !(1..=50).contains(&c.max_attempts) {
        return Err("max_attempts must be 1 to 50".into());
    }
    if !(1..=86_400).contains(&c.base_delay_seconds) {
        return Err("base_delay_seconds must be 1 to 86400".into());
    }
    if c.alert_sink.trim().is_empty() {
        return Err("alert_sink must name an event sink".into());
    }
    Ok(())
}

/// The KV key counting a command's failed attempts, by the CommandUUID of the command as first
/// queued (see [`CommandResultEvent::original_command_uuid`]).
pub fn attempts_key(enrollment_id: &str, original_command_uuid: &str) -> String {
    format!("attempts:{enrollment_id}:{original_command_uuid}")
}

/// The KV key counting the failed attempts of the command this result is for, copies included.
pub fn event_attempts_key(event: &CommandResultEvent) -> String {
    attempts_key(&event.enrollment.id, event.original_command_uuid())
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Retry after this many seconds.
    Retry(u32),
    /// The attempts ran out just now: alert.
    Alert,
    /// The alert was already raised.
    Done,
}

/// `base * 2^(attempts-1)` seconds, at most [`MAX_DELAY`].
pub fn delay(base_delay_seconds: u32, attempts: u64) -> u32 {
    let factor = 1u64
        .checked_shl(attempts.saturating_sub(1).min(63) as u32)
        .unwrap_or(u64::MAX);
    u64::from(base_delay_seconds)
        .saturating_mul(factor)
        .min(u64::from(MAX_DELAY)) as u32
}

/// The step after the `attempts`-th failure.
pub fn step(config: &Config, attempts: u64) -> Step {
    let max = u64::from(config.max_attempts);
    if attempts < max {
        Step::Retry(delay(config.base_delay_seconds, attempts))
    } else if attempts == max {
        Step::Alert
    } else {
        Step::Done
    }
}

/// The alert's payload.
#[derive(Debug, Serialize)]
pub struct Alert<'a> {
    /// The queue the command was for.
    pub enrollment_id: &'a str,
    /// The device (UDID or EnrollmentID).
    pub device_id: &'a str,
    /// The last attempt's CommandUUID.
    pub command_uuid: &'a str,
    /// The CommandUUID of the command as first queued: the same as `command_uuid` unless the
    /// last attempt was a copy queued by a retry after an Error.
    pub original_command_uuid: &'a str,
    /// The command's RequestType.
    pub request_type: &'a str,
    /// Apple's status of the last attempt: `NotNow` or `Error`.
    pub status: &'static str,
    /// Failed attempts.
    pub attempts: u64,
    /// The last attempt's ErrorChain.
    pub error_chain: &'a [ErrorChainItem],
}

/// The alert for a command result.
pub fn alert(event: &CommandResultEvent, attempts: u64) -> Alert<'_> {
    Alert {
        enrollment_id: &event.enrollment.id,
        device_id: &event.enrollment.device_id,
        command_uuid: &event.command_uuid,
        original_command_uuid: event.original_command_uuid(),
        request_type: &event.request_type,
        status: event.status.apple_name(),
        attempts,
        error_chain: &event.error_chain,
    }
}

struct RetryNotNow;

impl Plugin for RetryNotNow {
    fn on_command_result(event: CommandResultEvent) -> PluginResult<Vec<Action>> {
        let enrollment_id = &event.enrollment.id;
        let key = event_attempts_key(&event);
        match event.status {
            CommandStatus::Acknowledged => {
                kv::delete(&key)?;
                Ok(Vec::new())
            }
            CommandStatus::CommandFormatError => Ok(Vec::new()),
            CommandStatus::NotNow | CommandStatus::Error => {
                let config: Config = config::get()?;
                let attempts = kv::increment(&key, Some(COUNTER_TTL))?;
                match step(&config, attempts) {
                    // Retry this attempt: a pending command is held back, an errored one copied.
                    Step::Retry(after) => Ok(vec![actions::retry(
                        enrollment_id,
                        &event.command_uuid,
                        after,
                    )]),
                    Step::Alert => {
                        warn!("{} gave up after {attempts} attempts", event.request_type;
                            enrollment_id = enrollment_id, command_uuid = event.command_uuid,
                            original_command_uuid = event.original_command_uuid());
                        let payload =
                            mdm_plugin_sdk::serde_json::to_value(alert(&event, attempts))?;
                        Ok(vec![actions::emit(&config.alert_sink, TOPIC, payload)])
                    }
                    Step::Done => Ok(Vec::new()),
                }
            }
        }
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config)
    }
}

export_plugin!(RetryNotNow);

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::{self, json, Value};

    fn result(uuid: &str, request_type: &str, status: CommandStatus) -> CommandResultEvent {
        let mut event = fixtures::command_result(
            fixtures::device_enrollment("UDID-1"),
            request_type,
            status,
            &json!({"Status": status.apple_name()}),
        );
        event.command_uuid = uuid.to_owned();
        event
    }

    fn emitted(actions: &[Action]) -> (String, String, Value) {
        match actions {
            [Action::Emit(e)] => (
                e.sink.clone(),
                e.topic.clone(),
                serde_json::from_str(&e.payload_json).unwrap(),
            ),
            other => panic!("expected one emit, got {other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(delay(60, 1), 60);
        assert_eq!(delay(60, 2), 120);
        assert_eq!(delay(60, 3), 240);
        assert_eq!(delay(60, 40), MAX_DELAY);
        assert_eq!(delay(u32::MAX, 200), MAX_DELAY);
        assert_eq!(delay(10, 0), 10);
    }

    #[test]
    fn steps() {
        let c = Config::default();
        assert_eq!(step(&c, 1), Step::Retry(60));
        assert_eq!(step(&c, 2), Step::Retry(120));
        assert_eq!(step(&c, 3), Step::Alert);
        assert_eq!(step(&c, 4), Step::Done);
        let once = Config {
            max_attempts: 1,
            ..Config::default()
        };
        assert_eq!(step(&once, 1), Step::Alert);
    }

    #[test]
    fn validates_configuration() {
        assert!(validate("{}").is_ok());
        assert!(validate(
            r#"{"max_attempts": 5, "base_delay_seconds": 30, "alert_sink": "pager"}"#
        )
        .is_ok());
        assert!(validate(r#"{"max_attempts": 0}"#).is_err());
        assert!(validate(r#"{"base_delay_seconds": 0}"#).is_err());
        assert!(validate(r#"{"alert_sink": " "}"#).is_err());
        assert!(validate(r#"{"max_attempt": 3}"#).is_err());
        assert!(validate(r#"{"max_attempts": -1}"#).is_err());
    }

    #[test]
    fn not_now_retries_then_alerts_once() {
        let uuid = "AAAA";
        let r1 =
            RetryNotNow::on_command_result(result(uuid, "InstallProfile", CommandStatus::NotNow))
                .unwrap();
        assert_eq!(r1, vec![actions::retry("UDID-1", uuid, 60)]);
        let r2 =
            RetryNotNow::on_command_result(result(uuid, "InstallProfile", CommandStatus::NotNow))
                .unwrap();
        assert_eq!(r2, vec![actions::retry("UDID-1", uuid, 120)]);
        let r3 =
            RetryNotNow::on_command_result(result(uuid, "InstallProfile", CommandStatus::NotNow))
                .unwrap();
        let (sink, topic, payload) = emitted(&r3);
        assert_eq!((sink.as_str(), topic.as_str()), ("alerts", TOPIC));
        assert_eq!(
            payload,
            json!({"enrollment_id": "UDID-1", "device_id": "UDID-1", "command_uuid": uuid,
                   "original_command_uuid": uuid, "request_type": "InstallProfile",
                   "status": "NotNow", "attempts": 3, "error_chain": []})
        );
        assert_eq!(
            mock::kv_ttl(&attempts_key("UDID-1", uuid)),
            Some(COUNTER_TTL)
        );
        // No second alert.
        let r4 =
            RetryNotNow::on_command_result(result(uuid, "InstallProfile", CommandStatus::NotNow))
                .unwrap();
        assert!(r4.is_empty());
        // Acknowledged clears the counter.
        RetryNotNow::on_command_result(result(uuid, "InstallProfile", CommandStatus::Acknowledged))
            .unwrap();
        assert!(mock::kv_snapshot().is_empty());
    }

    fn passcode_error(uuid: &str) -> CommandResultEvent {
        let mut event = result(uuid, "DeviceLock", CommandStatus::Error);
        event.error_chain = vec![ErrorChainItem {
            code: Some(12021),
            domain: Some("MCMDMErrorDomain".into()),
            description: Some("Passcode required".into()),
        }];
        event
    }

    fn count(original_command_uuid: &str) -> Option<String> {
        mock::kv_snapshot()
            .get(&attempts_key("UDID-1", original_command_uuid))
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn an_errored_copy_continues_the_count_of_its_original() {
        mock::set_config(
            &json!({"max_attempts": 5, "base_delay_seconds": 10, "alert_sink": "pager"}),
        );
        let first = passcode_error("U1");
        let r1 = RetryNotNow::on_command_result(first.clone()).unwrap();
        assert_eq!(r1, vec![actions::retry("UDID-1", "U1", 10)]);
        assert_eq!(count("U1").as_deref(), Some("1"));

        // The server queued a copy with a new UUID, naming the original in retry_of; it fails too.
        let second = fixtures::retried(&first, "U2");
        assert_eq!(second.retry_of.as_deref(), Some("U1"));
        let r2 = RetryNotNow::on_command_result(second.clone()).unwrap();
        // The retry is for the copy (the command that failed), the count the original's.
        assert_eq!(r2, vec![actions::retry("UDID-1", "U2", 20)]);
        assert_eq!(count("U1").as_deref(), Some("2"));
        assert_eq!(count("U2"), None);

        // A copy of the copy still names the root; answered NotNow, it keeps counting there.
        let mut third = fixtures::retried(&second, "U3");
        third.status = CommandStatus::NotNow;
        assert_eq!(third.retry_of.as_deref(), Some("U1"));
        let r3 = RetryNotNow::on_command_result(third.clone()).unwrap();
        assert_eq!(r3, vec![actions::retry("UDID-1", "U3", 40)]);
        assert_eq!(count("U1").as_deref(), Some("3"));
        assert_eq!(mock::kv_snapshot().len(), 1);

        // The copy succeeds: the original's counter goes.
        third.status = CommandStatus::Acknowledged;
        RetryNotNow::on_command_result(third).unwrap();
        assert!(mock::kv_snapshot().is_empty());
    }

    #[test]
    fn errored_copies_exhaust_the_attempts_and_alert_once() {
        mock::set_config(
            &json!({"max_attempts": 3, "base_delay_seconds": 10, "alert_sink": "pager"}),
        );
        let first = passcode_error("U1");
        let r1 = RetryNotNow::on_command_result(first.clone()).unwrap();
        assert_eq!(r1, vec![actions::retry("UDID-1", "U1", 10)]);
        let second = fixtures::retried(&first, "U2");
        let r2 = RetryNotNow::on_command_result(second.clone()).unwrap();
        assert_eq!(r2, vec![actions::retry("UDID-1", "U2", 20)]);
        let third = fixtures::retried(&second, "U3");
        let r3 = RetryNotNow::on_command_result(third.clone()).unwrap();
        let (sink, topic, payload) = emitted(&r3);
        assert_eq!((sink.as_str(), topic.as_str()), ("pager", TOPIC));
        assert_eq!(
            payload,
            json!({"enrollment_id": "UDID-1", "device_id": "UDID-1", "command_uuid": "U3",
                   "original_command_uuid": "U1", "request_type": "DeviceLock",
                   "status": "Error", "attempts": 3,
                   "error_chain": [{"code": 12021, "domain": "MCMDMErrorDomain",
                                    "description": "Passcode required"}]})
        );
        assert!(mock::logs().iter().any(|l| l
            .fields
            .contains(&("original_command_uuid".into(), "U1".into()))));
        assert_eq!(count("U1").as_deref(), Some("3"));
        assert_eq!(
            mock::kv_ttl(&attempts_key("UDID-1", "U1")),
            Some(COUNTER_TTL)
        );
        // Nothing more for the chain, however its results keep coming.
        let again = fixtures::retried(&third, "U4");
        assert!(RetryNotNow::on_command_result(again).unwrap().is_empty());
        assert!(RetryNotNow::on_command_result(third).unwrap().is_empty());
    }

    #[test]
    fn commands_of_one_request_type_count_apart() {
        // Two DeviceLocks fail on one enrollment; a third, new one comes after them. Each counts
        // on its own: nothing is guessed from the request type.
        let a = passcode_error("A1");
        let b = passcode_error("B1");
        assert_eq!(
            RetryNotNow::on_command_result(a.clone()).unwrap(),
            vec![actions::retry("UDID-1", "A1", 60)]
        );
        assert_eq!(
            RetryNotNow::on_command_result(b.clone()).unwrap(),
            vec![actions::retry("UDID-1", "B1", 60)]
        );
        assert_eq!(
            RetryNotNow::on_command_result(fixtures::retried(&a, "A2")).unwrap(),
            vec![actions::retry("UDID-1", "A2", 120)]
        );
        assert_eq!(
            RetryNotNow::on_command_result(passcode_error("C1")).unwrap(),
            vec![actions::retry("UDID-1", "C1", 60)]
        );
        assert_eq!(count("A1").as_deref(), Some("2"));
        assert_eq!(count("B1").as_deref(), Some("1"));
        assert_eq!(count("C1").as_deref(), Some("1"));
        // The same CommandUUID on another enrollment is another count.
        let mut elsewhere = passcode_error("A1");
        elsewhere.enrollment = fixtures::device_enrollment("UDID-2");
        assert_eq!(
            RetryNotNow::on_command_result(elsewhere).unwrap(),
            vec![actions::retry("UDID-2", "A1", 60)]
        );
        assert_eq!(count("A1").as_deref(), Some("2"));
        // Only counters are kept.
        assert!(mock::kv_snapshot()
            .keys()
            .all(|k| k.starts_with("attempts:")));
    }

    #[test]
    fn kv_failures_fail_the_call() {
        mock::fail_kv(Some(mdm_plugin_sdk::kv::KvError::Unavailable(
            "down".into(),
        )));
        assert!(RetryNotNow::on_command_result(passcode_error("U1")).is_err());
    }

    #[test]
    fn format_errors_are_not_retried() {
        let r = RetryNotNow::on_command_result(result(
            "U1",
            "Settings",
            CommandStatus::CommandFormatError,
        ))
        .unwrap();
        assert!(r.is_empty());
        assert!(mock::kv_snapshot().is_empty());
    }
}
