//! The harness plugin authors use (`mdm_server::plugins::testing`): a built component against an in-memory
//! host, no server. Shown on the example plugins, and on a component built against the frozen 0.1 WIT.

use mdm_server::plugins::event::{
    ChannelKind, CheckinKind, CommandSpec, CommandStatus, Enrollment, SetAssignment,
};
use mdm_server::plugins::testing::{events, Harness, HarnessError};
use mdm_server::plugins::{Action, Decision, DeviceInfo, Manifest};
use mdm_tests::plugins;
use serde_json::json;

async fn load(package: &str, config: serde_json::Value) -> Harness {
    let manifest = plugins::workspace_root()
        .join("plugins")
        .join(package)
        .join("plugin.json");
    Harness::load(plugins::build(package), manifest, config)
        .await
        .unwrap_or_else(|e| panic!("{package}: {e}"))
}

#[tokio::test]
async fn serial_allowlist_decides_in_the_harness() {
    let h = load("serial-allowlist", json!({"prefixes": ["C02", "F4"]})).await;
    let allow = h
        .decide_enrollment(events::enrollment_request("U1", Some("C02XYZ")))
        .await
        .unwrap();
    assert!(matches!(allow, Decision::Allow), "{allow:?}");
    let deny = h
        .decide_enrollment(events::enrollment_request("U2", Some("ZZZ")))
        .await
        .unwrap();
    assert!(
        matches!(&deny, Decision::Deny(r) if r.contains("ZZZ")),
        "{deny:?}"
    );
    let none = h
        .decide_enrollment(events::enrollment_request("U3", None))
        .await
        .unwrap();
    assert!(matches!(none, Decision::Deny(_)));
    assert!(h.validate_config(&json!({"prefixes": [""]})).await.is_err());
    assert!(h.validate_config(&json!({"prefixes": ["A"]})).await.is_ok());
}

#[tokio::test]
async fn enroll_baseline_claims_once_through_the_in_memory_kv() {
    let h = load("enroll-baseline", json!({"profiles": []})).await;
    let first = h
        .on_checkin(events::checkin(
            CheckinKind::TokenUpdate,
            events::device_enrollment("D1"),
        ))
        .await
        .unwrap();
    let types: Vec<String> = first
        .iter()
        .filter_map(|a| match a {
            Action::Enqueue(e) => match &e.command {
                CommandSpec::TypedJson(j) => serde_json::from_str::<serde_json::Value>(j).ok()?
                    ["RequestType"]
                    .as_str()
                    .map(str::to_string),
                CommandSpec::RawPlist(_) => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(types, ["DeviceInformation", "SecurityInfo"]);
    assert!(
        h.kv_get("baseline:D1").await.is_some(),
        "claimed in KV: {:?}",
        h.kv_keys()
    );
    // A repeat (another replica, a retry) finds the claim taken.
    let again = h
        .on_checkin(events::checkin(
            CheckinKind::TokenUpdate,
            events::device_enrollment("D1"),
        ))
        .await
        .unwrap();
    assert!(again.is_empty());
    // Authenticate forgets it.
    h.on_checkin(events::checkin(
        CheckinKind::Authenticate,
        events::device_enrollment("D1"),
    ))
    .await
    .unwrap();
    assert!(h.kv_get("baseline:D1").await.is_none());
}

#[tokio::test]
async fn inventory_turns_results_into_attributes_in_the_harness() {
    let h = load("inventory", json!({"attribute_prefix": "inv."})).await;
    let actions = h
        .on_command_result(events::command_result(
            events::device_enrollment("D1"),
            "DeviceInformation",
            CommandStatus::Acknowledged,
            &json!({"QueryResponses": {"OSVersion": "17.5"}}),
        ))
        .await
        .unwrap();
    let set: Vec<(String, String)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::SetAttribute(s) => Some((s.key.clone(), s.value.clone())),
            _ => None,
        })
        .collect();
    assert!(
        set.contains(&("inv.os_version".into(), "17.5".into())),
        "{set:?}"
    );
    assert!(
        !h.logs().iter().any(|l| l.level == "error"),
        "{:?}",
        h.logs()
    );
}

/// Every call gets an instance as new as the first: the pool resets a reused slot's memory in place, and
/// neither initialised data nor zeroed memory (past what it keeps resident) may carry over.
#[tokio::test]
async fn a_reused_instance_slot_starts_as_new() {
    let manifest = plugins::workspace_root().join("tests/plugins/hostile/plugin.json");
    let h = Harness::load(
        plugins::build("hostile-plugin"),
        manifest,
        json!({"mode": "remember"}),
    )
    .await
    .unwrap();
    for call in 0..4 {
        let actions = h
            .on_checkin(events::checkin(
                CheckinKind::TokenUpdate,
                events::device_enrollment("D1"),
            ))
            .await
            .unwrap();
        let seen: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SetAttribute(s) if s.key == "instance" => Some(s.value.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(seen, ["fresh"], "call {call}");
    }
}

#[tokio::test]
async fn compliance_assigns_while_the_passcode_is_not_compliant() {
    let h = load("compliance", json!({"remediation_set": "passcode-fix"})).await;
    assert_eq!(h.wit_version(), mdm_server::plugins::WIT_VERSION);
    let turned = |old: bool, new: bool| {
        events::ddm_status(
            events::device_enrollment("D1"),
            vec![events::item_turned(
                "passcode.is-compliant",
                Some(json!(old)),
                json!(new),
            )],
        )
    };
    let set = |enrollment_id: &str| SetAssignment {
        enrollment_id: enrollment_id.into(),
        set_name: "passcode-fix".into(),
    };

    let false_now = h.on_ddm_status(turned(true, false)).await.unwrap();
    assert_eq!(false_now, [Action::AssignSet(set("D1"))]);
    let true_again = h.on_ddm_status(turned(false, true)).await.unwrap();
    assert_eq!(true_again, [Action::UnassignSet(set("D1"))]);

    // The item did not change: another item did, or nothing at all.
    let other = events::ddm_status(
        events::device_enrollment("D1"),
        vec![events::item_turned(
            "passcode.is-present",
            Some(json!(false)),
            json!(true),
        )],
    );
    assert!(h.on_ddm_status(other).await.unwrap().is_empty());
    assert!(h
        .on_ddm_status(events::ddm_status(
            events::device_enrollment("D1"),
            Vec::new()
        ))
        .await
        .unwrap()
        .is_empty());

    // The channel that reported gets the set: a user channel's own id.
    let mut user = turned(true, false);
    user.enrollment = Enrollment {
        id: "D1:501".into(),
        device_id: "D1".into(),
        kind: ChannelKind::User,
        user_id: Some("501".into()),
        user_short_name: None,
    };
    assert_eq!(
        h.on_ddm_status(user).await.unwrap(),
        [Action::AssignSet(set("D1:501"))]
    );
    assert!(h
        .validate_config(&json!({"remediation_set": ""}))
        .await
        .is_err());
    // A plugin that does not provide tokens answers "not mine".
    let asked = events::token_request(events::device_enrollment("D1"), "com.apple.maid");
    assert_eq!(h.provide_token(asked).await.unwrap(), None);
}

async fn fixture(config: serde_json::Value) -> Harness {
    let manifest = plugins::workspace_root().join("tests/plugins/v0_1-fixture/plugin.json");
    Harness::load(plugins::build("v0_1-fixture"), manifest, config)
        .await
        .unwrap_or_else(|e| panic!("the 0.1 fixture: {e}"))
}

#[tokio::test]
async fn a_component_built_against_0_1_runs_with_its_imports() {
    let h = fixture(json!({"attribute": "v01", "deny_prefix": "BAD"})).await;
    assert_eq!(h.wit_version(), "0.1.0");
    h.add_device(DeviceInfo {
        id: "D1".into(),
        facts: events::facts(Some("C02TEST")),
        enabled: true,
        channels: vec![
            events::device_enrollment("D1"),
            events::user_enrollment("D1", "501"),
        ],
        attributes: Vec::new(),
        last_seen_unix_ms: 0,
    });
    for n in 1..=2 {
        let mut event = events::checkin(CheckinKind::TokenUpdate, events::device_enrollment("D1"));
        event.token_update_count = Some(n);
        let actions = h.on_checkin(event).await.unwrap();
        let [Action::SetAttribute(a)] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        // config named the attribute; kv counted; inventory found two channels.
        assert_eq!(
            (a.key.as_str(), a.value.as_str()),
            ("v01", &*format!("token-update:{n}:2"))
        );
    }
    assert_eq!(h.kv_get("seen:D1").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(h.counter("checkins"), 2);
    assert!(
        h.logs().iter().any(|l| l.message == "check-in counted"),
        "{:?}",
        h.logs()
    );
    let result = h
        .on_command_result(events::command_result(
            events::device_enrollment("D1"),
            "ProfileList",
            CommandStatus::NotNow,
            &json!({}),
        ))
        .await
        .unwrap();
    assert!(
        matches!(result.as_slice(), [Action::SetAttribute(a)] if a.key == "v01.result" && a.value == "ProfileList:not-now"),
        "{result:?}"
    );
    let denied = h
        .decide_enrollment(events::enrollment_request("D2", Some("BAD123")))
        .await
        .unwrap();
    assert!(matches!(denied, Decision::Deny(_)), "{denied:?}");
    let other = h
        .decide_enrollment(events::enrollment_request("D3", Some("C02")))
        .await
        .unwrap();
    assert_eq!(other, Decision::Abstain);
    assert!(h.validate_config(&json!([])).await.is_err());
}

#[tokio::test]
async fn a_0_1_component_is_refused_hooks_it_does_not_have() {
    let wasm = std::fs::read(plugins::build("v0_1-fixture")).unwrap();
    let mut manifest = plugins::manifest("v0_1-fixture");
    manifest["hooks"] = json!(["on-checkin", "on-ddm-status"]);
    let manifest = Manifest::parse(&manifest.to_string()).unwrap();
    match Harness::from_parts(&wasm, manifest, json!({})).await {
        Err(HarnessError::Refused(why)) => {
            assert_eq!(why.len(), 1, "{why:?}");
            assert!(why[0].contains("on-ddm-status"), "{why:?}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a 0.1 component was accepted with on-ddm-status"),
    }
}

#[tokio::test]
async fn change_freeze_holds_in_the_harness_and_keeps_the_steps_it_hears() {
    use mdm_server::plugins::event::{PromotionDecision, Stage};
    // 2026-12-20T00:00:00Z, the freeze's start.
    let start = 1_797_724_800_000;
    let config = json!({"freezes": [{"from": "2026-12-20T00:00:00Z",
        "until": "2027-01-04T00:00:00Z", "reason": "year-end freeze"}]});
    let h = load("change-freeze", config).await;
    assert_eq!(h.wit_version(), mdm_server::plugins::WIT_VERSION);
    let canary = events::rollout(3, "2026.05", Stage::Canary);
    let asked = |now| events::promotion(canary.clone(), now);
    assert_eq!(
        h.decide_promotion(asked(start - 1)).await.unwrap(),
        PromotionDecision::Abstain
    );
    let held = h.decide_promotion(asked(start)).await.unwrap();
    assert!(
        matches!(&held, PromotionDecision::Hold(r) if r.starts_with("year-end freeze until 2027-01-04")),
        "{held:?}"
    );
    let step = events::rollout_step("policy.rollout_promoted", canary.clone());
    assert_eq!(h.on_rollout(step).await.unwrap(), []);
    let kept: serde_json::Value =
        serde_json::from_slice(&h.kv_get("steps:3").await.expect("steps kept")).unwrap();
    assert_eq!(kept[0]["action"], "policy.rollout_promoted");
    assert_eq!(kept[0]["stage"], "canary");
}

#[tokio::test]
async fn a_component_built_against_0_2_still_runs_beside_0_3_ones() {
    let manifest = plugins::workspace_root().join("tests/plugins/hostile/plugin.json");
    let h = Harness::load(
        plugins::build("hostile-plugin"),
        manifest,
        json!({"mode": "tag"}),
    )
    .await
    .unwrap();
    assert_eq!(h.wit_version(), "0.2.0");
    let a = h
        .on_checkin(events::checkin(
            CheckinKind::TokenUpdate,
            events::device_enrollment("U1"),
        ))
        .await
        .unwrap();
    assert!(
        matches!(&a[..], [Action::SetAttribute(s)] if s.key == "hostile" && s.device_id == "U1"),
        "{a:?}"
    );
}
