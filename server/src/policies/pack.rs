//! `mdm-server policy pack`: a folder (as a CI job checks it out of git) into a bundle, signed if a key is
//! given. The archive is deterministic: entries in path order, one fixed timestamp, deflated; the same
//! folder packs to the same bytes.

use super::bundle::{self, Bundle, BundleError, MANIFEST, MAX_FILE_BYTES, SIGNATURE};
use super::signature::{self, SignatureError};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("writing the archive: {0}")]
    Zip(String),
}

/// A packed bundle: the archive's bytes and what was checked of it.
pub struct Packed {
    pub zip: Vec<u8>,
    pub bundle: Bundle,
}

/// Pack `dir`: its manifest and the files it names (nothing else), signed with `key_pem` if given.
pub fn pack(dir: &Path, key_pem: Option<&[u8]>) -> Result<Packed, PackError> {
    let manifest = read_file(dir, MANIFEST)?;
    // Checked (its paths included) before any path it names is opened.
    let m = bundle::parse_manifest(&manifest)?;
    let mut files = BTreeMap::new();
    for path in m.declarations.iter().chain(&m.profiles) {
        files.insert(path.clone(), read_file(dir, path)?);
    }
    files.insert(MANIFEST.to_string(), manifest);
    let mut checked = bundle::from_files(files, None)?;
    if let Some(key) = key_pem {
        checked.signature = Some(signature::sign(key, &checked.digest)?.into_bytes());
    }
    let zip = write_zip(&checked).map_err(|e| PackError::Zip(e.to_string()))?;
    Ok(Packed {
        zip,
        bundle: checked,
    })
}

/// One file of the folder, at most [`MAX_FILE_BYTES`], its path already checked (no `..`).
fn read_file(dir: &Path, path: &str) -> Result<Vec<u8>, PackError> {
    let full = dir.join(path);
    let io = |e| PackError::Io(full.display().to_string(), e);
    let mut content = Vec::new();
    std::fs::File::open(&full)
        .map_err(io)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(io)?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(BundleError::FileTooLarge(path.to_string()).into());
    }
    Ok(content)
}

fn write_zip(b: &Bundle) -> zip::result::ZipResult<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let signature = b.signature.iter().map(|s| (SIGNATURE.to_string(), s));
    let mut entries: Vec<(String, &Vec<u8>)> = b
        .files
        .iter()
        .map(|(p, c)| (p.clone(), c))
        .chain(signature)
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, content) in entries {
        w.start_file(path, options)?;
        w.write_all(content)?;
    }
    Ok(w.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::super::bundle::tests::folder;
    use super::super::signature::TrustedSigners;
    use super::*;
    use openssl::pkey::PKey;

    fn write_folder(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
        for (path, content) in files {
            let full = dir.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
    }

    #[test]
    fn a_folder_packs_to_the_same_bytes_and_reads_back_with_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let files = folder();
        write_folder(dir.path(), &files);
        // Not named by the manifest: left out of the bundle.
        std::fs::write(dir.path().join("README.md"), "notes").unwrap();
        let a = pack(dir.path(), None).unwrap();
        let b = pack(dir.path(), None).unwrap();
        assert_eq!(a.zip, b.zip, "deterministic");
        let read = bundle::read(&a.zip).unwrap();
        assert_eq!(read.digest, a.bundle.digest);
        assert_eq!(read.files, files);
        assert!(read.signature.is_none());
    }

    #[test]
    fn a_signed_pack_verifies_and_a_tampered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        write_folder(dir.path(), &folder());
        let key = PKey::generate_ed25519().unwrap();
        let private = key.private_key_to_pem_pkcs8().unwrap();
        let trusted = TrustedSigners::default()
            .with(TrustedSigners::signer("ci".into(), &key.public_key_to_pem().unwrap()).unwrap());
        let packed = pack(dir.path(), Some(&private)).unwrap();
        let read = bundle::read(&packed.zip).unwrap();
        let sig = read.signature.clone().unwrap();
        assert_eq!(trusted.verify(&read.digest, &sig), Ok("ci"));

        // The same signature beside other content does not verify.
        let mut files = read.files.clone();
        files.insert(
            "profiles/wifi.mobileconfig".into(),
            crate::policies::profile::tests::wifi("com.example.tampered"),
        );
        let tampered = bundle::from_files(files, Some(sig.clone())).unwrap();
        assert!(trusted.verify(&tampered.digest, &sig).is_err());
    }

    #[test]
    fn a_manifest_naming_a_path_outside_the_folder_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = serde_json::json!({"version": "1", "profiles": ["../secret"]});
        std::fs::write(dir.path().join(MANIFEST), manifest.to_string()).unwrap();
        assert!(matches!(
            pack(dir.path(), None),
            Err(PackError::Bundle(BundleError::BadPath(_)))
        ));
        let manifest = serde_json::json!({"version": "1", "profiles": ["gone.mobileconfig"]});
        std::fs::write(dir.path().join(MANIFEST), manifest.to_string()).unwrap();
        let e = pack(dir.path(), None).err().unwrap().to_string();
        assert!(e.contains("gone.mobileconfig"), "{e}");
    }
}
