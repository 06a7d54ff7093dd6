//! Read-only views of the mirror: each source's status, and the demo's rows per source and
//! sample "who waits longest" report. Instants are answered in the mirror's text form, as
//! the SQLite backend answers them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PgStore, mirror_text};
use crate::store::{
    FollowUpQueue, LastRun, SourceStatus, SourceSummary, StatusReports, StoreError, WAITING_QUERY,
    WaitingRow,
};
use crate::time::Timestamp;

#[async_trait]
impl StatusReports for PgStore {
    async fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        let (rows, active_rows): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE active AND closed_at IS NULL)
             FROM conversations WHERE source = $1 AND deleted_at IS NULL",
        )
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        type RunRow = (
            i64,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            String,
            i64,
            Option<String>,
        );
        let last_run: Option<RunRow> = sqlx::query_as(
            "SELECT id, started_at, finished_at, outcome,
                    rows_inserted + rows_updated AS rows_changed, error
             FROM sync_runs WHERE source = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        let last_success: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(finished_at) FROM sync_runs
             WHERE source = $1 AND outcome IN ('caught_up', 'more_to_do')",
        )
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        Ok(SourceStatus {
            source: source.to_owned(),
            rows: rows.max(0) as u64,
            active_rows: active_rows.max(0) as u64,
            last_run: last_run.map(
                |(id, started_at, finished_at, outcome, rows_changed, error)| LastRun {
                    id,
                    started_at: mirror_text(started_at),
                    finished_at: finished_at.map(mirror_text),
                    outcome,
                    rows_changed,
                    error,
                },
            ),
            last_success_at: last_success.map(Timestamp::from),
            pending_follow_ups: self.count_follow_ups(source).await?,
        })
    }

    fn waiting_query(&self) -> &'static str {
        WAITING_QUERY
    }

    async fn source_summaries(&self) -> Result<Vec<SourceSummary>, StoreError> {
        let rows: Vec<(String, String, i64, i64, Option<i64>, i64, i64)> = sqlx::query_as(
            "SELECT c.source, c.provider, count(*),
                    count(*) FILTER (WHERE c.active AND c.closed_at IS NULL),
                    sum(c.awaiting_reply::int),
                    count(*) FILTER (WHERE c.closed_at IS NOT NULL OR c.deleted_at IS NOT NULL),
                    (SELECT count(*) FROM sync_runs r WHERE r.source = c.source)
             FROM conversations c GROUP BY c.source, c.provider
             ORDER BY c.source COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(source, provider, rows, open, awaiting, closed_or_deleted, cycles)| {
                    SourceSummary {
                        source,
                        provider,
                        rows,
                        open,
                        awaiting,
                        closed_or_deleted,
                        cycles,
                    }
                },
            )
            .collect())
    }

    async fn longest_waiting(&self) -> Result<Vec<WaitingRow>, StoreError> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(WAITING_QUERY).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(
                |(provider, contact_name, channel_kind, waiting_since)| WaitingRow {
                    provider,
                    contact_name,
                    channel_kind,
                    waiting_since: waiting_since.map(mirror_text),
                },
            )
            .collect())
    }
}
