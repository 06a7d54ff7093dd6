//! What the tests read back from a mirror database: one row type for the `conversations`
//! table and one for the newest `sync_runs` row, read the same way whether the daemon runs
//! in the test (`TestApp`) or as a child process (a pool on its file).

use std::collections::BTreeMap;

use sqlx::SqlitePool;

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
pub async fn read_mirror(pool: &SqlitePool, source: &str) -> Mirror {
    let rows: Vec<MirrorRow> = sqlx::query_as(
        "SELECT conversation_id, provider, account, created_at, last_activity_at, active, status,
                channel, contact_id, contact_name, title, assignee, unread_count,
                last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply,
                closed_at, deleted_at, raw
         FROM conversations WHERE source = ?",
    )
    .bind(source)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|row| (row.conversation_id.clone(), row))
        .collect()
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
pub async fn read_last_run(pool: &SqlitePool, source: &str) -> LastRun {
    sqlx::query_as(
        "SELECT id, outcome, pages, requests, rows_inserted, rows_updated, rows_unchanged,
                rows_closed, rows_deleted, error, notes
         FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(source)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("no sync run of {source}: {e}"))
}
