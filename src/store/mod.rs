//! The mirror database. All SQL lives under this module; the engine asks for whole
//! operations ("apply this page and this cursor atomically") and never writes SQL.
//!
//! SQLite is the only backend today. The SQL is kept portable (no SQLite-only functions in
//! the mirror's writes, text timestamps, explicit upserts) so that a PostgreSQL store can be
//! added beside it with its own migrations folder.

mod backup;
mod cursor;
mod follow_ups;
mod mirror;
mod prepared;
mod retention;
mod runs;
mod vault;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use backup::{BackupError, BackupSummary, restore};
pub use cursor::WalkCursor;
pub use follow_ups::DetailWrite;
pub use mirror::{
    AbsenceOutcome, MassChangeGuard, PageCounts, PageTransaction, PageWrite, SweepCompletion,
};
pub use retention::{PurgeCounts, RetentionPolicy};
pub use runs::{RunOutcome, RunReport, SourceStatus};
pub use vault::{RefreshRefusal, RefreshTokenAge, StoredRefreshToken};

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
            // SQLite primary result codes: 5 BUSY, 6 LOCKED, 13 FULL.
            let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
            match code & 0xff {
                5 | 6 => return StoreError::Busy(db.message().to_owned()),
                13 => return StoreError::Full(db.message().to_owned()),
                _ => {}
            }
        }
        StoreError::Sql(err)
    }
}

impl StoreError {
    /// Busy and full conditions clear by themselves (another writer finishes, space is
    /// freed); the engine retries later instead of giving up on the source.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_) | StoreError::Full(_))
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://convsync.db".into(),
            busy_timeout: Duration::from_secs(10),
            max_connections: 4,
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
}

impl Store {
    /// Opens (creating with mode 0600 if missing) the database without migrating it.
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?;
        let path = options.get_filename().to_owned();
        if path != Path::new(":memory:") {
            create_private_file(&path).map_err(|e| {
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
            .connect_with(options)
            .await?;
        Ok(Store { pool })
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
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&self.pool)
        .await?;
        let has_migrations = tables.iter().any(|t| t == "_sqlx_migrations");
        if !tables.is_empty() && !has_migrations {
            return Err(StoreError::NotConvsync {
                path: shown_name.to_owned(),
            });
        }
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if has_migrations {
            let found: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                    .fetch_one(&self.pool)
                    .await?;
            if let Some(found) = found.filter(|f| *f > known) {
                return Err(StoreError::NewerSchema { found, known });
            }
        }
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

    /// Proves the database accepts writes (for readiness checks).
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

/// Creates the database file with owner-only permissions before SQLite does, because it
/// holds customer (and, for Spruce, patient) data.
fn create_private_file(path: &Path) -> std::io::Result<()> {
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

/// The database file a `sqlite://` URL points at, when it is a file.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (path != Path::new(":memory:")).then(|| path.to_owned())
}
