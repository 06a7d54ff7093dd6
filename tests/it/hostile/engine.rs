//! The engine always ends and never hides a dead source (issue #16): a panicking adapter,
//! endless empty listings, endless 429s and sources that all stop on their own.

use std::sync::Arc;
use std::time::Duration;

use convsync::app::AppError;
use convsync::config::Schedule;
use convsync::http::{AuthScheme, HttpResponse, HttpSettings, RequestSpec};
use convsync::provider::{Page, Provider, ProviderError, Walk, WalkContext, WalkSpec};
use convsync::sync::{
    CycleOutcome, EngineError, MAX_IDLE_CYCLES, OnceResult, SyncError, WalkCursor,
};
use convsync::time::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::double::{Conv, Double, DoubleProvider, Fault};
use crate::support::{TestDb, quick_http, schedule, source};

/// Generous bound on any one test's engine call: old code looped forever here.
const NEVER_ENDS: Duration = Duration::from_secs(60);

/// The double's adapter over `double`, except that its walks panic on a page holding a
/// conversation named `PANIC`: a stand-in for a parser meeting bytes it did not expect.
pub(crate) fn panicky(double: &Double, page_size: usize) -> Arc<dyn Provider> {
    let adapter = DoubleProvider::new(double.base_url.clone(), page_size, false);
    Arc::new(adapter.map_walks(|walk| Arc::new(PanickyWalk(walk))))
}

/// A walk of the double that panics on a marked page.
struct PanickyWalk(Arc<dyn Walk>);

impl Walk for PanickyWalk {
    fn spec(&self) -> WalkSpec {
        self.0.spec()
    }

    fn build_request(&self, ctx: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        self.0.build_request(ctx)
    }

    fn parse_page(
        &self,
        ctx: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let page = self.0.parse_page(ctx, response)?;
        if page
            .records
            .iter()
            .any(|r| r.title.as_deref() == Some("PANIC"))
        {
            panic!("marked page reached");
        }
        Ok(page)
    }
}

pub(crate) fn conversations(double: &Double, names: &[&str]) {
    let at = Timestamp::now().saturating_sub(Duration::from_secs(600));
    double.upsert(names.iter().enumerate().map(|(i, name)| Conv {
        id: format!("c{i}"),
        updated_at: at,
        name: (*name).to_owned(),
        hidden: false,
    }));
}

/// Queues `count` answers that carry no conversation yet name a fresh next page each.
fn push_empty_pages(double: &Double, count: u32) {
    double.push_faults((1..=count).map(|i| {
        Fault::Status(
            200,
            format!(r#"{{"items":[],"next_page_token":"fresh-{i}"}}"#),
            vec![],
        )
    }));
}

/// The daemon over `provider` as its one source `double`.
async fn app(
    db: &TestDb,
    provider: Arc<dyn Provider>,
    http: HttpSettings,
    schedule: Schedule,
) -> TestApp {
    let double = source("double", provider, AuthScheme::None, schedule);
    spawn_app(&db.config(http, vec![double])).await
}

/// `sync --once` of the daemon's single source, failing the test if it never ends.
async fn sync_once_to_the_end(app: &TestApp, sweep: Sweep) -> OnceResult {
    let mut results = tokio::time::timeout(NEVER_ENDS, app.sync_all(sweep))
        .await
        .expect("sync --once ended");
    assert_eq!(results.len(), 1, "one verdict per source");
    results.remove(0)
}

async fn runs_still_running(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE outcome = 'running'")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

/// A panic while reading a page fails the cycle: its run row is closed as failed with the
/// panic's message and `sync --once` reports the source as failed (non-zero exit).
#[tokio::test]
async fn a_panicking_parser_fails_the_run_and_sync_once() {
    let double = Double::start().await;
    conversations(&double, &["fine", "PANIC"]);
    let db = TestDb::new();
    let app = app(&db, panicky(&double, 10), quick_http(), schedule()).await;

    let result = sync_once_to_the_end(&app, Sweep::IfDue).await;

    assert!(
        matches!(&result.outcome, CycleOutcome::Failed(SyncError::Panicked { message }) if message == "marked page reached"),
        "{:?}",
        result.outcome
    );
    assert!(!result.succeeded(), "sync --once exits non-zero");
    assert!(
        result
            .verdict()
            .starts_with("FAILED: internal error (panic): marked page reached"),
        "{}",
        result.verdict()
    );
    let run = app.last_run("double").await;
    assert_eq!(run.outcome, "failed");
    assert_eq!(run.inserted, 0, "nothing of the panicked page was applied");
    assert!(run.error.unwrap().contains("marked page reached"));
    assert_eq!(runs_still_running(&app).await, 0);
}

/// In the daemon, a panicked cycle is recorded like a failure, counted, and the source's
/// task lives on to retry it; the daemon does not end while it does.
#[tokio::test]
async fn a_panicking_parser_is_reported_and_retried_by_run() {
    let double = Double::start().await;
    conversations(&double, &["PANIC"]);
    let db = TestDb::new();
    let store = db.open().await;
    let app = app(&db, panicky(&double, 10), quick_http(), schedule()).await;
    let progress = app.engine().sources()[0].progress.clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.app.run_until_stopped(shutdown.clone()));

    let mut polls = 0;
    let state = loop {
        let state = progress.state();
        if state.last_outcome.is_some() {
            break state;
        }
        polls += 1;
        assert!(polls < 600, "the first cycle never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(
        state.last_outcome,
        Some(convsync::store::RunOutcome::Failed)
    );
    assert!(state.last_error.unwrap().contains("marked page reached"));
    assert_eq!(
        progress.panics.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(!state.stopped, "the source is retried, not abandoned");
    assert!(!running.is_finished(), "the daemon keeps running");
    shutdown.cancel();
    tokio::time::timeout(NEVER_ENDS, running)
        .await
        .expect("run ended on shutdown")
        .unwrap()
        .expect("a shutdown is a clean end");
    let last = crate::support::mirror::read_last_run(store.pool(), "double").await;
    assert_eq!(last.outcome, "failed");
}

/// `run` whose every source stopped on its own (here: credentials rejected) ends with an
/// error naming each source and why, so that the process exits non-zero.
#[tokio::test]
async fn run_with_every_source_dead_ends_with_the_reason() {
    let double = Double::start().await;
    conversations(&double, &["a"]);
    double
        .push_faults((0..5).map(|_| Fault::Status(401, r#"{"error":"bad token"}"#.into(), vec![])));
    let db = TestDb::new();
    let provider = DoubleProvider::new(double.base_url.clone(), 10, false);
    let app = app(&db, Arc::new(provider), quick_http(), schedule()).await;

    let run = app.app.run_until_stopped(CancellationToken::new());
    let ended = tokio::time::timeout(NEVER_ENDS, run)
        .await
        .expect("run ended once no source was left");

    let error = ended.expect_err("no source left running is an error");
    let AppError::Engine(EngineError::NoSourceLeft { stopped }) = &error else {
        panic!("{error}");
    };
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].0, "double");
    assert!(stopped[0].1.contains("credentials rejected"), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("no source is left running: double: credentials rejected"),
        "{error}"
    );
}

/// A delta whose listing answers "more" with no items and a fresh token every time is
/// stopped after `max_empty_pages` pages as broken: the cycle ends `stalled` with a note,
/// and the sweep still runs and mirrors every conversation.
#[tokio::test]
async fn an_endless_empty_listing_stalls_its_walk_and_the_sweep_still_runs() {
    let double = Double::start().await;
    conversations(&double, &["a", "b", "c"]);
    let empty_pages = schedule().max_empty_pages;
    // Just enough endless-looking pages for the delta; the sweep then meets the real list.
    push_empty_pages(&double, empty_pages);
    let db = TestDb::new();
    let provider = DoubleProvider::new(double.base_url.clone(), 2, true);
    let app = app(&db, Arc::new(provider), quick_http(), schedule()).await;

    let result = sync_once_to_the_end(&app, Sweep::Now).await;

    let CycleOutcome::Stalled { reason } = &result.outcome else {
        panic!("{:?}", result.outcome);
    };
    assert!(
        reason.starts_with("delta: the provider answered 10 pages in a row"),
        "{reason}"
    );
    assert!(!result.succeeded());
    assert!(result.verdict().starts_with("STALLED: delta:"));
    let requests = double.list_requests();
    assert_eq!(
        requests.len(),
        empty_pages as usize + 2,
        "10 empty delta pages, then the sweep's 2 pages: {requests:?}"
    );
    assert!(
        requests[empty_pages as usize..]
            .iter()
            .all(|r| !r.contains("fresh-"))
    );
    assert_eq!(app.mirror("double").await.len(), 3, "the sweep ran");
    let run = app.last_run("double").await;
    assert_eq!(run.outcome, "stalled");
    assert!(run.notes().contains("stopped as broken"), "{}", run.notes());
    let cursors = WalkCursor::load_all(app.store(), "double").await.unwrap();
    assert!(
        cursors["delta"].position.is_none(),
        "the broken walk starts again from its watermark, not from the endless tokens"
    );
}

/// `sync --once` stops repeating cycles that end "more to do" without reading a row
/// (here: a page cap of one page, and pages that carry nothing).
#[tokio::test]
async fn sync_once_gives_up_on_cycles_that_make_no_progress() {
    let double = Double::start().await;
    conversations(&double, &["a"]);
    push_empty_pages(&double, MAX_IDLE_CYCLES);
    let db = TestDb::new();
    let provider: Arc<dyn Provider> =
        Arc::new(DoubleProvider::new(double.base_url.clone(), 2, false));
    let one_page = Schedule {
        max_pages_per_cycle: 1,
        ..schedule()
    };
    let app = app(&db, provider, quick_http(), one_page).await;

    let result = sync_once_to_the_end(&app, Sweep::IfDue).await;

    assert!(
        matches!(&result.outcome, CycleOutcome::Stalled { reason } if reason.contains("without reading a single row")),
        "{:?}",
        result.outcome
    );
    assert_eq!(result.cycles, MAX_IDLE_CYCLES);
    assert_eq!(double.list_requests().len(), MAX_IDLE_CYCLES as usize);
    assert!(!result.succeeded());
}

/// In one-shot mode a provider answering 429 forever is given up on once the waits add
/// up to `once_max_rate_limit_wait`: the source reports `rate_limited` (non-zero exit).
#[tokio::test]
async fn rate_limited_forever_in_sync_once_gives_up_after_the_bound() {
    let double = Double::start().await;
    conversations(&double, &["a"]);
    double.push_faults((0..20).map(|_| {
        Fault::Status(
            429,
            r#"{"error":"slow down"}"#.into(),
            vec![("retry-after".into(), "1".into())],
        )
    }));
    let db = TestDb::new();
    let provider: Arc<dyn Provider> =
        Arc::new(DoubleProvider::new(double.base_url.clone(), 2, false));
    let two_seconds_of_waiting = Schedule {
        once_max_rate_limit_wait: Duration::from_secs(2),
        ..schedule()
    };
    let no_retries = HttpSettings {
        retry: convsync::http::RetryPolicy {
            max_retries: 0,
            ..quick_http().retry
        },
        ..quick_http()
    };
    let app = app(&db, provider, no_retries, two_seconds_of_waiting).await;

    let result = sync_once_to_the_end(&app, Sweep::IfDue).await;

    assert!(
        matches!(result.outcome, CycleOutcome::RateLimited { .. }),
        "{:?}",
        result.outcome
    );
    assert!(
        !result.succeeded(),
        "a rate-limited one-shot sync exits non-zero"
    );
    assert!(
        result.verdict().starts_with("RATE LIMITED"),
        "{}",
        result.verdict()
    );
    // Waits of 1 s, 1 s (2 s in all, within the bound), then a third 429 gives up.
    assert_eq!(result.cycles, 3);
    assert_eq!(double.list_requests().len(), 3);
    assert_eq!(app.last_run("double").await.outcome, "rate_limited");
    assert!(app.mirror("double").await.is_empty());
}

/// Loads `text` as a configuration file; `SPRUCE_ACCOUNT` in it reads a real token file,
/// so that checks made after the provider's own set-up are reached.
fn validate(text: &str) -> Result<convsync::config::Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "spruce-token").unwrap();
    let account = format!(
        "[sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{}\" }}\n",
        token.display()
    );
    let path = dir.path().join("convsync.toml");
    std::fs::write(&path, text.replace(SPRUCE_ACCOUNT, &account)).unwrap();
    convsync::config::Config::load(&path).map_err(|e| e.to_string())
}

const SPRUCE: &str = "[[sources]]\nname = \"a\"\nprovider = \"spruce\"\n";
const SPRUCE_ACCOUNT: &str = "SPRUCE_ACCOUNT\n";

/// A future guard wider than the lookback would let future-dated records push the
/// watermark past real activity: the configuration is refused, naming both keys.
#[test]
fn max_clock_skew_beyond_lookback_is_refused_naming_both_keys() {
    let err = validate(&format!(
        "{SPRUCE}lookback = \"1m\"\nmax_clock_skew = \"10m\"\n{SPRUCE_ACCOUNT}"
    ))
    .expect_err("skew > lookback is refused");
    assert!(err.contains("sources[a].max_clock_skew"), "{err}");
    assert!(err.contains("sources[a].lookback"), "{err}");
    // Against the provider's default lookback (5 min) too.
    let err = validate(&format!(
        "{SPRUCE}max_clock_skew = \"6m\"\n{SPRUCE_ACCOUNT}"
    ))
    .expect_err("skew > default lookback is refused");
    assert!(err.contains("lookback (5m)"), "{err}");
    // Unset, the guard follows a short lookback instead of refusing it.
    let config = validate(&format!("{SPRUCE}lookback = \"1s\"\n{SPRUCE_ACCOUNT}")).unwrap();
    assert_eq!(
        config.sources[0].schedule.max_clock_skew,
        Duration::from_secs(1)
    );
}

/// The new engine bounds are validated with their key's name; their defaults load.
#[test]
fn engine_bounds_are_validated_by_name() {
    let config = validate(&format!("{SPRUCE}{SPRUCE_ACCOUNT}")).unwrap();
    assert_eq!(config.sources[0].schedule.max_empty_pages, 10);
    assert_eq!(
        config.sources[0].schedule.once_max_rate_limit_wait,
        Duration::from_secs(300)
    );
    let err = validate(&format!("{SPRUCE}max_empty_pages = 0\n{SPRUCE_ACCOUNT}")).unwrap_err();
    assert!(err.contains("sources[a].max_empty_pages"), "{err}");
    let err = validate(&format!(
        "{SPRUCE}once_max_rate_limit_wait = \"2days\"\n{SPRUCE_ACCOUNT}"
    ))
    .unwrap_err();
    assert!(err.contains("sources[a].once_max_rate_limit_wait"), "{err}");
}

/// The real binary: `convsync run` whose only source has its credentials rejected exits
/// non-zero and says which source stopped and why (systemd's `Restart=on-failure` sees it).
#[tokio::test]
async fn the_run_command_exits_non_zero_once_every_source_is_dead() {
    let site = crate::support::deploy::SpruceSite::start(3).await;
    let config = site.write_local_config("127.0.0.1:0");
    std::fs::write(site.token_file(), "a-token-spruce-refuses").unwrap();

    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(crate::support::deploy::PATIENCE, run)
        .await
        .expect("convsync run ended on its own")
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no source is left running: clinic: credentials rejected"),
        "{stderr}"
    );
}
