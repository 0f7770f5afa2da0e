//! Retries commands a device answered `NotNow` or `Error`, with exponential backoff, and raises an
//! alert when the attempts run out.
//!
//! Each failed attempt is counted in KV (`attempts:<enrollment-id>:<command-uuid>`). While the count
//! is below `max_attempts`, the plugin asks for a retry after `base_delay_seconds * 2^(count-1)`
//! seconds; at `max_attempts` it emits `command.retries_exhausted` to `alert_sink` (once). An
//! acknowledged result deletes the counter. `CommandFormatError` is not retried: the command itself
//! is wrong.
//!
//! A command still pending (NotNow) is deferred and keeps its CommandUUID. A command that ended with
//! an error is queued again as a copy with a new CommandUUID, which the plugin is not told; so when it
//! retries an error it leaves a hand-off (`handoff:<enrollment-id>:<request-type>`) with the count,
//! and the next failed result of that request type on that enrollment without a counter of its own
//! carries the count on.
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
/// How long a hand-off outlives the retry delay.
const HANDOFF_GRACE: u32 = 86_400;

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

/// The KV key counting a command's failed attempts.
pub fn attempts_key(enrollment_id: &str, command_uuid: &str) -> String {
    format!("attempts:{enrollment_id}:{command_uuid}")
}

/// The KV key carrying a count from an errored command to its re-queued copy.
pub fn handoff_key(enrollment_id: &str, request_type: &str) -> String {
    format!("handoff:{enrollment_id}:{request_type}")
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
        let key = attempts_key(enrollment_id, &event.command_uuid);
        let handoff = handoff_key(enrollment_id, &event.request_type);
        match event.status {
            CommandStatus::Acknowledged => {
                kv::delete(&key)?;
                kv::delete(&handoff)?;
                Ok(Vec::new())
            }
            CommandStatus::CommandFormatError => Ok(Vec::new()),
            CommandStatus::NotNow | CommandStatus::Error => {
                let config: Config = config::get()?;
                if kv::get(&key)?.is_none() {
                    if let Some(count) = kv::get(&handoff)? {
                        kv::set_with_ttl(&key, count, COUNTER_TTL)?;
                        kv::delete(&handoff)?;
                    }
                }
                let attempts = kv::increment(&key, Some(COUNTER_TTL))?;
                match step(&config, attempts) {
                    Step::Retry(after) => {
                        if event.status == CommandStatus::Error {
                            kv::set_with_ttl(
                                &handoff,
                                attempts.to_string(),
                                after.saturating_add(HANDOFF_GRACE),
                            )?;
                        }
                        Ok(vec![actions::retry(
                            enrollment_id,
                            &event.command_uuid,
                            after,
                        )])
                    }
                    Step::Alert => {
                        warn!("{} gave up after {attempts} attempts", event.request_type;
                            enrollment_id = enrollment_id, command_uuid = event.command_uuid);
                        Ok(vec![actions::emit(
                            &config.alert_sink,
                            TOPIC,
                            &alert(&event, attempts),
                        )?])
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
            &Plist::from_json(&json!({"Status": status.apple_name()})).unwrap(),
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
                   "request_type": "InstallProfile", "status": "NotNow", "attempts": 3,
                   "error_chain": []})
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

    #[test]
    fn errors_carry_the_count_to_the_copy() {
        mock::set_config(
            &json!({"max_attempts": 3, "base_delay_seconds": 10, "alert_sink": "pager"}),
        );
        let mut first = result("U1", "DeviceLock", CommandStatus::Error);
        first.error_chain = vec![ErrorChainItem {
            code: Some(12021),
            domain: Some("MCMDMErrorDomain".into()),
            description: Some("Passcode required".into()),
        }];
        let r1 = RetryNotNow::on_command_result(first.clone()).unwrap();
        assert_eq!(r1, vec![actions::retry("UDID-1", "U1", 10)]);
        // The server re-queued a copy with a new UUID; it fails too.
        let mut second = first.clone();
        second.command_uuid = "U2".into();
        let r2 = RetryNotNow::on_command_result(second.clone()).unwrap();
        assert_eq!(r2, vec![actions::retry("UDID-1", "U2", 20)]);
        let mut third = first.clone();
        third.command_uuid = "U3".into();
        let r3 = RetryNotNow::on_command_result(third).unwrap();
        let (sink, _, payload) = emitted(&r3);
        assert_eq!(sink, "pager");
        assert_eq!(payload["attempts"], 3);
        assert_eq!(payload["status"], "Error");
        assert_eq!(payload["command_uuid"], "U3");
        assert_eq!(
            payload["error_chain"],
            json!([{"code": 12021, "domain": "MCMDMErrorDomain", "description": "Passcode required"}])
        );
        assert!(!mock::kv_snapshot().contains_key(&handoff_key("UDID-1", "DeviceLock")));
    }

    #[test]
    fn copy_that_succeeds_clears_the_hand_off() {
        RetryNotNow::on_command_result(result("U1", "DeviceLock", CommandStatus::Error)).unwrap();
        assert!(mock::kv_snapshot().contains_key(&handoff_key("UDID-1", "DeviceLock")));
        RetryNotNow::on_command_result(result("U2", "DeviceLock", CommandStatus::Acknowledged))
            .unwrap();
        assert!(!mock::kv_snapshot().contains_key(&handoff_key("UDID-1", "DeviceLock")));
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
