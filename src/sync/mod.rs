//! The sync engine: one task per source, each running cycles on its schedule.
//!
//! The engine owns everything that is not provider-specific — scheduling with jitter,
//! request budgets shared per credential, retries, checkpoints (every page is committed
//! with the cursor it advances), the watermark rules (lookback, future guard, never
//! backwards), guards against endless pagination, follow-ups, metrics and shutdown.
//! Provider adapters ([`crate::provider`]) only translate.

mod cycle;
pub mod progress;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use cycle::{CycleOptions, CycleOutcome, Source, SyncError, run_cycle};
pub use progress::SourceProgress;

use crate::config::SourceSettings;
use crate::http::{ApiClient, Authenticator, HttpSettings, RequestBudget, RequestTally};
use crate::store::Store;
use crate::time::Timestamp;

/// Failed cycles are retried after this, doubling up to the poll interval.
const FIRST_FAILURE_DELAY: Duration = Duration::from_secs(5);

/// All configured sources and the store they write to.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    sources: Vec<Arc<Source>>,
}

/// The result of `sync --once` for one source.
#[derive(Debug)]
pub struct OnceResult {
    /// Source name.
    pub source: String,
    /// How its last cycle ended.
    pub outcome: CycleOutcome,
    /// Cycles run (several when a backfill hits the page cap).
    pub cycles: u32,
}

impl Engine {
    /// Builds runtime sources: one HTTP client for the process, one token cache per
    /// credential and one request budget per rate-limit scope, shared between sources.
    pub fn new(
        store: Store,
        http: &HttpSettings,
        sources: &[SourceSettings],
    ) -> Result<Engine, reqwest::Error> {
        let client = crate::http::build_client(http)?;
        let mut authenticators: HashMap<String, Arc<Authenticator>> = HashMap::new();
        let mut budgets: HashMap<String, Arc<RequestBudget>> = HashMap::new();
        let mut built = Vec::with_capacity(sources.len());
        for settings in sources {
            let setup = &settings.setup;
            let auth = authenticators
                .entry(setup.credential_key.clone())
                .or_insert_with(|| {
                    Arc::new(Authenticator::new(setup.auth.clone(), Some(store.clone())))
                })
                .clone();
            let budget = budgets
                .entry(setup.budget_key.clone())
                .or_insert_with(|| Arc::new(RequestBudget::new(settings.quota)))
                .clone();
            let api = ApiClient::new(
                client.clone(),
                auth,
                budget,
                http.clone(),
                Arc::new(RequestTally::default()),
            );
            built.push(Arc::new(Source {
                name: settings.name.clone(),
                provider: setup.provider.clone(),
                client: api,
                schedule: settings.schedule.clone(),
                guard: settings.guard,
                progress: Arc::new(SourceProgress::default()),
            }));
        }
        Ok(Engine {
            store,
            sources: built,
        })
    }

    /// The sources, in config order.
    pub fn sources(&self) -> &[Arc<Source>] {
        &self.sources
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The start-up write, waiting out another process's write lock like every page
    /// write does (for up to the longest `stall_timeout` of the sources).
    async fn mark_interrupted_runs(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<u64, crate::store::StoreError> {
        let limit = self
            .sources
            .iter()
            .map(|s| s.schedule.stall_timeout)
            .max()
            .unwrap_or_default();
        crate::store::while_busy(limit, shutdown, "marking interrupted runs", || {
            self.store.mark_interrupted_runs()
        })
        .await
    }

    /// Runs every source until `shutdown` is cancelled. A page transaction in flight
    /// finishes first; then each task ends and this returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), crate::store::StoreError> {
        let interrupted = self.mark_interrupted_runs(&shutdown).await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "previous process stopped mid-cycle; those runs are marked interrupted and resume from their checkpoints"
            );
        }
        let mut tasks = JoinSet::new();
        for source in &self.sources {
            let source = source.clone();
            let store = self.store.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
            // Driven under the source's pulse: the watchdog supervisor (crate::health) pings
            // systemd only while every running source task is being polled.
            let progress = source.progress.clone();
            tasks.spawn(
                async move {
                    progress
                        .pulse
                        .drive(source_loop(source, store, shutdown))
                        .await
                }
                .instrument(span),
            );
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a source task panicked");
            }
        }
        Ok(())
    }

    /// Runs sources (all, or the one named) until each is caught up, has failed, or
    /// `shutdown` is cancelled: cycles repeat while a backfill hits the page cap or waits
    /// briefly on a rate limit.
    pub async fn sync_once(
        &self,
        only: Option<&str>,
        options: CycleOptions,
        shutdown: CancellationToken,
    ) -> Result<Vec<OnceResult>, crate::store::StoreError> {
        self.mark_interrupted_runs(&shutdown).await?;
        let mut tasks = JoinSet::new();
        for source in self
            .sources
            .iter()
            .filter(|s| only.is_none_or(|n| n == s.name))
        {
            let source = source.clone();
            let store = self.store.clone();
            let shutdown = shutdown.clone();
            let span = tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
            tasks.spawn(
                async move {
                    let mut cycles = 0;
                    let mut options = options;
                    let force_sweep = options.force_sweep;
                    let mut reread_after_resume = false;
                    let mut more_to_do = false;
                    loop {
                        cycles += 1;
                        let resuming = store
                            .load_cursors(&source.name)
                            .await
                            .is_ok_and(|c| c.values().any(crate::store::WalkCursor::in_progress));
                        // More to do with every walk complete: only follow-ups wait.
                        options.drain_follow_ups = more_to_do && !resuming;
                        let outcome = run_cycle(&source, &store, options, &shutdown).await;
                        // A forced sweep starts once; later cycles only resume it.
                        options.force_sweep = false;
                        more_to_do = matches!(outcome, CycleOutcome::MoreToDo);
                        let wait = match &outcome {
                            CycleOutcome::MoreToDo => Duration::ZERO,
                            // A walk resumed from a saved position read nothing above that
                            // position since it began (before a crash or a page cap): one
                            // more cycle, with a forced sweep starting afresh, reads what
                            // changed meanwhile.
                            CycleOutcome::CaughtUp if resuming && !reread_after_resume => {
                                reread_after_resume = true;
                                options.force_sweep = force_sweep;
                                Duration::ZERO
                            }
                            // A short pause is waited out; a long one (a daily budget) ends
                            // the one-shot sync instead of blocking for hours.
                            CycleOutcome::RateLimited { wait } if *wait <= source.client.max_inline_pause() => *wait,
                            _ => {
                                return OnceResult { source: source.name.clone(), outcome, cycles };
                            }
                        };
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.cancelled() => {
                                return OnceResult { source: source.name.clone(), outcome: CycleOutcome::Stopped, cycles };
                            }
                        }
                    }
                }
                .instrument(span),
            );
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!(error = %e, "a source task panicked"),
            }
        }
        results.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(results)
    }
}

/// One source's life: cycle, sleep as the outcome says, repeat until shutdown or until its
/// credential is refused.
async fn source_loop(source: Arc<Source>, store: Store, shutdown: CancellationToken) {
    let mut consecutive_failures = 0u32;
    tracing::info!(poll_interval = ?source.schedule.poll_interval, "source started");
    let mut options = CycleOptions::default();
    loop {
        let outcome = run_cycle(&source, &store, options, &shutdown).await;
        options.drain_follow_ups = false;
        let wait = match &outcome {
            CycleOutcome::Stopped => break,
            CycleOutcome::Failed(e) if e.is_fatal() => {
                tracing::error!(error = %e, "credentials rejected: this source stops until the configuration is fixed and convsync restarted; other sources keep running");
                source.progress.update(|s| s.stopped = true);
                return;
            }
            CycleOutcome::Failed(_) => {
                consecutive_failures += 1;
                let backoff = FIRST_FAILURE_DELAY.saturating_mul(1 << consecutive_failures.min(16));
                jittered(
                    backoff.min(source.schedule.poll_interval),
                    source.schedule.poll_jitter,
                )
            }
            CycleOutcome::RateLimited { wait } => {
                consecutive_failures = 0;
                *wait
            }
            CycleOutcome::MoreToDo => {
                consecutive_failures = 0;
                options.drain_follow_ups = only_follow_ups_wait(&store, &source).await;
                Duration::ZERO
            }
            CycleOutcome::CaughtUp => {
                consecutive_failures = 0;
                jittered(source.schedule.poll_interval, source.schedule.poll_jitter)
            }
        };
        source
            .progress
            .update(|s| s.next_cycle_at = Some(Timestamp::now().saturating_add(wait)));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("source stopped");
}

/// Whether a cycle that ended with more to do left only follow-ups waiting (every walk
/// completed): the next cycle then drains them without re-running fresh deltas.
async fn only_follow_ups_wait(store: &Store, source: &Source) -> bool {
    store
        .load_cursors(&source.name)
        .await
        .is_ok_and(|cursors| !cursors.values().any(crate::store::WalkCursor::in_progress))
}

/// `base` ± `share`, so that sources do not poll in lockstep.
fn jittered(base: Duration, share: f64) -> Duration {
    if share <= 0.0 || base.is_zero() {
        return base;
    }
    let factor = rand::rng().random_range((1.0 - share)..=(1.0 + share));
    base.mul_f64(factor)
}
