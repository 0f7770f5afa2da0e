//! Holds policy rollout promotions during change-freeze windows, and keeps each rollout's last steps.
//!
//! Configuration:
//!
//! ```json
//! {"freezes": [{"from": "2026-12-20T00:00:00Z", "until": "2027-01-04T00:00:00Z",
//!               "reason": "year-end change freeze", "policies": ["baseline"]}]}
//! ```
//!
//! - `decide-promotion`: hold while the server's time is inside a freeze (`from` included, `until` not)
//!   that applies to the policy (`policies`: policy names; absent: every policy); abstain otherwise. The
//!   reason names the freeze and when it ends. A stage already entered keeps running: a freeze stops
//!   only the spread, and an admin can still promote by hand.
//! - `on-rollout`: keep the policy's last [`HISTORY`] steps in kv under `steps:<policy id>` (JSON, newest
//!   last), for a later decision or for an admin to read with the plugin's kv.

use chrono::{DateTime, Utc};
use mdm_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

/// Steps kept per policy.
pub const HISTORY: usize = 20;

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub freezes: Vec<Freeze>,
}

/// A window in which no rollout is promoted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The policies (by name) it applies to; none: every policy.
    #[serde(default)]
    pub policies: Option<Vec<String>>,
}

/// One step of a rollout, as kept in kv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub action: String,
    pub version: String,
    pub stage: String,
    pub state: String,
    pub reason: Option<String>,
    pub actor: String,
    pub at_unix_ms: i64,
}

struct ChangeFreeze;

impl Plugin for ChangeFreeze {
    fn decide_promotion(request: PromotionRequest) -> PluginResult<PromotionDecision> {
        let config: Config = config::get()?;
        let decision = decide(&config, &request.rollout.policy_name, request.now_unix_ms);
        if let PromotionDecision::Hold(reason) = &decision {
            info!("{reason}"; policy = request.rollout.policy_name, version = request.rollout.version);
        }
        Ok(decision)
    }

    fn on_rollout(event: RolloutEvent) -> PluginResult<Vec<Action>> {
        let key = format!("steps:{}", event.rollout.policy_id);
        let mut steps: Vec<Step> = kv::get_json(&key)?.unwrap_or_default();
        remember(&mut steps, step_of(&event));
        kv::set_json(&key, &steps)?;
        Ok(Vec::new())
    }

    fn validate_config(config: &str) -> PluginResult<()> {
        validate(config).map_err(PluginError::from)
    }
}

export_plugin!(ChangeFreeze);

/// Hold while a freeze that applies to `policy` covers `now_unix_ms`.
pub fn decide(config: &Config, policy: &str, now_unix_ms: i64) -> PromotionDecision {
    let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_unix_ms) else {
        return PromotionDecision::Hold(format!("the server's time {now_unix_ms} is out of range"));
    };
    let applies = |f: &Freeze| {
        f.policies
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == policy))
    };
    match config
        .freezes
        .iter()
        .find(|f| applies(f) && f.from <= now && now < f.until)
    {
        Some(f) => PromotionDecision::Hold(format!(
            "{} until {}",
            f.reason.as_deref().unwrap_or("change freeze"),
            f.until.to_rfc3339()
        )),
        None => PromotionDecision::Abstain,
    }
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::Pilot => "pilot",
        Stage::Canary => "canary",
        Stage::Full => "full",
    }
}

fn step_of(e: &RolloutEvent) -> Step {
    Step {
        action: e.action.clone(),
        version: e.rollout.version.clone(),
        stage: stage_name(e.rollout.stage).into(),
        state: e.rollout.state.clone(),
        reason: e.reason.clone(),
        actor: e.actor.clone(),
        at_unix_ms: e.at_unix_ms,
    }
}

/// Append a step, keeping the newest [`HISTORY`].
pub fn remember(steps: &mut Vec<Step>, step: Step) {
    steps.push(step);
    let over = steps.len().saturating_sub(HISTORY);
    steps.drain(..over);
}

/// Checks a configuration: an object of freezes whose `from` is before their `until`.
pub fn validate(text: &str) -> Result<(), String> {
    if !text.trim_start().starts_with('{') {
        return Err("configuration must be a JSON object".into());
    }
    let config: Config =
        config::parse(text).map_err(|e| format!("configuration does not read: {e}"))?;
    for (i, f) in config.freezes.iter().enumerate() {
        if f.from >= f.until {
            return Err(format!("freezes[{i}]: from must be before until"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdm_plugin_sdk::mock::{self, fixtures};
    use mdm_plugin_sdk::serde_json::json;

    const DEC_20: i64 = 1_797_724_800_000; // 2026-12-20T00:00:00Z
    const JAN_4: i64 = 1_799_020_800_000; // 2027-01-04T00:00:00Z

    fn config(policies: Option<&[&str]>) -> mdm_plugin_sdk::serde_json::Value {
        json!({"freezes": [{"from": "2026-12-20T00:00:00Z", "until": "2027-01-04T00:00:00Z",
            "reason": "year-end freeze", "policies": policies}]})
    }

    #[test]
    fn a_freeze_holds_from_its_start_up_to_but_not_at_its_end() {
        mock::reset();
        mock::set_config(&config(None));
        let ask = |now| {
            let canary = fixtures::rollout(1, "2026.05", Stage::Canary);
            <ChangeFreeze as Plugin>::decide_promotion(fixtures::promotion(canary, now)).unwrap()
        };
        assert_eq!(ask(DEC_20 - 1), PromotionDecision::Abstain);
        assert_eq!(
            ask(DEC_20),
            PromotionDecision::Hold("year-end freeze until 2027-01-04T00:00:00+00:00".into())
        );
        assert!(matches!(ask(JAN_4 - 1), PromotionDecision::Hold(_)));
        assert_eq!(ask(JAN_4), PromotionDecision::Abstain);
    }

    #[test]
    fn a_freeze_for_named_policies_leaves_the_others_alone() {
        mock::reset();
        mock::set_config(&config(Some(&["payroll-macs"])));
        let baseline = fixtures::rollout(1, "2026.05", Stage::Pilot);
        let asked = fixtures::promotion(baseline, DEC_20 + 1);
        assert_eq!(
            <ChangeFreeze as Plugin>::decide_promotion(asked).unwrap(),
            PromotionDecision::Abstain
        );
        let config: Config = config::parse(&config(Some(&["baseline"])).to_string()).unwrap();
        assert!(matches!(
            decide(&config, "baseline", DEC_20 + 1),
            PromotionDecision::Hold(_)
        ));
    }

    #[test]
    fn steps_are_kept_per_policy_newest_last_and_bounded() {
        mock::reset();
        let rollout = fixtures::rollout(7, "2026.05", Stage::Pilot);
        for i in 0..(HISTORY + 3) {
            let mut step = fixtures::rollout_step("policy.rollout_held", rollout.clone());
            step.at_unix_ms = i as i64;
            assert_eq!(<ChangeFreeze as Plugin>::on_rollout(step).unwrap(), []);
        }
        let kept: Vec<Step> = kv::get_json("steps:7").unwrap().unwrap();
        assert_eq!(kept.len(), HISTORY);
        assert_eq!(kept[0].at_unix_ms, 3);
        assert_eq!(kept[HISTORY - 1].at_unix_ms, (HISTORY + 2) as i64);
        assert_eq!(kept[0].stage, "pilot");
        assert_eq!(kv::get("steps:8").unwrap(), None);
    }

    #[test]
    fn configurations_are_checked() {
        assert!(validate(&config(None).to_string()).is_ok());
        assert!(validate(r#"{"freezes": []}"#).is_ok());
        let backwards =
            r#"{"freezes": [{"from": "2027-01-04T00:00:00Z", "until": "2026-12-20T00:00:00Z"}]}"#;
        assert!(validate(backwards).unwrap_err().contains("freezes[0]"));
        assert!(validate(r#"{"freezes": [{"from": "soon", "until": "later"}]}"#).is_err());
        assert!(validate(r#"{"freeze": []}"#).is_err());
        assert!(validate("[]").is_err());
    }
}
