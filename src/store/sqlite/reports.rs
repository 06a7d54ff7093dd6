//! Read-only views of the mirror: each source's status, and the demo's rows per source and
//! sample "who waits longest" report.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{
    FollowUpQueue, LastRun, SourceStatus, SourceSummary, StatusReports, StoreError, WAITING_QUERY,
    WaitingRow,
};
use crate::time::Timestamp;

#[async_trait]
impl StatusReports for SqliteStore {
    async fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        let counts = sqlx::query!(
            r#"SELECT COUNT(*) AS "rows!: i64",
                      COALESCE(SUM(CASE WHEN active = 1 AND closed_at IS NULL THEN 1 ELSE 0 END), 0)
                          AS "active_rows!: i64"
             FROM conversations WHERE source = ? AND deleted_at IS NULL"#,
            source
        )
        .fetch_one(&self.pool)
        .await?;
        let last_run = sqlx::query_as!(
            LastRun,
            r#"SELECT id AS "id!", started_at, finished_at, outcome,
                      rows_inserted + rows_updated AS "rows_changed!: i64", error
             FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1"#,
            source
        )
        .fetch_optional(&self.pool)
        .await?;
        let last_success = sqlx::query_scalar!(
            r#"SELECT MAX(finished_at) AS "last?: String" FROM sync_runs
             WHERE source = ? AND outcome IN ('caught_up', 'more_to_do')"#,
            source
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(SourceStatus {
            source: source.to_owned(),
            rows: counts.rows as u64,
            active_rows: counts.active_rows as u64,
            last_run,
            last_success_at: last_success.and_then(|s| Timestamp::parse_rfc3339(&s).ok()),
            pending_follow_ups: self.count_follow_ups(source).await?,
        })
    }

    fn waiting_query(&self) -> &'static str {
        WAITING_QUERY
    }

    async fn source_summaries(&self) -> Result<Vec<SourceSummary>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT source, provider, COUNT(*) AS "rows!: i64",
                      COALESCE(SUM(active = 1 AND closed_at IS NULL), 0) AS "open!: i64",
                      SUM(awaiting_reply = 1) AS "awaiting?: i64",
                      COALESCE(SUM(closed_at IS NOT NULL OR deleted_at IS NOT NULL), 0)
                          AS "closed_or_deleted!: i64"
             FROM conversations GROUP BY source, provider ORDER BY source"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut summaries = Vec::with_capacity(rows.len());
        for row in rows {
            let cycles = sqlx::query_scalar!(
                r#"SELECT COUNT(*) AS "n!: i64" FROM sync_runs WHERE source = ?"#,
                row.source
            )
            .fetch_one(&self.pool)
            .await?;
            summaries.push(SourceSummary {
                source: row.source,
                provider: row.provider,
                rows: row.rows,
                open: row.open,
                awaiting: row.awaiting,
                closed_or_deleted: row.closed_or_deleted,
                cycles,
            });
        }
        Ok(summaries)
    }

    async fn longest_waiting(&self) -> Result<Vec<WaitingRow>, StoreError> {
        let rows: Vec<(String, Option<String>, Option<String>, Option<String>)> =
            sqlx::query_as(WAITING_QUERY).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(
                |(provider, contact_name, channel_kind, waiting_since)| WaitingRow {
                    provider,
                    contact_name,
                    channel_kind,
                    waiting_since,
                },
            )
            .collect())
    }
}
