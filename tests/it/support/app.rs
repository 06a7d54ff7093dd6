//! The daemon as the CLI builds it (`App::build`: daemon lock, migrated store, adopted
//! source names, engine), so a test runs the same program `convsync run` runs, with the
//! verbs the tests speak: sync, read the mirror and the last run, compare with the truth.

use convsync::app::App;
use convsync::config::Config;
use convsync::store::Store;
use convsync::sync::{CycleOptions, CycleOutcome, Engine, OnceResult, SyncError, run_cycle};
use tokio_util::sync::CancellationToken;

use super::mirror::{LastRun, Mirror, read_last_run, read_mirror};
use super::truth::Truth;

/// Whether a sync forces the sweeps or runs them only when they are due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sweep {
    IfDue,
    Now,
}

impl Sweep {
    fn options(self) -> CycleOptions {
        CycleOptions {
            force_sweep: self == Sweep::Now,
            ..CycleOptions::default()
        }
    }
}

/// A built daemon over a test configuration, and the truth its mirror should follow.
pub struct TestApp {
    pub app: App,
    truth: Option<Truth>,
}

/// Builds the daemon from `config` exactly as `convsync run` and `sync --once` do.
pub async fn spawn_app(config: &Config) -> TestApp {
    TestApp {
        app: App::build(config).await.expect("building the App"),
        truth: None,
    }
}

impl TestApp {
    /// The same daemon, compared with `truth` by [`TestApp::assert_mirror_matches_truth`].
    pub fn following(self, truth: Truth) -> TestApp {
        TestApp {
            truth: Some(truth),
            ..self
        }
    }

    pub fn engine(&self) -> &Engine {
        self.app.engine()
    }

    pub fn store(&self) -> &Store {
        self.app.engine().store()
    }

    /// `sync --once` of every source; one result per source.
    pub async fn sync_all(&self, sweep: Sweep) -> Vec<OnceResult> {
        self.app
            .sync_once(None, sweep.options(), CancellationToken::new())
            .await
            .expect("sync --once")
    }

    /// `sync --once` of the only source: how its last cycle ended.
    pub async fn sync_once(&self, sweep: Sweep) -> CycleOutcome {
        let mut results = self.sync_all(sweep).await;
        assert_eq!(results.len(), 1, "sync_once is for a single source");
        results.remove(0).outcome
    }

    /// [`TestApp::sync_once`] that must fail: the cycle's error.
    pub async fn sync_once_failed(&self, sweep: Sweep) -> SyncError {
        match self.sync_once(sweep).await {
            CycleOutcome::Failed(error) => error,
            other => panic!("expected a failed cycle, got {other:?}"),
        }
    }

    /// `sync --once` of every source; each must catch up.
    pub async fn sync_caught_up(&self, sweep: Sweep) {
        for r in self.sync_all(sweep).await {
            assert!(
                matches!(r.outcome, CycleOutcome::CaughtUp),
                "{}: {:?}",
                r.source,
                r.outcome
            );
        }
    }

    /// One cycle of the source named `source` (page caps and all), as `run` runs it.
    pub async fn cycle(&self, source: &str, sweep: Sweep) -> CycleOutcome {
        let source = self
            .engine()
            .registry()
            .find(source)
            .unwrap_or_else(|| panic!("no source named {source}"));
        run_cycle(
            &source,
            self.store(),
            sweep.options(),
            &CancellationToken::new(),
        )
        .await
    }

    /// One cycle of `source`, which must catch up.
    pub async fn cycle_caught_up(&self, source: &str, sweep: Sweep) {
        let outcome = self.cycle(source, sweep).await;
        assert!(
            matches!(outcome, CycleOutcome::CaughtUp),
            "{source}: {outcome:?}"
        );
    }

    /// Every mirrored row of `source`, deleted ones included, by conversation id.
    pub async fn mirror(&self, source: &str) -> Mirror {
        read_mirror(self.store(), source).await
    }

    /// The newest run of `source`.
    pub async fn last_run(&self, source: &str) -> LastRun {
        read_last_run(self.store(), source).await
    }

    /// The mirror holds what the truth given to [`TestApp::following`] holds, by each
    /// provider's rules (`support::truth`).
    pub async fn assert_mirror_matches_truth(&self) {
        self.truth().assert_matches(self.store()).await;
    }

    /// Like [`TestApp::assert_mirror_matches_truth`], for the one source named `source`.
    pub async fn assert_source_matches_truth(&self, source: &str) {
        self.truth()
            .of_source(source)
            .assert_matches(self.store())
            .await;
    }

    fn truth(&self) -> &Truth {
        self.truth.as_ref().expect("a TestApp following a truth")
    }
}
