//! The engine as one of several replicas sharing a PostgreSQL database: each rate-limit
//! scope (the sources sharing one request budget) is run by the replica holding its lease
//! (`store::Leases`), so that each budget lives in exactly one process at a time.
//!
//! A replica that starts records its heartbeat at once and waits a short **join window**
//! ([`join_window`]) before it first counts the live replicas and claims: replicas started
//! together are then all counted by each other's first claim, and split the scopes from the
//! start instead of the first one taking everything and handing most of it on a lease turn
//! later. A lone replica's first claim, for every scope, comes that window late, once.
//!
//! Every third of the lease's lifetime (`[replicas] lease_ttl`) the lease loop
//! - beats the replica's heartbeat and renews the leases it holds; a scope whose lease was
//!   not renewed was taken over, and its sources stop at once;
//! - gives up the scopes above its fair share (the scopes divided by the live replicas,
//!   rounded up, or `max_scopes`), so that a replica that joins gets work, and claims
//!   unowned or expired scopes up to it, whose sources it then runs (`source_loop`, under
//!   a cancellation token of the scope's own and a store fenced by the lease's epoch).
//!
//! Two guards keep a scope from being run twice. The database refuses a write whose lease
//! has moved on (the fence: `Leases::fenced`), whatever the replica believes. And each
//! replica keeps a **local deadline** per scope, on its own monotonic clock: the instant
//! before it asked for the claim or the renewal, plus the lease's lifetime, less a margin.
//! When the deadline passes without a renewal the scope's token is cancelled, so no request
//! goes to the provider after the database may have handed the scope to someone else.
//!
//! A scope whose every source stops for a final reason (credentials rejected, a task that
//! died) is released for the other replicas, whose configuration may work, and never
//! claimed again by this one; when that is true of every scope of its configuration, the
//! replica exits with [`EngineError::NoSourceLeft`] as a SQLite daemon does.
//!
//! On shutdown the sources stop (a page in flight commits), then every lease is released
//! with its budget's rate-limit state, and the next replica takes over on its next loop
//! without bursting. `sync --once` claims the scopes it needs the same way, waits up to a
//! lease's lifetime for those held elsewhere, and releases them when it is done.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{
    AccountChange, CycleOptions, CycleOutcome, Engine, EngineError, OnceResult, Source, SourceEnd,
    SyncError, source_loop, sync_source_once, task_death,
};
use crate::config::ReplicaSettings;
use crate::http::RateLimitSnapshot;
use crate::retry::sleep_unless_cancelled;
use crate::store::{Claim, Fence, ReplicaName, Store, StoreError};
use crate::time::Timestamp;

/// The replica's live figures, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaProgress {
    /// The replica's name, once the engine runs as a replica.
    name: Mutex<Option<ReplicaName>>,
    /// Leases held now.
    pub held: AtomicU64,
    /// Leases claimed since the start.
    pub claims: AtomicU64,
    /// Leases lost since the start: taken over, or not renewed before the local deadline.
    pub lost: AtomicU64,
}

impl ReplicaProgress {
    /// The replica's name, when the engine runs as one.
    pub fn name(&self) -> Option<ReplicaName> {
        self.name
            .lock()
            .expect("replica name lock poisoned")
            .clone()
    }

    fn set_name(&self, name: &ReplicaName) {
        *self.name.lock().expect("replica name lock poisoned") = Some(name.clone());
    }
}

/// How many scopes one of `live_replicas` replicas should hold of `scopes`: an even share,
/// rounded up so that every scope has a place, and at most `max_scopes` (0: no cap).
pub fn fair_share(scopes: usize, live_replicas: usize, max_scopes: usize) -> usize {
    let share = scopes.div_ceil(live_replicas.max(1));
    if max_scopes > 0 {
        share.min(max_scopes)
    } else {
        share
    }
}

/// The last instant a scope's sources may send requests, for a lease claimed or renewed
/// for `ttl` by a request sent at `asked_at` (the database's expiry is at least that far
/// from when it answered): a quarter of the lifetime earlier, which leaves room for a
/// request in flight and covers two renewals (every third of the lifetime) failing.
pub fn lease_deadline(asked_at: Instant, ttl: Duration) -> Instant {
    asked_at + (ttl - ttl / 4)
}

/// How often the lease loop runs.
fn loop_period(ttl: Duration) -> Duration {
    ttl / 3
}

/// The longest a starting replica waits for its peers before its first claim: Kafka's
/// consumer groups wait as long for members to join before their first assignment
/// (`group.initial.rebalance.delay.ms`, 3 s), for the same trade. Replicas an orchestrator
/// starts together (a compose file, a Deployment's pods, systemd units) start within it;
/// a lone replica's first sync is delayed by no more, once.
const JOIN_WINDOW_MAX: Duration = Duration::from_secs(3);

/// How long a starting replica waits, its heartbeat recorded, before it first counts the
/// live replicas and claims its share: 3 s (`JOIN_WINDOW_MAX`), and never more than one turn
/// of the lease loop, since a peer that comes later is counted at the next turn anyway.
pub fn join_window(ttl: Duration) -> Duration {
    loop_period(ttl).min(JOIN_WINDOW_MAX)
}

/// A scope this replica holds, and what runs its sources.
struct HeldScope {
    fence: Fence,
    /// Cancelled to stop the scope's sources: shutdown, surplus, a lost lease, or the
    /// local deadline passing.
    token: CancellationToken,
    /// The local deadline, extended by each renewal; its watcher cancels `token` when it
    /// passes.
    deadline: watch::Sender<Instant>,
    /// The scope's source tasks, to wait for before the lease is released.
    tracker: TaskTracker,
    /// Set when a source found the lease lost while writing.
    lease_lost: Arc<std::sync::atomic::AtomicBool>,
    /// The rate-limit state last stored with the lease.
    stored_rate_limit: Option<serde_json::Value>,
}

/// The leases a replica holds and the tasks running their sources; `T` is what a source
/// task returns (`SourceEnd` in the daemon, `OnceResult` for `sync --once`).
struct Replica<'a, T> {
    engine: &'a Engine,
    settings: &'a ReplicaSettings,
    /// The scopes this replica's configuration has, with their sources.
    scopes: BTreeMap<String, Vec<Arc<Source>>>,
    held: BTreeMap<String, HeldScope>,
    tasks: JoinSet<T>,
    /// Each task's source name.
    task_sources: HashMap<tokio::task::Id, String>,
    /// The sources that stopped here for a final reason (credentials rejected, a task
    /// that died), with the reason: they do not run again in this process.
    stopped: BTreeMap<String, String>,
    /// The scopes given up because every source of theirs stopped here: released for a
    /// replica with a working configuration, never claimed again by this one.
    given_up: BTreeSet<String>,
    shutdown: CancellationToken,
}

impl<'a, T: Send + 'static> Replica<'a, T> {
    fn new(
        engine: &'a Engine,
        sources: impl IntoIterator<Item = Arc<Source>>,
        shutdown: CancellationToken,
    ) -> Replica<'a, T> {
        let mut scopes: BTreeMap<String, Vec<Arc<Source>>> = BTreeMap::new();
        for source in sources {
            source.progress.update(|s| s.held_elsewhere = true);
            scopes.entry(source.scope.clone()).or_default().push(source);
        }
        engine.replica_progress.set_name(&engine.replicas.name);
        Replica {
            engine,
            settings: &engine.replicas,
            scopes,
            held: BTreeMap::new(),
            tasks: JoinSet::new(),
            task_sources: HashMap::new(),
            stopped: BTreeMap::new(),
            given_up: BTreeSet::new(),
            shutdown,
        }
    }

    fn store(&self) -> &Store {
        &self.engine.store
    }

    fn name(&self) -> &ReplicaName {
        &self.settings.name
    }

    fn ttl(&self) -> Duration {
        self.settings.lease_ttl
    }

    /// Lists this replica's scopes, with all their configured sources, in the lease table.
    async fn register(&self) -> Result<(), StoreError> {
        let scopes: Vec<(String, Vec<String>)> = self
            .scopes
            .keys()
            .map(|scope| {
                let sources = self
                    .engine
                    .sources()
                    .iter()
                    .filter(|s| &s.scope == scope)
                    .map(|s| s.name.clone())
                    .collect();
                (scope.clone(), sources)
            })
            .collect();
        self.store().register_scopes(&scopes).await
    }

    /// The scopes of this replica's configuration it does not hold and has not given up.
    fn not_held(&self) -> Vec<String> {
        self.scopes
            .keys()
            .filter(|scope| !self.held.contains_key(*scope) && !self.given_up.contains(*scope))
            .cloned()
            .collect()
    }

    /// Claims up to `max` of the `wanted` scopes, starting each one's sources with
    /// `start`. Returns the scopes claimed.
    async fn claim(
        &mut self,
        wanted: &[String],
        max: usize,
        start: &mut impl FnMut(Arc<Source>, Store, CancellationToken) -> (String, BoxedTask<T>),
    ) -> Result<Vec<String>, StoreError> {
        if wanted.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let asked_at = Instant::now();
        let claims = self
            .store()
            .claim(self.name(), wanted, max, self.ttl())
            .await?;
        let mut claimed = Vec::with_capacity(claims.len());
        for claim in claims {
            claimed.push(claim.scope.clone());
            self.start_scope(claim, asked_at, start)?;
        }
        Ok(claimed)
    }

    /// Starts the sources of a claimed scope under its fence, with the budget seeded from
    /// the rate-limit state the previous owner left.
    fn start_scope(
        &mut self,
        claim: Claim,
        asked_at: Instant,
        start: &mut impl FnMut(Arc<Source>, Store, CancellationToken) -> (String, BoxedTask<T>),
    ) -> Result<(), StoreError> {
        let fence = Fence {
            scope: claim.scope.clone(),
            owner: self.name().clone(),
            epoch: claim.epoch,
        };
        let store = self.store().fenced(fence.clone())?;
        if let Some(state) = &claim.rate_limit
            && let Some(budget) = self.engine.budgets.get(&claim.scope)
        {
            match serde_json::from_value::<RateLimitSnapshot>(state.clone()) {
                Ok(snapshot) => budget.seed(&snapshot, Timestamp::now()),
                Err(e) => tracing::warn!(
                    scope = %claim.scope,
                    error = %e,
                    "the rate-limit state stored with the lease is unreadable; starting from the configured quota"
                ),
            }
        }
        let token = self.shutdown.child_token();
        let (deadline, watched) = watch::channel(lease_deadline(asked_at, self.ttl()));
        tokio::spawn(enforce_deadline(
            watched,
            token.clone(),
            claim.scope.clone(),
        ));
        let tracker = TaskTracker::new();
        let lease_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A source that stopped here for a final reason stays stopped, as on SQLite.
        let sources: Vec<Arc<Source>> = self
            .scopes
            .get(&claim.scope)
            .into_iter()
            .flatten()
            .filter(|s| !self.stopped.contains_key(&s.name))
            .cloned()
            .collect();
        for source in &sources {
            source.progress.update(|s| s.held_elsewhere = false);
            let (name, task) = start(source.clone(), store.clone(), token.clone());
            let id = self.tasks.spawn(tracker.track_future(task)).id();
            self.task_sources.insert(id, name);
        }
        tracker.close();
        tracing::info!(
            scope = %claim.scope,
            epoch = claim.epoch,
            sources = sources.len(),
            "lease claimed; running its sources"
        );
        self.engine
            .replica_progress
            .claims
            .fetch_add(1, Ordering::Relaxed);
        self.held.insert(
            claim.scope,
            HeldScope {
                fence,
                token,
                deadline,
                tracker,
                lease_lost,
                stored_rate_limit: claim.rate_limit,
            },
        );
        self.note_held();
        Ok(())
    }

    /// Renews every lease held; a scope not renewed was taken over and stops. The
    /// scopes renewed get a later local deadline and store their budget's rate-limit
    /// state. A failed renewal changes nothing: the deadlines stop the sources in time.
    async fn renew(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let fences: Vec<Fence> = self.held.values().map(|h| h.fence.clone()).collect();
        let asked_at = Instant::now();
        let renewed = match self.store().renew(self.name(), &fences, self.ttl()).await {
            Ok(renewed) => renewed.into_iter().collect::<BTreeSet<String>>(),
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the leases; their sources stop at their deadline unless a later renewal succeeds");
                return;
            }
        };
        let lost: Vec<String> = self
            .held
            .keys()
            .filter(|scope| !renewed.contains(*scope))
            .cloned()
            .collect();
        for scope in lost {
            self.drop_lost(&scope, "another replica took the lease over")
                .await;
        }
        let deadline = lease_deadline(asked_at, self.ttl());
        let mut changed = Vec::new();
        for held in self.held.values_mut() {
            held.deadline.send_replace(deadline);
            let state = rate_limit_of(self.engine, &held.fence.scope);
            if let Some(state) = state
                && held.stored_rate_limit.as_ref() != Some(&state)
            {
                held.stored_rate_limit = Some(state.clone());
                changed.push((held.fence.clone(), state));
            }
        }
        // Only what changed since the last turn: thousands of scopes must not cost
        // thousands of writes a turn.
        if let Err(e) = self.store().store_rate_limits(&changed).await {
            tracing::debug!(error = %e, "could not store the rate-limit states with the leases");
        }
    }

    /// Stops the scopes whose sources found their lease lost or whose local deadline
    /// passed.
    async fn drop_stale(&mut self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let stale: Vec<(String, &'static str)> = self
            .held
            .iter()
            .filter_map(|(scope, held)| {
                if held.lease_lost.load(Ordering::Relaxed) {
                    Some((scope.clone(), "a write found the lease taken over"))
                } else if held.token.is_cancelled() {
                    Some((
                        scope.clone(),
                        "the lease was not renewed before its local deadline",
                    ))
                } else {
                    None
                }
            })
            .collect();
        for (scope, why) in stale {
            self.drop_lost(&scope, why).await;
        }
    }

    /// Stops a scope whose lease is lost, and gives it up in case it is still ours (a
    /// deadline that passed while the database was out of reach), so that any replica
    /// can claim it at once.
    async fn drop_lost(&mut self, scope: &str, why: &str) {
        let Some(held) = self.stop_scope(scope).await else {
            return;
        };
        tracing::warn!(scope = %scope, epoch = held.fence.epoch, reason = why, "lease lost; its sources stopped");
        self.engine
            .replica_progress
            .lost
            .fetch_add(1, Ordering::Relaxed);
        let state = self.rate_limit_of(scope);
        let _ = self.store().release(&held.fence, state.as_ref()).await;
    }

    /// Stops a scope's sources and waits for them (a page in flight commits), and
    /// forgets the scope.
    async fn stop_scope(&mut self, scope: &str) -> Option<HeldScope> {
        let held = self.held.remove(scope)?;
        held.token.cancel();
        held.tracker.wait().await;
        for source in self.scopes.get(scope).into_iter().flatten() {
            source.progress.update(|s| s.held_elsewhere = true);
        }
        self.note_held();
        Some(held)
    }

    /// Stops a scope's sources and releases its lease with the budget's state, for
    /// another replica to take over at once.
    async fn release(&mut self, scope: &str, why: &str) {
        let Some(held) = self.stop_scope(scope).await else {
            return;
        };
        let state = self.rate_limit_of(scope);
        match self.store().release(&held.fence, state.as_ref()).await {
            Ok(()) => {
                tracing::info!(scope = %scope, epoch = held.fence.epoch, reason = why, "lease released")
            }
            Err(e) => tracing::warn!(
                scope = %scope,
                error = %e,
                "could not release the lease; it expires by itself after lease_ttl"
            ),
        }
    }

    /// Gives up each held scope whose every source stopped here for a final reason: its
    /// lease is released at once, so that a replica whose configuration works (the right
    /// credentials) can claim it, and this replica never claims it again, so that a scope
    /// every replica fails on goes round them once instead of bouncing for ever.
    async fn give_up_stopped_scopes(&mut self) {
        let dead: Vec<String> = self
            .held
            .keys()
            .filter(|scope| {
                self.scopes.get(*scope).is_some_and(|sources| {
                    sources.iter().all(|s| self.stopped.contains_key(&s.name))
                })
            })
            .cloned()
            .collect();
        for scope in dead {
            tracing::error!(
                scope = %scope,
                "every source of this scope stopped here; its lease is released for another replica and this one does not claim it again until it restarts"
            );
            self.release(&scope, "every source of the scope stopped in this replica")
                .await;
            self.given_up.insert(scope);
        }
    }

    /// Whether nothing is left for this replica to run, ever: every scope of its
    /// configuration was given up here (none while other replicas merely hold them), and
    /// no directory may install a location (one waits, as on SQLite, unless a source
    /// stopped here).
    fn nothing_left(&self) -> bool {
        let waiting = !self.engine.registry.directories().is_empty() && self.stopped.is_empty();
        !waiting
            && self
                .scopes
                .keys()
                .all(|scope| self.given_up.contains(scope))
    }

    /// Applies an account change under leases: an installed location's scope joins this
    /// replica's (true: register the scopes again, then it is claimed like the others);
    /// an uninstalled one's scope is released and forgotten, its sources stopped first.
    /// A directory's account is its own scope (HighLevel: one budget per location).
    async fn apply(&mut self, change: AccountChange) -> bool {
        match change {
            AccountChange::Installed { entry, account } => {
                let Some(source) = self.engine.installed_source(&entry, &account) else {
                    return false;
                };
                tracing::info!(source = %source.name, scope = %source.scope, "app installed: the location's scope is leased like the others");
                source.progress.update(|s| s.held_elsewhere = true);
                self.given_up.remove(&source.scope);
                self.scopes
                    .entry(source.scope.clone())
                    .or_default()
                    .push(source);
                true
            }
            AccountChange::Uninstalled { entry, account } => {
                let Some(source) = self.engine.uninstalled_source(&entry, &account) else {
                    return false;
                };
                let scope = source.scope.clone();
                self.release(&scope, "app uninstalled").await;
                self.scopes.remove(&scope);
                tracing::info!(source = %source.name, "app uninstalled: the location's source stopped; its rows stay");
                false
            }
        }
    }

    /// Releases every lease held (their sources stop first), and leaves.
    async fn release_all(&mut self, why: &str) {
        let scopes: Vec<String> = self.held.keys().cloned().collect();
        for scope in scopes {
            self.release(&scope, why).await;
        }
    }

    /// The scope's budget's rate-limit state as the lease stores it, if it says anything.
    fn rate_limit_of(&self, scope: &str) -> Option<serde_json::Value> {
        rate_limit_of(self.engine, scope)
    }

    fn note_held(&self) {
        self.engine
            .replica_progress
            .held
            .store(self.held.len() as u64, Ordering::Relaxed);
    }
}

/// `scope`'s budget's rate-limit state as a lease stores it, if it says anything.
fn rate_limit_of(engine: &Engine, scope: &str) -> Option<serde_json::Value> {
    let snapshot = engine.budgets.get(scope)?.snapshot(Timestamp::now());
    if snapshot.is_empty() {
        return None;
    }
    serde_json::to_value(snapshot).ok()
}

/// A source's task, boxed so that the daemon's and `sync --once`'s fit one [`Replica`].
type BoxedTask<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// Cancels `token` when the deadline `deadline` watches passes without being extended;
/// ends when the token is cancelled otherwise or the scope is forgotten.
async fn enforce_deadline(
    mut deadline: watch::Receiver<Instant>,
    token: CancellationToken,
    scope: String,
) {
    loop {
        let at = *deadline.borrow_and_update();
        tokio::select! {
            () = token.cancelled() => return,
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(at) => {
                if deadline.has_changed().unwrap_or(false) {
                    continue;
                }
                tracing::warn!(scope = %scope, "the lease was not renewed in time: its sources stop before it can expire");
                token.cancel();
                return;
            }
        }
    }
}

/// `convsync run` on PostgreSQL: the lease loop, until `shutdown`; then every lease is
/// released. A scope whose every source stops here for a final reason is given up
/// ([`Replica::give_up_stopped_scopes`]); once every scope of the configuration is, this
/// returns [`EngineError::NoSourceLeft`] naming the stopped sources, as on SQLite.
pub(super) async fn run(engine: &Engine, shutdown: CancellationToken) -> Result<(), EngineError> {
    let mut replica: Replica<'_, SourceEnd> =
        Replica::new(engine, engine.sources(), shutdown.clone());
    tracing::info!(
        replica = %replica.name(),
        scopes = replica.scopes.len(),
        lease_ttl = ?replica.ttl(),
        "running as a replica: sources run under leases on their rate-limit scopes"
    );
    let mut start = daemon_task;
    let period = loop_period(replica.ttl());
    // Announced at once, so that peers starting now count this replica in their first claim.
    let joined_at = Instant::now() + join_window(replica.ttl());
    if let Err(e) = replica.store().heartbeat(replica.name()).await {
        tracing::warn!(error = %e, "could not record this replica's heartbeat");
    }
    let (mut changes, mut relisting) = engine.follow_directories(&shutdown);
    let mut joining = true;
    let mut registered = false;
    while !shutdown.is_cancelled() {
        if !registered {
            registered = match replica.register().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not register this replica's scopes; trying again");
                    false
                }
            };
        }
        if registered && joining {
            let wait = joined_at.saturating_duration_since(Instant::now());
            tracing::debug!(
                ?wait,
                "waiting for the replicas started together to announce themselves"
            );
            if !sleep_unless_cancelled(wait, &shutdown).await {
                break;
            }
            joining = false;
        }
        if registered {
            lease_step(&mut replica, &mut start).await;
        }
        reap_daemon_tasks(&mut replica);
        replica.give_up_stopped_scopes().await;
        if replica.nothing_left() {
            break;
        }
        // An account change is applied at once; an installed location's new scope is
        // registered and claimed (fair share permitting) in the turn that follows.
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => break,
            Some(change) = changes.recv() => {
                if replica.apply(change).await {
                    registered = false;
                }
            }
        }
    }
    engine.registry.deafen();
    relisting.shutdown().await;
    replica.release_all("shutting down").await;
    while let Some(done) = replica.tasks.join_next_with_id().await {
        if let Err(e) = done {
            let (id, why) = task_death(e);
            if let Some(name) = replica.task_sources.get(&id) {
                engine.note_task_death(name, &why);
            }
        }
    }
    if let Err(e) = engine.store.leave(replica.name()).await {
        tracing::debug!(error = %e, "could not remove this replica's heartbeat; it ages out");
    }
    if shutdown.is_cancelled() {
        return Ok(());
    }
    Err(EngineError::NoSourceLeft {
        stopped: replica.stopped.into_iter().collect(),
    })
}

/// One turn of the lease loop: heartbeat, renewals, then the fair share: surplus
/// released, missing scopes claimed.
async fn lease_step(
    replica: &mut Replica<'_, SourceEnd>,
    start: &mut impl FnMut(Arc<Source>, Store, CancellationToken) -> (String, BoxedTask<SourceEnd>),
) {
    if let Err(e) = replica.store().heartbeat(replica.name()).await {
        tracing::warn!(error = %e, "could not record this replica's heartbeat");
    }
    replica.drop_stale().await;
    replica.renew().await;
    let live = match replica.store().live_replicas(replica.ttl()).await {
        Ok(live) => live.len(),
        Err(e) => {
            tracing::warn!(error = %e, "could not count the live replicas; claiming nothing this turn");
            return;
        }
    };
    let share = fair_share(replica.scopes.len(), live, replica.settings.max_scopes);
    let held = replica.held.len();
    if held > share {
        // The most recently claimed scopes go first: the older ones have warm budgets.
        let mut by_epoch: Vec<(i64, String)> = replica
            .held
            .values()
            .map(|h| (h.fence.epoch, h.fence.scope.clone()))
            .collect();
        by_epoch.sort();
        for (_, scope) in by_epoch.into_iter().rev().take(held - share) {
            replica
                .release(&scope, "above this replica's fair share")
                .await;
        }
    } else if held < share
        && let Err(e) = replica
            .claim(&replica.not_held(), share - held, start)
            .await
    {
        tracing::warn!(error = %e, "could not claim scopes");
    }
}

/// The daemon's source task: `source_loop` under the scope's token, driven under the
/// source's pulse (the watchdog supervisor reads it); a lost lease cancels the token, so
/// the scope's other sources stop too.
fn daemon_task(
    source: Arc<Source>,
    store: Store,
    token: CancellationToken,
) -> (String, BoxedTask<SourceEnd>) {
    let span =
        tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
    let name = source.name.clone();
    let progress = source.progress.clone();
    let task = async move {
        let end = progress
            .pulse
            .drive(source_loop(source, store, token.clone()))
            .await;
        if matches!(end, SourceEnd::LeaseLost) {
            token.cancel();
        }
        end
    }
    .instrument(span);
    (name, Box::pin(task))
}

/// Collects the daemon's finished source tasks: a lost lease marks its scope for the
/// next turn; a task that died is reported as `run` reports it.
fn reap_daemon_tasks(replica: &mut Replica<'_, SourceEnd>) {
    while let Some(done) = replica.tasks.try_join_next_with_id() {
        match done {
            Ok((id, SourceEnd::LeaseLost)) => {
                if let Some(source) = replica
                    .task_sources
                    .remove(&id)
                    .and_then(|name| replica.engine.registry.find(&name))
                    && let Some(held) = replica.held.get(&source.scope)
                {
                    held.lease_lost.store(true, Ordering::Relaxed);
                }
            }
            Ok((id, SourceEnd::Stopped(why))) => {
                if let Some(name) = replica.task_sources.remove(&id) {
                    replica.stopped.insert(name, why);
                }
            }
            Ok((id, SourceEnd::Shutdown)) => {
                replica.task_sources.remove(&id);
            }
            Err(e) => {
                let (id, why) = task_death(e);
                if let Some(name) = replica.task_sources.remove(&id) {
                    replica.engine.note_task_death(&name, &why);
                    replica.stopped.insert(name, why);
                }
            }
        }
    }
}

/// `sync --once` on PostgreSQL: claims the scopes of the sources to sync (waiting up to a
/// lease's lifetime, and a loop more, for those another replica holds), syncs them while
/// renewing their leases, and releases them. A source whose scope stays held elsewhere
/// fails, naming the replica that holds it.
pub(super) async fn sync_once(
    engine: &Engine,
    only: Option<&str>,
    options: CycleOptions,
    shutdown: CancellationToken,
) -> Result<Vec<OnceResult>, StoreError> {
    let selected: Vec<Arc<Source>> = engine
        .sources()
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
        .cloned()
        .collect();
    let mut replica: Replica<'_, OnceResult> = Replica::new(engine, selected, shutdown.clone());
    replica.register().await?;
    let mut start = move |source: Arc<Source>, store: Store, token: CancellationToken| {
        let span = tracing::info_span!("source", source = %source.name, provider = %source.provider.kind());
        let name = source.name.clone();
        let task: BoxedTask<OnceResult> = Box::pin(
            async move {
                let result = sync_source_once(source, store, options, token.clone()).await;
                if matches!(&result.outcome, CycleOutcome::Failed(e) if e.is_lease_lost()) {
                    token.cancel();
                }
                result
            }
            .instrument(span),
        );
        (name, task)
    };
    let period = loop_period(replica.ttl());
    let give_up_at = Instant::now() + replica.ttl() + period;
    let mut pending: BTreeSet<String> = replica.scopes.keys().cloned().collect();
    let mut results = Vec::new();
    loop {
        if !pending.is_empty() && !shutdown.is_cancelled() {
            let wanted: Vec<String> = pending.iter().cloned().collect();
            match replica.claim(&wanted, wanted.len(), &mut start).await {
                Ok(claimed) => {
                    for scope in claimed {
                        pending.remove(&scope);
                    }
                }
                // A claim also closes the scope's leftover runs, so another writer's lock
                // on the mirror delays it like any write: it is tried again next turn.
                Err(StoreError::Busy(message)) => tracing::warn!(
                    %message,
                    "the database is locked by another process; claiming the leases waits and tries again"
                ),
                Err(e) => return Err(e),
            }
        }
        if !pending.is_empty() && (Instant::now() >= give_up_at || shutdown.is_cancelled()) {
            results.extend(held_elsewhere(&replica, &pending).await?);
            pending.clear();
        }
        if pending.is_empty() && replica.held.is_empty() {
            break;
        }
        // Until the next turn, or until every running source is done.
        let tick = tokio::time::sleep(period);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => break,
                Some(done) = replica.tasks.join_next_with_id() => {
                    results.push(once_result(&mut replica, done));
                    if replica.tasks.is_empty() && pending.is_empty() {
                        break;
                    }
                }
            }
        }
        replica.drop_stale().await;
        let finished: Vec<String> = replica
            .held
            .iter()
            .filter(|(_, held)| held.tracker.is_empty())
            .map(|(scope, _)| scope.clone())
            .collect();
        for scope in finished {
            replica.release(&scope, "sync --once is done with it").await;
        }
        replica.renew().await;
    }
    while let Some(done) = replica.tasks.join_next_with_id().await {
        results.push(once_result(&mut replica, done));
    }
    results.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(results)
}

/// A finished `sync --once` task's result; a task that died is reported failed.
fn once_result(
    replica: &mut Replica<'_, OnceResult>,
    done: Result<(tokio::task::Id, OnceResult), tokio::task::JoinError>,
) -> OnceResult {
    match done {
        Ok((id, result)) => {
            replica.task_sources.remove(&id);
            result
        }
        Err(e) => {
            let (id, why) = task_death(e);
            let source = replica.task_sources.remove(&id).unwrap_or_default();
            tracing::error!(source = %source, error = %why, "a source task died");
            OnceResult {
                source,
                outcome: CycleOutcome::Failed(SyncError::Panicked { message: why }),
                cycles: 0,
            }
        }
    }
}

/// The results of the sources of the `pending` scopes, which another replica kept holding.
async fn held_elsewhere(
    replica: &Replica<'_, OnceResult>,
    pending: &BTreeSet<String>,
) -> Result<Vec<OnceResult>, StoreError> {
    let owners: HashMap<String, String> = replica
        .store()
        .lease_owners()
        .await?
        .into_iter()
        .filter_map(|lease| Some((lease.scope, lease.owner?)))
        .collect();
    Ok(replica
        .scopes
        .iter()
        .filter(|(scope, _)| pending.contains(*scope))
        .flat_map(|(scope, sources)| {
            let owner = owners
                .get(scope)
                .cloned()
                .unwrap_or_else(|| "another replica".to_owned());
            sources.iter().map(move |source| OnceResult {
                source: source.name.clone(),
                outcome: CycleOutcome::Failed(SyncError::LeaseHeld {
                    scope: scope.clone(),
                    owner: owner.clone(),
                }),
                cycles: 0,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scopes are split evenly, rounded up so none is left over, and capped by
    /// `max_scopes` when it is set.
    #[test]
    fn the_fair_share_rounds_up_and_respects_the_cap() {
        assert_eq!(fair_share(4, 2, 0), 2);
        assert_eq!(fair_share(5, 2, 0), 3);
        assert_eq!(fair_share(4, 1, 0), 4);
        assert_eq!(fair_share(1, 3, 0), 1);
        assert_eq!(fair_share(0, 3, 0), 0);
        assert_eq!(fair_share(10, 2, 3), 3);
        assert_eq!(fair_share(4, 0, 0), 4, "no live replica seen yet: this one");
        // Every scope has a place: the shares of the live replicas cover them all.
        for scopes in 0..50 {
            for live in 1..7 {
                assert!(fair_share(scopes, live, 0) * live >= scopes);
            }
        }
    }

    /// The local deadline falls before the lease can expire by a margin, and after the
    /// two next renewals would have extended it.
    #[test]
    fn the_local_deadline_leaves_room_for_two_renewals() {
        let asked = Instant::now();
        for ttl in [Duration::from_secs(5), Duration::from_secs(30)] {
            let deadline = lease_deadline(asked, ttl);
            assert!(deadline < asked + ttl, "before the database's expiry");
            assert!(
                deadline - asked > loop_period(ttl) * 2,
                "two renewals fit before it"
            );
            assert_eq!(deadline - asked, ttl - ttl / 4);
        }
    }

    /// The join window is a few seconds at the default lease and never longer than a turn
    /// of the lease loop, so a lone replica's first claim is late by at most that.
    #[test]
    fn the_join_window_is_short_and_within_a_turn() {
        assert_eq!(join_window(Duration::from_secs(30)), Duration::from_secs(3));
        assert_eq!(join_window(Duration::from_secs(6)), Duration::from_secs(2));
        for secs in [3, 5, 9, 30, 300] {
            let ttl = Duration::from_secs(secs);
            assert!(join_window(ttl) <= loop_period(ttl));
            assert!(join_window(ttl) <= JOIN_WINDOW_MAX);
        }
    }

    /// A deadline passing without renewal cancels the scope's token; one extended in time
    /// does not.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_not_extended_cancels_the_scope() {
        let token = CancellationToken::new();
        let (deadline, watched) = watch::channel(Instant::now() + Duration::from_secs(10));
        let watcher = tokio::spawn(enforce_deadline(watched, token.clone(), "s".into()));
        tokio::time::sleep(Duration::from_secs(8)).await;
        deadline.send_replace(Instant::now() + Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(!token.is_cancelled(), "renewed in time");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(token.is_cancelled(), "not renewed: the scope stops");
        watcher.await.unwrap();
    }
}
