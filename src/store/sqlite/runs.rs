//! The `sync_runs` audit trail and the per-source status built from it.

use std::collections::BTreeMap;

use super::{Store, StoreError};
use crate::time::Timestamp;

/// How a cycle ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// All walks reached the present.
    CaughtUp,
    /// Stopped early (page cap, shutdown) with its position saved.
    MoreToDo,
    /// Waiting on the provider's rate limit; resumes later.
    RateLimited,
    /// Failed; nothing of the failed page was applied.
    Failed,
    /// A walk was stopped as broken (endless empty pages); the other walks ran.
    Stalled,
}

impl RunOutcome {
    /// The `sync_runs.outcome` value.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::CaughtUp => "caught_up",
            RunOutcome::MoreToDo => "more_to_do",
            RunOutcome::RateLimited => "rate_limited",
            RunOutcome::Failed => "failed",
            RunOutcome::Stalled => "stalled",
        }
    }
}

/// The figures of one finished cycle.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Pages applied.
    pub pages: u64,
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// New rows.
    pub inserted: u64,
    /// Changed rows.
    pub updated: u64,
    /// Rows read again without change.
    pub unchanged: u64,
    /// Rows closed by a sweep.
    pub closed: u64,
    /// Rows marked deleted by a sweep.
    pub deleted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Error text when the cycle failed.
    pub error: Option<String>,
    /// Operator notes (guard refusals, late records, provider notes).
    pub notes: Vec<String>,
}

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

/// The newest `sync_runs` row of a source.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
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

/// The writer name under which run records' writes are noted for readiness.
const RUN_RECORDS: &str = "sync_runs";

impl Store {
    /// Records the start of a cycle and returns its run id.
    pub async fn begin_run(&self, source: &str) -> Result<i64, StoreError> {
        let id = sqlx::query_scalar(
            "INSERT INTO sync_runs (source, started_at) VALUES (?, ?) RETURNING id",
        )
        .bind(source)
        .bind(Timestamp::now().to_mirror_text())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from);
        self.last_write.note(RUN_RECORDS, &id);
        id
    }

    /// Records how a cycle ended, and removes the source's rejected items not seen for
    /// the retention period.
    pub async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError> {
        let result = self.record_run_end(run_id, outcome, report).await;
        self.last_write.note(RUN_RECORDS, &result);
        result
    }

    async fn record_run_end(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError> {
        let notes = (!report.notes.is_empty()).then(|| report.notes.join("\n"));
        let source: Option<String> = sqlx::query_scalar(
            "UPDATE sync_runs SET finished_at = ?, outcome = ?, pages = ?, requests = ?,
                rows_inserted = ?, rows_updated = ?, rows_unchanged = ?, rows_closed = ?,
                rows_deleted = ?, rows_rejected = ?, error = ?, notes = ?
             WHERE id = ? RETURNING source",
        )
        .bind(Timestamp::now().to_mirror_text())
        .bind(outcome.as_str())
        .bind(report.pages as i64)
        .bind(report.requests as i64)
        .bind(report.inserted as i64)
        .bind(report.updated as i64)
        .bind(report.unchanged as i64)
        .bind(report.closed as i64)
        .bind(report.deleted as i64)
        .bind(report.rejected as i64)
        .bind(&report.error)
        .bind(notes)
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(source) = source {
            self.prune_rejected(&source, self.rejected_retention)
                .await?;
        }
        Ok(())
    }

    /// Marks runs left `running` by a process that died as `interrupted`, and returns how
    /// many each source had, so that what is logged about them can name the source.
    pub async fn mark_interrupted_runs(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let sources: Vec<String> = sqlx::query_scalar(
            "UPDATE sync_runs SET outcome = 'interrupted', finished_at = COALESCE(finished_at, ?)
             WHERE outcome = 'running' RETURNING source",
        )
        .bind(Timestamp::now().to_mirror_text())
        .fetch_all(&self.pool)
        .await?;
        let mut runs = BTreeMap::new();
        for source in sources {
            *runs.entry(source).or_insert(0) += 1;
        }
        Ok(runs)
    }

    /// Status of one source.
    pub async fn source_status(&self, source: &str) -> Result<SourceStatus, StoreError> {
        let (rows, active_rows): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN active = 1 AND closed_at IS NULL THEN 1 ELSE 0 END), 0)
             FROM conversations WHERE source = ? AND deleted_at IS NULL",
        )
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        let last_run: Option<LastRun> = sqlx::query_as(
            "SELECT id, started_at, finished_at, outcome,
                        rows_inserted + rows_updated AS rows_changed, error
                 FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(source)
        .fetch_optional(&self.pool)
        .await?;
        let last_success: Option<String> = sqlx::query_scalar(
            "SELECT MAX(finished_at) FROM sync_runs
             WHERE source = ? AND outcome IN ('caught_up', 'more_to_do')",
        )
        .bind(source)
        .fetch_one(&self.pool)
        .await?;
        Ok(SourceStatus {
            source: source.to_owned(),
            rows: rows as u64,
            active_rows: active_rows as u64,
            last_run,
            last_success_at: last_success.and_then(|s| Timestamp::parse_rfc3339(&s).ok()),
            pending_follow_ups: self.count_follow_ups(source).await?,
        })
    }
}
