//! `mdm-server plugin new NAME`: a plugin crate that builds and passes its tests as it is — manifest,
//! hooks on the SDK, native tests — written from the templates in `server/templates/plugin-new/`.

use askama::Template;
use std::path::{Path, PathBuf};

/// Where the new crate takes the SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A directory holding the SDK's `Cargo.toml`: `plugin-sdk/` of a checkout, or an unpacked
    /// `mdm-plugin-sdk-<version>.crate`.
    Path(PathBuf),
    /// A git repository holding the SDK (`package = "mdm-plugin-sdk"`).
    Git(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("a plugin name is 1 to 64 of a-z, 0-9 and '-', starting with a letter: {0:?} is not")]
    Name(String),
    #[error("{0} exists and is not empty")]
    Exists(PathBuf),
    #[error("no SDK at {0} (expected its Cargo.toml there)")]
    NoSdk(PathBuf),
    #[error("the SDK's path or URL cannot be written into Cargo.toml: {0:?}")]
    SdkText(String),
    #[error("writing {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("rendering {0}: {1}")]
    Render(&'static str, askama::Error),
}

#[derive(Template)]
#[template(path = "plugin-new/Cargo.toml.in", escape = "none")]
struct CargoToml<'a> {
    name: &'a str,
    sdk_dependency: &'a str,
}

#[derive(Template)]
#[template(path = "plugin-new/plugin.json.in", escape = "none")]
struct Manifest<'a> {
    name: &'a str,
}

#[derive(Template)]
#[template(path = "plugin-new/lib.rs.in", escape = "none")]
struct Lib<'a> {
    name: &'a str,
    type_name: &'a str,
}

#[derive(Template)]
#[template(path = "plugin-new/README.md.in", escape = "none")]
struct Readme<'a> {
    name: &'a str,
    crate_name: &'a str,
}

#[derive(Template)]
#[template(path = "plugin-new/gitignore.in", escape = "none")]
struct GitIgnore;

/// A plugin id is also the crate's name: the manifest's id rule, which Cargo accepts too.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_string()))
    }
}

/// `serial-allowlist` -> `SerialAllowlist`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The dependency's inline table, its path absolute so the crate can move.
fn sdk_dependency(sdk: &SdkSource) -> Result<String, ScaffoldError> {
    let quoted = |s: &str| {
        if s.contains(['"', '\\', '\n']) {
            Err(ScaffoldError::SdkText(s.to_string()))
        } else {
            Ok(format!("\"{s}\""))
        }
    };
    match sdk {
        SdkSource::Path(p) => {
            if !p.join("Cargo.toml").is_file() {
                return Err(ScaffoldError::NoSdk(p.clone()));
            }
            let abs = p
                .canonicalize()
                .map_err(|e| ScaffoldError::Io(p.clone(), e))?;
            Ok(format!("path = {}", quoted(&abs.to_string_lossy())?))
        }
        SdkSource::Git(url) => Ok(format!(
            "git = {}, package = \"mdm-plugin-sdk\"",
            quoted(url)?
        )),
    }
}

/// Write the crate `name` into `dir` (created; it must not hold anything yet). Returns the files
/// written.
pub fn scaffold(name: &str, dir: &Path, sdk: &SdkSource) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    let sdk_dependency = sdk_dependency(sdk)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| ScaffoldError::Io(dir.to_path_buf(), e))?
            .next()
            .is_some()
    {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let type_name = type_name(name);
    let crate_name = name.replace('-', "_");
    let render = |what: &'static str, t: &dyn askama::DynTemplate| {
        t.dyn_render().map_err(|e| ScaffoldError::Render(what, e))
    };
    let files = [
        (
            "Cargo.toml",
            render(
                "Cargo.toml",
                &CargoToml {
                    name,
                    sdk_dependency: &sdk_dependency,
                },
            )?,
        ),
        ("plugin.json", render("plugin.json", &Manifest { name })?),
        (
            "src/lib.rs",
            render(
                "lib.rs",
                &Lib {
                    name,
                    type_name: &type_name,
                },
            )?,
        ),
        (
            "README.md",
            render(
                "README.md",
                &Readme {
                    name,
                    crate_name: &crate_name,
                },
            )?,
        ),
        (".gitignore", render(".gitignore", &GitIgnore)?),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ScaffoldError::Io(parent.into(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| ScaffoldError::Io(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdk() -> SdkSource {
        SdkSource::Path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"))
    }

    #[test]
    fn names_are_plugin_ids() {
        for good in ["os-check", "a", "p2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "OS", "2p", "-p", "a_b", "a b", "../x", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("os-check"), "OsCheck");
        assert_eq!(type_name("a--b"), "AB");
    }

    #[test]
    fn a_crate_is_written_whole_with_its_name_and_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("os-check");
        let files = scaffold("os-check", &root, &sdk()).unwrap();
        assert_eq!(files.len(), 5);
        let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let parsed: toml::Value = toml::from_str(&cargo).unwrap();
        assert_eq!(parsed["package"]["name"].as_str(), Some("os-check"));
        let path = parsed["dependencies"]["mdm-plugin-sdk"]["path"]
            .as_str()
            .unwrap();
        assert!(Path::new(path).is_absolute() && Path::new(path).join("Cargo.toml").is_file());
        let manifest = std::fs::read_to_string(root.join("plugin.json")).unwrap();
        let manifest = crate::plugins::Manifest::parse(&manifest).expect("the manifest loads");
        assert_eq!(manifest.id, "os-check");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("struct OsCheck;") && lib.contains("export_plugin!(OsCheck);"));
        assert!(std::fs::read_to_string(root.join("README.md"))
            .unwrap()
            .contains("release/os_check.wasm"));
    }

    #[test]
    fn it_refuses_a_bad_name_a_used_directory_or_a_missing_sdk_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let used = dir.path().join("used");
        std::fs::create_dir(&used).unwrap();
        std::fs::write(used.join("keep"), "mine").unwrap();
        assert!(matches!(
            scaffold("p", &used, &sdk()),
            Err(ScaffoldError::Exists(_))
        ));
        assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1);
        let fresh = dir.path().join("fresh");
        assert!(matches!(
            scaffold("Bad", &fresh, &sdk()),
            Err(ScaffoldError::Name(_))
        ));
        let nowhere = SdkSource::Path(dir.path().join("no-sdk"));
        assert!(matches!(
            scaffold("p", &fresh, &nowhere),
            Err(ScaffoldError::NoSdk(_))
        ));
        let quote = SdkSource::Git("https://x/\"y".into());
        assert!(matches!(
            scaffold("p", &fresh, &quote),
            Err(ScaffoldError::SdkText(_))
        ));
        assert!(!fresh.exists());
        let git = SdkSource::Git("https://git.example.com/mdm-server.git".into());
        scaffold("p", &fresh, &git).unwrap();
        let cargo = std::fs::read_to_string(fresh.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(
            r#"mdm-plugin-sdk = { git = "https://git.example.com/mdm-server.git", package = "mdm-plugin-sdk" }"#
        ));
    }
}
