//! What the tests read back from a mirror database: one row type for the `conversations`
//! table and one for the newest `sync_runs` row, read the same way whether the daemon runs
//! in the test (`TestApp`) or as a child process (a pool on its file), and whichever store
//! holds it ([`MirrorDb`]: on PostgreSQL, instants are read in the mirror's text form).
//! A child process's mirror is read through a [`MirrorPool`] of the test's own.

use std::collections::BTreeMap;

use convsync::store::Store;
use sqlx::{PgPool, SqlitePool};

/// A mirror database the tests read: a SQLite pool, or a PostgreSQL one.
#[derive(Debug, Clone, Copy)]
pub enum MirrorDb<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl<'a> From<&'a SqlitePool> for MirrorDb<'a> {
    fn from(pool: &'a SqlitePool) -> Self {
        MirrorDb::Sqlite(pool)
    }
}

impl<'a> From<&'a PgPool> for MirrorDb<'a> {
    fn from(pool: &'a PgPool) -> Self {
        MirrorDb::Postgres(pool)
    }
}

/// What a test reads the mirror through: a [`Store`], a pool, a [`MirrorDb`].
pub trait AsMirrorDb {
    fn mirror_db(&self) -> MirrorDb<'_>;
}

/// `AsMirrorDb` for types whose reference converts into a [`MirrorDb`].
macro_rules! as_mirror_db_by_from {
    ($($type:ty),*) => {
        $(
            impl AsMirrorDb for $type {
                fn mirror_db(&self) -> MirrorDb<'_> {
                    self.into()
                }
            }
        )*
    };
}

as_mirror_db_by_from!(Store, SqlitePool, PgPool, MirrorPool);

impl AsMirrorDb for MirrorDb<'_> {
    fn mirror_db(&self) -> MirrorDb<'_> {
        *self
    }
}

impl<'a> From<&'a Store> for MirrorDb<'a> {
    fn from(store: &'a Store) -> Self {
        match (store.as_sqlite(), store.as_postgres()) {
            (Some(sqlite), _) => MirrorDb::Sqlite(sqlite.pool()),
            (None, Some(postgres)) => MirrorDb::Postgres(postgres.pool()),
            (None, None) => unreachable!("a store is SQLite or PostgreSQL"),
        }
    }
}

/// A pool of the test's own on a mirror that a convsync child process writes: another
/// process, as far as either database is concerned.
#[derive(Debug, Clone)]
pub enum MirrorPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl MirrorPool {
    pub async fn close(&self) {
        match self {
            MirrorPool::Sqlite(pool) => pool.close().await,
            MirrorPool::Postgres(pool) => pool.close().await,
        }
    }
}

impl<'a> From<&'a MirrorPool> for MirrorDb<'a> {
    fn from(pool: &'a MirrorPool) -> Self {
        match pool {
            MirrorPool::Sqlite(pool) => MirrorDb::Sqlite(pool),
            MirrorPool::Postgres(pool) => MirrorDb::Postgres(pool),
        }
    }
}

/// A `timestamptz` column in the mirror's text form, as SQLite stores it.
macro_rules! mirror_text {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "#,
            $column
        )
    };
}

/// One mirrored conversation, every column a test compares or inspects.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MirrorRow {
    pub conversation_id: String,
    pub provider: String,
    pub account: String,
    pub created_at: Option<String>,
    pub last_activity_at: Option<String>,
    pub active: Option<bool>,
    pub status: Option<String>,
    pub channel: Option<String>,
    pub contact_id: Option<String>,
    pub contact_name: Option<String>,
    pub title: Option<String>,
    pub assignee: Option<String>,
    pub unread_count: Option<i64>,
    pub last_message_direction: Option<String>,
    pub last_inbound_at: Option<String>,
    pub last_outbound_at: Option<String>,
    pub awaiting_reply: Option<bool>,
    pub closed_at: Option<String>,
    pub deleted_at: Option<String>,
    pub raw: String,
}

impl MirrorRow {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    /// The reply-state columns were never filled (the items or messages were not read).
    pub fn reply_state_unread(&self) -> bool {
        self.last_message_direction.is_none()
            && self.last_inbound_at.is_none()
            && self.last_outbound_at.is_none()
            && self.awaiting_reply.is_none()
    }
}

/// A source's mirror, by conversation id.
pub type Mirror = BTreeMap<String, MirrorRow>;

/// Every row of `source`, deleted ones included.
pub async fn read_mirror<'a>(db: impl Into<MirrorDb<'a>>, source: &str) -> Mirror {
    read_rows(db.into(), "source", source)
        .await
        .into_iter()
        .map(|row| (row.conversation_id.clone(), row))
        .collect()
}

/// The rows of conversation `id`, one per source that mirrors it.
pub async fn read_conversation<'a>(db: impl Into<MirrorDb<'a>>, id: &str) -> Vec<MirrorRow> {
    read_rows(db.into(), "conversation_id", id).await
}

/// The rows whose `key` column (a literal of this module) holds `value`.
async fn read_rows(db: MirrorDb<'_>, key: &'static str, value: &str) -> Vec<MirrorRow> {
    match db {
        MirrorDb::Sqlite(pool) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT conversation_id, provider, account, created_at, last_activity_at, active,
                    status, channel, contact_id, contact_name, title, assignee, unread_count,
                    last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply,
                    closed_at, deleted_at, raw
             FROM conversations WHERE {key} = ?"
        )))
        .bind(value)
        .fetch_all(pool)
        .await
        .unwrap(),
        MirrorDb::Postgres(pool) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
            concat!(
                "SELECT conversation_id, provider, account, ",
                mirror_text!("created_at"),
                ", ",
                mirror_text!("last_activity_at"),
                ", active, status, channel, contact_id, contact_name, title, assignee,
                    unread_count, last_message_direction, ",
                mirror_text!("last_inbound_at"),
                ", ",
                mirror_text!("last_outbound_at"),
                ", awaiting_reply, ",
                mirror_text!("closed_at"),
                ", ",
                mirror_text!("deleted_at"),
                ", raw::text AS raw FROM conversations WHERE {} = $1"
            ),
            key
        )))
        .bind(value)
        .fetch_all(pool)
        .await
        .unwrap(),
    }
}

/// The newest `sync_runs` row of a source: how its last cycle ended and what it counted.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct LastRun {
    pub id: i64,
    pub outcome: String,
    pub pages: i64,
    pub requests: i64,
    #[sqlx(rename = "rows_inserted")]
    pub inserted: i64,
    #[sqlx(rename = "rows_updated")]
    pub updated: i64,
    #[sqlx(rename = "rows_unchanged")]
    pub unchanged: i64,
    #[sqlx(rename = "rows_closed")]
    pub closed: i64,
    #[sqlx(rename = "rows_deleted")]
    pub deleted: i64,
    pub error: Option<String>,
    pub notes: Option<String>,
}

impl LastRun {
    /// The notes, or empty when the run wrote none.
    pub fn notes(&self) -> &str {
        self.notes.as_deref().unwrap_or_default()
    }
}

/// The newest run of `source`; panics when it has none.
pub async fn read_last_run<'a>(db: impl Into<MirrorDb<'a>>, source: &str) -> LastRun {
    const COLUMNS: &str = "id, outcome, pages, requests, rows_inserted, rows_updated,
        rows_unchanged, rows_closed, rows_deleted, error, notes";
    let run = match db.into() {
        MirrorDb::Sqlite(pool) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1"
            )))
            .bind(source)
            .fetch_one(pool)
            .await
        }
        MirrorDb::Postgres(pool) => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM sync_runs WHERE source = $1 ORDER BY id DESC LIMIT 1"
            )))
            .bind(source)
            .fetch_one(pool)
            .await
        }
    };
    run.unwrap_or_else(|e| panic!("no sync run of {source}: {e}"))
}
