//! The audit trail of cycles: one run per cycle of a source, with its figures.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::StoreError;

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

/// Recording cycles: their start, their end with the figures, and runs a process that
/// died left open.
#[async_trait]
pub trait RunLog: Send + Sync {
    /// Records the start of a cycle and returns its run id.
    async fn begin_run(&self, source: &str) -> Result<i64, StoreError>;

    /// Records how a cycle ended, and removes the source's rejected items not seen for
    /// the retention period (`StoreSettings::rejected_records_retention`).
    async fn finish_run(
        &self,
        run_id: i64,
        outcome: RunOutcome,
        report: &RunReport,
    ) -> Result<(), StoreError>;

    /// Marks runs left `running` by a process that died as `interrupted`, and returns how
    /// many each source had, so that what is logged about them can name the source.
    async fn mark_interrupted_runs(&self) -> Result<BTreeMap<String, u64>, StoreError>;
}
