//! The SQLite backend: one file (WAL mode) through a sqlx pool, with the rusqlite fast path
//! for new rows (`prepared.rs`), its schema in `migrations/sqlite/`, and what only a file
//! has: owner-only permissions and a refusal of foreign files (`file.rs`), the
//! single-daemon lock beside it (`daemon_lock.rs`), backups and restore (`backup.rs`).
//!
//! Each file implements one of the store's traits on [`SqliteStore`]: pages and absences
//! (`mirror.rs`, over the row writes of `rows.rs`), `cursor.rs`, `runs.rs`,
//! `follow_ups.rs`, `vault.rs`, `reports.rs`, `admin.rs` (with `retention.rs`) and
//! `probes.rs`. The helpers a write needs take its open transaction and sit below the
//! files that use them (`rows.rs`, `prepared.rs`, `queue.rs`, `rejected.rs`,
//! `cursor::write_cursor`), so no file calls back into the one that called it.
//!
//! The SQL is kept portable where it costs nothing (text timestamps, explicit upserts).
//! Static SQL is compile-checked (`sqlx::query!` against the committed `.sqlx/` data;
//! docs/architecture.md says how to regenerate it); SQL assembled at run time is not.

mod admin;
mod backup;
mod cursor;
mod daemon_lock;
pub(super) mod error;
mod events;
mod export;
mod file;
mod follow_ups;
mod leases;
mod mirror;
mod prepared;
mod probes;
mod queue;
mod rejected;
mod reports;
mod retention;
mod rows;
mod runs;
mod schema;
mod vault;
mod verifications;
mod webhooks;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::last_write::LastWrite;
use super::{Backend, BackendKind, StoreError, StoreSettings};

pub(super) use backup::restore;
pub use daemon_lock::DaemonLock;

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

/// The mirror in a SQLite file (or in memory); reached as a [`crate::store::Store`].
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// What the latest write of mirror data met (for readiness); shared with the open
    /// page transactions.
    last_write: Arc<LastWrite>,
    /// `rejected_records` retention, applied when a run ends.
    rejected_retention: Duration,
}

impl SqliteStore {
    /// Opens (creating with mode 0600 if missing) the database without migrating it.
    pub async fn connect(settings: &StoreSettings) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(&settings.url)?;
        let path = options.get_filename().to_owned();
        let on_disk = path != Path::new(":memory:");
        if on_disk {
            file::check_existing_file(&options, &path, &settings.url).await?;
            file::warn_if_exposed(&path);
            file::create_private_file(&path).map_err(|e| {
                StoreError::from(sqlx::Error::Io(std::io::Error::new(
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
        Ok(SqliteStore {
            pool,
            last_write: Arc::default(),
            rejected_retention: settings.rejected_records_retention,
        })
    }

    /// The underlying pool, for read-only report queries in tests and tools.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The database file a `sqlite://` URL points at, when it is a file.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    (path != Path::new(":memory:")).then(|| path.to_owned())
}
