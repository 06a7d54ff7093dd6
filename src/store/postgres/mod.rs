//! The PostgreSQL backend: the mirror in a shared server that reports, dashboards and
//! other tools query directly (`postgres://` or `postgresql://` URLs; TLS and the password
//! from `[database]`, `store::connection`), its schema in `migrations/postgres/` with native types
//! (`timestamptz`, `jsonb`, `bytea`, `boolean`; docs/schema.md).
//!
//! Each file implements one of the store's traits on [`PgStore`], as the SQLite backend's
//! files do: pages and absences (`mirror.rs`, over the row statements of `rows.rs`, whose
//! large batches of new rows go through `COPY`: `copy.rs`),
//! `cursor.rs`, `runs.rs`, `follow_ups.rs`, `vault.rs`, `reports.rs`, `admin.rs` (with
//! `retention.rs`), `probes.rs` and the replicas' `leases.rs`. The helpers a write needs take its open transaction and
//! sit below the files that use them (`rows.rs`, `queue.rs`, `rejected.rs`,
//! `cursor::write_cursor`, `locks.rs`).
//!
//! SQLite has one writer at a time; PostgreSQL runs transactions side by side. So that
//! every write keeps SQLite's guarantees, each transaction that writes a source's rows
//! first takes that source's advisory lock (`locks.rs`): one source's pages, sweeps,
//! follow-ups and cursors are written one transaction at a time, different sources in
//! parallel. A lock held longer than `[database] busy_timeout` is the same
//! [`StoreError::Busy`] as a locked SQLite file, waited out by `store::while_busy`.
//!
//! A handle made by `Leases::fenced` writes for a replica holding a scope's lease: the
//! writes a cycle makes (pages, absences, follow-up answers, cursors, run starts) also
//! prove the lease still holds before they commit (`leases::hold_fence`).

mod admin;
mod copy;
mod cursor;
pub(super) mod error;
mod events;
mod export;
mod follow_ups;
mod leases;
mod locks;
mod mirror;
mod probes;
mod queue;
mod rejected;
mod reports;
mod retention;
mod rows;
mod runs;
mod schema;
mod text;
mod vault;
mod verifications;
mod webhooks;

use std::any::Any;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

pub use copy::COPY_MIN_ROWS;

use super::last_write::LastWrite;
use super::upsert::MirrorTime;
use super::{Backend, BackendKind, Fence, StoreError, StoreSettings, TlsMode};
use crate::time::Timestamp;

/// The mirror in a PostgreSQL database; reached as a [`crate::store::Store`].
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    /// What the latest write of mirror data met (for readiness); shared with the open
    /// page transactions.
    last_write: Arc<LastWrite>,
    /// `rejected_records` retention, applied when a run ends.
    rejected_retention: Duration,
    /// The lease this handle writes under ([`crate::store::Leases::fenced`]): every write
    /// of mirror data proves it still holds before committing. `None`: not leased.
    fence: Option<Fence>,
}

impl PgStore {
    /// Connects to the database `settings.url` names, without migrating it, with the TLS
    /// mode and password of `[database]`. A refused first connection names the database
    /// (without a password) and the TLS settings tried.
    pub async fn connect(settings: &StoreSettings) -> Result<PgStore, StoreError> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(|error| StoreError::Connect {
                database: without_password(&settings.url),
                tls: settings.tls.describe(),
                source: Box::new(error),
            })?;
        Ok(PgStore {
            pool,
            last_write: Arc::default(),
            rejected_retention: settings.rejected_records_retention,
            fence: None,
        })
    }

    /// The underlying pool, for read-only report queries in tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Backend for PgStore {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The connection options of `settings`: its URL, then `[database]`'s TLS settings and
/// password (the configuration refuses a URL that carries either too).
fn connect_options(settings: &StoreSettings) -> Result<PgConnectOptions, StoreError> {
    let mut options = PgConnectOptions::from_str(&settings.url)?
        .application_name("convsync")
        .options([
            // A write that waits longer than this for another writer's lock fails as
            // busy and is tried again (store::while_busy), as on SQLite.
            (
                "lock_timeout",
                format!("{}ms", settings.busy_timeout.as_millis()),
            ),
            // Text the server renders for a session (errors, `now()::text`) in UTC, as
            // the mirror is.
            ("timezone", "UTC".to_owned()),
        ])
        .ssl_mode(ssl_mode(settings.tls.mode));
    if settings.tls.mode.verifies_server() {
        choose_crypto_provider();
    }
    if let Some(root_cert) = &settings.tls.root_cert {
        options = options.ssl_root_cert(root_cert);
    }
    if let Some(client) = &settings.tls.client {
        choose_crypto_provider();
        options = options
            .ssl_client_cert(&client.cert)
            .ssl_client_key_from_pem(client.key.expose().as_bytes());
    }
    if let Some(password) = &settings.password {
        options = options.password(password.expose());
    }
    Ok(options)
}

/// Names aws-lc-rs as the process's TLS crypto provider, unless one is named already.
/// sqlx checks a server's certificate with rustls's process-wide default, which rustls
/// picks alone only when exactly one provider is linked; a binary that links a second
/// (the tests do, through Docker's client) would panic at the first `verify-ca`.
fn choose_crypto_provider() {
    // An `Err` says a provider was named first, which is as good.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The configuration's TLS mode as sqlx names it (libpq's `sslmode`).
fn ssl_mode(mode: TlsMode) -> PgSslMode {
    match mode {
        TlsMode::Disable => PgSslMode::Disable,
        TlsMode::Allow => PgSslMode::Allow,
        TlsMode::Prefer => PgSslMode::Prefer,
        TlsMode::Require => PgSslMode::Require,
        TlsMode::VerifyCa => PgSslMode::VerifyCa,
        TlsMode::VerifyFull => PgSslMode::VerifyFull,
    }
}

/// An instant as `timestamptz` holds it: microseconds, like the SQLite mirror's text, so
/// that a record's time equals the stored one when they name the same microsecond.
pub(super) fn instant(t: Timestamp) -> DateTime<Utc> {
    t.as_datetime().trunc_subsecs(6)
}

impl MirrorTime for DateTime<Utc> {
    fn of(t: Timestamp) -> Self {
        instant(t)
    }

    fn to_timestamp(&self) -> Option<Timestamp> {
        Some(Timestamp::from(*self))
    }
}

/// A stored instant in the mirror's text form (what the SQLite backend answers too).
pub(super) fn mirror_text(t: DateTime<Utc>) -> String {
    Timestamp::from(t).to_mirror_text()
}

/// `url` with its password (if any) left out, for messages: a URL is shown in errors and
/// logs, a password never.
pub(super) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(None);
            }
            parsed.to_string()
        }
        Err(_) => "the PostgreSQL database".to_owned(),
    }
}
