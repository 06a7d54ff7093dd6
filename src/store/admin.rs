//! Operator tools on the whole database: which sources it holds rows for, renaming and
//! forgetting a source, the schema's migrations, and retention of personal data. Used by
//! the `sources`, `migrate` and `purge` commands, the start-up's adoption of renamed
//! sources and the daemon's retention schedule, never by the engine's cycles.
//!
//! Retention only ever touches conversations that *ended* (deleted at the provider, or
//! closed) before the cutoff **and** did not change after it, so an open conversation, or
//! one the provider changed within the window, is never touched. Each purge runs in one
//! transaction; an applied one is recorded in the database.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

use super::StoreError;
use crate::time::Timestamp;

/// What the database holds for one source name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoredSource {
    /// The name in the `source` columns.
    pub name: String,
    /// Conversation rows (deleted ones included).
    pub rows: u64,
    /// Walk cursors.
    pub walks: u64,
    /// Recorded cycles.
    pub runs: u64,
}

/// How a rename went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameOutcome {
    /// Every row, cursor and run moved to the new name.
    Renamed {
        /// Conversation rows moved.
        rows: u64,
    },
    /// The database holds nothing under the old name.
    NothingToRename,
    /// The new name already has rows or cursors; nothing was changed.
    TargetInUse,
}

/// How long each kind of data is kept; `None` keeps it for ever (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Clear `raw`, `title` and the contact columns of conversations ended longer ago.
    pub redact_closed_after: Option<Duration>,
    /// Remove conversations (and their queued follow-ups) ended longer ago.
    pub delete_closed_after: Option<Duration>,
    /// Remove `rejected_records` rows older than this.
    pub rejected_records_after: Option<Duration>,
    /// Remove finished `sync_runs` rows older than this (each source's newest run and
    /// newest successful run are kept: `status` and readiness read them).
    pub sync_runs_after: Option<Duration>,
    /// Remove `conversation_events` rows observed longer ago than this.
    pub events_after: Option<Duration>,
    /// Remove `webhook_deliveries` (the webhook dedupe keys) received longer ago than this
    /// (`[webhooks] dedupe_retention`, when the receiver is on).
    pub webhook_deliveries_after: Option<Duration>,
}

impl RetentionPolicy {
    /// Whether any key is set (otherwise nothing is ever purged).
    pub fn is_active(&self) -> bool {
        self.redact_closed_after.is_some()
            || self.delete_closed_after.is_some()
            || self.rejected_records_after.is_some()
            || self.sync_runs_after.is_some()
            || self.events_after.is_some()
            || self.webhook_deliveries_after.is_some()
    }
}

/// What a purge cleared or removed for one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Conversations whose `raw` and contact columns were cleared.
    pub redacted: u64,
    /// Conversations removed.
    pub deleted: u64,
    /// `rejected_records` rows removed.
    pub rejected_records: u64,
    /// `sync_runs` rows removed.
    pub sync_runs: u64,
    /// `conversation_events` rows removed by `events_after` (not those that went with
    /// their deleted conversation).
    pub events: u64,
    /// `webhook_deliveries` rows removed.
    pub webhook_deliveries: u64,
}

impl PurgeCounts {
    /// Whether the purge found nothing to do for the source.
    pub fn is_empty(&self) -> bool {
        *self == PurgeCounts::default()
    }
}

/// Whether a database's tables (the names in its schema) are convsync's to migrate: an
/// empty database is (`false`: nothing applied yet), one with convsync's migrations table
/// is (`true`), and anything else is refused untouched, named `shown_name`.
/// Every table with a `source` column: what a rename moves and a forget deletes. Fixed
/// names, never input, so a backend may format them into its statements.
pub(super) const SOURCE_TABLES: &[&str] = &[
    "conversations",
    "cursors",
    "sync_runs",
    "follow_ups",
    "rejected_records",
    "conversation_events",
    "backfilled_sources",
    "verifications",
];

/// The statements that move or delete one source's data, run by a backend inside a
/// transaction that holds the whole mirror; [`rename_source_rows`] and
/// [`forget_source_rows`] decide which run.
pub(super) trait SourceStatements: Send {
    /// How many rows, cursors and runs are stored under `name`.
    fn held(&mut self, name: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Moves `table`'s rows of `old` to `new`; returns how many moved.
    fn rename_in(
        &mut self,
        table: &'static str,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Deletes `table`'s rows of `source`.
    fn delete_from(
        &mut self,
        table: &'static str,
        source: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Moves everything of `old` to `new` through `statements`, unless `new` already holds
/// something or `old` nothing. The caller commits only a [`RenameOutcome::Renamed`].
pub(super) async fn rename_source_rows<S: SourceStatements>(
    statements: &mut S,
    old: &str,
    new: &str,
) -> Result<RenameOutcome, StoreError> {
    if statements.held(new).await? > 0 {
        return Ok(RenameOutcome::TargetInUse);
    }
    if statements.held(old).await? == 0 {
        return Ok(RenameOutcome::NothingToRename);
    }
    let mut rows = 0;
    for table in SOURCE_TABLES {
        let moved = statements.rename_in(table, old, new).await?;
        if *table == "conversations" {
            rows = moved;
        }
    }
    Ok(RenameOutcome::Renamed { rows })
}

/// Deletes everything of `source` through `statements`.
pub(super) async fn forget_source_rows<S: SourceStatements>(
    statements: &mut S,
    source: &str,
) -> Result<(), StoreError> {
    for table in SOURCE_TABLES {
        statements.delete_from(table, source).await?;
    }
    Ok(())
}

pub(super) fn holds_convsync_schema(
    tables: &[String],
    shown_name: &str,
) -> Result<bool, StoreError> {
    let has_migrations = tables.iter().any(|t| t == "_sqlx_migrations");
    if !tables.is_empty() && !has_migrations {
        return Err(StoreError::NotConvsync {
            path: shown_name.to_owned(),
        });
    }
    Ok(has_migrations)
}

/// Refuses a database whose newest applied migration (`found`) is newer than any of
/// `migrator`'s: a newer convsync wrote it.
pub(super) fn refuse_newer_schema(
    found: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match found.filter(|f| *f > known) {
        Some(found) => Err(StoreError::NewerSchema { found, known }),
        None => Ok(()),
    }
}

/// Operator tools on sources, the schema and retention.
#[async_trait]
pub trait Administration: Send + Sync {
    /// Every source name found in the database, with its counts, by name.
    async fn stored_sources(&self) -> Result<Vec<StoredSource>, StoreError>;

    /// The distinct provider accounts of a source's rows.
    async fn source_accounts(&self, source: &str) -> Result<Vec<String>, StoreError>;

    /// Moves everything stored under `old` (rows, cursors, runs, follow-ups, rejected
    /// records) to `new` in one transaction, so the next cycle of `new` continues where
    /// `old` stood. Refuses when `new` already has rows or cursors.
    async fn rename_source(&self, old: &str, new: &str) -> Result<RenameOutcome, StoreError>;

    /// Deletes everything stored under `source`; returns what was there.
    async fn forget_source(&self, source: &str) -> Result<StoredSource, StoreError>;

    /// Applies pending migrations (idempotent), refusing a database that is not
    /// convsync's or was migrated by a newer convsync (`shown_name` names it in errors).
    async fn migrate(&self, shown_name: &str) -> Result<(), StoreError>;

    /// Versions of the schema migrations applied so far (none in a new database).
    async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError>;

    /// Applies `policy` as of `now`, or with `apply = false` only counts what it would do.
    /// Returns the counts by source (sources with nothing to purge are left out).
    async fn purge(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        apply: bool,
    ) -> Result<BTreeMap<String, PurgeCounts>, StoreError>;
}
