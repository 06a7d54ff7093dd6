//! The mirror database. All SQL lives under this module; the engine asks for whole
//! operations ("apply this page and this cursor atomically") and never writes SQL.
//!
//! SQLite is the only backend today. The SQL is kept portable (no SQLite-only functions in
//! the mirror's writes, text timestamps, explicit upserts) so that a PostgreSQL store can be
//! added beside it with its own migrations folder.

mod admin;
mod backup;
mod busy;
mod cursor;
mod daemon_lock;
mod file;
mod follow_ups;
mod last_write;
mod mirror;
mod prepared;
mod rejected;
mod retention;
mod runs;
mod summary;
mod vault;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use admin::{RenameOutcome, StoredSource};
pub use backup::{BackupError, BackupSummary, restore};
pub use busy::while_busy;
pub use cursor::CursorState;
pub use daemon_lock::DaemonLock;
pub use follow_ups::DetailWrite;
pub use last_write::WriteFailure;
pub use mirror::{
    AbsenceOutcome, MassChangeGuard, PageCounts, PageOutcome, PageTransaction, PageWrite,
    RowChange, SweepCompletion,
};
pub use retention::{PurgeCounts, RetentionPolicy};
pub use runs::{LastRun, RunOutcome, RunReport, SourceStatus};
pub use summary::{SourceSummary, WAITING_QUERY, WaitingRow};
pub use vault::RefreshTokenAge;

/// Errors from the mirror database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a convsync database.
    #[error(
        "{path} is not a convsync database (it has tables but no convsync migrations); refusing to touch it"
    )]
    NotConvsync {
        /// The file.
        path: String,
    },
    /// The database was migrated by a newer convsync.
    #[error(
        "database schema version {found} is newer than this convsync understands (latest known: {known}); upgrade convsync or use another database"
    )]
    NewerSchema {
        /// Version found in the database.
        found: i64,
        /// Newest version this binary has.
        known: i64,
    },
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database is locked by another writer for longer than the busy timeout.
    #[error("database is busy (locked by another writer): {0}")]
    Busy(String),
    /// The disk or SQLite's page limit is full.
    #[error("database is full (disk or size limit): {0}")]
    Full(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Sql(sqlx::Error),
    /// Any other error of a statement run on the connection's own handle
    /// (`store::prepared`).
    #[error("database error: {0}")]
    Statement(rusqlite::Error),
    /// Another convsync process syncs this database.
    #[error(
        "{database} is in use by another convsync ({holder}; lock file {lock_file}): stop that process first, or give this one its own database"
    )]
    InUse {
        /// The database file.
        database: String,
        /// Who holds it, as its lock file says.
        holder: String,
        /// The lock file.
        lock_file: String,
    },
    /// The lock file beside the database cannot be created or locked.
    #[error("cannot use the lock file {path}: {source}")]
    LockFile {
        /// The lock file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy(err.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::Full(err.to_string()),
            _ => StoreError::Statement(err),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match primary_code(&err) {
                Some(5 | 6) => return StoreError::Busy(db.message().to_owned()),
                Some(13) => return StoreError::Full(db.message().to_owned()),
                _ => {}
            }
        }
        StoreError::Sql(err)
    }
}

/// SQLite's primary result code of a database error (5 BUSY, 6 LOCKED, 8 READONLY,
/// 10 IOERR, 13 FULL, 14 CANTOPEN).
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let code = db.code().and_then(|c| c.parse::<i32>().ok())?;
    Some(code & 0xff)
}

impl StoreError {
    /// Whether the database file itself refused the write (full, read-only, I/O error),
    /// as opposed to a lock or a bad value: what readiness reports as "not writable".
    pub fn is_file_failure(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Sql(sqlx::Error::Io(_)) => true,
            StoreError::Sql(e) => matches!(primary_code(e), Some(8 | 10 | 14)),
            StoreError::Statement(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::CannotOpen
                )
            ),
            _ => false,
        }
    }
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `sqlite://path` (created if missing).
    pub url: String,
    /// How long a write waits for another writer's lock before failing.
    pub busy_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a rejected item that is not seen again stays in `rejected_records`.
    pub rejected_records_retention: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://convsync.db".into(),
            busy_timeout: Duration::from_secs(10),
            max_connections: 4,
            rejected_records_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connection pragmas beyond journal mode, synchronous and foreign keys, each with its
/// reason. Public so that the benchmark's raw write limit runs with the same settings.
pub const TUNING_PRAGMAS: &[(&str, &str)] = &[
    // A statement that changes several rows and could fail half-way (a sweep's touch of
    // last_seen_at, an absence update) keeps a statement journal; on disk (the default)
    // its writes were a fifth of a backfill's CPU time when new rows still went in through
    // multi-row INSERTs (BENCHMARKS.md). It holds only the pages one statement touches, so
    // memory is the right place for it.
    ("temp_store", "MEMORY"),
    // Checkpoint the WAL every 8192 pages (32 MiB) instead of every 1000: a backfill
    // rewrites the same index pages in many commits, and each checkpoint copies a page
    // once however often it changed since the last one (a tenth of a backfill's CPU time
    // went to checkpoints at the default). Readers are not slowed; the WAL file on disk
    // stays at up to that size between checkpoints.
    ("wal_autocheckpoint", "8192"),
];

/// Handle to the mirror database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// What the latest write of mirror data met (for readiness).
    last_write: Arc<last_write::LastWrite>,
    /// `rejected_records` retention, applied when a run ends.
    rejected_retention: Duration,
}

impl Store {
    /// Opens (creating with mode 0600 if missing) the database without migrating it.
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?;
        let path = options.get_filename().to_owned();
        let on_disk = path != Path::new(":memory:");
        if on_disk {
            file::check_existing_file(&options, &path, &settings.url).await?;
            file::warn_if_exposed(&path);
            file::create_private_file(&path).map_err(|e| {
                StoreError::Sql(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create database file {}: {e}", path.display()),
                )))
            })?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(settings.busy_timeout)
            .foreign_keys(true);
        let options = TUNING_PRAGMAS
            .iter()
            .fold(options, |options, (name, value)| {
                options.pragma(*name, *value)
            });
        let pool = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            // When SQLite ends a transaction itself (a full disk rolls it back), sqlx's
            // ROLLBACK on drop fails and leaves the connection marked "in a transaction":
            // every later BEGIN on it would fail, and the daemon could not write again
            // after space returns. Such a connection is closed instead of handed out.
            .before_acquire(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            // SQLite creates the WAL and SHM files with the database file's mode on each
            // open; the mirror's data in them stays owner-only even if the file is not.
            .after_connect(move |_, _| {
                if on_disk {
                    file::restrict_companions(&path);
                }
                Box::pin(async { Ok(()) })
            })
            .connect_with(options)
            .await?;
        Ok(Store {
            pool,
            last_write: Arc::default(),
            rejected_retention: settings.rejected_records_retention,
        })
    }

    /// Opens the database and brings its schema up to date, refusing files that are not
    /// convsync databases or were written by a newer convsync.
    pub async fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        let store = Store::connect(settings).await?;
        store.migrate(&settings.url).await?;
        Ok(store)
    }

    /// Applies pending migrations (idempotent).
    pub async fn migrate(&self, shown_name: &str) -> Result<(), StoreError> {
        file::check_schema(&mut *self.pool.acquire().await?, shown_name).await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks the file's integrity (`PRAGMA integrity_check`); `Ok(())` means "ok".
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(result))
        }
    }

    /// The failure of the latest write of mirror data (pages, cursors, follow-ups),
    /// unless a later one succeeded.
    pub fn last_write_failure(&self) -> Option<WriteFailure> {
        self.last_write.failure()
    }

    /// Proves that the write lock can be taken (for readiness checks). The probe is rolled
    /// back and never reaches the disk: see [`Store::last_write_failure`] for that.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS convsync_probe (x INTEGER)")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }

    /// Bytes the database's pages take (the main file; the WAL comes and goes with
    /// checkpoints), for the size gauge on `/metrics`.
    pub async fn database_size_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// The underlying pool, for read-only report queries in tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes all connections (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The database file a `sqlite://` URL points at, when it is a file.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (path != Path::new(":memory:")).then(|| path.to_owned())
}
