//! Action builders: what a hook returns for the server to do.
//!
//! The server checks each action against the plugin's capabilities and applies them in the same
//! transaction as the check-in or command result. An action needing a capability the plugin was
//! not granted is refused (and logged), not applied.
//!
//! One call may return at most the manifest's `limits.max_actions` actions (default 100); with
//! more, none is applied. The server's other limits are the constants below
//! ([`MAX_ENQUEUE_IDS`], [`MAX_ATTRIBUTE_KEY`], [`MAX_ATTRIBUTE_VALUE`], [`MAX_EVENT_PAYLOAD`],
//! [`MAX_SET_NAME`]).
//!
//! | Builder | Action | Capability |
//! |---|---|---|
//! | [`enqueue`] | queue a command | `commands` |
//! | [`retry`] | queue a command again, later | `retry` |
//! | [`push`] | send an MDM push | `push` |
//! | [`set_attribute`], [`clear_attribute`] | device attributes | `attributes` |
//! | [`emit`] | deliver an event to a sink | `events` |
//! | [`assign_set`], [`unassign_set`] | assign a declarative management set to an enrollment, or unassign it | `ddm-assign` |
//!
//! Every builder returns an [`Action`]:
//!
//! ```
//! use mdm_plugin_sdk::prelude::*;
//! use mdm_plugin_sdk::actions::EnqueueOptions;
//! let actions: Vec<Action> = vec![
//!     actions::enqueue(["UDID-1"], commands::security_info()),
//!     actions::enqueue_with(
//!         ["UDID-1"],
//!         commands::restart_device(),
//!         EnqueueOptions { priority: 10, ttl_seconds: Some(3600) },
//!     ),
//!     actions::push(["UDID-1"]),
//!     actions::emit("alerts", "device.restarted", json!({"udid": "UDID-1"})),
//! ];
//! # let _ = actions;
//! ```

use serde_json::Value;

use crate::types::{
    Action, CommandSpec, DeviceAttribute, DeviceAttributeKey, EnqueueCommand, Event, RetryCommand,
    SetAssignment,
};

/// The lowest queue priority the server accepts.
pub const MIN_PRIORITY: i32 = -1000;
/// The highest queue priority the server accepts.
pub const MAX_PRIORITY: i32 = 1000;
/// The most enrollment ids all [`enqueue`] actions of one hook call may name together; with more,
/// the server applies none of the call's actions (fan out over schedule ticks instead).
pub const MAX_ENQUEUE_IDS: usize = 1000;
/// The longest device attribute key the server accepts, in bytes (keys are 1 to this).
pub const MAX_ATTRIBUTE_KEY: usize = 128;
/// The longest device attribute value the server accepts, in bytes.
pub const MAX_ATTRIBUTE_VALUE: usize = 4096;
/// The largest event payload (its JSON) the server accepts, in bytes.
pub const MAX_EVENT_PAYLOAD: usize = 256 * 1024;
/// The longest set name [`assign_set`] and [`unassign_set`] accept, in bytes: 1 to this many ASCII
/// letters, digits, `.`, `_` and `-`.
pub const MAX_SET_NAME: usize = 128;

fn strings<I>(ids: I) -> Vec<String>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    ids.into_iter().map(|id| id.as_ref().to_owned()).collect()
}

/// How an [`enqueue_with`] action is queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnqueueOptions {
    /// Queue priority, higher first; clamped to [`MIN_PRIORITY`]..=[`MAX_PRIORITY`]. Default 0.
    pub priority: i32,
    /// Drop the command if it has not been delivered within this many seconds. Default: no limit.
    pub ttl_seconds: Option<u32>,
}

/// Queue `command` to these enrollments (queue ids: `Enrollment::id`), priority 0, no TTL. Needs
/// `commands`. All enqueues of one call together may name at most [`MAX_ENQUEUE_IDS`] enrollments.
pub fn enqueue<I>(enrollment_ids: I, command: CommandSpec) -> Action
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    enqueue_with(enrollment_ids, command, EnqueueOptions::default())
}

/// [`enqueue`] with a priority or a time to live.
pub fn enqueue_with<I>(enrollment_ids: I, command: CommandSpec, options: EnqueueOptions) -> Action
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    Action::Enqueue(EnqueueCommand {
        enrollment_ids: strings(enrollment_ids),
        command,
        priority: options.priority.clamp(MIN_PRIORITY, MAX_PRIORITY),
        ttl_seconds: options.ttl_seconds,
    })
}

/// Deliver a command again no sooner than `after_seconds` from now. Needs `retry`.
///
/// A command still pending (NotNow) is held back and keeps its CommandUUID. One that ended with
/// an Error is queued again as a copy with a new CommandUUID; the copy's result carries the
/// original's CommandUUID in `retry_of` (the first of the chain, for copies of copies too), so
/// count attempts by [`CommandResultEvent::original_command_uuid`](crate::types::CommandResultEvent::original_command_uuid).
pub fn retry(enrollment_id: &str, command_uuid: &str, after_seconds: u32) -> Action {
    Action::Retry(RetryCommand {
        enrollment_id: enrollment_id.to_owned(),
        command_uuid: command_uuid.to_owned(),
        after_seconds,
    })
}

/// Wake these enrollments with an MDM push. Needs `push`.
pub fn push<I>(enrollment_ids: I) -> Action
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    Action::Push(strings(enrollment_ids))
}

/// Set a device attribute (shown in the admin API, usable for targeting). Needs `attributes`.
/// Keys are 1 to [`MAX_ATTRIBUTE_KEY`] bytes, values at most [`MAX_ATTRIBUTE_VALUE`].
pub fn set_attribute(device_id: &str, key: &str, value: impl ToString) -> Action {
    Action::SetAttribute(DeviceAttribute {
        device_id: device_id.to_owned(),
        key: key.to_owned(),
        value: value.to_string(),
    })
}

/// Remove a device attribute. Needs `attributes`.
pub fn clear_attribute(device_id: &str, key: &str) -> Action {
    Action::ClearAttribute(DeviceAttributeKey {
        device_id: device_id.to_owned(),
        key: key.to_owned(),
    })
}

/// Deliver `payload` under `topic` to the sink the admin configured as `sink` (one of the manifest's
/// `sinks`). Delivery is durable, with retries. Needs `events`. The JSON may be at most
/// [`MAX_EVENT_PAYLOAD`] bytes. Build the payload with `json!`, or from your own type with
/// `serde_json::to_value`.
pub fn emit(sink: &str, topic: &str, payload: Value) -> Action {
    Action::Emit(Event {
        sink: sink.to_owned(),
        topic: topic.to_owned(),
        payload_json: payload.to_string(),
    })
}

/// Assign the declarative management set `set_name` to this enrollment (a queue id:
/// `Enrollment::id`), so the device gets its declarations at its next sync (the server queues it).
/// Assigning a set already assigned changes nothing. Needs `ddm-assign`. An unknown set or
/// enrollment is refused (and audited), not an error of the hook.
pub fn assign_set(enrollment_id: &str, set_name: &str) -> Action {
    Action::AssignSet(SetAssignment {
        enrollment_id: enrollment_id.to_owned(),
        set_name: set_name.to_owned(),
    })
}

/// Unassign the set `set_name` from this enrollment; the device drops its declarations at its next
/// sync. Unassigning a set that is not assigned changes nothing. Needs `ddm-assign`.
pub fn unassign_set(enrollment_id: &str, set_name: &str) -> Action {
    Action::UnassignSet(SetAssignment {
        enrollment_id: enrollment_id.to_owned(),
        set_name: set_name.to_owned(),
    })
}

/// Whether the server accepts `name` as a set name (see [`MAX_SET_NAME`]): for checking a
/// configuration in `validate_config`.
pub fn is_valid_set_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SET_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;
    use serde_json::json;

    #[test]
    fn enqueue_defaults_and_options() {
        let ids = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            enqueue(&ids, commands::security_info()),
            Action::Enqueue(EnqueueCommand {
                enrollment_ids: ids.clone(),
                command: commands::security_info(),
                priority: 0,
                ttl_seconds: None,
            })
        );
        assert_eq!(
            enqueue_with(
                ["a"],
                commands::restart_device(),
                EnqueueOptions {
                    priority: 5000,
                    ttl_seconds: Some(600)
                }
            ),
            Action::Enqueue(EnqueueCommand {
                enrollment_ids: vec!["a".into()],
                command: commands::restart_device(),
                priority: MAX_PRIORITY,
                ttl_seconds: Some(600),
            })
        );
        assert_eq!(
            enqueue_with(
                vec!["x"],
                commands::profile_list(),
                EnqueueOptions {
                    priority: -5,
                    ..Default::default()
                }
            ),
            Action::Enqueue(EnqueueCommand {
                enrollment_ids: vec!["x".into()],
                command: commands::profile_list(),
                priority: -5,
                ttl_seconds: None,
            })
        );
    }

    #[test]
    fn other_actions() {
        assert_eq!(
            retry("e1", "c1", 120),
            Action::Retry(RetryCommand {
                enrollment_id: "e1".into(),
                command_uuid: "c1".into(),
                after_seconds: 120,
            })
        );
        assert_eq!(
            push(["e1", "e2"]),
            Action::Push(vec!["e1".into(), "e2".into()])
        );
        assert_eq!(
            set_attribute("d1", "inv.battery", 0.5),
            Action::SetAttribute(DeviceAttribute {
                device_id: "d1".into(),
                key: "inv.battery".into(),
                value: "0.5".into(),
            })
        );
        assert_eq!(
            clear_attribute("d1", "inv.battery"),
            Action::ClearAttribute(DeviceAttributeKey {
                device_id: "d1".into(),
                key: "inv.battery".into(),
            })
        );
        let Action::Emit(event) = emit("alerts", "t.x", json!({"n": 1})) else {
            panic!("not an emit");
        };
        assert_eq!(
            (event.sink.as_str(), event.topic.as_str()),
            ("alerts", "t.x")
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&event.payload_json).unwrap(),
            json!({"n": 1})
        );
    }

    #[test]
    fn set_assignments() {
        assert_eq!(
            assign_set("UDID-1", "remediation"),
            Action::AssignSet(SetAssignment {
                enrollment_id: "UDID-1".into(),
                set_name: "remediation".into(),
            })
        );
        assert_eq!(
            unassign_set("UDID-1:501", "remediation"),
            Action::UnassignSet(SetAssignment {
                enrollment_id: "UDID-1:501".into(),
                set_name: "remediation".into(),
            })
        );
        assert!(is_valid_set_name("com.example.passcode-remediation_2"));
        assert!(is_valid_set_name(&"s".repeat(MAX_SET_NAME)));
        for bad in [
            "",
            "two words",
            "a/b",
            "caf\u{e9}",
            "s".repeat(MAX_SET_NAME + 1).as_str(),
        ] {
            assert!(!is_valid_set_name(bad), "{bad:?}");
        }
    }
}
