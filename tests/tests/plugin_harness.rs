//! The harness plugin authors use (`mdm_server::plugins::testing`): a built component against an in-memory
//! host, no server. Shown on the example plugins.

use mdm_server::plugins::event::{CheckinKind, CommandSpec, CommandStatus};
use mdm_server::plugins::testing::{events, Harness};
use mdm_server::plugins::{Action, Decision};
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
        .on_checkin(events::checkin("D1", CheckinKind::TokenUpdate, Some(1)))
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
        .on_checkin(events::checkin("D1", CheckinKind::TokenUpdate, Some(1)))
        .await
        .unwrap();
    assert!(again.is_empty());
    // Authenticate forgets it.
    h.on_checkin(events::checkin("D1", CheckinKind::Authenticate, None))
        .await
        .unwrap();
    assert!(h.kv_get("baseline:D1").await.is_none());
}

#[tokio::test]
async fn inventory_turns_results_into_attributes_in_the_harness() {
    let h = load("inventory", json!({"attribute_prefix": "inv."})).await;
    let mut q = plist::Dictionary::new();
    q.insert("OSVersion".into(), "17.5".into());
    let mut report = plist::Dictionary::new();
    report.insert("QueryResponses".into(), plist::Value::Dictionary(q));
    let actions = h
        .on_command_result(events::command_result(
            "D1",
            "DeviceInformation",
            CommandStatus::Acknowledged,
            &plist::Value::Dictionary(report),
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
            .on_checkin(events::checkin("D1", CheckinKind::TokenUpdate, Some(1)))
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
