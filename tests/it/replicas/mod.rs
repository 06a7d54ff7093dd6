//! Replicas sharing one PostgreSQL database under fenced leases (issue #22): the store's
//! lease operations and fence (`fencing`), and whole engines in this process sharing the
//! scopes of a simulated world (`engines`), and three real `convsync run` processes under
//! kills, pauses and a PostgreSQL restart (`scale`). PostgreSQL only: a SQLite file has one
//! daemon.

mod defaults;
mod engines;
mod fairness;
mod fencing;
mod operator;
mod scale;

use std::collections::BTreeMap;
use std::time::Duration;

use convsync::config::{Config, ReplicaSettings, SourceSettings};
use convsync::provider::SetupContext;
use convsync::provider::spruce::{SpruceConfig, setup};
use convsync::secret::SecretRef;
use convsync::store::{ReplicaName, Store};
use convsync::sync::EngineError;
use convsync_sim::{Platform, SimHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::app::{TestApp, spawn_app};
use crate::support::stores::Backend;
use crate::support::truth::{Truth, TruthSource};
use crate::support::world::start_one_provider;
use crate::support::{GUARD, TestDb, quick_http, schedule};

/// A lease short enough for the tests to see several turns of the lease loop (one every
/// second) and a failover within seconds.
const TEST_TTL: Duration = Duration::from_secs(3);

/// How long a test waits for the replicas to reach a state before it fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Spruce organizations (one rate-limit scope each) in a quiet simulated world, and a
/// PostgreSQL mirror the replicas share.
struct ReplicaBed {
    sim: SimHandle,
    db: TestDb,
    tokens: tempfile::TempDir,
}

impl ReplicaBed {
    async fn start(organizations: u32) -> ReplicaBed {
        ReplicaBed {
            sim: start_one_provider(Platform::Spruce, organizations, 22, 25).await,
            db: TestDb::on(Backend::Postgres).await,
            tokens: tempfile::tempdir().unwrap(),
        }
    }

    /// The source of the `index`th organization, `spruce-<index>`.
    fn source(&self, index: usize) -> SourceSettings {
        let account = &self.sim.accounts().spruce[index];
        let token = self.tokens.path().join(format!("{index}.token"));
        std::fs::write(&token, &account.api_token).unwrap();
        let config = SpruceConfig {
            organization_id: account.organization_id.clone(),
            api_token: SecretRef::File { file: token },
            base_url: self.sim.spruce_base_url().to_string(),
            page_size: 10,
            track_reply_state: true,
            webhook_secret: None,
            webhook_endpoint_id: None,
        };
        let key = format!("sources[spruce-{index}]");
        let mut setups = setup(&config, &SetupContext { key: &key }).expect("valid spruce config");
        SourceSettings {
            name: source_name(index),
            setup: setups.remove(0),
            schedule: schedule(),
            guard: GUARD,
            quota: None,
        }
    }

    /// The configuration of replica `name` over the organizations `indices`.
    fn config(&self, name: &str, indices: &[usize]) -> Config {
        let sources = indices.iter().map(|&i| self.source(i)).collect();
        let mut config = self.db.config(quick_http(), sources);
        config.replicas = ReplicaSettings {
            name: ReplicaName::new(name).unwrap(),
            lease_ttl: TEST_TTL,
            max_scopes: 0,
        };
        config
    }

    /// A configuration file over the organizations `indices` and this database, as an
    /// operator's commands read it.
    fn config_file(&self, indices: &[usize]) -> std::path::PathBuf {
        let mut text = format!("[database]\nurl = \"{}\"\n", self.db.settings.url);
        for &i in indices {
            let account = &self.sim.accounts().spruce[i];
            let token = self.tokens.path().join(format!("{i}.token"));
            std::fs::write(&token, &account.api_token).unwrap();
            text.push_str(&format!(
                "[[sources]]\nname = \"{}\"\nprovider = \"spruce\"\n\
                 [sources.spruce]\norganization_id = \"{}\"\napi_token = {{ file = \"{}\" }}\n\
                 base_url = \"{}\"\n",
                source_name(i),
                account.organization_id,
                token.display(),
                self.sim.spruce_base_url()
            ));
        }
        let path = self.tokens.path().join("convsync.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Replica `name` over the organizations `indices`, built as `convsync run` builds it
    /// and following their truth.
    async fn app(&self, name: &str, indices: &[usize]) -> TestApp {
        let truth = indices
            .iter()
            .map(|&i| TruthSource::spruce(&self.sim, i, &source_name(i)))
            .collect();
        spawn_app(&self.config(name, indices))
            .await
            .following(Truth::simulator(&self.sim, truth))
    }

    /// Replica `name` running (`Engine::run`) over the organizations `indices`.
    async fn run(&self, name: &str, indices: &[usize]) -> Running {
        Running::start(self.app(name, indices).await)
    }
}

/// The name of the `index`th organization's source.
fn source_name(index: usize) -> String {
    format!("spruce-{index}")
}

/// A replica running in this process.
struct Running {
    app: TestApp,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), EngineError>>>,
}

impl Running {
    /// Runs `app`'s engine (`Engine::run`) until stopped.
    fn start(app: TestApp) -> Running {
        let engine = app.engine().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        Running {
            app,
            shutdown,
            task: Some(task),
        }
    }

    fn store(&self) -> &Store {
        self.app.store()
    }

    /// SIGTERM: stops the replica and waits until it has released its leases.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("the replica's task")
                .expect("the replica ends cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Each scope's owner (`None`: unowned), by scope.
async fn owners(store: &Store) -> BTreeMap<String, Option<String>> {
    store
        .lease_owners()
        .await
        .unwrap()
        .into_iter()
        .map(|lease| (lease.scope, lease.owner))
        .collect()
}

/// How many scopes each replica holds, by replica.
async fn held_by(store: &Store) -> BTreeMap<String, usize> {
    let mut held = BTreeMap::new();
    for owner in owners(store).await.into_values().flatten() {
        *held.entry(owner).or_default() += 1;
    }
    held
}

/// Waits until `check` holds, failing with `what` after [`PATIENCE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every source named has a run that caught up.
async fn all_caught_up(store: &Store, sources: &[String]) -> bool {
    let pool = store.as_postgres().unwrap().pool();
    let caught_up: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT source FROM sync_runs WHERE outcome = 'caught_up' AND source = ANY($1)",
    )
    .bind(sources)
    .fetch_all(pool)
    .await
    .unwrap();
    caught_up.len() == sources.len()
}

/// How many sources have a run under `replica` that caught up.
async fn caught_up_under(store: &Store, replica: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(DISTINCT source) FROM sync_runs WHERE replica = $1 AND outcome = 'caught_up'",
    )
    .bind(replica)
    .fetch_one(store.as_postgres().unwrap().pool())
    .await
    .unwrap()
}

/// One run that committed something: when it started and last committed, under which
/// lease.
#[derive(Debug, Clone)]
struct LeasedRun {
    scope: String,
    replica: Option<String>,
    epoch: Option<i64>,
    started_at: chrono::DateTime<chrono::Utc>,
    last_commit_at: chrono::DateTime<chrono::Utc>,
}

/// Every run that committed a write, with its source's scope.
async fn committed_runs(store: &Store) -> Vec<LeasedRun> {
    let pool = store.as_postgres().unwrap().pool();
    type Instant = chrono::DateTime<chrono::Utc>;
    type Row = (String, Option<String>, Option<i64>, Instant, Instant);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT l.scope, r.replica, r.epoch, r.started_at, r.last_commit_at
         FROM sync_runs r JOIN leases l ON r.source = ANY(l.sources)
         WHERE r.last_commit_at IS NOT NULL
         ORDER BY l.scope, r.started_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(scope, replica, epoch, started_at, last_commit_at)| LeasedRun {
                scope,
                replica,
                epoch,
                started_at,
                last_commit_at,
            },
        )
        .collect()
}

/// The proof that no scope was run by two replicas at once: every committed run names its
/// replica and epoch, and for each scope the span of each epoch's runs (first start to
/// last commit) ends before the next epoch's first run starts. Returns the epochs seen.
fn assert_no_overlap(runs: &[LeasedRun]) -> usize {
    let mut spans: BTreeMap<(String, i64), (LeasedRun, LeasedRun)> = BTreeMap::new();
    for run in runs {
        let epoch = run
            .epoch
            .unwrap_or_else(|| panic!("a leased run without an epoch: {run:?}"));
        assert!(
            run.replica.is_some(),
            "a leased run without a replica: {run:?}"
        );
        let span = spans
            .entry((run.scope.clone(), epoch))
            .or_insert_with(|| (run.clone(), run.clone()));
        if run.started_at < span.0.started_at {
            span.0 = run.clone();
        }
        if run.last_commit_at > span.1.last_commit_at {
            span.1 = run.clone();
        }
    }
    let spans: Vec<_> = spans.into_iter().collect();
    for pair in spans.windows(2) {
        let ((scope, epoch), (_, last)) = &pair[0];
        let ((next_scope, next_epoch), (next_first, _)) = &pair[1];
        if scope == next_scope {
            assert!(
                last.last_commit_at < next_first.started_at,
                "scope {scope}: epoch {epoch} ({:?}) committed at {} after epoch {next_epoch} ({:?}) started at {}",
                last.replica,
                last.last_commit_at,
                next_first.replica,
                next_first.started_at
            );
        }
    }
    spans.len()
}
