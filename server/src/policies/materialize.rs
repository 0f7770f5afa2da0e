//! A version's declarations as devices get them. Two versions of a policy are on devices at once during a
//! rollout, and a declaration's Identifier is what a device knows it by, so each version's declarations
//! are stored under their own identifiers: the bundle's Identifier, `@`, and a digest of the policy and
//! the declaration's content. A declaration the same in two versions keeps its identifier (the device
//! keeps it untouched); one that changed is a new declaration to the device, which replaces the old one.
//! References between a bundle's declarations (an activation's configurations, a configuration's asset
//! references, as Apple's schemas mark them) are renamed with what they name, so a declaration's digest
//! covers what it refers to. The version's set, `mdm.policy.<policy>.<version>`, holds them all.
//!
//! Pure: the same bundle always gives the same declarations.

use super::bundle::sha256_hex;
use crate::ddm::POLICY_SET_PREFIX;
use crate::protocol::ddm::{references_mut, Declaration};
use std::collections::{BTreeMap, BTreeSet};

/// Hex characters of the digest appended to a policy's declaration identifiers.
pub const DIGEST_CHARS: usize = 10;

/// The set holding a version's declarations.
pub fn set_name(policy_id: i64, version: &str) -> String {
    format!("{POLICY_SET_PREFIX}{policy_id}.{version}")
}

/// The prefix of every set of one policy's versions.
pub fn set_prefix(policy_id: i64) -> String {
    format!("{POLICY_SET_PREFIX}{policy_id}.")
}

/// Declarations of a bundle referring to one another in a circle: no order of digests exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("declarations refer to one another in a circle: {}", .0.join(" -> "))]
pub struct ReferenceCycle(pub Vec<String>);

/// A bundle declaration as devices get it.
#[derive(Debug, Clone, PartialEq)]
pub struct Materialized {
    /// The Identifier in the bundle.
    pub original: String,
    pub declaration: Declaration,
}

/// Which of the bundle's own identifiers each declaration refers to.
fn references(declarations: &[Declaration]) -> BTreeMap<&str, BTreeSet<String>> {
    let ours: BTreeSet<&str> = declarations.iter().map(|d| d.identifier.as_str()).collect();
    declarations
        .iter()
        .map(|d| {
            let mut payload = serde_json::Value::Object(d.payload.clone());
            let mut found = BTreeSet::new();
            references_mut(&d.declaration_type, &mut payload, &mut |s: &mut String| {
                if ours.contains(s.as_str()) {
                    found.insert(s.clone());
                }
            });
            (d.identifier.as_str(), found)
        })
        .collect()
}

/// The bundle's declarations ordered so each comes after those it refers to.
fn ordered(declarations: &[Declaration]) -> Result<Vec<&Declaration>, ReferenceCycle> {
    let refs = references(declarations);
    let by_id: BTreeMap<&str, &Declaration> = declarations
        .iter()
        .map(|d| (d.identifier.as_str(), d))
        .collect();
    let mut out: Vec<&Declaration> = Vec::with_capacity(declarations.len());
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    // Depth-first, with the path walked so far to name a circle.
    fn visit<'a>(
        id: &'a str,
        refs: &BTreeMap<&'a str, BTreeSet<String>>,
        by_id: &BTreeMap<&'a str, &'a Declaration>,
        path: &mut Vec<&'a str>,
        placed: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a Declaration>,
    ) -> Result<(), ReferenceCycle> {
        if placed.contains(id) {
            return Ok(());
        }
        if let Some(at) = path.iter().position(|p| *p == id) {
            let mut circle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
            circle.push(id.to_string());
            return Err(ReferenceCycle(circle));
        }
        path.push(id);
        for r in &refs[id] {
            // Only the bundle's own identifiers are references here: each is a key of `by_id`.
            if let Some((&r, _)) = by_id.get_key_value(r.as_str()) {
                visit(r, refs, by_id, path, placed, out)?;
            }
        }
        path.pop();
        placed.insert(id);
        out.push(by_id[id]);
        Ok(())
    }
    for d in declarations {
        visit(
            &d.identifier,
            &refs,
            &by_id,
            &mut Vec::new(),
            &mut placed,
            &mut out,
        )?;
    }
    Ok(out)
}

/// Whether a bundle's declarations can be materialized (no circle of references): checked at upload.
pub fn check_references(declarations: &[Declaration]) -> Result<(), ReferenceCycle> {
    ordered(declarations).map(|_| ())
}

/// A version's declarations as devices get them, in the bundle's order.
pub fn declarations(
    policy_id: i64,
    bundle: &[Declaration],
) -> Result<Vec<Materialized>, ReferenceCycle> {
    let mut renamed: BTreeMap<String, Declaration> = BTreeMap::new();
    for d in ordered(bundle)? {
        let mut payload = serde_json::Value::Object(d.payload.clone());
        references_mut(&d.declaration_type, &mut payload, &mut |s: &mut String| {
            if let Some(r) = renamed.get(s.as_str()) {
                *s = r.identifier.clone();
            }
        });
        let serde_json::Value::Object(payload) = payload else {
            unreachable!("a payload stays an object when strings in it are renamed")
        };
        // The digest covers the content with its references renamed, so a change to anything a
        // declaration refers to renames it too.
        let content = d.renamed(d.identifier.clone(), payload.clone());
        let digest = sha256_hex(
            format!(
                "mdm-policy-declaration/1\n{policy_id}\n{}",
                content.server_token
            )
            .as_bytes(),
        );
        let identifier = format!("{}@{}", d.identifier, &digest[..DIGEST_CHARS]);
        renamed.insert(d.identifier.clone(), d.renamed(identifier, payload));
    }
    Ok(bundle
        .iter()
        .map(|d| Materialized {
            original: d.identifier.clone(),
            declaration: renamed[&d.identifier].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ddm::check_identifier;
    use serde_json::json;

    fn decl(v: serde_json::Value) -> Declaration {
        Declaration::parse(v.to_string().as_bytes()).expect("a valid declaration")
    }

    fn passcode(min: u64) -> Declaration {
        decl(
            json!({"Type": "com.apple.configuration.passcode.settings", "Identifier": "com.example.passcode",
            "Payload": {"MinimumLength": min}}),
        )
    }

    fn activation(configs: &[&str]) -> Declaration {
        decl(
            json!({"Type": "com.apple.activation.simple", "Identifier": "com.example.activation",
            "Payload": {"StandardConfigurations": configs}}),
        )
    }

    fn by_original(m: &[Materialized], original: &str) -> Declaration {
        m.iter()
            .find(|x| x.original == original)
            .unwrap()
            .declaration
            .clone()
    }

    #[test]
    fn identifiers_carry_a_digest_of_policy_and_content_and_references_follow() {
        let v1 = declarations(7, &[activation(&["com.example.passcode"]), passcode(6)]).unwrap();
        let p1 = by_original(&v1, "com.example.passcode");
        let a1 = by_original(&v1, "com.example.activation");
        assert!(p1.identifier.starts_with("com.example.passcode@"));
        assert_eq!(
            p1.identifier.len(),
            "com.example.passcode@".len() + DIGEST_CHARS
        );
        check_identifier(&p1.identifier).unwrap();
        assert_eq!(
            a1.payload["StandardConfigurations"],
            json!([p1.identifier.clone()]),
            "the activation names the renamed configuration"
        );
        assert_eq!(p1.payload, passcode(6).payload, "content is kept");

        // The same content again: the same identifiers (a device keeps what it has).
        let again = declarations(7, &[passcode(6), activation(&["com.example.passcode"])]).unwrap();
        assert_eq!(by_original(&again, "com.example.passcode"), p1);
        assert_eq!(by_original(&again, "com.example.activation"), a1);

        // A changed configuration is renamed, and so is the activation naming it.
        let v2 = declarations(7, &[activation(&["com.example.passcode"]), passcode(8)]).unwrap();
        assert_ne!(
            by_original(&v2, "com.example.passcode").identifier,
            p1.identifier
        );
        assert_ne!(
            by_original(&v2, "com.example.activation").identifier,
            a1.identifier
        );

        // Another policy, other identifiers.
        let other = declarations(8, &[passcode(6)]).unwrap();
        assert_ne!(other[0].declaration.identifier, p1.identifier);
    }

    #[test]
    fn a_reference_outside_the_bundle_is_left_alone() {
        let m = declarations(1, &[activation(&["com.example.elsewhere"])]).unwrap();
        assert_eq!(
            m[0].declaration.payload["StandardConfigurations"],
            json!(["com.example.elsewhere"])
        );
    }

    #[test]
    fn a_circle_of_references_is_refused() {
        // Activations cannot name activations on a device, but a hostile bundle may try: two assets
        // whose references name each other would leave no digest to compute first.
        let a = decl(
            json!({"Type": "com.apple.activation.simple", "Identifier": "a",
            "Payload": {"StandardConfigurations": ["b"]}}),
        );
        let b = decl(
            json!({"Type": "com.apple.activation.simple", "Identifier": "b",
            "Payload": {"StandardConfigurations": ["a"]}}),
        );
        let err = declarations(1, &[a.clone(), b.clone()]).unwrap_err();
        assert_eq!(err.0, vec!["a", "b", "a"]);
        assert!(check_references(&[a, b]).is_err());
    }

    #[test]
    fn set_names_are_per_policy_and_version() {
        assert_eq!(set_name(3, "2026.05"), "mdm.policy.3.2026.05");
        assert!(set_name(3, "1").starts_with(&set_prefix(3)));
        assert!(!set_name(31, "1").starts_with(&set_prefix(3)));
    }
}
