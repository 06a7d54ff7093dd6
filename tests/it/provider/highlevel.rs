//! The HighLevel adapter against the simulator over real HTTP: two locations synced
//! independently (one with a Private Integration Token, one with OAuth), deltas that ask
//! only for what changed, tie clusters across page boundaries under both comparators, a
//! silently clamped `limit`, sweeps (silent changes, deletions, catch-up on conversations
//! that move mid-sweep), refresh-token rotation across a crash, an exhausted daily quota,
//! 429 and 5xx. Every scenario ends by comparing the mirror with the simulator's truth, and
//! runs on both stores.
//!
//! The simulator's clock is frozen and moved explicitly, so timestamps are exact and the
//! per-location quota windows only renew when a test says so.

use std::sync::Arc;
use std::time::Duration;

use convsync::config::{Schedule, SourceSettings};
use convsync::http::{HttpSettings, RetryPolicy};
use convsync::provider::highlevel::{HighLevelConfig, LocationConfig, setup};
use convsync::provider::{SetupContext, WalkContext};
use convsync::secret::SecretRef;
use convsync::sync::CycleOutcome;
use convsync_sim::options::StartAfter;
use convsync_sim::{
    EditField, Faults, MessageKind, Platform, RateLimitFault, SimHandle, SimOptions,
    TruthConversation,
};

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::mirror::Mirror;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Truth, TruthSource};
use crate::support::world::start_one_provider_tuned;
use crate::support::{TestDb, entry_sources, quick_http, schedule};

const HL: Platform = Platform::HighLevel;
const SEARCH: &str = "GET /conversations/search";
const TOKEN: &str = "POST /oauth/token";
const SOURCE: &str = "hl";

/// How a location of the test bed authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Credential {
    PrivateIntegrationToken,
    OAuth,
}

/// A HighLevel test bed: the simulator (frozen clock, no background activity), a mirror
/// database on the test's backend, and a directory for the secret files the
/// configuration points at.
struct HighLevelBed {
    sim: SimHandle,
    db: TestDb,
    secrets: tempfile::TempDir,
}

impl HighLevelBed {
    async fn start(
        backend: Backend,
        locations: u32,
        conversations: u32,
        tune: impl FnOnce(&mut SimOptions),
    ) -> HighLevelBed {
        let sim = start_one_provider_tuned(HL, locations, 7, conversations, tune).await;
        HighLevelBed {
            sim,
            db: TestDb::on(backend).await,
            secrets: tempfile::tempdir().unwrap(),
        }
    }

    fn location(&self, index: usize) -> String {
        self.sim.accounts().highlevel[index].location_id.clone()
    }

    fn secret_file(&self, name: &str, value: &str) -> SecretRef {
        let file = self.secrets.path().join(name);
        std::fs::write(&file, value).unwrap();
        SecretRef::File { file }
    }

    /// The `[sources.highlevel]` a user would write for these locations.
    fn config(&self, credentials: &[Credential], page_size: u32) -> HighLevelConfig {
        let accounts = &self.sim.accounts().highlevel;
        let locations =
            credentials
                .iter()
                .enumerate()
                .map(|(i, credential)| {
                    let account = &accounts[i];
                    match credential {
                        Credential::PrivateIntegrationToken => LocationConfig {
                            id: account.location_id.clone(),
                            private_integration_token: Some(self.secret_file(
                                &format!("pit-{i}"),
                                &account.private_integration_token,
                            )),
                            refresh_token: None,
                        },
                        Credential::OAuth => LocationConfig {
                            id: account.location_id.clone(),
                            private_integration_token: None,
                            refresh_token: Some(
                                self.secret_file(&format!("refresh-{i}"), &account.refresh_token),
                            ),
                        },
                    }
                })
                .collect();
        HighLevelConfig {
            base_url: Some(self.sim.highlevel_base_url().to_string()),
            page_size,
            location_id: None,
            locations,
            private_integration_token: None,
            refresh_token: None,
            client_id: Some(accounts[0].client_id.clone()),
            client_secret: Some(self.secret_file("client-secret", &accounts[0].client_secret)),
            webhook_public_key: None,
            company_id: None,
            agency_refresh_token: None,
            app_id: None,
            relist_interval: None,
            api_version: None,
        }
    }

    /// One running source per location, named `hl/<locationId>`, through `setup`.
    fn sources(&self, config: &HighLevelConfig, schedule: &Schedule) -> Vec<SourceSettings> {
        let key = format!("sources[{SOURCE}]");
        let setups = setup(config, &SetupContext { key: &key }).expect("valid highlevel config");
        entry_sources(SOURCE, setups, schedule)
    }

    /// The daemon over these locations, each authenticating as `credentials` says.
    async fn app(&self, credentials: &[Credential], page_size: u32) -> TestApp {
        self.app_with(&self.config(credentials, page_size), quick_http())
            .await
    }

    /// The daemon over `config`, following the truth of each location it reads.
    async fn app_with(&self, config: &HighLevelConfig, http: HttpSettings) -> TestApp {
        let sources = self.sources(config, &schedule());
        let accounts = &self.sim.accounts().highlevel;
        let truth = sources
            .iter()
            .map(|source| {
                let index = accounts
                    .iter()
                    .position(|a| source.name == source_name(&a.location_id))
                    .expect("a simulated location");
                TruthSource::highlevel(&self.sim, index, &source.name)
            })
            .collect();
        spawn_app(&self.db.config(http, sources))
            .await
            .following(Truth::simulator(&self.sim, truth))
    }

    async fn truth(&self, location: &str) -> Vec<TruthConversation> {
        self.sim.truth(HL, location).await.unwrap()
    }

    /// Moves the frozen clock so the next change gets its own instant.
    fn tick(&self) {
        self.sim.advance_clock(Duration::from_secs(1));
    }

    fn message(&self, location: &str, id: &str, kind: MessageKind) {
        self.tick();
        self.sim.add_message(HL, location, id, kind).unwrap();
    }

    fn searches(&self) -> u64 {
        self.sim.request_counts().total(HL, SEARCH)
    }

    fn with_status(&self, endpoint: &str, status: u16) -> u64 {
        self.sim
            .request_counts()
            .with_status(HL, endpoint, Some(status))
    }

    /// Live conversations of a location, newest activity first.
    async fn newest_first(&self, location: &str) -> Vec<String> {
        let mut live: Vec<_> = self
            .truth(location)
            .await
            .into_iter()
            .filter(|t| !t.deleted)
            .collect();
        live.sort_by_key(|t| std::cmp::Reverse(t.last_activity_at));
        live.into_iter().map(|t| t.id).collect()
    }
}

fn source_name(location: &str) -> String {
    format!("{SOURCE}/{location}")
}

/// Two locations of one `[[sources]]` entry — one with a Private Integration Token, one
/// with OAuth — become two sources, each with its own cursor, budget and rows.
async fn two_locations_sync_independently(backend: Backend) {
    let bed = HighLevelBed::start(backend, 2, 45, |_| {}).await;
    let (a, b) = (bed.location(0), bed.location(1));
    let app = bed
        .app(
            &[Credential::PrivateIntegrationToken, Credential::OAuth],
            10,
        )
        .await;
    let names: Vec<_> = app
        .engine()
        .sources()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, vec![source_name(&a), source_name(&b)]);

    app.sync_caught_up(Sweep::IfDue).await;

    app.assert_mirror_matches_truth().await;
    assert_eq!(
        bed.with_status(TOKEN, 200),
        1,
        "only the OAuth location refreshed"
    );
    assert_eq!(bed.with_status(SEARCH, 200), bed.searches(), "no refusals");
    let cursors: Vec<(String, String)> = app
        .store()
        .sql_rows("SELECT source, walk FROM cursors ORDER BY source, walk")
        .await;
    for location in [&a, &b] {
        assert!(
            cursors.contains(&(source_name(location), "delta".into())),
            "{cursors:?}"
        );
    }

    // A change in one location touches only that location's rows.
    let id = bed.newest_first(&b).await[5].clone();
    bed.message(&b, &id, MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(app.last_run(&source_name(&a)).await.updated, 0);
    assert_eq!(app.last_run(&source_name(&b)).await.updated, 1);
    app.assert_mirror_matches_truth().await;
}

/// After the first sync a delta reads one page from the top and stops below its lower
/// bound: a quiet cycle costs one request, and only the changed rows are written.
async fn deltas_request_only_the_changed_rows(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 80, |_| {}).await;
    let a = bed.location(0);
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert!(bed.searches() >= 8, "the first sync lists everything");

    bed.sim.reset_counts();
    bed.tick();
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(bed.searches(), 1, "a quiet cycle is one page");
    let run = app.last_run(&source_name(&a)).await;
    assert_eq!((run.inserted, run.updated), (0, 0));

    let ids = bed.newest_first(&a).await;
    bed.message(&a, &ids[40], MessageKind::Inbound);
    bed.message(&a, &ids[60], MessageKind::Outbound);
    bed.message(&a, &ids[79], MessageKind::Inbound);
    let created = bed.sim.create_conversations(HL, &a, 2).unwrap();
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(bed.searches(), 1, "five changes fit in the first page");
    let run = app.last_run(&source_name(&a)).await;
    assert_eq!((run.requests, run.inserted, run.updated), (1, 2, 3));
    assert_eq!(created.len(), 2);
    app.assert_mirror_matches_truth().await;
}

/// Conversations sharing one `lastMessageDate` across page boundaries are all mirrored,
/// whether the server compares `startAfterDate` strictly (as the live API reportedly does)
/// or inclusively.
async fn tie_clusters_across_page_boundaries_are_not_skipped(backend: Backend) {
    for comparator in [StartAfter::Strict, StartAfter::Inclusive] {
        let bed = HighLevelBed::start(backend, 1, 130, |o| {
            o.tie_cluster_size = 6;
            o.highlevel_start_after = comparator;
        })
        .await;
        let a = bed.location(0);
        let truth = bed.truth(&a).await;
        let mut dates: Vec<_> = truth.iter().filter_map(|t| t.last_activity_at).collect();
        dates.sort();
        assert!(
            dates.windows(6).any(|w| w[0] == w[5]),
            "the world has tie clusters"
        );
        let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;

        app.sync_caught_up(Sweep::IfDue).await;
        app.assert_mirror_matches_truth().await;

        // A fresh cluster straddling the first page boundary of the next delta: seven
        // newer single messages push it across.
        let tied = bed.sim.tie_cluster(HL, &a, 6).unwrap();
        let others: Vec<_> = bed
            .newest_first(&a)
            .await
            .into_iter()
            .filter(|id| !tied.contains(id))
            .collect();
        for id in others.iter().skip(20).take(7) {
            bed.message(&a, id, MessageKind::Outbound);
        }
        app.sync_caught_up(Sweep::IfDue).await;
        let unchanged = app.last_run(&source_name(&a)).await.unchanged;
        assert!(
            unchanged >= 3,
            "boundary rows were read again ({unchanged})"
        );
        app.assert_mirror_matches_truth().await;

        // The full sweep pages through the original clusters as well.
        app.sync_caught_up(Sweep::Now).await;
        assert_eq!(
            app.last_run(&source_name(&a)).await.deleted,
            0,
            "nothing was wrongly deleted"
        );
        app.assert_mirror_matches_truth().await;
        bed.sim.shutdown().await;
    }
}

/// A server that silently clamps `limit` below `page_size` does not end the walk early.
async fn a_silently_clamped_limit_still_lists_everything(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 50, |o| o.highlevel_max_limit = 7).await;
    let a = bed.location(0);
    let app = bed.app(&[Credential::PrivateIntegrationToken], 20).await;

    app.sync_caught_up(Sweep::IfDue).await;
    assert!(bed.searches() >= 8, "pages of 7, not one short page of 20");
    app.assert_mirror_matches_truth().await;

    app.sync_caught_up(Sweep::Now).await;
    assert_eq!(app.last_run(&source_name(&a)).await.deleted, 0);
    app.assert_mirror_matches_truth().await;
}

/// Read/unread, starring, reassignment and contact-name edits do not move
/// `lastMessageDate`: the deltas miss them and the sweep refreshes them; conversations
/// HighLevel no longer lists are marked deleted.
async fn sweep_refreshes_silent_changes_and_marks_deletions(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 40, |_| {}).await;
    let a = bed.location(0);
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let ids = bed.newest_first(&a).await;

    bed.tick();
    bed.sim.edit(HL, &a, &ids[3], EditField::Unread).unwrap();
    bed.sim.edit(HL, &a, &ids[12], EditField::Starred).unwrap();
    bed.sim.edit(HL, &a, &ids[20], EditField::Assignee).unwrap();
    bed.sim.edit(HL, &a, &ids[30], EditField::Title).unwrap();
    bed.sim.delete(HL, &a, &ids[33]).unwrap();
    bed.sim.delete(HL, &a, &ids[34]).unwrap();

    app.sync_caught_up(Sweep::IfDue).await;
    let stale = app.mirror(&source_name(&a)).await;
    assert!(
        !stale[&ids[33]].is_deleted(),
        "the delta cannot see deletions"
    );

    app.sync_caught_up(Sweep::Now).await;

    assert_eq!(app.last_run(&source_name(&a)).await.deleted, 2);
    let raw = app.mirror(&source_name(&a)).await[&ids[12]].raw.clone();
    let starred = bed
        .truth(&a)
        .await
        .into_iter()
        .find(|t| t.id == ids[12])
        .unwrap()
        .starred;
    // Parsed: PostgreSQL's jsonb spaces the JSON its own way.
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        raw["starred"],
        serde_json::Value::Bool(starred),
        "the raw JSON is refreshed: {raw}"
    );
    app.assert_mirror_matches_truth().await;
}

/// A conversation that receives a message while a sweep pages past it jumps above the
/// sweep's position; the sweep's catch-up phase still lists it, so it is not taken for
/// deleted. Driven page by page over HTTP to place the message exactly mid-sweep.
async fn a_conversation_moving_mid_sweep_is_still_seen(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 30, |_| {}).await;
    let a = bed.location(0);
    let setups = setup(
        &bed.config(&[Credential::PrivateIntegrationToken], 10),
        &SetupContext { key: "sources[hl]" },
    )
    .unwrap();
    let provider = Arc::clone(&setups[0].provider);
    let token = bed.sim.accounts().highlevel[0]
        .private_integration_token
        .clone();
    let sweep = provider
        .walks()
        .iter()
        .find(|w| w.spec().name == "sweep")
        .unwrap();
    let client = reqwest::Client::new();
    let oldest = bed.newest_first(&a).await.last().unwrap().clone();

    let mut seen = std::collections::HashSet::new();
    let mut position: Option<serde_json::Value> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages < 20, "the sweep never ended");
        if pages == 2 {
            // The sweep has passed the top; the oldest conversation gets a message.
            bed.message(&a, &oldest, MessageKind::Inbound);
        }
        let ctx = WalkContext {
            since: None,
            position: position.as_ref(),
        };
        let spec = sweep.build_request(&ctx).unwrap();
        let mut request = client.get(spec.url.clone()).bearer_auth(&token);
        for (name, value) in &spec.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let response = convsync::http::HttpResponse {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap(),
        };
        let page = sweep.parse_page(&ctx, &response).unwrap();
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => position = Some(next),
            None => break,
        }
    }

    let live: std::collections::HashSet<_> = bed.newest_first(&a).await.into_iter().collect();
    assert_eq!(seen, live, "the sweep saw every live conversation");
}

/// OAuth: the rotated refresh token is stored before it is used, so a crash right after a
/// refresh (the searches never succeed) does not lock the daemon out — a restart with the
/// config's spent initial token still authenticates; a 401 later refreshes once.
async fn refresh_token_rotation_survives_a_crash_between_refresh_and_use(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 25, |_| {}).await;
    let a = bed.location(0);
    let config = bed.config(&[Credential::OAuth], 10);
    let initial = bed.sim.accounts().highlevel[0].refresh_token.clone();

    // First run: the refresh succeeds, then every search fails until the process "dies".
    bed.sim.set_faults(
        HL,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    {
        let app = bed.app_with(&config, quick_http()).await;
        let outcome = app.sync_once(Sweep::IfDue).await;
        assert!(matches!(outcome, CycleOutcome::Failed(_)), "{outcome:?}");
        app.app.close().await;
    }
    assert_eq!(bed.with_status(TOKEN, 200), 1);
    assert_eq!(
        bed.with_status(SEARCH, 200),
        0,
        "the new access token was never used successfully"
    );
    let spent = reqwest::Client::new()
        .post(bed.sim.highlevel_token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "client_id",
                bed.sim.accounts().highlevel[0].client_id.as_str(),
            ),
            (
                "client_secret",
                bed.sim.accounts().highlevel[0].client_secret.as_str(),
            ),
            ("refresh_token", initial.as_str()),
            ("user_type", "Location"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 401, "the config's refresh token is spent");
    assert_eq!(
        bed.sim.request_counts().total_refresh_token_reuses(),
        1,
        "the simulator counts a spent refresh token presented again"
    );

    // Restart with the same config: the stored token authenticates.
    bed.sim.set_faults(HL, Faults::default());
    let app = bed.app_with(&config, quick_http()).await;
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;

    // Access tokens revoked: one 401, one refresh with the newest stored token, success.
    bed.sim.revoke_tokens(HL);
    bed.message(&a, &bed.newest_first(&a).await[3], MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(bed.with_status(SEARCH, 401), 1);
    assert_eq!(bed.with_status(TOKEN, 200), 3);
    let stored: Vec<String> = app
        .store()
        .sql_column("SELECT token FROM refresh_tokens")
        .await;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], initial);
    assert_eq!(
        bed.sim.request_counts().total_refresh_token_reuses(),
        1,
        "the daemon never presents a spent refresh token"
    );
    let runs: Vec<Option<String>> = app.store().sql_column("SELECT error FROM sync_runs").await;
    assert!(
        runs.iter()
            .flatten()
            .all(|e| !e.contains(&stored[0]) && !e.contains(&initial))
    );
    app.assert_mirror_matches_truth().await;
}

/// A location whose daily quota runs out pauses until the day resets — reported as
/// rate-limited, with no request refused — while the other location syncs fully; after
/// the reset it resumes from its checkpoint.
async fn exhausted_daily_quota_pauses_only_that_location(backend: Backend) {
    let bed = HighLevelBed::start(backend, 2, 30, |o| o.highlevel_daily_limit = 6).await;
    let (a, b) = (bed.location(0), bed.location(1));
    let config = bed.config(
        &[
            Credential::PrivateIntegrationToken,
            Credential::PrivateIntegrationToken,
        ],
        10,
    );

    // Another integration of the same app spends four of location A's six daily requests.
    let client = reqwest::Client::new();
    let pit = bed.sim.accounts().highlevel[0]
        .private_integration_token
        .clone();
    for _ in 0..4 {
        let mut url = bed
            .sim
            .highlevel_base_url()
            .join("conversations/search")
            .unwrap();
        url.query_pairs_mut().append_pair("locationId", &a);
        let r = client
            .get(url)
            .bearer_auth(&pit)
            .header("Version", "2021-04-15")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    let app = bed.app_with(&config, quick_http()).await;
    assert!(matches!(
        app.cycle(&source_name(&b), Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    match app.cycle(&source_name(&a), Sweep::IfDue).await {
        CycleOutcome::RateLimited { wait } => assert!(wait >= Duration::from_secs(60), "{wait:?}"),
        other => panic!("expected a daily-quota pause, got {other:?}"),
    }
    app.assert_source_matches_truth(&source_name(&b)).await;
    assert_eq!(
        bed.with_status(SEARCH, 429),
        0,
        "pacing stopped before HighLevel had to refuse"
    );
    app.app.close().await;

    // The next day (a fresh process stands for the pause having elapsed).
    bed.sim.advance_clock(Duration::from_secs(24 * 3600));
    let app = bed.app_with(&config, quick_http()).await;
    assert!(matches!(
        app.cycle(&source_name(&a), Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    app.assert_mirror_matches_truth().await;
}

/// 429 answers (no `Retry-After`, as HighLevel documents none) are retried with backoff;
/// when they persist the cycle ends rate-limited, and the walk resumes from its checkpoint.
async fn rate_limited_answers_are_retried_and_resumed(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 60, |_| {}).await;
    let a = bed.location(0);
    bed.sim.set_faults(
        HL,
        Faults {
            rate_limit: Some(RateLimitFault {
                max_requests: 3,
                window_ms: 1000,
                retry_after: Default::default(),
            }),
            ..Faults::default()
        },
    );
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;

    let mut cycles = 0;
    loop {
        cycles += 1;
        assert!(cycles < 20, "the sync never caught up");
        match app.cycle(&source_name(&a), Sweep::IfDue).await {
            CycleOutcome::CaughtUp => break,
            // The fault's window is on the frozen simulated clock: open the next one.
            CycleOutcome::RateLimited { .. } => bed.sim.advance_clock(Duration::from_secs(1)),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(cycles >= 2, "the quota ran out at least once");
    assert!(bed.with_status(SEARCH, 429) > 0);
    app.assert_mirror_matches_truth().await;
}

/// 5xx answers are retried; the sync completes and the mirror is whole.
async fn server_errors_are_retried(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 60, |_| {}).await;
    bed.sim.set_faults(
        HL,
        Faults {
            error_5xx_ratio: 0.3,
            ..Faults::default()
        },
    );
    let patient = HttpSettings {
        retry: RetryPolicy {
            max_retries: 10,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        },
        ..quick_http()
    };
    let app = bed
        .app_with(
            &bed.config(&[Credential::PrivateIntegrationToken], 10),
            patient,
        )
        .await;

    app.sync_caught_up(Sweep::IfDue).await;
    app.sync_caught_up(Sweep::Now).await;

    let failures = bed.with_status(SEARCH, 500) + bed.with_status(SEARCH, 503);
    assert!(failures > 0, "the fault fired");
    app.assert_mirror_matches_truth().await;
}

/// A token HighLevel refuses stops only its source, with an explanation naming the
/// location and without the token, while the other location keeps syncing.
async fn a_refused_token_stops_only_its_location(backend: Backend) {
    let bed = HighLevelBed::start(backend, 2, 20, |_| {}).await;
    let (a, b) = (bed.location(0), bed.location(1));
    let mut config = bed.config(
        &[
            Credential::PrivateIntegrationToken,
            Credential::PrivateIntegrationToken,
        ],
        10,
    );
    config.locations[1].private_integration_token =
        Some(bed.secret_file("wrong-pit", "pit-not-a-real-token"));
    let app = bed.app_with(&config, quick_http()).await;

    assert!(matches!(
        app.cycle(&source_name(&a), Sweep::IfDue).await,
        CycleOutcome::CaughtUp
    ));
    match app.cycle(&source_name(&b), Sweep::IfDue).await {
        CycleOutcome::Failed(e) => {
            assert!(e.is_fatal(), "{e}");
            let message = convsync::error_text::error_chain(&e);
            assert!(
                message.contains("Invalid token") && message.contains(&b),
                "{message}"
            );
            assert!(!message.contains("pit-not-a-real-token"), "{message}");
        }
        other => panic!("expected a fatal failure, got {other:?}"),
    }
    assert_eq!(
        bed.with_status(SEARCH, 401),
        1,
        "a static token is not retried"
    );
    app.assert_source_matches_truth(&source_name(&a)).await;
}

/// `Version` is the spec's `2021-04-15` unless the source configures another value, such
/// as the `2021-07-28` that clients in the field send: that one is sent on every request,
/// and the sync completes.
async fn the_version_header_is_configurable_per_source(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 30, |_| {}).await;
    let seen = |version: &str| {
        bed.sim
            .request_counts()
            .seen(HL, &format!("Version: {version}"))
    };
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(seen("2021-04-15"), bed.searches());
    app.assert_mirror_matches_truth().await;

    drop(app);
    bed.sim.reset_counts();
    let mut config = bed.config(&[Credential::PrivateIntegrationToken], 10);
    config.api_version = Some("2021-07-28".into());
    let app = bed.app_with(&config, quick_http()).await;
    app.sync_caught_up(Sweep::Now).await;
    assert!(bed.searches() > 0);
    assert_eq!(
        (seen("2021-07-28"), seen("2021-04-15")),
        (bed.searches(), 0)
    );
    app.assert_mirror_matches_truth().await;
}

/// Results whose `lastMessageDate` is missing are still paged through by their `sort`
/// values: the delta and the sweep list every conversation, and the sweep deletes none.
async fn pages_follow_the_sort_array(backend: Backend) {
    let bed =
        HighLevelBed::start(backend, 1, 60, |o| o.highlevel_no_last_message_date = true).await;
    let a = bed.location(0);
    let live: std::collections::BTreeSet<String> = bed
        .truth(&a)
        .await
        .into_iter()
        .filter(|t| !t.deleted)
        .map(|t| t.id)
        .collect();
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;

    app.sync_caught_up(Sweep::IfDue).await;
    let mirrored = |rows: Mirror| {
        rows.into_iter()
            .filter(|(_, r)| !r.is_deleted())
            .map(|(id, _)| id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(mirrored(app.mirror(&source_name(&a)).await), live);
    assert!(bed.searches() >= 6, "pages of 10, not one page");

    app.sync_caught_up(Sweep::Now).await;
    assert_eq!(
        app.last_run(&source_name(&a)).await.deleted,
        0,
        "nothing deleted"
    );
    assert_eq!(mirrored(app.mirror(&source_name(&a)).await), live);
}

/// Without `sort` arrays (older recordings of the API), the walk pages by
/// `lastMessageDate` and still keeps tie clusters across page boundaries.
async fn pages_fall_back_to_last_message_date_without_sort(backend: Backend) {
    let bed = HighLevelBed::start(backend, 1, 130, |o| {
        o.tie_cluster_size = 6;
        o.highlevel_no_sort_array = true;
    })
    .await;
    let a = bed.location(0);
    let app = bed.app(&[Credential::PrivateIntegrationToken], 10).await;
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    app.sync_caught_up(Sweep::Now).await;
    assert_eq!(
        app.last_run(&source_name(&a)).await.deleted,
        0,
        "nothing deleted"
    );
    app.assert_mirror_matches_truth().await;
}

on_both_stores!(
    two_locations_sync_independently,
    deltas_request_only_the_changed_rows,
    tie_clusters_across_page_boundaries_are_not_skipped,
    a_silently_clamped_limit_still_lists_everything,
    sweep_refreshes_silent_changes_and_marks_deletions,
    a_conversation_moving_mid_sweep_is_still_seen,
    refresh_token_rotation_survives_a_crash_between_refresh_and_use,
    exhausted_daily_quota_pauses_only_that_location,
    rate_limited_answers_are_retried_and_resumed,
    server_errors_are_retried,
    a_refused_token_stops_only_its_location,
    the_version_header_is_configurable_per_source,
    pages_follow_the_sort_array,
    pages_fall_back_to_last_message_date_without_sort,
);
