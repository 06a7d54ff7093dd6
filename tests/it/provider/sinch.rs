//! The Sinch adapter against the simulator over real HTTP: initial inventory, the
//! recent-conversations delta and its request cost, resumable walks, expired page tokens,
//! deactivation, deletion and its guard, token refresh and the errors Sinch explains.
//!
//! Every source is configured through a real config file (so `setup` and the secret
//! reference are exercised), and every test ends with the mirror equal to the simulator's
//! truth (or, where a guard is the point, with the mirror deliberately left unchanged).
//! Every test runs on both stores.

use std::time::Duration;

use convsync::sync::{CycleOutcome, WalkCursor};
use convsync_sim::{
    Faults, MessageKind, Platform, RequestAuth, SimHandle, SimOptions, Simulator, SinchAccount,
    TruthConversation,
};

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Truth, TruthSource};
use crate::support::{TestDb, quick_http};

/// The `[[sources]]` entry; its one app's rows are stored as `sinch-app/<app id>`.
const SOURCE: &str = "sinch-app";

/// A simulator with one Sinch project, a mirror database on the test's backend and a
/// config file for it.
struct SinchTest {
    sim: SimHandle,
    db: TestDb,
    /// Holds the config file and the key secret file.
    files: tempfile::TempDir,
    account: SinchAccount,
    /// The source of the project's app, as the mirror names it.
    source: String,
}

impl SinchTest {
    /// `conversations` per account, no background activity, frozen simulated clock.
    async fn start(
        backend: Backend,
        conversations: u32,
        tune: impl FnOnce(&mut SimOptions),
    ) -> SinchTest {
        let mut options = SimOptions {
            conversations,
            activity_rate: 0.0,
            frozen_clock: true,
            ..SimOptions::default()
        };
        tune(&mut options);
        let sim = Simulator::start(options).await.unwrap();
        let account = sim.accounts().sinch[0].clone();
        SinchTest {
            source: format!("{SOURCE}/{}", account.app_id),
            sim,
            db: TestDb::on(backend).await,
            files: tempfile::tempdir().unwrap(),
            account,
        }
    }

    /// Writes a config for the simulator's app (`source_extra` lines go into the
    /// `[[sources]]` table, `sinch_extra` into `[sources.sinch]`) and builds the daemon.
    async fn app_with(&self, app_id: &str, source_extra: &str, sinch_extra: &str) -> TestApp {
        let secret = self.files.path().join("sinch-key-secret");
        std::fs::write(&secret, format!("{}\n", self.account.key_secret)).unwrap();
        let config = format!(
            r#"
[database]
url = "{db}"

[[sources]]
name = "{SOURCE}"
provider = "sinch"
{source_extra}

[sources.sinch]
base_url = "{base}"
token_url = "{token}"
project_id = "{project}"
app_id = "{app_id}"
key_id = "{key_id}"
key_secret = {{ file = "{secret}" }}
{sinch_extra}
"#,
            db = self.db.settings.url,
            base = self.sim.sinch_base_url(),
            token = self.sim.sinch_token_url(),
            project = self.account.project_id,
            key_id = self.account.key_id,
            secret = secret.display(),
        );
        let path = self.files.path().join("convsync.toml");
        std::fs::write(&path, config).unwrap();
        let mut config = self.db.load_config(&path);
        config.http = quick_http();
        let truth = TruthSource::sinch(&self.sim, 0, &self.source);
        spawn_app(&config)
            .await
            .following(Truth::simulator(&self.sim, vec![truth]))
    }

    async fn app(&self) -> TestApp {
        self.app_with(&self.account.app_id, "", "").await
    }

    async fn truth(&self) -> Vec<TruthConversation> {
        self.sim
            .truth(Platform::Sinch, &self.account.account)
            .await
            .unwrap()
    }

    /// Requests the simulator answered on the plain list and on the recent listing.
    fn list_and_recent_requests(&self) -> (u64, u64) {
        let counts = self.sim.request_counts();
        let ending = |suffix: &str| -> u64 {
            counts
                .entries
                .iter()
                .filter(|e| e.provider == Platform::Sinch && e.endpoint.ends_with(suffix))
                .map(|e| e.count)
                .sum()
        };
        (ending("/conversations"), ending("/conversations:recent"))
    }

    fn token_requests(&self) -> u64 {
        self.sim.request_counts().total(Platform::Sinch, "token")
    }

    /// Ids of live conversations in a state, in id order.
    async fn live_ids(&self, active: bool) -> Vec<String> {
        let mut ids: Vec<String> = self
            .truth()
            .await
            .into_iter()
            .filter(|c| !c.deleted && is_active(c) == active)
            .map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }
}

fn is_active(c: &TruthConversation) -> bool {
    c.state == convsync_sim::ConversationState::Active
}

fn pages(rows: usize, per_page: usize) -> u64 {
    rows.div_ceil(per_page).max(1) as u64
}

/// The first cycle walks the recent listing and both halves of the inventory, and mirrors
/// active, inactive and message-less conversations alike.
async fn initial_sync_mirrors_active_and_inactive_conversations(backend: Backend) {
    let t = SinchTest::start(backend, 90, |_| {}).await;
    let app = t.app().await;

    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    app.assert_mirror_matches_truth().await;
    let truth = t.truth().await;
    let active = t.live_ids(true).await.len();
    let inactive = t.live_ids(false).await.len();
    assert!(active > 0 && inactive > 0, "the world has both kinds");
    assert!(
        truth.iter().any(|c| c.last_activity_at.is_none()),
        "the world has message-less conversations"
    );
    let (list, recent) = t.list_and_recent_requests();
    assert_eq!(
        list,
        pages(active, 20) + pages(inactive, 20),
        "active then inactive, 20 per page"
    );
    assert_eq!(
        recent,
        pages(truth.len(), 50),
        "the recent listing, 50 per page"
    );
    assert_eq!(t.token_requests(), 1, "one token for the whole cycle");
    let counts = t.sim.request_counts();
    assert_eq!(
        counts.data_requests_with_auth(Platform::Sinch, RequestAuth::Basic),
        0,
        "never Basic auth on data calls"
    );
    let run = app.last_run(&t.source).await;
    assert_eq!(
        (run.outcome.as_str(), run.inserted as usize),
        ("caught_up", truth.len())
    );
}

/// The first cycle's inventory sweep lists every conversation its recent walk has just
/// written: those rows were seen inside the sweep's window (it opens with the cycle), so
/// the sweep writes nothing to them. A sweep in a later cycle refreshes `last_seen_at` of
/// everything it lists, which is how it tells present rows from absent ones.
async fn a_sweep_does_not_rewrite_rows_its_own_cycle_just_wrote(backend: Backend) {
    let t = SinchTest::start(backend, 60, |_| {}).await;
    let app = t.app().await;
    let seen = || async {
        // Instants as text: SQLite's mirror text, or PostgreSQL's in UTC; either sorts
        // in time order within one test.
        let rows: Vec<(String, String, String)> = app
            .store()
            .sql_rows(&format!(
                "SELECT conversation_id, CAST(first_seen_at AS TEXT), CAST(last_seen_at AS TEXT)
                 FROM conversations WHERE source = '{}'",
                t.source
            ))
            .await;
        rows
    };

    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    let (list, _) = t.list_and_recent_requests();
    assert!(list > 0, "the first cycle ran the inventory sweep");
    let first = seen().await;
    assert_eq!(first.len(), t.truth().await.len());
    let rewritten: Vec<_> = first.iter().filter(|(_, a, b)| a != b).collect();
    assert!(rewritten.is_empty(), "the sweep rewrote {rewritten:?}");

    tokio::time::sleep(Duration::from_millis(5)).await;
    app.cycle_caught_up(&t.source, Sweep::Now).await;
    let second = seen().await;
    let refreshed = second
        .iter()
        .filter(|(id, _, last)| first.iter().any(|(i, _, l)| i == id && last > l))
        .count();
    assert_eq!(
        refreshed,
        first.len(),
        "a later sweep refreshes every row it lists"
    );
    app.assert_mirror_matches_truth().await;
}

/// A delta cycle costs one recent page per 50 changed conversations, lists nothing else and
/// rewrites only the conversations that changed.
async fn delta_cycle_costs_what_the_documented_strategy_says(backend: Backend) {
    let t = SinchTest::start(backend, 90, |_| {}).await;
    let app = t.app().await;
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    // Nothing happened: one request, no writes.
    t.sim.reset_counts();
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    assert_eq!(t.list_and_recent_requests(), (0, 1));
    let run = app.last_run(&t.source).await;
    assert_eq!((run.requests, run.inserted, run.updated), (1, 0, 0));

    // Three conversations get a message: still one request, three rows rewritten.
    t.sim.advance_clock(Duration::from_secs(30));
    let active = t.live_ids(true).await;
    for (id, kind) in active.iter().take(3).zip([
        MessageKind::Inbound,
        MessageKind::Outbound,
        MessageKind::Inbound,
    ]) {
        t.sim
            .add_message(Platform::Sinch, &t.account.account, id, kind)
            .unwrap();
    }
    t.sim.reset_counts();
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    assert_eq!(t.list_and_recent_requests(), (0, 1));
    let run = app.last_run(&t.source).await;
    assert_eq!((run.inserted, run.updated), (0, 3));
    app.assert_mirror_matches_truth().await;

    // Sixty new conversations: two pages of 50, inserted, nothing else rewritten.
    t.sim.advance_clock(Duration::from_secs(30));
    t.sim
        .create_conversations(Platform::Sinch, &t.account.account, 60)
        .unwrap();
    t.sim.reset_counts();
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    assert_eq!(t.list_and_recent_requests(), (0, 2));
    let run = app.last_run(&t.source).await;
    assert_eq!((run.inserted, run.updated), (60, 0));
    app.assert_mirror_matches_truth().await;
}

/// Sixty conversations sharing one message instant span a page boundary of the newest-first
/// walk and are all read: a tie never ends the walk early.
async fn tie_cluster_across_a_page_boundary_is_read_completely(backend: Backend) {
    let t = SinchTest::start(backend, 90, |_| {}).await;
    let app = t.app().await;
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    t.sim.advance_clock(Duration::from_secs(30));
    let tied = t
        .sim
        .tie_cluster(Platform::Sinch, &t.account.account, 60)
        .unwrap();
    assert_eq!(tied.len(), 60);
    t.sim.reset_counts();
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    assert_eq!(t.list_and_recent_requests(), (0, 2));
    let run = app.last_run(&t.source).await;
    assert_eq!(run.inserted + run.updated, 60);
    app.assert_mirror_matches_truth().await;
}

/// A walk cut short by the page cap keeps its page token in the cursor and, after a
/// restart, resumes from it: no page is fetched twice.
async fn interrupted_walk_resumes_from_its_saved_page_token(backend: Backend) {
    let t = SinchTest::start(backend, 150, |_| {}).await;
    let capped = "max_pages_per_cycle = 2";
    let app = t.app_with(&t.account.app_id, capped, "").await;

    assert!(matches!(
        app.cycle(&t.source, Sweep::IfDue).await,
        CycleOutcome::MoreToDo
    ));
    let cursors = WalkCursor::load_all(app.store(), &t.source).await.unwrap();
    let recent = &cursors["recent"];
    assert!(recent.in_progress());
    let token = recent
        .position
        .as_ref()
        .and_then(|p| p["page_token"].as_str())
        .unwrap();
    assert!(!token.is_empty());

    // A new process resumes from the database.
    drop(app);
    let app = t.app_with(&t.account.app_id, capped, "").await;
    let mut cycles = 1;
    loop {
        cycles += 1;
        match app.cycle(&t.source, Sweep::IfDue).await {
            CycleOutcome::MoreToDo => assert!(cycles < 20, "the walk does not end"),
            CycleOutcome::CaughtUp => break,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    // 150 conversations: the first recent walk takes 3 pages (cycles 1 and 2); every later
    // cycle starts with its one-page delta before the sweep continues where it stopped.
    let truth = t.truth().await;
    assert_eq!(truth.len(), 150);
    let (list, recent) = t.list_and_recent_requests();
    let expected_list =
        pages(t.live_ids(true).await.len(), 20) + pages(t.live_ids(false).await.len(), 20);
    assert_eq!(list, expected_list, "no inventory page fetched twice");
    assert_eq!(recent, 3 + (cycles - 2), "no recent page fetched twice");
    app.assert_mirror_matches_truth().await;
}

/// A saved page token the server no longer accepts restarts that walk cleanly.
async fn expired_page_token_restarts_the_walk(backend: Backend) {
    let t = SinchTest::start(backend, 150, |_| {}).await;
    let app = t
        .app_with(&t.account.app_id, "max_pages_per_cycle = 2", "")
        .await;
    assert!(matches!(
        app.cycle(&t.source, Sweep::IfDue).await,
        CycleOutcome::MoreToDo
    ));

    t.sim.set_faults(
        Platform::Sinch,
        Faults {
            page_token_ttl_ms: Some(60_000),
            ..Faults::default()
        },
    );
    t.sim.advance_clock(Duration::from_secs(90));
    let mut notes = String::new();
    for _ in 0..20 {
        let outcome = app.cycle(&t.source, Sweep::IfDue).await;
        notes.push_str(app.last_run(&t.source).await.notes());
        match outcome {
            CycleOutcome::MoreToDo => {}
            CycleOutcome::CaughtUp => break,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(
        notes.contains("recent: page position rejected, walk restarted"),
        "{notes}"
    );
    let counts = t.sim.request_counts();
    assert_eq!(
        counts.with_status(Platform::Sinch, "conversations:recent", Some(400)),
        1
    );
    app.assert_mirror_matches_truth().await;
}

/// A conversation stopped without a new message is invisible to the delta; the sweep
/// finds it in the inactive listing and updates the row instead of deleting it.
async fn deactivated_conversations_are_updated_by_the_sweep(backend: Backend) {
    let t = SinchTest::start(backend, 90, |_| {}).await;
    let app = t.app().await;
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    let stopped: Vec<String> = t.live_ids(true).await.into_iter().take(3).collect();
    for id in &stopped {
        t.sim
            .close(Platform::Sinch, &t.account.account, id)
            .unwrap();
    }
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    let rows = app.mirror(&t.source).await;
    assert!(
        stopped.iter().all(|id| rows[id].active == Some(true)),
        "the delta cannot see a stop"
    );

    app.cycle_caught_up(&t.source, Sweep::Now).await;
    let rows = app.mirror(&t.source).await;
    for id in &stopped {
        assert_eq!(
            (rows[id].active, rows[id].is_closed(), rows[id].is_deleted()),
            (Some(false), true, false),
            "{id}"
        );
    }
    let run = app.last_run(&t.source).await;
    assert_eq!((run.updated, run.deleted), (3, 0));
    app.assert_mirror_matches_truth().await;
}

/// Conversations absent from both listings are marked deleted; a sweep that would delete
/// most of the mirror at once is refused until the guard is raised.
async fn deletions_are_applied_behind_the_mass_deletion_guard(backend: Backend) {
    let t = SinchTest::start(backend, 40, |_| {}).await;
    let app = t.app().await;
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    // A few deletions (one active, one inactive) are applied.
    let gone = [
        t.live_ids(true).await[0].clone(),
        t.live_ids(false).await[0].clone(),
    ];
    for id in &gone {
        t.sim
            .delete(Platform::Sinch, &t.account.account, id)
            .unwrap();
    }
    app.cycle_caught_up(&t.source, Sweep::Now).await;
    assert_eq!(app.last_run(&t.source).await.deleted, 2);
    app.assert_mirror_matches_truth().await;

    // Most of the app vanishing at once looks like an outage: nothing is marked.
    let mut doomed = t.live_ids(true).await;
    doomed.extend(t.live_ids(false).await);
    doomed.truncate(doomed.len() * 3 / 4);
    for id in &doomed {
        t.sim
            .delete(Platform::Sinch, &t.account.account, id)
            .unwrap();
    }
    app.cycle_caught_up(&t.source, Sweep::Now).await;
    let run = app.last_run(&t.source).await;
    assert_eq!(run.deleted, 0);
    assert!(run.notes().contains("REFUSED"));
    let rows = app.mirror(&t.source).await;
    assert!(doomed.iter().all(|id| !rows[id].is_deleted()));

    // The operator confirms by raising the guard.
    drop(app);
    let app = t
        .app_with(&t.account.app_id, "mass_change_max_share = 1.0", "")
        .await;
    app.cycle_caught_up(&t.source, Sweep::Now).await;
    assert_eq!(app.last_run(&t.source).await.deleted as usize, doomed.len());
    app.assert_mirror_matches_truth().await;
}

/// A revoked access token is replaced once on 401 and the cycle carries on; the key
/// secret only ever goes to the token endpoint.
async fn revoked_token_is_refreshed_once(backend: Backend) {
    let t = SinchTest::start(backend, 60, |o| o.sinch_reject_basic_auth = true).await;
    let app = t.app().await;
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    assert_eq!(t.token_requests(), 1);

    t.sim.revoke_tokens(Platform::Sinch);
    t.sim.advance_clock(Duration::from_secs(10));
    let id = t.live_ids(true).await[0].clone();
    t.sim
        .add_message(
            Platform::Sinch,
            &t.account.account,
            &id,
            MessageKind::Inbound,
        )
        .unwrap();
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;

    let counts = t.sim.request_counts();
    assert_eq!(t.token_requests(), 2, "one new token after the 401");
    assert_eq!(
        counts.with_status(Platform::Sinch, "conversations:recent", Some(401)),
        1
    );
    assert_eq!(
        counts.data_requests_with_auth(Platform::Sinch, RequestAuth::Basic),
        0
    );
    app.assert_mirror_matches_truth().await;
}

/// 429 answers without `Retry-After` are retried with backoff and the cycle completes.
async fn rate_limited_requests_back_off_and_complete(backend: Backend) {
    let t = SinchTest::start(backend, 90, |o| o.frozen_clock = false).await;
    let app = t.app().await;
    t.sim.set_faults(
        Platform::Sinch,
        Faults {
            rate_limit: Some(convsync_sim::RateLimitFault {
                max_requests: 3,
                window_ms: 100,
                retry_after: convsync_sim::RetryAfter::None,
            }),
            ..Faults::default()
        },
    );
    app.cycle_caught_up(&t.source, Sweep::IfDue).await;
    let counts = t.sim.request_counts();
    assert!(
        counts.with_status(Platform::Sinch, "conversations", Some(429)) > 0,
        "the quota was hit"
    );
    assert!(
        app.engine().sources()[0]
            .client
            .tally()
            .retries
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    app.assert_mirror_matches_truth().await;
}

/// An app in DISPATCH mode lists nothing: the run says why instead of staying silently empty.
async fn dispatch_mode_app_is_reported(backend: Backend) {
    let t = SinchTest::start(backend, 20, |o| o.sinch_dispatch_app = true).await;
    let dispatch = t.account.dispatch_app_id.clone().unwrap();
    let app = t.app_with(&dispatch, "", "").await;
    let source = format!("{SOURCE}/{dispatch}");

    app.cycle_caught_up(&source, Sweep::IfDue).await;
    let run = app.last_run(&source).await;
    assert_eq!(run.inserted, 0);
    assert!(
        run.notes().contains("DISPATCH") && run.notes().contains(&dispatch),
        "{}",
        run.notes()
    );
    assert!(app.mirror(&source).await.is_empty());
}

/// A 404 (wrong region, project or app) fails the cycle with Sinch's message and the hint.
async fn not_found_is_explained_as_a_region_or_id_mismatch(backend: Backend) {
    let t = SinchTest::start(backend, 20, |_| {}).await;
    let wrong = "01WRONGAPP0000000000000000";
    let app = t.app_with(wrong, "", "").await;
    let source = format!("{SOURCE}/{wrong}");

    let CycleOutcome::Failed(error) = app.cycle(&source, Sweep::IfDue).await else {
        panic!("a 404 must fail the cycle");
    };
    let text = convsync::error_text::error_chain(&error);
    assert!(
        text.contains("NOT_FOUND (404)") && text.contains("region"),
        "{text}"
    );
    assert!(
        !text.contains(&t.account.key_secret),
        "the secret leaked into the error"
    );
    assert!(app.mirror(&source).await.is_empty());
}

on_both_stores!(
    initial_sync_mirrors_active_and_inactive_conversations,
    a_sweep_does_not_rewrite_rows_its_own_cycle_just_wrote,
    delta_cycle_costs_what_the_documented_strategy_says,
    tie_cluster_across_a_page_boundary_is_read_completely,
    interrupted_walk_resumes_from_its_saved_page_token,
    expired_page_token_restarts_the_walk,
    deactivated_conversations_are_updated_by_the_sweep,
    deletions_are_applied_behind_the_mass_deletion_guard,
    revoked_token_is_refreshed_once,
    rate_limited_requests_back_off_and_complete,
    dispatch_mode_app_is_reported,
    not_found_is_explained_as_a_region_or_id_mismatch,
);
