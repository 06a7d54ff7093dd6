//! Live figures of each source, shared by the engine (which writes them), the progress
//! display of `sync --once`, `status` and the metrics endpoint (which read them).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::{PageCounts, RunOutcome};
use crate::time::Timestamp;

/// Counters and state of one source since the process started.
#[derive(Debug, Default)]
pub struct SourceProgress {
    /// Pages applied.
    pub pages: AtomicU64,
    /// Rows inserted.
    pub inserted: AtomicU64,
    /// Rows updated.
    pub updated: AtomicU64,
    /// Rows read again without change.
    pub unchanged: AtomicU64,
    /// Rows closed by sweeps or follow-ups.
    pub closed: AtomicU64,
    /// Rows marked deleted.
    pub deleted: AtomicU64,
    /// Records rejected.
    pub rejected: AtomicU64,
    /// Records that showed up later than the lookback allows for.
    pub late: AtomicU64,
    /// Completed cycles.
    pub cycles: AtomicU64,
    state: Mutex<ProgressState>,
}

/// The non-counter part of a source's progress.
#[derive(Debug, Clone, Default)]
pub struct ProgressState {
    /// The walk being run, if a cycle is in progress.
    pub current_walk: Option<String>,
    /// The newest delta watermark.
    pub watermark: Option<Timestamp>,
    /// How the last cycle ended.
    pub last_outcome: Option<RunOutcome>,
    /// The last cycle's error, if it failed.
    pub last_error: Option<String>,
    /// When a cycle last ended caught up or with more to do.
    pub last_success_at: Option<Timestamp>,
    /// When the last cycle ended.
    pub last_cycle_at: Option<Timestamp>,
    /// Duration of the last cycle in seconds.
    pub last_cycle_seconds: Option<f64>,
    /// When the next cycle is due.
    pub next_cycle_at: Option<Timestamp>,
    /// The source stopped for good (credentials rejected).
    pub stopped: bool,
}

impl SourceProgress {
    /// Adds a page's counts.
    pub fn record_page(&self, counts: &PageCounts) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.add_counts(counts);
    }

    /// Adds counts that do not come with a page (follow-ups).
    pub fn add_counts(&self, counts: &PageCounts) {
        self.inserted.fetch_add(counts.inserted, Ordering::Relaxed);
        self.updated.fetch_add(counts.updated, Ordering::Relaxed);
        self.unchanged.fetch_add(counts.unchanged, Ordering::Relaxed);
        self.rejected.fetch_add(counts.rejected, Ordering::Relaxed);
        self.late.fetch_add(counts.late, Ordering::Relaxed);
    }

    /// A copy of the state.
    pub fn state(&self) -> ProgressState {
        self.state.lock().expect("progress lock poisoned").clone()
    }

    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        f(&mut self.state.lock().expect("progress lock poisoned"));
    }
}
