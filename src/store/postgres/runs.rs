//! The `sync_runs` audit trail: a row per cycle, opened when it starts and completed with
//! its figures when it ends.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::text::storable;
use super::{PgStore, instant};
use crate::store::last_write::RUN_RECORDS;
use crate::store::{RunLog, RunOutcome, RunReport, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl RunLog for PgStore {
    async fn begin_run(&self, source: &str) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO sync_runs (source, started_at) VALUES ($1, $2) RETURNING id",
        )
        .bind(source)
        .bind(instant(Timestamp::now()))
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from);
        self.last_write.note(RUN_RECORDS, &id);
        id
    }

    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError> {
        let result = self.record_run_end(run_id, outcome, report).await;
        self.last_write.note(RUN_RECORDS, &result);
        result
    }

    async fn mark_interrupted_runs(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let sources: Vec<String> = sqlx::query_scalar(
            "UPDATE sync_runs SET outcome = 'interrupted', finished_at = COALESCE(finished_at, $1)
             WHERE outcome = 'running' RETURNING source",
        )
        .bind(instant(Timestamp::now()))
        .fetch_all(&self.pool)
        .await?;
        let mut runs = BTreeMap::new();
        for source in sources {
            *runs.entry(source).or_insert(0) += 1;
        }
        Ok(runs)
    }
}

impl PgStore {
    /// Completes the run's row, then prunes its source's old rejected items.
    async fn record_run_end(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError> {
        let notes = (!report.notes.is_empty()).then(|| report.notes.join("\n"));
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let source: Option<String> = sqlx::query_scalar(
            "UPDATE sync_runs SET finished_at = $1, outcome = $2, pages = $3, requests = $4,
                rows_inserted = $5, rows_updated = $6, rows_unchanged = $7, rows_closed = $8,
                rows_deleted = $9, rows_rejected = $10, error = $11, notes = $12
             WHERE id = $13 RETURNING source",
        )
        .bind(instant(Timestamp::now()))
        .bind(outcome.as_str())
        .bind(count(report.pages))
        .bind(count(report.requests))
        .bind(count(report.inserted))
        .bind(count(report.updated))
        .bind(count(report.unchanged))
        .bind(count(report.closed))
        .bind(count(report.deleted))
        .bind(count(report.rejected))
        .bind(report.error.as_deref().map(storable))
        .bind(notes.as_deref().map(storable))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(source) = source {
            self.prune_rejected(&source, self.rejected_retention)
                .await?;
        }
        Ok(())
    }
}
