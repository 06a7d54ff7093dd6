//! The database file on disk. It holds personal data (for Spruce, PHI) and a host may hand
//! convsync a careless or foreign file: a new file is created owner-only, an existing one
//! that others can read is reported, its WAL and SHM companions are kept owner-only
//! whatever the file's mode, and a file that is not convsync's is refused before anything
//! writes to it.

use std::path::{Path, PathBuf};

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::schema::check_schema;
use crate::store::StoreError;

/// Creates the database file with owner-only permissions before SQLite does.
pub(super) fn create_private_file(path: &Path) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Warns when an existing database file can be read by other users or belongs to another
/// user: convsync uses it (refusing would stop a running service over a mode bit), but the
/// operator should know that the mirror's personal data is exposed.
pub(super) fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:04o}"),
                "the database file can be read by other users although it holds personal data; run `chmod 600 {}` (its WAL and SHM files are kept at 0600 regardless)",
                path.display()
            );
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            tracing::warn!(
                path = %path.display(),
                owner_uid = meta.uid(),
                uid = me,
                "the database file belongs to another user; give it to the user convsync runs as (`chown`) so that no one else controls the mirror's personal data"
            );
        }
    }
}

/// The WAL and SHM files beside the database.
fn companions(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// Takes group and other permissions off the WAL and SHM files. SQLite gives them the
/// database file's mode whenever it creates them (on each connection's open, and again
/// after the last connection closed), so this runs after every new connection.
pub(super) fn restrict_companions(path: &Path) {
    #[cfg(unix)]
    for companion in companions(path) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(&companion) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 == 0 {
            continue;
        }
        if let Err(e) = std::fs::set_permissions(&companion, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(path = %companion.display(), error = %e, "cannot make the database's WAL/SHM file owner-only");
        }
    }
}

/// Refuses an existing file that is not a convsync database or was migrated by a newer
/// convsync, reading it through a read-only connection that sets no pragma: a refused
/// file keeps every byte (no switch to WAL mode, no new journal files).
pub(super) async fn check_existing_file(
    options: &SqliteConnectOptions,
    path: &Path,
    shown_name: &str,
) -> Result<(), StoreError> {
    let has_content = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    if !has_content {
        return Ok(());
    }
    let read_only = options.clone().read_only(true).create_if_missing(false);
    let mut conn = SqliteConnection::connect_with(&read_only).await?;
    let verdict = check_schema(&mut conn, shown_name).await;
    conn.close().await?;
    verdict
}
