//! Live figures of each source, shared by the engine (which writes them), the progress
//! display of `sync --once`, `status` and the metrics endpoint (which read them).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

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
    /// Rows a listing page inserted or changed: changes a poll found first (an event that
    /// had brought the change already leaves the row unchanged for the poll). Against the
    /// webhook receiver's count, the share of changes webhooks announced.
    pub poll_changes: AtomicU64,
    /// Records read from listing pages as they arrive (before they are written), whatever
    /// the walk: what a progress rate towards a provider's total counts.
    pub listed: AtomicU64,
    /// Completed cycles.
    pub cycles: AtomicU64,
    /// Completed cycles by how they ended, so that an alert can tell a failing source
    /// from a quiet one.
    pub outcomes: OutcomeCounts,
    /// Cycles that ended in a panic (recorded as failed, then retried).
    pub panics: AtomicU64,
    /// How long cycles took, for the metrics endpoint's histogram.
    pub cycle_durations: CycleDurations,
    /// Proof that the source's task is being polled, read by the watchdog supervisor.
    pub pulse: TaskPulse,
    /// The same for the task that fetches and parses the pages of the walk in progress
    /// (it runs beside the source's task, so that parsing overlaps writing).
    pub fetch_pulse: TaskPulse,
    state: Mutex<ProgressState>,
}

/// The non-counter part of a source's progress.
#[derive(Debug, Clone, Default)]
pub struct ProgressState {
    /// The walk being run, if a cycle is in progress.
    pub current_walk: Option<String>,
    /// Records the current walk has read so far in this run of it.
    pub walk_read: u64,
    /// How many records the provider says the current walk lists in all
    /// ([`Page::total_hint`](crate::provider::Page::total_hint)): the latest one it
    /// gave, unchecked (readers must distrust it).
    pub walk_total: Option<u64>,
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
    /// The source stopped for good (credentials rejected, or its task died).
    pub stopped: bool,
    /// Replicas only: this replica holds no lease on the source's scope, so another one
    /// runs it (or will, once it claims it).
    pub held_elsewhere: bool,
}

impl SourceProgress {
    /// Adds a page's counts.
    pub fn record_page(&self, counts: &PageCounts) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.poll_changes.fetch_add(
            counts.inserted.saturating_add(counts.updated),
            Ordering::Relaxed,
        );
        self.add_counts(counts);
    }

    /// Adds counts that do not come with a page (follow-ups).
    pub fn add_counts(&self, counts: &PageCounts) {
        self.inserted.fetch_add(counts.inserted, Ordering::Relaxed);
        self.updated.fetch_add(counts.updated, Ordering::Relaxed);
        self.unchanged
            .fetch_add(counts.unchanged, Ordering::Relaxed);
        self.rejected.fetch_add(counts.rejected, Ordering::Relaxed);
        self.late.fetch_add(counts.late, Ordering::Relaxed);
    }

    /// Marks `walk` (or `None`: no walk) as the one in progress, starting its tally afresh.
    pub fn enter_walk(&self, walk: Option<&str>) {
        self.update(|s| {
            s.current_walk = walk.map(str::to_owned);
            s.walk_read = 0;
            s.walk_total = None;
        });
    }

    /// Counts a listing page of `records` as it arrives, with the provider's claim of the
    /// walk's total if the page made one (a page without one keeps the previous claim).
    pub fn page_arrived(&self, records: u64, total_hint: Option<u64>) {
        self.listed.fetch_add(records, Ordering::Relaxed);
        self.update(|s| {
            s.walk_read = s.walk_read.saturating_add(records);
            if total_hint.is_some() {
                s.walk_total = total_hint;
            }
        });
    }

    /// Rows read so far, whatever became of them: what tells a cycle that read something
    /// from one that only went round.
    pub fn rows_seen(&self) -> u64 {
        [
            &self.inserted,
            &self.updated,
            &self.unchanged,
            &self.closed,
            &self.deleted,
            &self.rejected,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0, u64::saturating_add)
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

/// How many cycles ended with each outcome (`sync_runs.outcome` values).
#[derive(Debug, Default)]
pub struct OutcomeCounts(Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl OutcomeCounts {
    /// Counts one cycle that ended with `outcome`.
    pub fn count(&self, outcome: RunOutcome) {
        *self
            .0
            .lock()
            .expect("outcome counts lock poisoned")
            .entry(outcome.as_str())
            .or_default() += 1;
    }

    /// Every outcome seen so far with its count, in name order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let counts = self.0.lock().expect("outcome counts lock poisoned");
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// Distribution of cycle durations. A histogram rather than the last value alone, so that
/// a scrape every minute still sees every cycle (sources may cycle every few seconds).
#[derive(Debug, Clone)]
pub struct CycleDurations(Histogram);

impl Default for CycleDurations {
    /// Buckets from 50 ms to about 14 min, doubling: a caught-up delta takes well under a
    /// second, a first backfill capped by `max_pages_per_cycle` many minutes.
    fn default() -> Self {
        CycleDurations(Histogram::new(exponential_buckets(0.05, 2.0, 15)))
    }
}

impl CycleDurations {
    /// Records one finished cycle.
    pub fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }

    /// The histogram, for encoding.
    pub fn histogram(&self) -> &Histogram {
        &self.0
    }
}

/// Lifecycle of a source's task as seen by its pulse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Not spawned yet (the engine is starting, or only `sync --once` runs).
    NotStarted,
    /// Being driven; its beats prove it is polled.
    Running,
    /// Returned on its own (shutdown, or the source stopped after a fatal error).
    Finished,
    /// Dropped before returning: it panicked or was aborted.
    Abandoned,
}

/// A heartbeat that only a polled task can produce.
///
/// [`TaskPulse::drive`] runs the source's future and a short ticker in the *same* task, so
/// the beat counter advances only while the runtime polls that task. A source stuck in a
/// blocking call, or a runtime whose workers are all blocked, stops beating; the watchdog
/// supervisor then withholds systemd's `WATCHDOG=1` pings. A source merely waiting on
/// the network keeps beating: slow I/O is bounded by the HTTP and stall timeouts instead.
#[derive(Debug, Default)]
pub struct TaskPulse {
    beats: AtomicU64,
    state: AtomicU8,
}

impl TaskPulse {
    /// Time between beats of a polled task.
    pub const PERIOD: Duration = Duration::from_millis(250);

    const NOT_STARTED: u8 = 0;
    const RUNNING: u8 = 1;
    const FINISHED: u8 = 2;
    const ABANDONED: u8 = 3;

    /// Runs `work` to completion, beating every [`TaskPulse::PERIOD`] while it is polled.
    pub async fn drive<F: Future>(&self, work: F) -> F::Output {
        /// Marks the task abandoned if `drive` is dropped before `work` returns.
        struct EndGuard<'a>(&'a TaskPulse);
        impl Drop for EndGuard<'_> {
            fn drop(&mut self) {
                let _ = self.0.state.compare_exchange(
                    TaskPulse::RUNNING,
                    TaskPulse::ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
        self.state.store(Self::RUNNING, Ordering::Release);
        let _guard = EndGuard(self);
        let mut ticker = tokio::time::interval(Self::PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut work = std::pin::pin!(work);
        let output = loop {
            tokio::select! {
                biased;
                output = &mut work => break output,
                _ = ticker.tick() => {
                    self.beats.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        self.state.store(Self::FINISHED, Ordering::Release);
        output
    }

    /// Beats so far.
    pub fn beats(&self) -> u64 {
        self.beats.load(Ordering::Relaxed)
    }

    /// Where the task is in its life.
    pub fn task_state(&self) -> TaskState {
        match self.state.load(Ordering::Acquire) {
            Self::NOT_STARTED => TaskState::NotStarted,
            Self::RUNNING => TaskState::Running,
            Self::FINISHED => TaskState::Finished,
            _ => TaskState::Abandoned,
        }
    }
}
