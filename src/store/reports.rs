//! What the mirror holds, read for people: each source's status (`convsync status`,
//! readiness), the demo's rows per source and its sample "who waits longest" report, whose
//! SQL the demo prints so that a reader can reuse it.

use async_trait::async_trait;

use super::StoreError;
use crate::time::Timestamp;

/// One source's state for `convsync status` and readiness checks.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// Source name.
    pub source: String,
    /// Rows in the mirror (not deleted).
    pub rows: u64,
    /// Open rows.
    pub active_rows: u64,
    /// The latest run: (started, finished, outcome, error).
    pub last_run: Option<LastRun>,
    /// When the latest successful (caught up or more to do) run finished.
    pub last_success_at: Option<Timestamp>,
    /// Follow-ups waiting.
    pub pending_follow_ups: u64,
}

/// The newest run of a source.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    /// Run id.
    pub id: i64,
    /// Start.
    pub started_at: String,
    /// End, unless still running.
    pub finished_at: Option<String>,
    /// Outcome word.
    pub outcome: String,
    /// Rows inserted + updated.
    pub rows_changed: i64,
    /// Error text.
    pub error: Option<String>,
}

/// One source's rows in the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// The source's name.
    pub source: String,
    /// Its provider (`d365`, `spruce`, ...).
    pub provider: String,
    /// All its rows.
    pub rows: i64,
    /// Rows active and not closed.
    pub open: i64,
    /// Rows waiting for a reply; `None` where the provider does not say who wrote last
    /// (D365's listing), which is not a count of 0.
    pub awaiting: Option<i64>,
    /// Rows closed or deleted.
    pub closed_or_deleted: i64,
    /// Sync cycles recorded for it.
    pub cycles: i64,
}

/// One row of the sample report ([`StatusReports::longest_waiting`]).
#[derive(Debug, Clone)]
pub struct WaitingRow {
    /// The provider.
    pub provider: String,
    /// The contact, when the provider names one.
    pub contact_name: Option<String>,
    /// The channel's kind (`v1_conversations.channel_kind`), when known.
    pub channel_kind: Option<String>,
    /// Since when the contact waits: their last message (RFC 3339).
    pub waiting_since: Option<String>,
}

/// The sample report: who has waited longest for a reply, read from the versioned view
/// reports use (docs/schema.md, "Report views"), in SQL both backends read alike.
/// Runtime-checked: the demo prints this text, and a compile-checked query needs its SQL
/// written in place.
pub(crate) const WAITING_QUERY: &str = "SELECT provider, contact_name, channel_kind, waiting_since
FROM v1_awaiting_reply
ORDER BY waiting_since
LIMIT 5";

/// Read-only views of the mirror for `status`, readiness and the demo.
#[async_trait]
pub trait StatusReports: Send + Sync {
    /// Status of one source.
    async fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError>;

    /// Rows per source and provider, ordered by source.
    async fn source_summaries(&self) -> Result<Vec<SourceSummary>, StoreError>;

    /// The sample report: who has been waiting longest for a reply, as a reader would
    /// query the mirror, in this backend's SQL (the demo prints it to be reused).
    fn waiting_query(&self) -> &'static str;

    /// The rows of [`StatusReports::waiting_query`].
    async fn longest_waiting(&self) -> Result<Vec<WaitingRow>, StoreError>;
}
