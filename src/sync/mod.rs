//! The sync engine: one task per source, each running cycles on its schedule.
//!
//! The engine owns everything that is not provider-specific — scheduling with jitter
//! (one policy for `run` and `sync --once`: `policy`), request budgets shared per
//! credential, retries, checkpoints (every page is committed with the cursor it advances),
//! the watermark rules (lookback, future guard, never backwards: [`cursor`]), guards
//! against endless pagination, follow-ups, metrics and shutdown. Provider adapters
//! ([`crate::provider`]) only translate.

pub mod cursor;
mod cycle;
pub mod discovery;
mod policy;
pub mod progress;
mod registry;
mod relist;
mod replica;
mod retention;
pub mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error_text::panic_message;
pub use cursor::{WalkCursor, WalkReset, reset_source};
pub use cycle::{CycleOptions, CycleOutcome, Source, SyncError, run_cycle};
pub use policy::MAX_IDLE_CYCLES;
use policy::{CycleFacts, Mode, Next, Policy};
pub use progress::SourceProgress;
pub use registry::{AccountChange, SourceRegistry};
pub use replica::{ReplicaProgress, join_window};
pub use retention::run_retention;

use crate::config::{ReplicaSettings, SourceSettings};
use crate::http::{ApiClient, Authenticator, HttpSettings, RequestBudget, RequestTally};
use crate::retry::sleep_unless_cancelled;
use crate::store::{BackendKind, Store};
use crate::time::Timestamp;

/// All configured sources and the store they write to.
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    /// The running sources; a directory entry's accounts are added and retired while
    /// `run` runs.
    registry: SourceRegistry,
    /// The process's HTTP client and settings, for the sources added while running.
    client: reqwest::Client,
    http: HttpSettings,
    /// Each rate-limit scope's request budget, by scope: a replica hands its state over
    /// with the scope's lease.
    budgets: HashMap<String, Arc<RequestBudget>>,
    /// How this process shares a PostgreSQL database with other replicas.
    replicas: ReplicaSettings,
    /// The replica's live figures (leases held, claimed, lost).
    replica_progress: Arc<ReplicaProgress>,
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

impl OnceResult {
    /// Whether the source did its part: caught up, or stopped with its position saved.
    /// A failed, stalled or still rate-limited source makes `sync --once` exit non-zero.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.outcome,
            CycleOutcome::CaughtUp | CycleOutcome::MoreToDo | CycleOutcome::Stopped
        )
    }

    /// The verdict line's text for this source.
    pub fn verdict(&self) -> String {
        match &self.outcome {
            CycleOutcome::CaughtUp => "caught up".to_owned(),
            CycleOutcome::MoreToDo => "more to do".to_owned(),
            CycleOutcome::Stopped => "stopped by signal".to_owned(),
            CycleOutcome::RateLimited { wait } => format!(
                "RATE LIMITED: the provider still refuses requests (next retry in {}); run again later",
                humantime::format_duration(*wait)
            ),
            CycleOutcome::Stalled { reason } => format!("STALLED: {reason}"),
            CycleOutcome::Failed(e) => format!("FAILED: {}", crate::error_text::error_chain(e)),
        }
    }
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
                    Arc::new(
                        Authenticator::new(setup.auth.clone(), Some(Arc::new(store.clone())))
                            .with_max_response_bytes(http.max_response_bytes),
                    )
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
            built.push(runtime_source(settings, api));
        }
        Ok(Engine {
            store,
            registry: SourceRegistry::new(built, Vec::new()),
            client,
            http: http.clone(),
            budgets,
            replicas: ReplicaSettings::default(),
            replica_progress: Arc::default(),
        })
    }

    /// The same engine, sharing a PostgreSQL database with other replicas as `replicas`
    /// says (on SQLite it has no effect).
    pub fn with_replicas(self, replicas: ReplicaSettings) -> Engine {
        Engine { replicas, ..self }
    }

    /// The replica's figures: leases held, claimed and lost (zero unless the store is
    /// PostgreSQL), and its name once it runs.
    pub fn replica_progress(&self) -> &Arc<ReplicaProgress> {
        &self.replica_progress
    }

    /// The same engine, adding and retiring the accounts of `directories` while it runs
    /// (HighLevel app installs and uninstalls, and the periodic re-listing).
    pub fn with_directories(self, directories: Vec<Arc<discovery::Directory>>) -> Engine {
        let registry = SourceRegistry::new(self.registry.snapshot(), directories);
        Engine { registry, ..self }
    }

    /// The sources running now: the configured ones in config order, then the ones
    /// added while running.
    pub fn sources(&self) -> Vec<Arc<Source>> {
        self.registry.snapshot()
    }

    /// The running sources, for what reads them per request (the webhook receiver,
    /// `/metrics`, readiness, the watchdog).
    pub fn registry(&self) -> &SourceRegistry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Closes the runs a previous process left `running`, with one warning per source:
    /// every log line names the source it is about, so an operator filtering by source
    /// sees that its last cycle was cut short. The write waits out another process's
    /// write lock like every page write does (for up to the longest `stall_timeout` of
    /// the sources).
    async fn close_interrupted_runs(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<(), crate::store::StoreError> {
        let limit = self
            .sources()
            .iter()
            .map(|s| s.schedule.stall_timeout)
            .max()
            .unwrap_or_default();
        let interrupted =
            crate::store::while_busy(limit, shutdown, "marking interrupted runs", || {
                self.store.mark_interrupted_runs()
            })
            .await?;
        for (source, runs) in interrupted {
            tracing::warn!(
                source = %source,
                runs,
                "previous process stopped mid-cycle; those runs are marked interrupted and resume from their checkpoints"
            );
        }
        Ok(())
    }

    /// Runs every source until `shutdown` is cancelled. A page transaction in flight
    /// finishes first; then each task ends and this returns. If every source stops on its
    /// own before that (credentials rejected, a task that died), nothing is left to keep
    /// current: this returns [`EngineError::NoSourceLeft`] saying why, so that the
    /// process exits non-zero and a supervisor (systemd's `Restart=on-failure`) notices.
    ///
    /// On PostgreSQL the engine runs as one of the replicas sharing the database
    /// (`sync::replica`): it runs the sources of the scopes it holds leases on, for as
    /// long as it holds them, until `shutdown`; then it releases them. A scope whose every
    /// source stopped here is released for another replica and not claimed again; once
    /// that is true of every scope, nothing is left and this returns `NoSourceLeft` too.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), EngineError> {
        if self.store.kind() == BackendKind::Postgres {
            return replica::run(self, shutdown).await;
        }
        self.close_interrupted_runs(&shutdown).await?;
        let mut run = RunLoop::default();
        for source in self.sources() {
            run.spawn(source, &self.store, &shutdown);
        }
        let (mut changes, mut relisting) = self.follow_directories(&shutdown);
        loop {
            // A directory entry waits for installs when none of its accounts runs; an
            // engine whose every source stopped on its own ends (NoSourceLeft).
            let waiting = !self.registry.directories().is_empty() && run.stopped.is_empty();
            if run.tasks.is_empty() && (!waiting || shutdown.is_cancelled()) {
                break;
            }
            tokio::select! {
                done = run.tasks.join_next_with_id(), if !run.tasks.is_empty() => {
                    if let Some(done) = done {
                        self.note_end(&mut run, done);
                    }
                }
                Some(change) = changes.recv() => self.apply(change, &mut run, &shutdown),
                () = shutdown.cancelled(), if run.tasks.is_empty() => {}
            }
        }
        self.registry.deafen();
        relisting.shutdown().await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let mut stopped = run.stopped;
        stopped.sort();
        Err(EngineError::NoSourceLeft { stopped })
    }

    /// Takes the account changes asked of the registry from now on, and starts each
    /// directory's periodic re-listing; both end with the run (`deafen`, the set's drop).
    fn follow_directories(
        &self,
        shutdown: &CancellationToken,
    ) -> (tokio::sync::mpsc::Receiver<AccountChange>, JoinSet<()>) {
        let changes = self.registry.listen();
        let mut relisting = JoinSet::new();
        for directory in self.registry.directories() {
            relisting.spawn(relist::run(
                directory.clone(),
                self.registry.clone(),
                shutdown.clone(),
            ));
        }
        (changes, relisting)
    }

    /// The source of a directory's `account` when it should start: `None` when the entry
    /// is no directory or the account runs already.
    fn installed_source(&self, entry: &str, account: &str) -> Option<Arc<Source>> {
        let settings = self.registry.directory(entry)?.source(account);
        if self.registry.find(&settings.name).is_some() {
            tracing::debug!(source = %settings.name, "already running: install ignored");
            return None;
        }
        let source = self.build_source(&settings);
        self.registry.add(source.clone()).then_some(source)
    }

    /// Retires a directory's `account` from the registry; its source when it ran.
    fn uninstalled_source(&self, entry: &str, account: &str) -> Option<Arc<Source>> {
        let name = self.registry.directory(entry)?.source_name(account);
        let source = self.registry.find(&name)?;
        self.registry.remove(&name).then_some(source)
    }

    /// Notes how a source task ended.
    fn note_end(
        &self,
        run: &mut RunLoop,
        done: Result<(tokio::task::Id, SourceEnd), tokio::task::JoinError>,
    ) {
        match done {
            Ok((id, SourceEnd::Shutdown | SourceEnd::LeaseLost)) => {
                run.forget(id);
            }
            Ok((id, SourceEnd::Stopped(why))) => {
                if let Some(name) = run.forget(id) {
                    run.stopped.push((name, why));
                }
            }
            Err(e) => {
                let (id, why) = task_death(e);
                if let Some(name) = run.forget(id) {
                    self.note_task_death(&name, &why);
                    run.stopped.push((name, why));
                }
            }
        }
    }

    /// Starts or retires a directory entry's account. Idempotent: an account that runs is
    /// not started twice, one that does not run is not retired.
    fn apply(&self, change: AccountChange, run: &mut RunLoop, shutdown: &CancellationToken) {
        match change {
            AccountChange::Installed { entry, account } => {
                if let Some(source) = self.installed_source(&entry, &account) {
                    tracing::info!(source = %source.name, "app installed: the location runs now");
                    run.spawn(source, &self.store, shutdown);
                }
            }
            AccountChange::Uninstalled { entry, account } => {
                if let Some(source) = self.uninstalled_source(&entry, &account) {
                    run.retire(&source.name);
                    tracing::info!(source = %source.name, "app uninstalled: the location's source stops; its rows stay");
                }
            }
        }
    }

    /// A source added while running: its own authenticator (minting with the
    /// directory's shared issuer) and the budget of its scope.
    fn build_source(&self, settings: &SourceSettings) -> Arc<Source> {
        let setup = &settings.setup;
        let auth = Arc::new(
            Authenticator::new(setup.auth.clone(), Some(Arc::new(self.store.clone())))
                .with_max_response_bytes(self.http.max_response_bytes),
        );
        let budget = self
            .budgets
            .get(&setup.budget_key)
            .cloned()
            .unwrap_or_else(|| Arc::new(RequestBudget::new(settings.quota)));
        let api = ApiClient::new(
            self.client.clone(),
            auth,
            budget,
            self.http.clone(),
            Arc::new(RequestTally::default()),
        );
        runtime_source(settings, api)
    }

    /// Records that the task of the source named `name` died (a panic that escaped its
    /// cycle): logged, and shown by readiness and status as stopped.
    fn note_task_death(&self, name: &str, why: &str) {
        tracing::error!(source = %name, error = %why, "a source task died; it is not restarted until convsync is");
        if let Some(source) = self.registry.find(name) {
            source.progress.update(|s| {
                s.stopped = true;
                s.last_error = Some(why.to_owned());
            });
        }
    }

    /// Runs sources (all, or the one named) until each is caught up, has failed, or
    /// `shutdown` is cancelled: cycles repeat while a backfill hits the page cap or waits
    /// briefly on a rate limit. Every loop here ends: rate-limit waits are capped in total
    /// by `once_max_rate_limit_wait`, cycles that end "more to do" without reading
    /// anything by [`MAX_IDLE_CYCLES`], and a source whose task dies is reported failed.
    pub async fn sync_once(
        &self,
        only: Option<&str>,
        options: CycleOptions,
        shutdown: CancellationToken,
    ) -> Result<Vec<OnceResult>, crate::store::StoreError> {
        if self.store.kind() == BackendKind::Postgres {
            return replica::sync_once(self, only, options, shutdown).await;
        }
        self.close_interrupted_runs(&shutdown).await?;
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        for source in self
            .sources()
            .iter()
            .filter(|s| only.is_none_or(|n| n == s.name))
        {
            let span = tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
            let once = sync_source_once(
                source.clone(),
                self.store.clone(),
                options,
                shutdown.clone(),
            );
            let task = tasks.spawn(once.instrument(span));
            names.insert(task.id(), source.name.clone());
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next_with_id().await {
            match done {
                Ok((_, r)) => results.push(r),
                Err(e) => {
                    let (id, why) = task_death(e);
                    tracing::error!(source = %names[&id], error = %why, "a source task died");
                    results.push(OnceResult {
                        source: names[&id].clone(),
                        outcome: CycleOutcome::Failed(SyncError::Panicked { message: why }),
                        cycles: 0,
                    });
                }
            }
        }
        results.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(results)
    }
}

/// Why the engine stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The mirror database failed before any source started.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Every source stopped: nothing is being kept current any more.
    #[error("no source is left running{}", describe_stopped(stopped))]
    NoSourceLeft {
        /// Each stopped source with the reason it stopped.
        stopped: Vec<(String, String)>,
    },
}

fn describe_stopped(stopped: &[(String, String)]) -> String {
    if stopped.is_empty() {
        return " (no source is enabled)".to_owned();
    }
    let each: Vec<String> = stopped
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    format!(": {}", each.join("; "))
}

/// Which source task did not return, and why: its panic's message, or that it was
/// cancelled.
fn task_death(error: tokio::task::JoinError) -> (tokio::task::Id, String) {
    let id = error.id();
    let why = match error.try_into_panic() {
        Ok(payload) => format!("its task panicked: {}", panic_message(payload.as_ref())),
        Err(_) => "its task was cancelled".to_owned(),
    };
    (id, why)
}

/// `sync --once` for one source: cycles until it is caught up, failed or given up on.
async fn sync_source_once(
    source: Arc<Source>,
    store: Store,
    options: CycleOptions,
    shutdown: CancellationToken,
) -> OnceResult {
    let mode = Mode::Once {
        force_sweep: options.force_sweep,
        max_inline_pause: source.client.max_inline_pause(),
    };
    let (outcome, cycles) = drive(
        &source,
        &store,
        Policy::new(mode, &source.schedule),
        &shutdown,
    )
    .await;
    OnceResult {
        source: source.name.clone(),
        outcome,
        cycles,
    }
}

/// Runs cycles of `source` as `policy` says until it says stop or shutdown ends a wait.
/// Returns the last outcome and how many cycles ran.
async fn drive(
    source: &Source,
    store: &Store,
    mut policy: Policy,
    shutdown: &CancellationToken,
) -> (CycleOutcome, u32) {
    let mut cycles = 0;
    loop {
        cycles += 1;
        let resumed = WalkCursor::load_all(store, &source.name)
            .await
            .is_ok_and(|c| c.values().any(WalkCursor::in_progress));
        let rows_before = source.progress.rows_seen();
        let outcome = run_cycle(source, store, policy.options(resumed), shutdown).await;
        let facts = CycleFacts {
            resumed,
            read_rows: source.progress.rows_seen() != rows_before,
        };
        if matches!(&outcome, CycleOutcome::Failed(e) if e.is_lease_lost()) {
            return (outcome, cycles);
        }
        let wait = match policy.next(outcome, facts) {
            Next::Stop(outcome) => return (outcome, cycles),
            Next::Again => Duration::ZERO,
            Next::Wait(wait) => wait,
        };
        source
            .progress
            .update(|s| s.next_cycle_at = Some(Timestamp::now().saturating_add(wait)));
        if !sleep_unless_cancelled(wait, shutdown).await {
            return (CycleOutcome::Stopped, cycles);
        }
    }
}

/// The SQLite run loop's tasks: each source's task, and the token that retires it alone.
#[derive(Default)]
struct RunLoop {
    tasks: JoinSet<SourceEnd>,
    names: HashMap<tokio::task::Id, String>,
    /// Each running source's task and the token that stops it alone.
    retire: HashMap<String, (tokio::task::Id, CancellationToken)>,
    stopped: Vec<(String, String)>,
}

impl RunLoop {
    /// Runs `source` until `shutdown` or until it is retired.
    fn spawn(&mut self, source: Arc<Source>, store: &Store, shutdown: &CancellationToken) {
        let token = shutdown.child_token();
        let name = source.name.clone();
        let id = spawn_source_loop(&mut self.tasks, source, store.clone(), token.clone());
        self.names.insert(id, name.clone());
        self.retire.insert(name, (id, token));
    }

    /// Stops the source named `name`: its task ends after the page in flight.
    fn retire(&mut self, name: &str) {
        if let Some((_, token)) = self.retire.remove(name) {
            token.cancel();
        }
    }

    /// The name of the task `id`, which ended.
    fn forget(&mut self, id: tokio::task::Id) -> Option<String> {
        let name = self.names.remove(&id)?;
        // A location retired and installed again runs as a newer task under that name.
        if self.retire.get(&name).is_some_and(|(task, _)| *task == id) {
            self.retire.remove(&name);
        }
        Some(name)
    }
}

/// A source from its settings and its client.
fn runtime_source(settings: &SourceSettings, client: ApiClient) -> Arc<Source> {
    Arc::new(Source {
        name: settings.name.clone(),
        provider: settings.setup.provider.clone(),
        client,
        scope: settings.setup.budget_key.clone(),
        schedule: settings.schedule.clone(),
        guard: settings.guard,
        progress: Arc::new(SourceProgress::default()),
    })
}

/// How a source's loop ended.
enum SourceEnd {
    /// Shutdown was requested (or, under a lease, the scope was given up).
    Shutdown,
    /// The source stopped on its own, for this reason.
    Stopped(String),
    /// Another replica took the source's scope over: it runs the source now.
    LeaseLost,
}

/// Spawns `source`'s loop into `tasks`, in its span and under its pulse (the watchdog
/// supervisor, `crate::health`, pings systemd only while every running source task is
/// being polled), until `shutdown`. Returns the task's id.
fn spawn_source_loop(
    tasks: &mut JoinSet<SourceEnd>,
    source: Arc<Source>,
    store: Store,
    shutdown: CancellationToken,
) -> tokio::task::Id {
    let span =
        tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
    let progress = source.progress.clone();
    tasks
        .spawn(
            async move {
                progress
                    .pulse
                    .drive(source_loop(source, store, shutdown))
                    .await
            }
            .instrument(span),
        )
        .id()
}

/// One source's life: cycles as the daemon's [`Policy`] says, until shutdown or until its
/// credential is refused. A failed cycle (a panicked one included) is retried after a
/// backoff; a stalled one too.
async fn source_loop(source: Arc<Source>, store: Store, shutdown: CancellationToken) -> SourceEnd {
    tracing::info!(poll_interval = ?source.schedule.poll_interval, "source started");
    let policy = Policy::new(Mode::Daemon, &source.schedule);
    match drive(&source, &store, policy, &shutdown).await.0 {
        CycleOutcome::Failed(e) if e.is_lease_lost() => {
            tracing::warn!(error = %e, "lease lost: another replica runs this source now");
            SourceEnd::LeaseLost
        }
        CycleOutcome::Failed(e) if e.is_fatal() => {
            tracing::error!(error = %e, "credentials rejected: this source stops until the configuration is fixed and convsync restarted; other sources keep running");
            source.progress.update(|s| s.stopped = true);
            SourceEnd::Stopped(format!("credentials rejected ({e})"))
        }
        _ => {
            tracing::info!("source stopped");
            SourceEnd::Shutdown
        }
    }
}
