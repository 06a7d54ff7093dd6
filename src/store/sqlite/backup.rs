//! Backups of the mirror while the daemon runs, and their restore.
//!
//! A backup is SQLite's `VACUUM INTO`: it reads one consistent snapshot (a read transaction,
//! which WAL mode lets run beside the daemon's writes) and writes a compact, self-contained
//! file without a WAL. Copying the live file with `cp` is not a backup: the newest pages may
//! still be in the `-wal` file, so a copy can lack whole tables.
//!
//! Both directions go through a private temporary file in the destination's directory that
//! is renamed into place only when complete, so an interrupted backup or restore never
//! leaves a half-written file under the real name.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::SqliteStore;
use super::schema::newest_known_version;
use crate::store::{BackupError, BackupSummary, StoreError};
use crate::time::Timestamp;

impl SqliteStore {
    /// Writes a consistent copy of the whole database to `destination` (mode 0600), while
    /// other connections keep reading and writing. Refuses to overwrite an existing file.
    pub async fn backup_to(&self, destination: &Path) -> Result<BackupSummary, BackupError> {
        if destination.exists() {
            return Err(BackupError::DestinationExists(destination.to_owned()));
        }
        let partial = PrivateTempFile::create_beside(destination)?;
        // VACUUM INTO accepts an existing file only when it is empty: the one just created
        // with owner-only permissions, which SQLite keeps.
        let path_text = partial.path.to_string_lossy().into_owned();
        sqlx::query("VACUUM INTO ?")
            .bind(&path_text)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        let summary = inspect(&partial.path)
            .await
            .map_err(|reason| BackupError::BadBackup {
                path: partial.path.clone(),
                reason,
            })?;
        partial.sync()?;
        // A hard link fails if the name appeared meanwhile, so nothing is ever overwritten.
        std::fs::hard_link(&partial.path, destination).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::DestinationExists(destination.to_owned())
            } else {
                BackupError::io("cannot write", destination)(e)
            }
        })?;
        drop(partial);
        sync_directory(destination)?;
        Ok(BackupSummary {
            path: destination.to_owned(),
            ..summary
        })
    }
}

/// Replaces the database at `database` with the backup at `backup`, after checking that the
/// backup is a sound convsync database this binary understands. An existing database (and
/// its `-wal`/`-shm` files) is moved aside to `<name>.before-restore-<time>`, never deleted;
/// its new name is returned with the summary. The daemon must be stopped first.
pub(in crate::store) async fn restore(
    backup: &Path,
    database: &Path,
    now: Timestamp,
) -> Result<(BackupSummary, Option<PathBuf>), BackupError> {
    let bad = |reason: String| BackupError::BadBackup {
        path: backup.to_owned(),
        reason,
    };
    if !backup.is_file() {
        return Err(bad("no such file".into()));
    }
    let summary = inspect(backup).await.map_err(bad)?;
    let partial = PrivateTempFile::create_beside(database)?;
    {
        let mut from =
            std::fs::File::open(backup).map_err(BackupError::io("cannot read", backup))?;
        let mut to = partial.open()?;
        std::io::copy(&mut from, &mut to)
            .map_err(BackupError::io("cannot write", &partial.path))?;
    }
    partial.sync()?;
    let set_aside = if database.exists() {
        let stamp = now.to_string().replace([':', '.'], "-");
        let aside = with_suffix(database, &format!(".before-restore-{stamp}"));
        for suffix in ["-wal", "-shm"] {
            let companion = with_suffix(database, suffix);
            if companion.exists() {
                let target = with_suffix(&aside, suffix);
                std::fs::rename(&companion, &target)
                    .map_err(BackupError::io("cannot move aside", &companion))?;
            }
        }
        std::fs::rename(database, &aside)
            .map_err(BackupError::io("cannot move aside", database))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&partial.path, database).map_err(BackupError::io("cannot write", database))?;
    sync_directory(database)?;
    Ok((
        BackupSummary {
            path: database.to_owned(),
            ..summary
        },
        set_aside,
    ))
}

/// Opens `path` read-only and checks it is a sound convsync database no newer than this
/// binary; the reason it is not, otherwise.
async fn inspect(path: &Path) -> Result<BackupSummary, String> {
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| e.to_string())?
        .filename(path)
        .read_only(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| format!("cannot open it ({e})"))?;
    let result = async {
        let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("cannot read it ({e})"))?;
        if verdict != "ok" {
            return Err(format!("integrity check failed: {verdict}"));
        }
        let schema_version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .map_err(|_| "it has no convsync schema".to_owned())?;
        let schema_version = schema_version.ok_or("it has no convsync schema")?;
        let known = newest_known_version();
        if schema_version > known {
            return Err(format!(
                "its schema version {schema_version} is newer than this convsync understands ({known}); restore it with the convsync that wrote it"
            ));
        }
        let conversations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
            .fetch_one(&pool)
            .await
            .map_err(|e| format!("it has no readable conversations table ({e})"))?;
        let bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        Ok(BackupSummary {
            path: path.to_owned(),
            bytes,
            conversations: conversations.max(0) as u64,
            schema_version,
        })
    }
    .await;
    pool.close().await;
    result
}

/// A new, empty, owner-only file next to `target`, removed on drop unless renamed away.
struct PrivateTempFile {
    path: PathBuf,
}

impl PrivateTempFile {
    fn create_beside(target: &Path) -> Result<PrivateTempFile, BackupError> {
        let path = with_suffix(target, &format!(".partial-{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&path)
            .map_err(BackupError::io("cannot create", &path))?;
        Ok(PrivateTempFile { path })
    }

    fn open(&self) -> Result<std::fs::File, BackupError> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(BackupError::io("cannot write", &self.path))
    }

    fn sync(&self) -> Result<(), BackupError> {
        self.open()?
            .sync_all()
            .map_err(BackupError::io("cannot flush", &self.path))
    }
}

impl Drop for PrivateTempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes a rename or link in `path`'s directory durable.
fn sync_directory(path: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(BackupError::io("cannot flush directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
