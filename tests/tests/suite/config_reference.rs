//! The README's configuration table is the reference admins read: every key the server takes is in it, and
//! every key in it is one the server takes. The server's keys are found by asking it: a key it does not
//! know in a section is refused with the list of that section's keys (`ConfigError::UnknownKey`).

use mdm_server::config::{ConfigError, Section};
use mdm_server::Config;
use std::collections::BTreeSet;
use std::path::Path;

/// The keys of a section (None: `path` is a value, or a map that takes any key).
fn keys_of(path: &[&str]) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let header = if path.is_empty() {
        String::new()
    } else {
        format!("[{}]\n", path.join("."))
    };
    std::fs::write(&file, format!("{header}zz_not_a_key = 1\n")).unwrap();
    match Config::load(Some(&file)) {
        Err(ConfigError::UnknownKey { section, known, .. })
            if section == Section(path.iter().map(|s| s.to_string()).collect()) =>
        {
            Some(known.split(", ").map(str::to_string).collect())
        }
        _ => None,
    }
}

/// Every key the server takes, dotted; a map of sections (`plugins.sinks`) as `<name>`.
fn server_keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for top in keys_of(&[]).expect("the top level lists its keys") {
        let Some(subs) = keys_of(&[&top]) else {
            out.insert(top);
            continue;
        };
        for sub in subs {
            if keys_of(&[&top, &sub, "name"]).is_some() {
                out.insert(format!("{top}.{sub}.<name>"));
            } else {
                out.insert(format!("{top}.{sub}"));
            }
        }
    }
    out
}

/// The keys the README's configuration table names: every backticked key in each row's first cell.
fn readme_keys() -> BTreeSet<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let table = text
        .split("| Key | Env | Default | Meaning |")
        .nth(1)
        .expect("the configuration table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default().to_string();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_readme_table_names_every_setting_and_only_settings() {
    let server = server_keys();
    assert!(
        server.contains("push.key_secret") && server.contains("plugins.sinks.<name>"),
        "{server:?}"
    );
    let readme = readme_keys();
    let missing: Vec<_> = server.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&server).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "README.md's configuration table lacks {missing:?} and names {unknown:?}, which the server does not take"
    );
}
