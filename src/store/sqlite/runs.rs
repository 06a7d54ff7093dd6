//! The `sync_runs` audit trail: a row per cycle, opened when it starts and completed with
//! its figures when it ends.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use crate::store::last_write::RUN_RECORDS;
use crate::store::{RunLog, RunOutcome, RunReport, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl RunLog for SqliteStore {
    async fn begin_run(&self, source: &str) -> Result<i64, StoreError> {
        let started_at = Timestamp::now().to_mirror_text();
        let id = sqlx::query_scalar!(
            r#"INSERT INTO sync_runs (source, started_at) VALUES (?, ?) RETURNING id AS "id!""#,
            source,
            started_at
        )
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
        let now = Timestamp::now().to_mirror_text();
        let sources: Vec<String> = sqlx::query_scalar!(
            "UPDATE sync_runs SET outcome = 'interrupted', finished_at = COALESCE(finished_at, ?)
             WHERE outcome = 'running' RETURNING source",
            now
        )
        .fetch_all(&self.pool)
        .await?;
        let mut runs = BTreeMap::new();
        for source in sources {
            *runs.entry(source).or_insert(0) += 1;
        }
        Ok(runs)
    }
}

impl SqliteStore {
    /// Completes the run's row, then prunes its source's old rejected items.
    async fn record_run_end(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError> {
        let notes = (!report.notes.is_empty()).then(|| report.notes.join("\n"));
        let finished_at = Timestamp::now().to_mirror_text();
        let outcome = outcome.as_str();
        let source: Option<String> = sqlx::query_scalar!(
            "UPDATE sync_runs SET finished_at = ?, outcome = ?, pages = ?, requests = ?,
                rows_inserted = ?, rows_updated = ?, rows_unchanged = ?, rows_closed = ?,
                rows_deleted = ?, rows_rejected = ?, error = ?, notes = ?
             WHERE id = ? RETURNING source",
            finished_at,
            outcome,
            report.pages as i64,
            report.requests as i64,
            report.inserted as i64,
            report.updated as i64,
            report.unchanged as i64,
            report.closed as i64,
            report.deleted as i64,
            report.rejected as i64,
            report.error,
            notes,
            run_id
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(source) = source {
            self.prune_rejected(&source, self.rejected_retention)
                .await?;
        }
        Ok(())
    }
}

/// Stamps `runs` with the time of a write about to commit in `tx` (`last_commit_at`): a
/// run's rows were all written between its start and this instant.
pub(super) async fn note_commit(
    tx: &mut Transaction<'static, Sqlite>,
    runs: &[i64],
) -> Result<(), StoreError> {
    let now = Timestamp::now().to_mirror_text();
    for run in runs {
        sqlx::query("UPDATE sync_runs SET last_commit_at = ? WHERE id = ?")
            .bind(&now)
            .bind(run)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
