//! The HighLevel adapter against the simulator over real HTTP: two locations synced
//! independently (one with a Private Integration Token, one with OAuth), deltas that ask
//! only for what changed, tie clusters across page boundaries under both comparators, a
//! silently clamped `limit`, sweeps (silent changes, deletions, catch-up on conversations
//! that move mid-sweep), refresh-token rotation across a crash, an exhausted daily quota,
//! 429 and 5xx. Every scenario ends by comparing the mirror with the simulator's truth.
//!
//! The simulator's clock is frozen and moved explicitly, so timestamps are exact and the
//! per-location quota windows only renew when a test says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use convsync::config::{Schedule, SourceSettings};
use convsync::http::{HttpSettings, RetryPolicy};
use convsync::provider::highlevel::{HighLevelConfig, LocationConfig, setup};
use convsync::provider::{SetupContext, WalkContext};
use convsync::secret::SecretRef;
use convsync::store::{MassChangeGuard, Store};
use convsync::sync::{CycleOptions, CycleOutcome, Engine, run_cycle};
use convsync::time::Timestamp;
use convsync_sim::options::StartAfter;
use convsync_sim::{
    EditField, Faults, MessageKind, Platform, RateLimitFault, SimHandle, SimOptions, Simulator,
    TruthConversation,
};
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::{TestDb, quick_http, schedule, sync_all};

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
/// file, and a directory for the secret files the configuration points at.
struct HighLevelBed {
    sim: SimHandle,
    db: TestDb,
    secrets: tempfile::TempDir,
}

impl HighLevelBed {
    async fn start(
        locations: u32,
        conversations: u32,
        tune: impl FnOnce(&mut SimOptions),
    ) -> HighLevelBed {
        let mut options = SimOptions {
            seed: 7,
            conversations,
            frozen_clock: true,
            activity_rate: 0.0,
            highlevel_locations: locations,
            d365_accounts: 0,
            spruce_accounts: 0,
            sinch_accounts: 0,
            ..SimOptions::default()
        };
        tune(&mut options);
        let sim = Simulator::start(options).await.expect("simulator starts");
        HighLevelBed {
            sim,
            db: TestDb::new(),
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
            api_version: None,
        }
    }

    /// One running source per location, named `hl/<locationId>`, through `setup`.
    fn sources(&self, config: &HighLevelConfig, schedule: &Schedule) -> Vec<SourceSettings> {
        let key = format!("sources[{SOURCE}]");
        setup(config, &SetupContext { key: &key })
            .expect("valid highlevel config")
            .into_iter()
            .map(|setup| SourceSettings {
                name: format!("{SOURCE}/{}", setup.name_suffix.clone().unwrap_or_default()),
                quota: setup.defaults.quota,
                setup,
                schedule: schedule.clone(),
                guard: MassChangeGuard {
                    max_share: 0.5,
                    floor: 2,
                },
            })
            .collect()
    }

    async fn engine(&self, credentials: &[Credential], page_size: u32) -> Engine {
        self.engine_with(
            &self.config(credentials, page_size),
            &schedule(),
            &quick_http(),
        )
        .await
    }

    async fn engine_with(
        &self,
        config: &HighLevelConfig,
        schedule: &Schedule,
        http: &HttpSettings,
    ) -> Engine {
        Engine::new(self.db.open().await, http, &self.sources(config, schedule)).unwrap()
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

/// `sync --once` over every source; each must catch up.
async fn sync_all_caught_up(engine: &Engine, force_sweep: bool) {
    let results = sync_all(engine, force_sweep).await;
    for r in &results {
        assert!(
            matches!(r.outcome, CycleOutcome::CaughtUp),
            "{}: {:?}",
            r.source,
            r.outcome
        );
    }
}

/// One cycle of the source reading `location`.
async fn cycle(engine: &Engine, location: &str) -> CycleOutcome {
    let name = source_name(location);
    let source = engine
        .sources()
        .iter()
        .find(|s| s.name == name)
        .expect("source exists");
    run_cycle(
        source,
        engine.store(),
        CycleOptions::default(),
        &CancellationToken::new(),
    )
    .await
}

/// One mirror row, as the comparison needs it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    account: String,
    created_at: Option<String>,
    last_activity_at: Option<String>,
    active: Option<bool>,
    status: Option<String>,
    channel: Option<String>,
    contact_id: Option<String>,
    contact_name: Option<String>,
    title: Option<String>,
    assignee: Option<String>,
    unread_count: Option<i64>,
    direction: Option<String>,
    deleted: bool,
}

type RowTuple = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    bool,
);

async fn mirror(store: &Store, location: &str) -> BTreeMap<String, Row> {
    let rows: Vec<RowTuple> = sqlx::query_as(
        "SELECT conversation_id, account, created_at, last_activity_at, active, status, channel,
                contact_id, contact_name, title, assignee, unread_count, last_message_direction,
                deleted_at IS NOT NULL
         FROM conversations WHERE source = ? AND provider = 'highlevel'",
    )
    .bind(source_name(location))
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| {
            (
                r.0,
                Row {
                    account: r.1,
                    created_at: r.2,
                    last_activity_at: r.3,
                    active: r.4,
                    status: r.5,
                    channel: r.6,
                    contact_id: r.7,
                    contact_name: r.8,
                    title: r.9,
                    assignee: r.10,
                    unread_count: r.11,
                    direction: r.12,
                    deleted: r.13,
                },
            )
        })
        .collect()
}

fn text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| Timestamp::from(t).to_mirror_text())
}

/// What the mirror must hold for a conversation the simulator knows.
fn expected(location: &str, truth: &TruthConversation) -> Row {
    Row {
        account: location.to_owned(),
        created_at: text(Some(truth.created_at)),
        last_activity_at: text(truth.last_activity_at),
        active: Some(true),
        status: Some(
            if truth.unread_count > 0 {
                "unread"
            } else {
                "read"
            }
            .to_owned(),
        ),
        channel: Some(truth.channel.clone()),
        contact_id: Some(truth.contact_id.clone()),
        contact_name: Some(truth.contact_name.clone()),
        title: None,
        assignee: truth.assignee.clone(),
        unread_count: Some(i64::from(truth.unread_count)),
        direction: match truth.last_message_direction {
            Some(convsync_sim::MessageDirection::Inbound) => Some("inbound".into()),
            Some(convsync_sim::MessageDirection::Outbound) => Some("outbound".into()),
            // An internal comment carries no direction: the mirror keeps the last one known.
            Some(convsync_sim::MessageDirection::Internal) | None => None,
        },
        deleted: truth.deleted,
    }
}

/// Asserts the mirror of `location` holds exactly the simulator's live conversations,
/// field by field, and marks the deleted ones it had seen.
async fn assert_mirror_matches_truth(bed: &HighLevelBed, store: &Store, location: &str) {
    let truth = bed.truth(location).await;
    let mirror = mirror(store, location).await;
    let mut problems = Vec::new();
    for t in &truth {
        let mut want = expected(location, t);
        match mirror.get(&t.id) {
            None if t.deleted => {}
            None => problems.push(format!("{}: missing from the mirror", t.id)),
            Some(got) => {
                if t.deleted {
                    if !got.deleted {
                        problems.push(format!(
                            "{}: deleted at HighLevel but live in the mirror",
                            t.id
                        ));
                    }
                    continue;
                }
                if t.last_message_direction == Some(convsync_sim::MessageDirection::Internal) {
                    want.direction = got.direction.clone();
                }
                if *got != want {
                    problems.push(format!("{}:\n  mirror {got:?}\n  truth  {want:?}", t.id));
                }
            }
        }
    }
    let known: std::collections::HashSet<&str> = truth.iter().map(|t| t.id.as_str()).collect();
    for id in mirror.keys().filter(|id| !known.contains(id.as_str())) {
        problems.push(format!("{id}: in the mirror but unknown to HighLevel"));
    }
    assert!(!truth.is_empty(), "the location has conversations");
    assert!(
        problems.is_empty(),
        "{location}: {} difference(s) between mirror and truth:\n{}",
        problems.len(),
        problems
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The newest sync run's counters: (requests, inserted, updated, unchanged, deleted, notes).
async fn last_run(store: &Store, location: &str) -> (i64, i64, i64, i64, i64, Option<String>) {
    sqlx::query_as(
        "SELECT requests, rows_inserted, rows_updated, rows_unchanged, rows_deleted, notes
         FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(source_name(location))
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Two locations of one `[[sources]]` entry — one with a Private Integration Token, one
/// with OAuth — become two sources, each with its own cursor, budget and rows.
#[tokio::test]
async fn two_locations_sync_independently() {
    let bed = HighLevelBed::start(2, 45, |_| {}).await;
    let (a, b) = (bed.location(0), bed.location(1));
    let engine = bed
        .engine(
            &[Credential::PrivateIntegrationToken, Credential::OAuth],
            10,
        )
        .await;
    let names: Vec<_> = engine.sources().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, vec![source_name(&a), source_name(&b)]);

    sync_all_caught_up(&engine, false).await;

    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
    assert_mirror_matches_truth(&bed, engine.store(), &b).await;
    assert_eq!(
        bed.with_status(TOKEN, 200),
        1,
        "only the OAuth location refreshed"
    );
    assert_eq!(bed.with_status(SEARCH, 200), bed.searches(), "no refusals");
    let cursors: Vec<(String, String)> =
        sqlx::query_as("SELECT source, walk FROM cursors ORDER BY source, walk")
            .fetch_all(engine.store().pool())
            .await
            .unwrap();
    for location in [&a, &b] {
        assert!(
            cursors.contains(&(source_name(location), "delta".into())),
            "{cursors:?}"
        );
    }

    // A change in one location touches only that location's rows.
    let id = bed.newest_first(&b).await[5].clone();
    bed.message(&b, &id, MessageKind::Inbound);
    sync_all_caught_up(&engine, false).await;
    assert_eq!(last_run(engine.store(), &a).await.2, 0);
    assert_eq!(last_run(engine.store(), &b).await.2, 1);
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
    assert_mirror_matches_truth(&bed, engine.store(), &b).await;
}

/// After the first sync a delta reads one page from the top and stops below its lower
/// bound: a quiet cycle costs one request, and only the changed rows are written.
#[tokio::test]
async fn deltas_request_only_the_changed_rows() {
    let bed = HighLevelBed::start(1, 80, |_| {}).await;
    let a = bed.location(0);
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;
    sync_all_caught_up(&engine, false).await;
    assert!(bed.searches() >= 8, "the first sync lists everything");

    bed.sim.reset_counts();
    bed.tick();
    sync_all_caught_up(&engine, false).await;
    assert_eq!(bed.searches(), 1, "a quiet cycle is one page");
    let (_, inserted, updated, ..) = last_run(engine.store(), &a).await;
    assert_eq!((inserted, updated), (0, 0));

    let ids = bed.newest_first(&a).await;
    bed.message(&a, &ids[40], MessageKind::Inbound);
    bed.message(&a, &ids[60], MessageKind::Outbound);
    bed.message(&a, &ids[79], MessageKind::Inbound);
    let created = bed.sim.create_conversations(HL, &a, 2).unwrap();
    bed.sim.reset_counts();
    sync_all_caught_up(&engine, false).await;

    assert_eq!(bed.searches(), 1, "five changes fit in the first page");
    let (requests, inserted, updated, ..) = last_run(engine.store(), &a).await;
    assert_eq!((requests, inserted, updated), (1, 2, 3));
    assert_eq!(created.len(), 2);
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// Conversations sharing one `lastMessageDate` across page boundaries are all mirrored,
/// whether the server compares `startAfterDate` strictly (as the live API reportedly does)
/// or inclusively.
#[tokio::test]
async fn tie_clusters_across_page_boundaries_are_not_skipped() {
    for comparator in [StartAfter::Strict, StartAfter::Inclusive] {
        let bed = HighLevelBed::start(1, 130, |o| {
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
        let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;

        sync_all_caught_up(&engine, false).await;
        assert_mirror_matches_truth(&bed, engine.store(), &a).await;

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
        sync_all_caught_up(&engine, false).await;
        let unchanged = last_run(engine.store(), &a).await.3;
        assert!(
            unchanged >= 3,
            "boundary rows were read again ({unchanged})"
        );
        assert_mirror_matches_truth(&bed, engine.store(), &a).await;

        // The full sweep pages through the original clusters as well.
        sync_all_caught_up(&engine, true).await;
        assert_eq!(
            last_run(engine.store(), &a).await.4,
            0,
            "nothing was wrongly deleted"
        );
        assert_mirror_matches_truth(&bed, engine.store(), &a).await;
        bed.sim.shutdown().await;
    }
}

/// A server that silently clamps `limit` below `page_size` does not end the walk early.
#[tokio::test]
async fn a_silently_clamped_limit_still_lists_everything() {
    let bed = HighLevelBed::start(1, 50, |o| o.highlevel_max_limit = 7).await;
    let a = bed.location(0);
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 20).await;

    sync_all_caught_up(&engine, false).await;
    assert!(bed.searches() >= 8, "pages of 7, not one short page of 20");
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;

    sync_all_caught_up(&engine, true).await;
    assert_eq!(last_run(engine.store(), &a).await.4, 0);
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// Read/unread, starring, reassignment and contact-name edits do not move
/// `lastMessageDate`: the deltas miss them and the sweep refreshes them; conversations
/// HighLevel no longer lists are marked deleted.
#[tokio::test]
async fn sweep_refreshes_silent_changes_and_marks_deletions() {
    let bed = HighLevelBed::start(1, 40, |_| {}).await;
    let a = bed.location(0);
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;
    sync_all_caught_up(&engine, false).await;
    let ids = bed.newest_first(&a).await;

    bed.tick();
    bed.sim.edit(HL, &a, &ids[3], EditField::Unread).unwrap();
    bed.sim.edit(HL, &a, &ids[12], EditField::Starred).unwrap();
    bed.sim.edit(HL, &a, &ids[20], EditField::Assignee).unwrap();
    bed.sim.edit(HL, &a, &ids[30], EditField::Title).unwrap();
    bed.sim.delete(HL, &a, &ids[33]).unwrap();
    bed.sim.delete(HL, &a, &ids[34]).unwrap();

    sync_all_caught_up(&engine, false).await;
    let stale = mirror(engine.store(), &a).await;
    assert!(!stale[&ids[33]].deleted, "the delta cannot see deletions");

    sync_all_caught_up(&engine, true).await;

    let (.., deleted, _) = last_run(engine.store(), &a).await;
    assert_eq!(deleted, 2);
    let raw: String = sqlx::query_scalar("SELECT raw FROM conversations WHERE conversation_id = ?")
        .bind(&ids[12])
        .fetch_one(engine.store().pool())
        .await
        .unwrap();
    let starred = bed
        .truth(&a)
        .await
        .into_iter()
        .find(|t| t.id == ids[12])
        .unwrap()
        .starred;
    assert!(
        raw.contains(&format!("\"starred\":{starred}")),
        "the raw JSON is refreshed: {raw}"
    );
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// A conversation that receives a message while a sweep pages past it jumps above the
/// sweep's position; the sweep's catch-up phase still lists it, so it is not taken for
/// deleted. Driven page by page over HTTP to place the message exactly mid-sweep.
#[tokio::test]
async fn a_conversation_moving_mid_sweep_is_still_seen() {
    let bed = HighLevelBed::start(1, 30, |_| {}).await;
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
#[tokio::test]
async fn refresh_token_rotation_survives_a_crash_between_refresh_and_use() {
    let bed = HighLevelBed::start(1, 25, |_| {}).await;
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
        let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;
        let results = engine
            .sync_once(None, CycleOptions::default(), CancellationToken::new())
            .await
            .unwrap();
        assert!(
            matches!(results[0].outcome, CycleOutcome::Failed(_)),
            "{:?}",
            results[0].outcome
        );
        engine.store().close().await;
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

    // Restart with the same config: the stored token authenticates.
    bed.sim.set_faults(HL, Faults::default());
    let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;
    sync_all_caught_up(&engine, false).await;
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;

    // Access tokens revoked: one 401, one refresh with the newest stored token, success.
    bed.sim.revoke_tokens(HL);
    bed.message(&a, &bed.newest_first(&a).await[3], MessageKind::Inbound);
    sync_all_caught_up(&engine, false).await;
    assert_eq!(bed.with_status(SEARCH, 401), 1);
    assert_eq!(bed.with_status(TOKEN, 200), 3);
    let stored: Vec<String> = sqlx::query_scalar("SELECT token FROM refresh_tokens")
        .fetch_all(engine.store().pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], initial);
    let runs: Vec<Option<String>> = sqlx::query_scalar("SELECT error FROM sync_runs")
        .fetch_all(engine.store().pool())
        .await
        .unwrap();
    assert!(
        runs.iter()
            .flatten()
            .all(|e| !e.contains(&stored[0]) && !e.contains(&initial))
    );
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// A location whose daily quota runs out pauses until the day resets — reported as
/// rate-limited, with no request refused — while the other location syncs fully; after
/// the reset it resumes from its checkpoint.
#[tokio::test]
async fn exhausted_daily_quota_pauses_only_that_location() {
    let bed = HighLevelBed::start(2, 30, |o| o.highlevel_daily_limit = 6).await;
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

    let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;
    assert!(matches!(cycle(&engine, &b).await, CycleOutcome::CaughtUp));
    match cycle(&engine, &a).await {
        CycleOutcome::RateLimited { wait } => assert!(wait >= Duration::from_secs(60), "{wait:?}"),
        other => panic!("expected a daily-quota pause, got {other:?}"),
    }
    assert_mirror_matches_truth(&bed, engine.store(), &b).await;
    assert_eq!(
        bed.with_status(SEARCH, 429),
        0,
        "pacing stopped before HighLevel had to refuse"
    );
    engine.store().close().await;

    // The next day (a fresh process stands for the pause having elapsed).
    bed.sim.advance_clock(Duration::from_secs(24 * 3600));
    let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;
    assert!(matches!(cycle(&engine, &a).await, CycleOutcome::CaughtUp));
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
    assert_mirror_matches_truth(&bed, engine.store(), &b).await;
}

/// 429 answers (no `Retry-After`, as HighLevel documents none) are retried with backoff;
/// when they persist the cycle ends rate-limited, and the walk resumes from its checkpoint.
#[tokio::test]
async fn rate_limited_answers_are_retried_and_resumed() {
    let bed = HighLevelBed::start(1, 60, |_| {}).await;
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
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;

    let mut cycles = 0;
    loop {
        cycles += 1;
        assert!(cycles < 20, "the sync never caught up");
        match cycle(&engine, &a).await {
            CycleOutcome::CaughtUp => break,
            // The fault's window is on the frozen simulated clock: open the next one.
            CycleOutcome::RateLimited { .. } => bed.sim.advance_clock(Duration::from_secs(1)),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(cycles >= 2, "the quota ran out at least once");
    assert!(bed.with_status(SEARCH, 429) > 0);
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// 5xx answers are retried; the sync completes and the mirror is whole.
#[tokio::test]
async fn server_errors_are_retried() {
    let bed = HighLevelBed::start(1, 60, |_| {}).await;
    let a = bed.location(0);
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
    let engine = bed
        .engine_with(
            &bed.config(&[Credential::PrivateIntegrationToken], 10),
            &schedule(),
            &patient,
        )
        .await;

    sync_all_caught_up(&engine, false).await;
    sync_all_caught_up(&engine, true).await;

    let failures = bed.with_status(SEARCH, 500) + bed.with_status(SEARCH, 503);
    assert!(failures > 0, "the fault fired");
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// A token HighLevel refuses stops only its source, with an explanation naming the
/// location and without the token, while the other location keeps syncing.
#[tokio::test]
async fn a_refused_token_stops_only_its_location() {
    let bed = HighLevelBed::start(2, 20, |_| {}).await;
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
    let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;

    assert!(matches!(cycle(&engine, &a).await, CycleOutcome::CaughtUp));
    match cycle(&engine, &b).await {
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
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// `Version` is the spec's `2021-04-15` unless the source configures another value, such
/// as the `2021-07-28` that clients in the field send: that one is sent on every request,
/// and the sync completes.
#[tokio::test]
async fn the_version_header_is_configurable_per_source() {
    let bed = HighLevelBed::start(1, 30, |_| {}).await;
    let a = bed.location(0);
    let seen = |version: &str| {
        bed.sim
            .request_counts()
            .seen(HL, &format!("Version: {version}"))
    };
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;
    sync_all_caught_up(&engine, false).await;
    assert_eq!(seen("2021-04-15"), bed.searches());
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;

    bed.sim.reset_counts();
    let mut config = bed.config(&[Credential::PrivateIntegrationToken], 10);
    config.api_version = Some("2021-07-28".into());
    let engine = bed.engine_with(&config, &schedule(), &quick_http()).await;
    sync_all_caught_up(&engine, true).await;
    assert!(bed.searches() > 0);
    assert_eq!(
        (seen("2021-07-28"), seen("2021-04-15")),
        (bed.searches(), 0)
    );
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}

/// Results whose `lastMessageDate` is missing are still paged through by their `sort`
/// values: the delta and the sweep list every conversation, and the sweep deletes none.
#[tokio::test]
async fn pages_follow_the_sort_array() {
    let bed = HighLevelBed::start(1, 60, |o| o.highlevel_no_last_message_date = true).await;
    let a = bed.location(0);
    let live: std::collections::BTreeSet<String> = bed
        .truth(&a)
        .await
        .into_iter()
        .filter(|t| !t.deleted)
        .map(|t| t.id)
        .collect();
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;

    sync_all_caught_up(&engine, false).await;
    let mirrored = |rows: BTreeMap<String, Row>| {
        rows.into_iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(id, _)| id)
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(mirrored(mirror(engine.store(), &a).await), live);
    assert!(bed.searches() >= 6, "pages of 10, not one page");

    sync_all_caught_up(&engine, true).await;
    assert_eq!(last_run(engine.store(), &a).await.4, 0, "nothing deleted");
    assert_eq!(mirrored(mirror(engine.store(), &a).await), live);
}

/// Without `sort` arrays (older recordings of the API), the walk pages by
/// `lastMessageDate` and still keeps tie clusters across page boundaries.
#[tokio::test]
async fn pages_fall_back_to_last_message_date_without_sort() {
    let bed = HighLevelBed::start(1, 130, |o| {
        o.tie_cluster_size = 6;
        o.highlevel_no_sort_array = true;
    })
    .await;
    let a = bed.location(0);
    let engine = bed.engine(&[Credential::PrivateIntegrationToken], 10).await;
    sync_all_caught_up(&engine, false).await;
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
    sync_all_caught_up(&engine, true).await;
    assert_eq!(last_run(engine.store(), &a).await.4, 0, "nothing deleted");
    assert_mirror_matches_truth(&bed, engine.store(), &a).await;
}
