//! Read-only summaries of the mirror for `convsync demo`: rows per source and the sample
//! "who waits longest" report (whose SQL the demo prints, so that a reader can reuse it).

use super::{Store, StoreError};

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

/// The sample report: who has been waiting longest for a reply.
pub const WAITING_QUERY: &str = "SELECT provider, contact_name, channel, last_inbound_at
FROM conversations
WHERE awaiting_reply = 1 AND active = 1 AND deleted_at IS NULL
ORDER BY last_inbound_at
LIMIT 5";

/// One row of [`WAITING_QUERY`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WaitingRow {
    /// The provider.
    pub provider: String,
    /// The contact, when the provider names one.
    pub contact_name: Option<String>,
    /// The channel, when known.
    pub channel: Option<String>,
    /// When the contact last wrote (RFC 3339), when known.
    pub last_inbound_at: Option<String>,
}

impl Store {
    /// Rows per source and provider, ordered by source.
    pub async fn source_summaries(&self) -> Result<Vec<SourceSummary>, StoreError> {
        let rows: Vec<(String, String, i64, i64, Option<i64>, i64)> = sqlx::query_as(
            "SELECT source, provider, COUNT(*),
                    COALESCE(SUM(active = 1 AND closed_at IS NULL), 0),
                    SUM(awaiting_reply = 1),
                    COALESCE(SUM(closed_at IS NOT NULL OR deleted_at IS NOT NULL), 0)
             FROM conversations GROUP BY source, provider ORDER BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut summaries = Vec::with_capacity(rows.len());
        for (source, provider, rows, open, awaiting, closed_or_deleted) in rows {
            let cycles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE source = ?")
                .bind(&source)
                .fetch_one(&self.pool)
                .await?;
            summaries.push(SourceSummary {
                source,
                provider,
                rows,
                open,
                awaiting,
                closed_or_deleted,
                cycles,
            });
        }
        Ok(summaries)
    }

    /// The rows of [`WAITING_QUERY`].
    pub async fn longest_waiting(&self) -> Result<Vec<WaitingRow>, StoreError> {
        Ok(sqlx::query_as(WAITING_QUERY).fetch_all(&self.pool).await?)
    }
}
