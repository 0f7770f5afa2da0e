//! Which platforms each configuration-profile payload type installs on, generated into the server's
//! `policies/profile_platforms.json` from Apple's profile schemas
//! (`../shared/spec/apple-device-management/mdm/profiles/`, skipped when absent): a platform counts when
//! the payload's `supportedOS` names it with an `introduced` other than `n/a`. To regenerate after the
//! spec changes:
//!
//! ```sh
//! MDM_REGENERATE_PROFILE_PLATFORMS=1 cargo test --workspace --test profile_platforms
//! ```

use mdm_tests::shared::{check_generated, shared_path, yaml_files};
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SPEC: &str = "spec/apple-device-management/mdm/profiles";
const REGENERATE: &str = "MDM_REGENERATE_PROFILE_PLATFORMS";

fn committed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/policies/profile_platforms.json")
}

#[test]
fn the_committed_platforms_are_generated_from_the_spec() {
    let Some(spec) = shared_path(SPEC) else {
        return;
    };
    let how = "cargo test --workspace --test profile_platforms";
    check_generated(&committed_path(), &generate(&spec), REGENERATE, how);
}

fn generate(spec: &Path) -> String {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in yaml_files(spec) {
        // Only the head (title, description, payload) is read: some files' key lists nest deeper than
        // the YAML reader allows.
        let text = std::fs::read_to_string(&file).unwrap();
        let head = text.split("\npayloadkeys:").next().unwrap_or_default();
        let doc: Yaml =
            serde_yaml::from_str(head).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let payload = &doc["payload"];
        let (Some(payload_type), Some(supported)) = (
            payload["payloadtype"].as_str(),
            payload["supportedOS"].as_mapping(),
        ) else {
            continue;
        };
        let platforms = supported
            .iter()
            .filter(|(_, os)| os["introduced"].as_str() != Some("n/a"))
            .filter_map(|(name, _)| name.as_str().map(str::to_string))
            .collect();
        out.insert(payload_type.to_string(), platforms);
    }
    assert!(
        out.contains_key("com.apple.wifi.managed"),
        "{}: no payload types read",
        spec.display()
    );
    serde_json::to_string_pretty(&out).unwrap() + "\n"
}

#[test]
fn every_payload_type_installs_somewhere_known() {
    let text = std::fs::read_to_string(committed_path()).unwrap();
    let table: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).unwrap();
    let known = ["iOS", "macOS", "tvOS", "visionOS", "watchOS"];
    for (payload_type, platforms) in &table {
        assert!(
            platforms.iter().all(|p| known.contains(&p.as_str())),
            "{payload_type}: {platforms:?}"
        );
    }
    assert_eq!(
        table["com.apple.wifi.managed"], known,
        "Wi-Fi installs everywhere"
    );
}
