//! Assigns a remediation set while a device reports itself out of compliance.
//!
//! Configuration: `{"remediation_set": "passcode-remediation", "item": "passcode.is-compliant"}`
//! (`item` is optional, that by default). When a declarative management status report turns the
//! boolean status item `item` false, the set `remediation_set` is assigned to the channel that
//! reported; when a later report turns it true again, the set is unassigned. A report that does not
//! change the item does nothing, and neither does a first report of `true` (nothing was assigned).

use mdm_plugin_sdk::prelude::*;
use mdm_plugin_sdk::serde_json::Value;
use serde::Deserialize;

/// The status item watched by default.
pub const DEFAULT_ITEM: &str = "passcode.is-compliant";

fn default_item() -> String {
    DEFAULT_ITEM.to_owned()
}

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The set assigned while the item is false.
    pub remediation_set: String,
    /// The boolean status item watched.
    #[serde(default = "default_item")]
    pub item: String,
}

/// What a change of the watched item calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Assign,
    Unassign,
    Nothing,
}

/// The step for the watched item going from `old` (`None`: first reported) to `new`.
pub fn step(old: Option<&Value>, new: &Value) -> Step {
    match (old, new) {
        (Some(Value::Bool(false)), Value::Bool(false)) => Step::Nothing,
        (_, Value::Bool(false)) => Step::Assign,
        (Some(Value::Bool(false)), Value::Bool(true)) => Step::Unassign,
        _ => Step::Nothing,
    }
}

struct Compliance;

impl Plugin for Compliance {
    fn on_ddm_status(event: DdmStatusEvent) -> PluginResult<Vec<Action>> {
        let config: Config = config::get()?;
        let Some((old, new)) = event.item_turned(&config.item)? else {
            return Ok(Vec::new());
        };
        let channel = &event.enrollment.id;
        if !new.is_boolean() {
            warn!("{} is not a boolean: {new}", config.item; enrollment_id = channel);
            return Ok(Vec::new());
        }
        let set = &config.remediation_set;
        Ok(match step(old.as_ref(), &new) {
            Step::Assign => {
                info!("{} turned false: assigning {set}", config.item; enrollment_id = channel);
                vec![actions::assign_set(channel, set)]
            }
            Step::Unassign => {
                info!("{} turned true: unassigning {set}", config.item; enrollment_id = channel);
                vec![actions::unassign_set(channel, set)]
            }
            Step::Nothing => Vec::new(),
        })
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config).map_err(PluginError::from)
    }
}

export_plugin!(Compliance);

/// Checks a configuration: `remediation_set` a set name the server accepts, `item` (optional) a
/// non-empty string, nothing else.
pub fn validate(text: &str) -> Result<(), String> {
    let config: Config =
        mdm_plugin_sdk::serde_json::from_str(text).map_err(|e| format!("configuration: {e}"))?;
    if !actions::is_valid_set_name(&config.remediation_set) {
        return Err(format!(
            "remediation_set must be 1 to {} ASCII letters, digits, '.', '_' or '-'",
            actions::MAX_SET_NAME
        ));
    }
    if config.item.trim().is_empty() {
        return Err("item must name a status item, e.g. passcode.is-compliant".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::json;

    fn configured() {
        mock::set_config(&json!({"remediation_set": "passcode-fix"}));
    }

    fn report(items: Vec<StatusItemChange>) -> DdmStatusEvent {
        fixtures::ddm_status(fixtures::device_enrollment("UDID-1"), items)
    }

    fn compliant(old: Option<bool>, new: bool) -> StatusItemChange {
        fixtures::item_turned(DEFAULT_ITEM, old.map(Value::Bool), Value::Bool(new))
    }

    #[test]
    fn steps() {
        let (t, f) = (Value::Bool(true), Value::Bool(false));
        assert_eq!(step(Some(&t), &f), Step::Assign);
        assert_eq!(step(None, &f), Step::Assign);
        assert_eq!(step(Some(&f), &t), Step::Unassign);
        assert_eq!(step(None, &t), Step::Nothing);
        assert_eq!(step(Some(&f), &f), Step::Nothing);
        assert_eq!(step(Some(&t), &t), Step::Nothing);
        assert_eq!(step(Some(&Value::Null), &t), Step::Nothing);
        assert_eq!(step(Some(&f), &json!("yes")), Step::Nothing);
    }

    #[test]
    fn turning_false_assigns_the_set_to_the_reporting_channel() {
        configured();
        let got = Compliance::on_ddm_status(report(vec![compliant(Some(true), false)]));
        assert_eq!(got, Ok(vec![actions::assign_set("UDID-1", "passcode-fix")]));
        // A user channel gets it on that channel.
        let user = fixtures::ddm_status(
            fixtures::user_enrollment("UDID-1", "501"),
            vec![compliant(None, false)],
        );
        assert_eq!(
            Compliance::on_ddm_status(user),
            Ok(vec![actions::assign_set("UDID-1:501", "passcode-fix")])
        );
    }

    #[test]
    fn turning_true_again_unassigns_it() {
        configured();
        let got = Compliance::on_ddm_status(report(vec![compliant(Some(false), true)]));
        assert_eq!(
            got,
            Ok(vec![actions::unassign_set("UDID-1", "passcode-fix")])
        );
        let logs = mock::logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(
            logs[0].fields,
            vec![("enrollment_id".into(), "UDID-1".into())]
        );
    }

    #[test]
    fn reports_that_leave_the_item_alone_do_nothing() {
        configured();
        let other = fixtures::item_turned("device.operating-system.version", None, json!("17.5"));
        assert_eq!(
            Compliance::on_ddm_status(report(vec![other])),
            Ok(Vec::new())
        );
        assert_eq!(
            Compliance::on_ddm_status(report(Vec::new())),
            Ok(Vec::new())
        );
        assert_eq!(
            Compliance::on_ddm_status(report(vec![compliant(None, true)])),
            Ok(Vec::new())
        );
        assert!(mock::logs().is_empty());
    }

    #[test]
    fn a_value_that_is_not_a_boolean_is_logged_and_ignored() {
        configured();
        let odd = fixtures::item_turned(DEFAULT_ITEM, Some(json!(true)), json!("no"));
        assert_eq!(Compliance::on_ddm_status(report(vec![odd])), Ok(Vec::new()));
        assert_eq!(mock::logs().len(), 1);
    }

    #[test]
    fn the_watched_item_is_configurable() {
        mock::set_config(
            &json!({"remediation_set": "set-a-passcode", "item": "passcode.is-present"}),
        );
        let turned = fixtures::item_turned("passcode.is-present", Some(json!(true)), json!(false));
        assert_eq!(
            Compliance::on_ddm_status(report(vec![compliant(Some(true), false), turned])),
            Ok(vec![actions::assign_set("UDID-1", "set-a-passcode")])
        );
    }

    #[test]
    fn a_missing_configuration_fails_the_call() {
        // The host always passes a configuration; without a set there is nothing to assign.
        assert!(Compliance::on_ddm_status(report(vec![compliant(Some(true), false)])).is_err());
    }

    #[test]
    fn validates_configuration() {
        assert_eq!(
            validate(r#"{"remediation_set": "passcode-remediation"}"#),
            Ok(())
        );
        assert_eq!(
            validate(r#"{"remediation_set": "s", "item": "passcode.is-present"}"#),
            Ok(())
        );
        assert!(validate("{}").is_err());
        assert!(validate(r#"{"remediation_set": ""}"#).is_err());
        assert!(validate(r#"{"remediation_set": "two words"}"#).is_err());
        assert!(validate(r#"{"remediation_set": "s", "item": " "}"#).is_err());
        assert!(validate(r#"{"remediation_set": "s", "surprise": 1}"#).is_err());
        assert!(validate("[]").is_err());
        let manifest: Value =
            mdm_plugin_sdk::serde_json::from_str(include_str!("../plugin.json")).unwrap();
        assert_eq!(validate(&manifest["default_config"].to_string()), Ok(()));
    }
}
