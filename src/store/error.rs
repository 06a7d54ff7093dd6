//! What a store operation can fail with, whichever backend ran it. A backend maps its own
//! errors onto these variants (SQLite's result codes: `store::sqlite::error`; PostgreSQL's
//! SQLSTATEs: `store::postgres::error`), so that the engine's busy wait and readiness read
//! one vocabulary.

use super::{postgres, sqlite};

use crate::retry::Transient;

/// A backend's own error, kept whole for its message and cause chain.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors from the mirror database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names a backend this convsync does not have. Only the scheme is
    /// quoted: a server URL may carry a password.
    #[error(
        "database url scheme {scheme:?} is not supported: expected sqlite://PATH or postgres://HOST/DATABASE"
    )]
    UnsupportedScheme {
        /// The part of the URL before its first `:`.
        scheme: String,
    },
    /// The first connection to a database server failed (refused, unreachable, TLS or
    /// password not accepted). Names the database without its password.
    #[error("cannot connect to {database} ({tls}): {source}")]
    Connect {
        /// The database URL, without a password.
        database: String,
        /// The TLS settings tried.
        tls: String,
        /// Why, as the server or the TLS check said.
        source: BackendError,
    },
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
    Migrate(#[source] BackendError),
    /// The database is locked by another writer for longer than the busy timeout.
    #[error("database is busy (locked by another writer): {0}")]
    Busy(String),
    /// The disk or the database's size limit is full.
    #[error("database is full (disk or size limit): {0}")]
    Full(String),
    /// The database itself refused the write: read-only, an I/O error, cannot be opened.
    #[error("database error: {0}")]
    Unwritable(BackendError),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(BackendError),
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
    /// This replica's lease on the scope was taken over (or expired and was claimed by
    /// another replica) before the write committed: nothing of it was written. Never
    /// retried: the replica stops the scope's sources.
    #[error(
        "the lease on scope {scope:?} is no longer held by this replica (another replica took it over); nothing was written"
    )]
    LeaseLost {
        /// The rate-limit scope.
        scope: String,
    },
    /// Leases between replicas need a shared server database; a SQLite file keeps to one
    /// daemon with its lock file instead.
    #[error("replica leases need a PostgreSQL database; the {backend} backend has none")]
    LeasesUnsupported {
        /// The backend's name.
        backend: &'static str,
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

impl Transient for StoreError {
    /// Only another process's write lock passes (`while_busy` waits it out); a full disk,
    /// an unwritable file, a corrupt value or a newer schema stay until an operator acts.
    fn is_transient(&self) -> bool {
        matches!(self, StoreError::Busy(_))
    }
}

impl StoreError {
    /// Whether the database file itself refused the write (full, read-only, I/O error),
    /// as opposed to a lock or a bad value: what readiness reports as "not writable".
    pub fn is_file_failure(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unwritable(_))
    }
}

/// What a database error means to the store beyond "it failed", as the backend that
/// raised it reads its own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Another writer holds a lock for longer than the busy timeout: wait and try again.
    Busy,
    /// The disk (or the database's size limit) is full.
    Full,
    /// The database refuses writes: read-only, an I/O error, not reachable.
    Unwritable,
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        let failure = match &err {
            sqlx::Error::Database(db) => {
                sqlite::error::failure_of(&**db).or_else(|| postgres::error::failure_of(&**db))
            }
            sqlx::Error::Io(_) => Some(Failure::Unwritable),
            _ => None,
        };
        let message = || match &err {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        match failure {
            Some(Failure::Busy) => StoreError::Busy(message()),
            Some(Failure::Full) => StoreError::Full(message()),
            Some(Failure::Unwritable) => StoreError::Unwritable(Box::new(err)),
            None => StoreError::Database(Box::new(err)),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Box::new(err))
    }
}
