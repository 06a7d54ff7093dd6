//! The `sync_runs` audit trail: a row per cycle, opened when it starts and completed with
//! its figures when it ends.

use std::collections::BTreeMap;

use async_trait::async_trait;

use sqlx::PgConnection;

use super::leases::hold_fence;
use super::text::storable;
use super::{PgStore, instant};
use crate::store::last_write::RUN_RECORDS;
use crate::store::{RunLog, RunOutcome, RunReport, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl RunLog for PgStore {
    async fn begin_run(&self, source: &str) -> Result<i64, StoreError> {
        let id = self.record_run_start(source).await;
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
    /// Opens the run's row: under a lease, only while the lease holds, with the replica
    /// and epoch. Its start is the database's clock, as its commits' are
    /// ([`note_commit`]), so that the runs of different replicas compare.
    async fn record_run_start(&self, source: &str) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        hold_fence(&mut tx, self.fence.as_ref()).await?;
        let id = sqlx::query_scalar(
            "INSERT INTO sync_runs (source, started_at, replica, epoch)
             VALUES ($1, clock_timestamp(), $2, $3) RETURNING id",
        )
        .bind(source)
        .bind(self.fence.as_ref().map(|f| f.owner.as_str()))
        .bind(self.fence.as_ref().map(|f| f.epoch))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

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
            "UPDATE sync_runs SET finished_at = clock_timestamp(), outcome = $1, pages = $2,
                requests = $3, rows_inserted = $4, rows_updated = $5, rows_unchanged = $6,
                rows_closed = $7, rows_deleted = $8, rows_rejected = $9, error = $10, notes = $11
             WHERE id = $12 RETURNING source",
        )
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

/// Stamps `runs` with the time of a write about to commit in the transaction on `conn`
/// (`last_commit_at`, by the database's clock): a run's rows were all written between its
/// start and this instant.
pub(super) async fn note_commit(conn: &mut PgConnection, runs: &[i64]) -> Result<(), StoreError> {
    if runs.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE sync_runs SET last_commit_at = clock_timestamp() WHERE id = ANY($1)")
        .bind(runs)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
