//! The mirror database, behind a trait. All SQL lives under this module; the engine asks
//! for whole operations ("apply this page and this cursor atomically") and never writes
//! SQL.
//!
//! The operations are split by concern into a few traits — page writes ([`PageWrites`],
//! [`PageTransaction`]), [`Cursors`], the [`RunLog`], the [`FollowUpQueue`], the
//! [`RefreshTokens`] vault, [`StatusReports`], the report views' [`ViewExports`],
//! [`Administration`], [`HealthProbes`], the replicas' [`Leases`] and the history's
//! [`ChangeFeed`], the mirror's [`Verifications`] —
//! that one [`Backend`] implements. Every layer holds the cheap-clone handle [`Store`] and
//! calls them on it; the backend is chosen once, from `database.url`'s scheme, by
//! [`Store::open`]. Page writes answer a [`RowChange`] per row, so the engine's own rules
//! (which rows are late) stay in the engine.
//!
//! Two backends: [`sqlite`], the embedded default, and [`postgres`], a shared server that
//! reports run against (each with its migrations folder at the repository's root,
//! `migrations/sqlite/` and `migrations/postgres/`). A backend is a folder here, a
//! [`BackendKind`] and an arm in [`Store::connect`]; the rules both follow when they write
//! a page's rows live once, in `upsert.rs`. Outside this module nothing names
//! `store::sqlite` or `store::postgres`: what only one backend has (SQLite's backups, each
//! one's pool for report queries in tests and tools) is reached through
//! [`Store::as_sqlite`] and [`Store::as_postgres`], which say `None` for the other.

mod admin;
mod backup;
mod busy;
mod connection;
mod cursor;
mod error;
mod events;
pub mod export;
mod follow_ups;
mod last_write;
mod leases;
mod page;
pub mod postgres;
mod probes;
mod reports;
mod runs;
pub mod sqlite;
mod upsert;
mod vault;
mod verifications;
mod webhooks;

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use admin::{Administration, PurgeCounts, RenameOutcome, RetentionPolicy, StoredSource};
pub use backup::{BackupError, BackupSummary, restore};
pub use busy::while_busy;
pub use connection::{ClientIdentity, TlsMode, TlsSettings};
pub use cursor::{CursorRewrite, CursorState, Cursors};
pub use error::{BackendError, StoreError};
pub use events::{BackfillEvents, ChangeFeed, ConversationEvent};
pub use export::ViewExports;
pub use follow_ups::{DetailWrite, FollowUpQueue};
pub use last_write::WriteFailure;
pub use leases::{Claim, Fence, LeaseOwner, Leases, ReplicaName};
pub use page::{
    AbsenceOutcome, MassChangeGuard, PageCounts, PageOutcome, PageTransaction, PageWrite,
    PageWrites, RowChange, SweepCompletion,
};
pub use probes::HealthProbes;
pub(crate) use reports::WAITING_QUERY;
pub use reports::{LastRun, SourceStatus, SourceSummary, StatusReports, WaitingRow};
pub use runs::{RunLog, RunOutcome, RunReport};
pub use sqlite::DaemonLock;
pub use vault::{RefreshTokenAge, RefreshTokens};
pub use verifications::{
    DriftCounts, MirroredState, VerificationRecord, Verifications, VerifyMode,
};
pub use webhooks::{EventChange, EventOutcome, EventWrite, WEBHOOK_RUN_ID, WebhookWrites};

use postgres::PgStore;
use sqlite::SqliteStore;

use crate::secret::Secret;

/// Database settings.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where the database is; its scheme chooses the backend (`sqlite://path`, created if
    /// missing).
    pub url: String,
    /// How long a write waits for another writer's lock before failing.
    pub busy_timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a rejected item that is not seen again stays in `rejected_records`.
    pub rejected_records_retention: Duration,
    /// The server's password (`[database] password`), never part of the URL then.
    pub password: Option<Secret>,
    /// How the connection to a server is encrypted and the server checked.
    pub tls: TlsSettings,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: "sqlite://convsync.db".into(),
            busy_timeout: Duration::from_secs(10),
            max_connections: 4,
            rejected_records_retention: Duration::from_secs(30 * 24 * 3600),
            password: None,
            tls: TlsSettings::default(),
        }
    }
}

/// The backends this convsync has, named by their URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// A SQLite file (`sqlite://path`, `sqlite::memory:`).
    Sqlite,
    /// A PostgreSQL database (`postgres://user@host/database`, also `postgresql://`).
    Postgres,
}

impl BackendKind {
    /// The backend `url` names by its scheme; any other scheme is an error naming it (and
    /// nothing else of the URL, which may hold a password).
    pub fn of(url: &str) -> Result<BackendKind, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Ok(BackendKind::Sqlite),
            "postgres" | "postgresql" => Ok(BackendKind::Postgres),
            other => Err(StoreError::UnsupportedScheme {
                scheme: other.to_owned(),
            }),
        }
    }

    /// The backend's name, as its URL scheme spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database the mirror can live in: every operation the engine, the commands and the
/// health endpoints need, split by concern into the traits it combines.
#[async_trait]
pub trait Backend:
    PageWrites
    + Cursors
    + RunLog
    + FollowUpQueue
    + RefreshTokens
    + StatusReports
    + Administration
    + HealthProbes
    + Leases
    + ChangeFeed
    + ViewExports
    + Verifications
    + WebhookWrites
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Closes all connections (SQLite checkpoints its WAL).
    async fn close(&self);

    /// The backend as its concrete type, for [`Store::as_sqlite`] and
    /// [`Store::as_postgres`].
    fn as_any(&self) -> &dyn Any;
}

/// Handle to the mirror database; cheap to clone. It dereferences to its [`Backend`], so
/// every operation is a method call on it (`store.apply_page(..)`).
#[derive(Clone, Debug)]
pub struct Store(Arc<dyn Backend>);

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Store {
    /// A handle to `backend`.
    pub fn from_backend(backend: impl Backend + 'static) -> Store {
        Store(Arc::new(backend))
    }

    /// Opens (creating it if missing) the database `settings.url` names, with the backend
    /// its scheme chooses, without migrating it.
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        match BackendKind::of(&settings.url)? {
            BackendKind::Sqlite => Ok(Store::from_backend(SqliteStore::connect(settings).await?)),
            BackendKind::Postgres => Ok(Store::from_backend(PgStore::connect(settings).await?)),
        }
    }

    /// Opens the database and brings its schema up to date, refusing databases that are
    /// not convsync's or were written by a newer convsync.
    pub async fn open(settings: &StoreSettings) -> Result<Store, StoreError> {
        let store = Store::connect(settings).await?;
        store.migrate(&settings.url).await?;
        Ok(store)
    }

    /// The SQLite backend, for what only SQLite has (its pool for report queries in tests
    /// and tools, backups); `None` on another backend, which the caller reports.
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        self.0.as_any().downcast_ref()
    }

    /// The PostgreSQL backend, for its pool (report queries in tests and tools); `None` on
    /// another backend.
    pub fn as_postgres(&self) -> Option<&PgStore> {
        self.0.as_any().downcast_ref()
    }
}

/// The database URL `url` as messages and logs show it: without the password a server URL
/// may carry.
pub fn shown_url(url: &str) -> String {
    match BackendKind::of(url) {
        Ok(BackendKind::Postgres) => postgres::without_password(url),
        _ => url.to_owned(),
    }
}

/// The local file that holds the database `url` names, when its backend keeps it in one
/// (SQLite, except `:memory:`).
pub fn database_file(url: &str) -> Option<PathBuf> {
    match BackendKind::of(url).ok()? {
        BackendKind::Sqlite => sqlite::sqlite_path(url),
        BackendKind::Postgres => None,
    }
}

impl DaemonLock {
    /// Takes the single-daemon lock of the database `url` names, or says who holds it.
    /// A PostgreSQL database has no file to lock beside it: there the lock holds nothing,
    /// and daemons share the database as replicas, each scope under one lease ([`Leases`]).
    pub fn for_database(url: &str) -> Result<DaemonLock, StoreError> {
        match BackendKind::of(url)? {
            BackendKind::Sqlite => DaemonLock::acquire(sqlite::sqlite_path(url).as_deref()),
            BackendKind::Postgres => DaemonLock::acquire(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A URL's scheme chooses the backend; another scheme is refused by name alone.
    #[test]
    fn a_url_chooses_its_backend_by_scheme() {
        for url in ["sqlite://mirror.db", "sqlite:mirror.db", "sqlite::memory:"] {
            assert_eq!(BackendKind::of(url).unwrap(), BackendKind::Sqlite, "{url}");
        }
        for url in [
            "postgres://db/mirror",
            "postgresql://convsync@db:5432/mirror",
        ] {
            assert_eq!(
                BackendKind::of(url).unwrap(),
                BackendKind::Postgres,
                "{url}"
            );
        }
        let refused = BackendKind::of("mysql://convsync:hunter2@db/mirror").unwrap_err();
        assert!(matches!(&refused, StoreError::UnsupportedScheme { scheme } if scheme == "mysql"));
        let text = refused.to_string();
        assert!(text.contains("\"mysql\""), "{text}");
        assert!(
            !text.contains("hunter2"),
            "the URL's password leaked: {text}"
        );
        assert!(matches!(
            BackendKind::of("mirror.db"),
            Err(StoreError::UnsupportedScheme { scheme }) if scheme.is_empty()
        ));
    }

    /// Messages show a server URL without its password, and a file URL as it is.
    #[test]
    fn a_shown_url_has_no_password() {
        let shown = shown_url("postgres://convsync:hunter2@db:5432/mirror?sslmode=require");
        assert_eq!(shown, "postgres://convsync@db:5432/mirror?sslmode=require");
        assert_eq!(shown_url("sqlite://mirror.db"), "sqlite://mirror.db");
        assert_eq!(
            shown_url("postgres://convsync:hunter2@[db"),
            "the PostgreSQL database"
        );
    }

    /// Opening a database of a backend this convsync lacks fails before touching anything.
    #[tokio::test]
    async fn a_store_of_another_backend_is_a_typed_error() {
        let settings = StoreSettings {
            url: "mysql://localhost/mirror".into(),
            ..StoreSettings::default()
        };
        assert!(matches!(
            Store::open(&settings).await,
            Err(StoreError::UnsupportedScheme { .. })
        ));
        assert_eq!(database_file(&settings.url), None);
        assert!(DaemonLock::for_database(&settings.url).is_err());
    }

    /// The SQLite backend is reached through the neutral handle, and only there.
    #[tokio::test]
    async fn the_sqlite_backend_is_reached_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.db");
        let settings = StoreSettings {
            url: format!("sqlite://{}", path.display()),
            max_connections: 1,
            ..StoreSettings::default()
        };
        let store = Store::open(&settings).await.unwrap();
        assert_eq!(store.kind(), BackendKind::Sqlite);
        assert!(store.as_sqlite().is_some());
        assert_eq!(database_file(&settings.url), Some(path));
        store.close().await;
    }
}
