//! One cycle of one source: run its delta walks, the sweeps that are due and the queued
//! follow-ups, committing every page atomically with the cursor it advances.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod first_sync;
mod follow_ups;
mod priority;
mod reply_horizon;
mod walk;

use super::cursor::{DeltaReach, LateBounds, SweepDue, WalkCursor};
use super::progress::SourceProgress;
use crate::config::Schedule;
use crate::error_text::panic_message;
use crate::http::{ApiClient, HttpError};
use crate::provider::{InitialSweep, Provider, ProviderError, WalkKind, WalkSpec};
use crate::retry::Backoff;
use crate::secret::redact::{ERROR_TEXT_CAP, redact};
use crate::store::{
    AbsenceOutcome, MassChangeGuard, RunOutcome, RunReport, Store, StoreError, while_busy,
};
use crate::time::Timestamp;

/// A malformed page is fetched again after 400 ms, then after 800 ms, before the cycle
/// fails.
const MALFORMED_REFETCH: Backoff =
    Backoff::doubling(Duration::from_millis(400), Duration::from_millis(800)).with_max_retries(2);

/// A configured source, ready to run cycles.
pub struct Source {
    /// Unique name.
    pub name: String,
    /// The platform adapter.
    pub provider: Arc<dyn Provider>,
    /// HTTP client with this source's credential and budget.
    pub client: ApiClient,
    /// The rate-limit scope whose budget the source shares (`ProviderSetup::budget_key`):
    /// the unit replicas lease.
    pub scope: String,
    /// Scheduling settings.
    pub schedule: Schedule,
    /// Sweep guard.
    pub guard: MassChangeGuard,
    /// Live figures.
    pub progress: Arc<SourceProgress>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("provider", &self.provider.kind())
            .finish_non_exhaustive()
    }
}

/// What a cycle achieved; the source loop picks its sleep from it.
#[derive(Debug)]
pub enum CycleOutcome {
    /// Every walk reached the present.
    CaughtUp,
    /// Stopped early (page cap, follow-up budget) with its position saved: run again soon.
    MoreToDo,
    /// The provider's rate limit stopped the cycle; resume after `wait`.
    RateLimited {
        /// How long until the budget allows requests again.
        wait: Duration,
    },
    /// The cycle failed; nothing of the failed page was applied.
    Failed(SyncError),
    /// A walk was stopped as broken (the provider kept saying "more" without giving
    /// anything); the other walks ran. What was read is kept; the broken walk starts
    /// again from its watermark next cycle.
    Stalled {
        /// What went wrong, for the operator.
        reason: String,
    },
    /// Shutdown was requested; the last page was committed.
    Stopped,
}

impl CycleOutcome {
    fn run_outcome(&self) -> RunOutcome {
        match self {
            CycleOutcome::CaughtUp => RunOutcome::CaughtUp,
            CycleOutcome::MoreToDo | CycleOutcome::Stopped => RunOutcome::MoreToDo,
            CycleOutcome::RateLimited { .. } => RunOutcome::RateLimited,
            CycleOutcome::Failed(_) => RunOutcome::Failed,
            CycleOutcome::Stalled { .. } => RunOutcome::Stalled,
        }
    }
}

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The provider could not be reached or refused the request.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The provider's response could not be read.
    #[error("walk {walk}: {source}")]
    Provider {
        /// The walk.
        walk: &'static str,
        /// The cause.
        source: ProviderError,
    },
    /// The mirror database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provider handed back a page position it had already given in this cycle.
    #[error(
        "walk {walk}: the provider returned page position {position} twice; stopping this walk to avoid an endless loop"
    )]
    RepeatedPosition {
        /// The walk.
        walk: &'static str,
        /// The repeated position.
        position: String,
    },
    /// No page completed in the stall timeout.
    #[error("walk {walk}: no page completed within {timeout:?}")]
    Stalled {
        /// The walk.
        walk: &'static str,
        /// The configured stall timeout.
        timeout: Duration,
    },
    /// Shutdown was requested while a request was in flight.
    #[error("shutdown requested")]
    Interrupted,
    /// The code handling this source panicked: a bug in convsync (or in a dependency)
    /// met an input it did not expect. The cycle is recorded as failed with the message.
    #[error(
        "internal error (panic): {message}; nothing of the page being read was applied. This is a bug in convsync: please report it with this message"
    )]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// `sync --once` on PostgreSQL: another replica kept the lease on the source's scope
    /// for longer than a lease lasts, so this process did not sync it.
    #[error(
        "another replica ({owner}) runs rate-limit scope {scope:?}: not synced here; stop that replica or let it sync this source"
    )]
    LeaseHeld {
        /// The rate-limit scope.
        scope: String,
        /// The replica holding its lease.
        owner: String,
    },
    /// The provider refused a saved page position (expired token).
    #[error("walk {walk}: the provider rejected the saved page position: {message}")]
    PositionRejected {
        /// The walk.
        walk: &'static str,
        /// The provider's message.
        message: String,
    },
}

impl SyncError {
    /// The replica's lease on the source's scope was lost: the source must stop at once
    /// (another replica runs it now), never retry.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, SyncError::Store(StoreError::LeaseLost { .. }))
    }

    /// The credential was refused: retrying without an operator's fix is pointless, so the
    /// source stops (other sources keep running).
    pub fn is_fatal(&self) -> bool {
        matches!(self, SyncError::Http(e) if e.is_credential_rejected())
    }
}

/// Options for one cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleOptions {
    /// Run every sweep now, whether due or not.
    pub force_sweep: bool,
    /// The cycle runs early only to send more of the queued follow-ups: delta walks that
    /// completed less than a poll interval ago wait for their turn instead of listing the
    /// same lookback window again (set by the source loops, never by users).
    pub drain_follow_ups: bool,
}

enum WalkEnd {
    Complete,
    PageCap,
    Cancelled,
    /// The provider kept paging without giving anything; the reason says how.
    Broken(String),
}

struct Cycle<'a> {
    source: &'a Source,
    store: &'a Store,
    cancel: &'a CancellationToken,
    run_id: i64,
    /// When the cycle began: a sweep that starts in it counts rows seen since as listed.
    started_at: Timestamp,
    report: RunReport,
    pages_this_cycle: u32,
    /// Why walks of this cycle were stopped as broken; the cycle then ends `Stalled`.
    broken_walks: Vec<String>,
}

/// Runs one cycle of `source`, records it in `sync_runs`, and says what happened.
pub async fn run_cycle(
    source: &Source,
    store: &Store,
    options: CycleOptions,
    cancel: &CancellationToken,
) -> CycleOutcome {
    let limit = source.schedule.stall_timeout;
    let cycle_started_at = Timestamp::now();
    let begun = while_busy(limit, cancel, "recording the cycle's start", || {
        store.begin_run(&source.name)
    })
    .await;
    let run_id = match begun {
        Ok(id) => id,
        Err(e) => return CycleOutcome::Failed(e.into()),
    };
    let span = tracing::info_span!(
        "cycle",
        run_id,
        pages = tracing::field::Empty,
        changed = tracing::field::Empty
    );
    async move {
        let requests_before = source.client.tally().requests.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        source.progress.enter_walk(None);
        let mut cycle = Cycle {
            source,
            store,
            cancel,
            run_id,
            started_at: cycle_started_at,
            report: RunReport::default(),
            pages_this_cycle: 0,
            broken_walks: Vec::new(),
        };
        // A panic anywhere in the cycle (a parser meeting bytes it did not expect, a
        // fetcher task's panic resumed by its walk) fails this cycle like any error, so
        // that its run row is closed, `sync --once` reports it and `run` retries it.
        let outcome = match AssertUnwindSafe(cycle.run(options)).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                source.progress.panics.fetch_add(1, Ordering::Relaxed);
                CycleOutcome::Failed(SyncError::Panicked {
                    message: panic_message(panic.as_ref()),
                })
            }
        };
        let mut report = cycle.report;
        report.requests = source.client.tally().requests.load(Ordering::Relaxed) - requests_before;
        // What the failure says, scrubbed and bounded once for the run record, the status
        // and the log line: a provider's page may carry secrets or a megabyte-long id.
        let error_text = match &outcome {
            CycleOutcome::Failed(e) => {
                Some(redact(&crate::error_text::error_chain(e), ERROR_TEXT_CAP))
            }
            CycleOutcome::Stalled { reason } => Some(redact(reason, ERROR_TEXT_CAP)),
            _ => None,
        };
        report.error = error_text.clone();
        let span = tracing::Span::current();
        span.record("pages", report.pages);
        span.record("changed", report.inserted + report.updated);
        let recorded = while_busy(limit, cancel, "recording the cycle's end", || {
            store.finish_run(run_id, outcome.run_outcome(), &report)
        })
        .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "could not record the end of the cycle");
        }
        let now = Timestamp::now();
        source.progress.cycles.fetch_add(1, Ordering::Relaxed);
        source.progress.outcomes.count(outcome.run_outcome());
        source.progress.cycle_durations.observe(started.elapsed());
        source.progress.enter_walk(None);
        source.progress.update(|s| {
            s.last_outcome = Some(outcome.run_outcome());
            s.last_cycle_at = Some(now);
            s.last_cycle_seconds = Some(started.elapsed().as_secs_f64());
            match &outcome {
                CycleOutcome::Failed(_) | CycleOutcome::Stalled { .. } => {
                    s.last_error = error_text.clone()
                }
                CycleOutcome::CaughtUp | CycleOutcome::MoreToDo | CycleOutcome::Stopped => {
                    s.last_error = None;
                    s.last_success_at = Some(now);
                }
                CycleOutcome::RateLimited { .. } => {}
            }
        });
        match &outcome {
            CycleOutcome::Failed(_) => tracing::error!(
                error = error_text.as_deref().unwrap_or_default(),
                requests = report.requests,
                "cycle failed"
            ),
            CycleOutcome::Stalled { .. } => tracing::error!(
                reason = error_text.as_deref().unwrap_or_default(),
                pages = report.pages,
                requests = report.requests,
                "cycle stalled: a walk was stopped as broken"
            ),
            other => tracing::info!(
                outcome = other.run_outcome().as_str(),
                pages = report.pages,
                requests = report.requests,
                inserted = report.inserted,
                updated = report.updated,
                unchanged = report.unchanged,
                closed = report.closed,
                deleted = report.deleted,
                rejected = report.rejected,
                "cycle finished"
            ),
        }
        outcome
    }
    .instrument(span)
    .await
}

impl Cycle<'_> {
    async fn run(&mut self, options: CycleOptions) -> CycleOutcome {
        let outcome = match self.run_walks(options).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => match self.run_follow_ups().await {
                Ok(outcome) => outcome,
                Err(e) => self.failure(e),
            },
            Err(e) => self.failure(e),
        };
        match outcome {
            CycleOutcome::CaughtUp | CycleOutcome::MoreToDo if !self.broken_walks.is_empty() => {
                CycleOutcome::Stalled {
                    reason: self.broken_walks.join("; "),
                }
            }
            other => other,
        }
    }

    fn failure(&self, error: SyncError) -> CycleOutcome {
        match &error {
            SyncError::Http(HttpError::RateLimited { retry_after, .. }) => {
                CycleOutcome::RateLimited {
                    wait: retry_after.unwrap_or(
                        self.source
                            .schedule
                            .poll_interval
                            .min(Duration::from_secs(60)),
                    ),
                }
            }
            SyncError::Http(HttpError::Paused { wait, .. }) => {
                CycleOutcome::RateLimited { wait: *wait }
            }
            SyncError::Interrupted => CycleOutcome::Stopped,
            _ => CycleOutcome::Failed(error),
        }
    }

    /// Runs the walks; `Some(outcome)` when the cycle must end before follow-ups.
    async fn run_walks(
        &mut self,
        options: CycleOptions,
    ) -> Result<Option<CycleOutcome>, SyncError> {
        let provider = self.source.provider.clone();
        let mut cursors = WalkCursor::load_all(self.store, &self.source.name).await?;
        let lookback = self.source.schedule.lookback;
        let specs: Vec<WalkSpec> = provider.walks().iter().map(|w| w.spec()).collect();
        let reach = DeltaReach::of(&specs, &cursors, lookback);
        for walk in provider.walks() {
            let spec = walk.spec();
            let cursor = cursors.remove(spec.name).unwrap_or_default();
            if let WalkKind::Sweep { initial, .. } = spec.kind
                && !self.sweep_due(&spec, &cursor, initial, options).await?
            {
                continue;
            }
            if matches!(spec.kind, WalkKind::Delta(_))
                && options.drain_follow_ups
                && cursor.completed_within(self.source.schedule.poll_interval, Timestamp::now())
            {
                continue;
            }
            let late = LateBounds::for_walk(spec.kind, &cursor, reach, lookback);
            self.seed_covered_walks(walk.as_ref(), &cursor, &mut cursors)
                .await?;
            match self.run_walk(walk, cursor, late).await? {
                WalkEnd::Complete => {}
                WalkEnd::PageCap => {
                    tracing::info!(
                        walk = spec.name,
                        "page cap reached; the walk resumes next cycle"
                    );
                    return Ok(Some(CycleOutcome::MoreToDo));
                }
                WalkEnd::Cancelled => return Ok(Some(CycleOutcome::Stopped)),
                // The other walks still run: one broken listing must not starve them.
                WalkEnd::Broken(reason) => {
                    self.report.notes.push(reason.clone());
                    self.broken_walks.push(reason);
                }
            }
        }
        Ok(None)
    }

    async fn sweep_due(
        &self,
        walk: &WalkSpec,
        cursor: &WalkCursor,
        initial: InitialSweep,
        options: CycleOptions,
    ) -> Result<bool, SyncError> {
        let now = Timestamp::now();
        let interval = self.source.schedule.sweep_interval;
        match cursor.sweep_due(initial, interval, now, options.force_sweep) {
            SweepDue::Now => Ok(true),
            SweepDue::Later => Ok(false),
            SweepDue::ScheduleFirst => {
                // The first delta lists everything; schedule the first sweep one interval on.
                let scheduled = cursor.first_sweep_scheduled(now).to_state()?;
                let (store, limit) = (self.store, self.source.schedule.stall_timeout);
                while_busy(limit, self.cancel, "scheduling the first sweep", || {
                    store.save_cursor(&self.source.name, walk.name, &scheduled)
                })
                .await?;
                Ok(false)
            }
        }
    }

    fn record_absence(
        &mut self,
        walk: &WalkSpec,
        absence: crate::provider::Absence,
        outcome: AbsenceOutcome,
    ) {
        use crate::provider::Absence;
        match outcome {
            AbsenceOutcome::Applied { count } => {
                match absence {
                    Absence::Closed => {
                        self.report.closed += count;
                        self.source
                            .progress
                            .closed
                            .fetch_add(count, Ordering::Relaxed);
                    }
                    Absence::Deleted => {
                        self.report.deleted += count;
                        self.source
                            .progress
                            .deleted
                            .fetch_add(count, Ordering::Relaxed);
                    }
                }
                if count > 0 {
                    tracing::info!(walk = walk.name, count, ?absence, "sweep applied absences");
                }
            }
            AbsenceOutcome::Refused {
                missing,
                candidates,
            } => {
                let note = format!(
                    "{}: sweep REFUSED to mark {missing} of {candidates} conversations {:?}: more than {:.0} % at once looks like a listing outage; nothing was changed (raise mass_change_max_share if this is real)",
                    walk.name,
                    absence,
                    self.source.guard.max_share * 100.0
                );
                tracing::error!(
                    walk = walk.name,
                    missing,
                    candidates,
                    "mass-change guard refused a sweep's absences"
                );
                self.report.notes.push(note);
            }
        }
    }
}
