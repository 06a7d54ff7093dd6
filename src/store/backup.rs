//! Backups of the mirror while the daemon runs, and their restore: what they produce and
//! why they are refused. Making them is the backend's own business (SQLite's consistent
//! snapshot and file swap: `store::sqlite::backup`); a backend without them is refused
//! with [`BackupError::Unsupported`].

use std::path::{Path, PathBuf};

use super::{BackendKind, StoreError, sqlite};
use crate::time::Timestamp;

/// What a finished backup or restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// The file written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Conversations it holds (deleted ones included).
    pub conversations: u64,
    /// Its schema version (the newest applied migration).
    pub schema_version: i64,
}

/// Why a backup or restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists; backups never overwrite.
    #[error("{0} already exists; choose a new file name (a backup never overwrites a file)")]
    DestinationExists(PathBuf),
    /// There is no database to back up.
    #[error("there is no database at {0} (check [database] url)")]
    NoDatabase(PathBuf),
    /// The database URL does not name a file (`:memory:`).
    #[error("[database] url does not name a file, so there is nothing to back up or restore")]
    NotAFile,
    /// The database's backend has no backup of its own in convsync.
    #[error(
        "convsync backs up and restores SQLite files only; back up this {backend} database with its own tools"
    )]
    Unsupported {
        /// The backend.
        backend: BackendKind,
    },
    /// The file offered for restore is not a usable convsync backup.
    #[error("{path} is not a usable convsync backup: {reason}; nothing was changed")]
    BadBackup {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl BackupError {
    /// The error of an I/O step `what` on `path`, for `map_err`.
    pub(super) fn io(
        what: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.to_owned();
        move |source| BackupError::Io { what, path, source }
    }
}

/// Replaces the database `url` names with the backup at `backup`, after checking that the
/// backup is a sound convsync database this binary understands. An existing database is
/// moved aside, never deleted; its new name is returned with the summary. The daemon must
/// be stopped first.
pub async fn restore(
    url: &str,
    backup: &Path,
    now: Timestamp,
) -> Result<(BackupSummary, Option<PathBuf>), BackupError> {
    match BackendKind::of(url)? {
        BackendKind::Sqlite => {
            let database = sqlite::sqlite_path(url).ok_or(BackupError::NotAFile)?;
            sqlite::restore(backup, &database, now).await
        }
        backend @ BackendKind::Postgres => Err(BackupError::Unsupported { backend }),
    }
}
