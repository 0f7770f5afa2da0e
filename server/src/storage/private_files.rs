//! Owner-only files: the data dir (0700) and the SQLite database with its `-wal`/`-shm` (0600).
//!
//! Rule: what the server keeps on disk is readable by its own user only. The database holds escrowed
//! tokens (sealed, see [`super::sealing`]), push tokens and PushMagic, enrollment history; the data dir the
//! sealing secret itself. Modes are set explicitly after creating, so they do not depend on the umask, and a
//! looser mode found on an existing path is tightened with a warning (it was readable until now).

use std::io;
use std::path::Path;

/// The mode of the data dir and of any directory the server creates for its own files.
pub const DIR_MODE: u32 = 0o700;
/// The mode of the database files.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents) owner-only, or tighten it to [`DIR_MODE`] if it exists with group
/// or other permissions.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
            // mkdir(2) applies the umask; set the mode itself so no umask can loosen or break it.
            return set_mode(dir, DIR_MODE);
        }
        tighten(dir, DIR_MODE)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Before sqlx opens the SQLite database `file`: create it empty and owner-only if it is missing (an empty
/// file is an empty database), else tighten it, and its `-wal`, `-shm` and `-journal` files where present,
/// to [`FILE_MODE`]. SQLite creates those side files with the main file's permissions (os_unix.c,
/// `findCreateFileMode`), so they are 0600 from then on.
/// Without `create` (the URL does not ask for `mode=rwc`) a missing file is left for sqlx to refuse.
pub fn prepare_sqlite_file(file: &Path, create: bool) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if !create && !file.exists() {
            return Ok(());
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(file)
        {
            Ok(_) => set_mode(file, FILE_MODE)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(file, FILE_MODE)?,
            Err(e) => return Err(e),
        }
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut side = file.as_os_str().to_owned();
            side.push(suffix);
            match tighten(Path::new(&side), FILE_MODE) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (file, create);
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Set `path` to `mode` if it grants anything `mode` does not, with a warning saying what it was.
#[cfg(unix)]
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let was = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if was & !mode != 0 {
        tracing::warn!(
            path = %path.display(),
            was = format!("{was:o}"),
            now = format!("{mode:o}"),
            "tightened permissions: it was readable by other users"
        );
        set_mode(path, mode)?;
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_data_dir_is_owner_only_and_a_loose_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/data");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        set_mode(&dir, 0o755).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700, "an existing 0755 dir is tightened");
        // Already stricter: left alone.
        set_mode(&dir, 0o500).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o500);
        set_mode(&dir, 0o700).unwrap();
    }

    #[test]
    fn database_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("mdm.db");
        prepare_sqlite_file(&db, true).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = root.path().join("mdm.db-wal");
        std::fs::write(&wal, b"").unwrap();
        set_mode(&db, 0o644).unwrap();
        set_mode(&wal, 0o666).unwrap();
        prepare_sqlite_file(&db, true).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
    }
}

#[cfg(all(test, unix))]
mod start_up {
    use std::os::unix::fs::PermissionsExt;

    /// What the server and every subcommand open: the data dir 0700, the database in it 0600.
    #[tokio::test]
    async fn the_data_dir_and_database_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let config = crate::Config {
            data_dir: root.path().join("data"),
            ..Default::default()
        };
        let s = crate::startup::Application::open_storage(&config)
            .await
            .unwrap();
        s.ping().await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&config.data_dir), 0o700);
        assert_eq!(mode(&config.data_dir.join("mdm.db")), 0o600);
    }
}
