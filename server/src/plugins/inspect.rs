//! What a component imports and exports, checked at upload: the WIT version must be one we serve and have
//! every hook the manifest subscribes to, every `mdm:plugin` import must be a capability the manifest
//! declares and the admin approved, and WASI imports are limited to the inert ones (no sockets, no
//! wasi:http: outbound HTTP goes through the `http` capability).

use super::engine::Served;
use super::manifest::{Capability, Manifest};
use wasmtime::component::Component;
use wasmtime::Engine;

/// WIT package versions (major, minor) this server can run. 0.x versions are compatible within a minor.
pub const SUPPORTED_VERSIONS: &[(u64, u64)] = &[(0, 1), (0, 2), (0, 3)];

/// WASI interfaces a plugin may import: each is either inert in our sandbox (no preopened directories, no
/// environment, no arguments) or harmless (clocks, randomness, captured stdio).
const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Why a component's WIT version is not one this server runs.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the component does not export mdm:plugin/hooks: is it built with mdm-plugin-sdk?")]
    NoHooks,
    #[error("mdm:plugin/hooks has no version")]
    Unversioned,
    #[error("unreadable WIT version {0:?}")]
    Unreadable(String),
    #[error("built against mdm:plugin@{version}; this server runs {supported}")]
    Unsupported { version: String, supported: String },
    #[error("import {import} does not match the export version {version}")]
    MixedVersions { import: String, version: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The `mdm:plugin` version the component was built against.
    pub wit_version: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// `ns:pkg/iface@1.2.3` -> (`ns:pkg/iface`, Some("1.2.3")).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (name, None),
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

pub fn inspect(engine: &Engine, component: &Component) -> Result<ComponentInfo, InspectError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let wit_version = wit_version(&imports, &exports)?;
    Ok(ComponentInfo {
        wit_version,
        imports,
        exports,
    })
}

/// The `mdm:plugin` version a component was built against, if this server serves it.
pub fn wit_version(imports: &[String], exports: &[String]) -> Result<String, InspectError> {
    let hooks = exports
        .iter()
        .find(|e| split_version(e).0 == "mdm:plugin/hooks")
        .ok_or(InspectError::NoHooks)?;
    let version = split_version(hooks)
        .1
        .ok_or(InspectError::Unversioned)?
        .to_string();
    let Some((major, minor, _)) = parse_version(&version) else {
        return Err(InspectError::Unreadable(version));
    };
    if !SUPPORTED_VERSIONS.contains(&(major, minor)) {
        let supported: Vec<String> = SUPPORTED_VERSIONS
            .iter()
            .map(|(a, b)| format!("{a}.{b}.x"))
            .collect();
        return Err(InspectError::Unsupported {
            version,
            supported: supported.join(", "),
        });
    }
    for i in imports.iter().filter(|i| i.starts_with("mdm:plugin/")) {
        if split_version(i).1 != Some(version.as_str()) {
            return Err(InspectError::MixedVersions {
                import: i.clone(),
                version,
            });
        }
    }
    Ok(version)
}

/// Refuse a manifest subscribing to a hook the component's WIT version does not have (a 0.1 component has
/// no `on-ddm-status`): it could never be called.
pub fn check_hooks(info: &ComponentInfo, manifest: &Manifest) -> Result<(), Vec<String>> {
    let has = Served::of(&info.wit_version).map_or(&[][..], Served::hooks);
    let problems: Vec<String> = manifest
        .hooks
        .iter()
        .filter(|h| !has.contains(h))
        .map(|h| {
            format!(
                "subscribes to {}, which a component built against mdm:plugin@{} does not have",
                h.as_str(),
                info.wit_version
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Refuse a component whose imports go beyond what its manifest declares and the admin approved.
pub fn check_capabilities(
    info: &ComponentInfo,
    manifest: &Manifest,
    approved: &[Capability],
) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for c in &manifest.capabilities {
        if *c != Capability::Log && !approved.contains(c) {
            problems.push(format!("capability {} is not approved", c.as_str()));
        }
    }
    for import in &info.imports {
        let (name, _) = split_version(import);
        if let Some(iface) = name.strip_prefix("mdm:plugin/") {
            match Capability::for_interface(iface) {
                Ok(None) => {}
                Ok(Some(cap)) => {
                    if !manifest.has(cap) {
                        problems.push(format!(
                            "imports {name}, which needs capability {} (not in the manifest)",
                            cap.as_str()
                        ));
                    }
                }
                Err(_) => problems.push(format!("imports unknown interface {name}")),
            }
        } else if !ALLOWED_WASI.contains(&name) {
            problems.push(format!("imports {name}, which plugins may not use"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(imports: &[&str]) -> ComponentInfo {
        ComponentInfo {
            wit_version: "0.1.0".into(),
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: vec!["mdm:plugin/hooks@0.1.0".into()],
        }
    }

    fn manifest(caps: &[&str]) -> Manifest {
        Manifest::parse(
            &serde_json::json!({"id": "p", "version": "1", "hooks": ["on-checkin"], "capabilities": caps})
                .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn imports_need_declared_and_approved_capabilities() {
        let i = info(&[
            "mdm:plugin/types@0.1.0",
            "mdm:plugin/log@0.1.0",
            "mdm:plugin/kv@0.1.0",
            "wasi:io/streams@0.2.6",
        ]);
        assert!(check_capabilities(&i, &manifest(&["kv"]), &[Capability::Kv]).is_ok());
        let err = check_capabilities(&i, &manifest(&[]), &[]).unwrap_err();
        assert!(err[0].contains("kv"), "{err:?}");
        let err = check_capabilities(&i, &manifest(&["kv"]), &[]).unwrap_err();
        assert!(err[0].contains("not approved"), "{err:?}");
    }

    #[test]
    fn sockets_and_unknown_interfaces_are_refused() {
        let i = info(&["wasi:sockets/tcp@0.2.6", "mdm:plugin/root@0.1.0"]);
        let err = check_capabilities(&i, &manifest(&[]), &[]).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
    }

    #[test]
    fn only_served_wit_versions_are_accepted() {
        let v = |imports: &[&str], exports: &[&str]| {
            wit_version(
                &imports.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                &exports.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            v(&["mdm:plugin/kv@0.1.0"], &["mdm:plugin/hooks@0.1.0"]).unwrap(),
            "0.1.0"
        );
        assert_eq!(
            v(&[], &["mdm:plugin/hooks@0.1.7"]).unwrap(),
            "0.1.7",
            "patch releases are compatible"
        );
        assert_eq!(
            v(&["mdm:plugin/kv@0.2.0"], &["mdm:plugin/hooks@0.2.0"]).unwrap(),
            "0.2.0"
        );
        assert_eq!(
            v(&["mdm:plugin/rollout@0.3.1"], &["mdm:plugin/hooks@0.3.1"]).unwrap(),
            "0.3.1"
        );
        let err = v(&[], &["mdm:plugin/hooks@0.4.0"]).unwrap_err().to_string();
        assert!(
            err.contains("0.4.0") && err.contains("0.1.x, 0.2.x, 0.3.x"),
            "{err}"
        );
        assert!(v(&[], &["mdm:plugin/hooks@1.0.0"]).is_err());
        assert!(
            v(&["mdm:plugin/kv@0.2.0"], &["mdm:plugin/hooks@0.1.0"]).is_err(),
            "mixed versions"
        );
        assert!(
            v(&["mdm:plugin/kv@0.1.0"], &["mdm:plugin/hooks@0.2.0"]).is_err(),
            "mixed versions"
        );
        assert!(v(&[], &["wasi:cli/run@0.2.0"])
            .unwrap_err()
            .to_string()
            .contains("does not export"));
        assert!(v(&[], &["mdm:plugin/hooks"]).is_err());
    }

    #[test]
    fn a_hook_needs_a_wit_version_that_has_it() {
        let hooks = |hooks: &[&str]| {
            Manifest::parse(
                &serde_json::json!({"id": "p", "version": "1", "hooks": hooks}).to_string(),
            )
            .unwrap()
        };
        let v0_1 = info(&[]);
        let v0_2 = ComponentInfo {
            wit_version: "0.2.0".into(),
            imports: Vec::new(),
            exports: vec!["mdm:plugin/hooks@0.2.0".into()],
        };
        let old = hooks(&["decide-enrollment", "on-checkin", "on-command-result"]);
        assert!(check_hooks(&v0_1, &old).is_ok());
        assert!(check_hooks(&v0_2, &old).is_ok());
        let new = hooks(&["on-checkin", "on-ddm-status", "provide-token"]);
        assert!(check_hooks(&v0_2, &new).is_ok());
        let err = check_hooks(&v0_1, &new).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].contains("on-ddm-status") && err[0].contains("0.1.0"),
            "{err:?}"
        );
        assert!(err[1].contains("provide-token"), "{err:?}");
        let rollout = hooks(&["decide-promotion", "on-rollout"]);
        let err = check_hooks(&v0_2, &rollout).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].contains("decide-promotion") && err[0].contains("0.2.0"),
            "{err:?}"
        );
        let v0_3 = ComponentInfo {
            wit_version: "0.3.0".into(),
            imports: Vec::new(),
            exports: vec!["mdm:plugin/hooks@0.3.0".into()],
        };
        assert!(check_hooks(&v0_3, &rollout).is_ok());
        assert!(check_hooks(&v0_3, &new).is_ok());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("0.1.0"), Some((0, 1, 0)));
        assert_eq!(parse_version("1.2.3-rc1"), Some((1, 2, 3)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(split_version("a:b/c@1.0.0"), ("a:b/c", Some("1.0.0")));
    }
}
