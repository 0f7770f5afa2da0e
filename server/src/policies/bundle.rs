//! A policy version as an artifact: a zip of a folder holding `policy.json` (the manifest naming the
//! folder's declarations and profiles) and those files, with an optional detached signature `policy.sig`
//! over the bundle's digest (see [`super::signature`]).
//!
//! The digest is SHA-256 over a canonical form, not over the zip: the same folder gives the same digest
//! whatever tool, entry order, timestamps or compression made the archive, so a CI job can compute it from
//! the git tree and a reviewer can recompute it with `sha256sum` ([`canonical_form`]).
//!
//! Reading is bounded before the work: the archive's size, its number of entries, and each file's and the
//! whole's decompressed size counted as the bytes come out (never as the archive declares them). Paths are
//! plain relative ASCII (no `..`, no absolute or backslashed paths); every file must be named by the
//! manifest, so what is signed is exactly what is shipped.

use crate::protocol::ddm::{Declaration, DeclarationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};

/// The manifest's name, at the folder's root.
pub const MANIFEST: &str = "policy.json";
/// The detached signature's name, at the root; the one file the digest does not cover.
pub const SIGNATURE: &str = "policy.sig";
/// The first line of the canonical form: names the format, so a digest of another thing never matches.
pub const FORMAT: &str = "mdm-policy-bundle/1";
/// The most an uploaded bundle may weigh, compressed.
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;
/// The most all its files may weigh, decompressed.
pub const MAX_CONTENT_BYTES: u64 = 32 << 20;
/// The most one file may weigh, decompressed.
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// The most entries (files and folders) an archive may hold.
pub const MAX_ENTRIES: usize = 1_000;
/// The longest Identifier of a declaration in a bundle: devices see it with `@` and a digest appended
/// ([`super::materialize`]), within the 64 characters an identifier may have.
pub const MAX_POLICY_IDENTIFIER: usize = 64 - 1 - super::materialize::DIGEST_CHARS;
/// The most characters of a path.
pub const MAX_PATH: usize = 255;

/// `policy.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The version's label, e.g. `2026.05`: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub version: String,
    /// Declaration files (JSON, each `{Type, Identifier, Payload}`), as paths in the folder.
    #[serde(default)]
    pub declarations: Vec<String>,
    /// Configuration profile files (`.mobileconfig`, signed or not), as paths in the folder.
    #[serde(default)]
    pub profiles: Vec<String>,
}

/// A bundle read and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    /// The declarations, in the manifest's order.
    pub declarations: Vec<Declaration>,
    /// The profiles, in the manifest's order.
    pub profiles: Vec<super::profile::Profile>,
    /// Every file the digest covers, the manifest included, by path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The detached signature's bytes as found (base64 text), if any.
    pub signature: Option<Vec<u8>>,
    /// SHA-256 of the canonical form, lowercase hex.
    pub digest: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a zip archive: {0}")]
    NotZip(String),
    #[error("the bundle is over {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("{0}: over {MAX_FILE_BYTES} bytes decompressed")]
    FileTooLarge(String),
    #[error("the files are over {MAX_CONTENT_BYTES} bytes decompressed")]
    ContentTooLarge,
    #[error("bad path {0:?}: relative, at most {MAX_PATH} of A-Z a-z 0-9 . _ - /, no empty, . or .. part")]
    BadPath(String),
    #[error("{0} is in the archive twice")]
    Duplicate(String),
    #[error("no {MANIFEST} at the bundle's root")]
    NoManifest,
    #[error("{MANIFEST}: {0}")]
    BadManifest(String),
    #[error("{0} is named by {MANIFEST} but not in the bundle")]
    Missing(String),
    #[error("{0} is in the bundle but not named by {MANIFEST}")]
    Unlisted(String),
    #[error("{path}: {error}")]
    BadDeclaration {
        path: String,
        error: DeclarationError,
    },
    #[error("two declarations have the identifier {0}")]
    DuplicateIdentifier(String),
    #[error("{path}: a policy's declaration Identifier is at most {MAX_POLICY_IDENTIFIER} characters, without '@' (devices see it with @ and a digest appended)")]
    PolicyIdentifier { path: String },
    #[error("{0}")]
    References(#[from] super::materialize::ReferenceCycle),
    #[error("{path}: {error}")]
    BadProfile {
        path: String,
        error: super::profile::ProfileError,
    },
    #[error("two profiles have the PayloadIdentifier {0}")]
    DuplicateProfile(String),
}

/// Read and check a bundle.
pub fn read(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge);
    }
    let (files, signature) = unzip(bytes)?;
    from_files(files, signature)
}

/// Check a folder's files (by path, the manifest included; not the signature) as a bundle.
pub fn from_files(
    mut files: BTreeMap<String, Vec<u8>>,
    signature: Option<Vec<u8>>,
) -> Result<Bundle, BundleError> {
    let manifest = parse_manifest(files.get(MANIFEST).ok_or(BundleError::NoManifest)?)?;
    let named: Vec<&String> = manifest
        .declarations
        .iter()
        .chain(&manifest.profiles)
        .collect();
    if let Some(unlisted) = files
        .keys()
        .find(|p| p.as_str() != MANIFEST && !named.contains(p))
    {
        return Err(BundleError::Unlisted(unlisted.clone()));
    }
    if let Some(missing) = named.iter().find(|p| !files.contains_key(p.as_str())) {
        return Err(BundleError::Missing(missing.to_string()));
    }
    let mut declarations = Vec::with_capacity(manifest.declarations.len());
    for path in &manifest.declarations {
        let d = Declaration::parse(&files[path]).map_err(|error| BundleError::BadDeclaration {
            path: path.clone(),
            error,
        })?;
        if d.identifier.len() > MAX_POLICY_IDENTIFIER || d.identifier.contains('@') {
            return Err(BundleError::PolicyIdentifier { path: path.clone() });
        }
        if declarations
            .iter()
            .any(|o: &Declaration| o.identifier == d.identifier)
        {
            return Err(BundleError::DuplicateIdentifier(d.identifier));
        }
        declarations.push(d);
    }
    super::materialize::check_references(&declarations)?;
    let mut profiles: Vec<super::profile::Profile> = Vec::with_capacity(manifest.profiles.len());
    for path in &manifest.profiles {
        let p =
            super::profile::read(path, &files[path]).map_err(|error| BundleError::BadProfile {
                path: path.clone(),
                error,
            })?;
        if profiles.iter().any(|o| o.identifier == p.identifier) {
            return Err(BundleError::DuplicateProfile(p.identifier));
        }
        profiles.push(p);
    }
    files.retain(|p, _| p != SIGNATURE);
    let digest = sha256_hex(canonical_form(&files).as_bytes());
    Ok(Bundle {
        manifest,
        declarations,
        profiles,
        files,
        signature,
        digest,
    })
}

/// The text the digest is taken over: [`FORMAT`], then for each file in path order its path and the
/// SHA-256 of its content, one per line. The same as
/// `{ echo mdm-policy-bundle/1; for f in $(find . -type f ! -name policy.sig | cut -c3- | LC_ALL=C sort);
/// do echo "$f"; sha256sum < "$f" | cut -c1-64; done; } | sha256sum`.
pub fn canonical_form(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut out = format!("{FORMAT}\n");
    for (path, content) in files {
        out.push_str(path);
        out.push('\n');
        out.push_str(&sha256_hex(content));
        out.push('\n');
    }
    out
}

/// Parse and check `policy.json`: its version label and every path it names.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, BundleError> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    check_label(&m.version)?;
    if m.declarations.is_empty() && m.profiles.is_empty() {
        return Err(BundleError::BadManifest(
            "name at least one declaration or profile".into(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for path in m.declarations.iter().chain(&m.profiles) {
        check_path(path)?;
        if path == MANIFEST || path == SIGNATURE || !seen.insert(path) {
            return Err(BundleError::BadManifest(format!(
                "{path} is named twice, or is {MANIFEST} or {SIGNATURE}"
            )));
        }
    }
    Ok(m)
}

/// A version's label: 1 to 64 letters, digits, `.`, `_` or `-` (it appears in API paths).
pub fn check_label(label: &str) -> Result<(), BundleError> {
    let ok = (1..=64).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadManifest(
            "version: 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ))
    }
}

/// A path in a bundle: relative, `/`-separated parts of ASCII letters, digits, `.`, `_` and `-`, none
/// empty, `.` or `..`. Nothing a file system or a zip tool could read as another place.
pub fn check_path(path: &str) -> Result<(), BundleError> {
    let ok = (1..=MAX_PATH).contains(&path.len())
        && path.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadPath(path.chars().take(MAX_PATH).collect()))
    }
}

type Files = BTreeMap<String, Vec<u8>>;

/// The archive's files by path, and the signature apart. Folder entries are skipped.
fn unzip(bytes: &[u8]) -> Result<(Files, Option<Vec<u8>>), BundleError> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| BundleError::NotZip(e.to_string()))?;
    if archive.len() > MAX_ENTRIES {
        return Err(BundleError::TooManyEntries);
    }
    let mut files = Files::new();
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| BundleError::NotZip(e.to_string()))?;
        let name = entry
            .name()
            .map_err(|e| BundleError::NotZip(e.to_string()))?
            .to_string();
        if entry.is_dir() {
            check_path(name.trim_end_matches('/'))?;
            continue;
        }
        check_path(&name)?;
        let content = bounded_read(entry, &name, MAX_CONTENT_BYTES - total)?;
        total += content.len() as u64;
        if files.insert(name.clone(), content).is_some() {
            return Err(BundleError::Duplicate(name));
        }
    }
    let signature = files.remove(SIGNATURE);
    Ok((files, signature))
}

/// Read at most one byte more than allowed, counting what comes out: a size the archive declares is not
/// trusted.
fn bounded_read(entry: impl Read, name: &str, room: u64) -> Result<Vec<u8>, BundleError> {
    let limit = MAX_FILE_BYTES.min(room);
    let mut content = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut content)
        .map_err(|e| BundleError::NotZip(format!("{name}: {e}")))?;
    if content.len() as u64 > limit {
        return Err(if limit == MAX_FILE_BYTES {
            BundleError::FileTooLarge(name.to_string())
        } else {
            BundleError::ContentTooLarge
        });
    }
    Ok(content)
}

/// SHA-256, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn passcode(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "Type": "com.apple.configuration.passcode.settings", "Identifier": id,
            "Payload": {"RequirePasscode": true}}))
        .unwrap()
    }

    /// A folder: a manifest naming one declaration and one profile, and those files.
    pub(crate) fn folder() -> Files {
        let manifest = serde_json::json!({"version": "2026.05",
            "declarations": ["declarations/passcode.json"], "profiles": ["profiles/wifi.mobileconfig"]});
        BTreeMap::from([
            (MANIFEST.to_string(), serde_json::to_vec(&manifest).unwrap()),
            (
                "declarations/passcode.json".into(),
                passcode("com.example.passcode"),
            ),
            (
                "profiles/wifi.mobileconfig".into(),
                super::super::profile::tests::wifi("com.example.wifi"),
            ),
        ])
    }

    /// A zip of `entries` in the given order, stored or deflated.
    pub(crate) fn zip_of(entries: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, content) in entries {
            w.start_file(*name, options).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn zipped(files: &Files, reverse: bool, deflate: bool) -> Vec<u8> {
        let mut entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        if reverse {
            entries.reverse();
        }
        zip_of(&entries, deflate)
    }

    #[test]
    fn the_digest_is_the_folders_not_the_archives() {
        let files = folder();
        let a = read(&zipped(&files, false, true)).unwrap();
        let b = read(&zipped(&files, true, false)).unwrap();
        assert_eq!(a.digest, b.digest, "order and compression do not matter");
        assert_eq!(a.digest, sha256_hex(canonical_form(&files).as_bytes()));
        assert!(
            canonical_form(&files).starts_with("mdm-policy-bundle/1\ndeclarations/passcode.json\n")
        );
        assert_eq!(a.manifest.version, "2026.05");
        assert_eq!(a.declarations[0].identifier, "com.example.passcode");
        assert!(a.signature.is_none());

        // A signature beside the files changes nothing of the digest; any byte of a file does.
        let mut signed = files.clone();
        signed.insert(SIGNATURE.into(), b"c2ln".to_vec());
        let s = read(&zipped(&signed, false, true)).unwrap();
        assert_eq!(
            (s.digest.as_str(), s.signature.as_deref()),
            (a.digest.as_str(), Some(&b"c2ln"[..]))
        );
        let mut edited = files.clone();
        edited.insert(
            "profiles/wifi.mobileconfig".into(),
            super::super::profile::tests::wifi("com.example.other"),
        );
        assert_ne!(
            read(&zipped(&edited, false, true)).unwrap().digest,
            a.digest
        );
    }

    #[test]
    fn paths_that_could_name_another_place_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\\b",
            "",
            "é.json",
            "a/",
            "a b",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path(&"a".repeat(MAX_PATH + 1)).is_err());
        for good in ["policy.json", "declarations/a-b_c.1.json", "..a", "a.."] {
            assert!(check_path(good).is_ok(), "{good:?}");
        }
        let files = folder();
        let mut entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_slice()))
            .collect();
        entries.push(("../evil", b"x"));
        assert!(matches!(
            read(&zip_of(&entries, true)),
            Err(BundleError::BadPath(_))
        ));
    }

    #[test]
    fn the_manifest_names_exactly_the_files() {
        let mut extra = folder();
        extra.insert(".DS_Store".into(), b"x".to_vec());
        assert_eq!(
            read(&zipped(&extra, false, true)).unwrap_err(),
            BundleError::Unlisted(".DS_Store".into())
        );
        let mut missing = folder();
        missing.remove("profiles/wifi.mobileconfig");
        assert_eq!(
            read(&zipped(&missing, false, true)).unwrap_err(),
            BundleError::Missing("profiles/wifi.mobileconfig".into())
        );
        let mut none = folder();
        none.remove(MANIFEST);
        assert!(matches!(
            read(&zipped(&none, false, true)),
            Err(BundleError::NoManifest)
        ));
        for manifest in [
            serde_json::json!({"version": "2026.05", "declarations": ["a.json"], "extra": 1}),
            serde_json::json!({"version": "bad version", "declarations": ["a.json"]}),
            serde_json::json!({"version": "1"}),
            serde_json::json!({"version": "1", "declarations": ["a.json", "a.json"]}),
            serde_json::json!({"version": "1", "profiles": ["policy.sig"]}),
            serde_json::json!({"version": "1", "profiles": ["../a"]}),
        ] {
            let bytes = serde_json::to_vec(&manifest).unwrap();
            assert!(parse_manifest(&bytes).is_err(), "{manifest}");
        }
    }

    #[test]
    fn declarations_are_checked_and_unique() {
        let mut bad = folder();
        bad.insert(
            "declarations/passcode.json".into(),
            b"{\"Type\": 1}".to_vec(),
        );
        assert!(matches!(
            read(&zipped(&bad, false, true)),
            Err(BundleError::BadDeclaration { .. })
        ));
        let manifest = serde_json::json!({"version": "1", "declarations": ["a.json", "b.json"]});
        let twice = BTreeMap::from([
            (MANIFEST.to_string(), serde_json::to_vec(&manifest).unwrap()),
            ("a.json".into(), passcode("same")),
            ("b.json".into(), passcode("same")),
        ]);
        assert_eq!(
            from_files(twice, None).unwrap_err(),
            BundleError::DuplicateIdentifier("same".into())
        );
    }

    /// Sizes are counted as the bytes come out: a small archive that inflates past the bounds is refused
    /// without holding more than the bound.
    #[test]
    fn sizes_are_bounded_decompressed() {
        let manifest = serde_json::json!({"version": "1", "profiles": ["big"]});
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let big = vec![0u8; MAX_FILE_BYTES as usize + 1];
        let bomb = zip_of(&[(MANIFEST, &manifest), ("big", &big)], true);
        assert!(bomb.len() < 100_000, "it compresses well");
        assert_eq!(
            read(&bomb).unwrap_err(),
            BundleError::FileTooLarge("big".into())
        );

        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let manifest = serde_json::json!({"version": "1", "profiles": names});
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let each = vec![0u8; MAX_FILE_BYTES as usize];
        let mut entries: Vec<(&str, &[u8])> = vec![(MANIFEST, &manifest)];
        entries.extend(names.iter().map(|n| (n.as_str(), each.as_slice())));
        assert_eq!(
            read(&zip_of(&entries, true)).unwrap_err(),
            BundleError::ContentTooLarge
        );

        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("d{i}/")).collect();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for d in &many {
            w.add_directory(d.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
        }
        let archive = w.finish().unwrap().into_inner();
        assert_eq!(read(&archive).unwrap_err(), BundleError::TooManyEntries);
        assert_eq!(
            read(&vec![0; MAX_BUNDLE_BYTES + 1]).unwrap_err(),
            BundleError::TooLarge
        );
        assert!(matches!(read(b"not a zip"), Err(BundleError::NotZip(_))));
    }
}
