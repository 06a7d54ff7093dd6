//! The D365 adapter against the simulator over real HTTP: configuration from a TOML file,
//! Entra client credentials, delta by creation time, closures by sweep, the mass-closure
//! guard, token refresh, 429 and 5xx faults, and the optional messages follow-up. Every
//! test ends with the mirror equal to the simulator's truth.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use convsync::config::Config;
use convsync::sync::{CycleOptions, CycleOutcome, Engine, run_cycle};
use convsync::time::Timestamp;
use convsync_sim::options::D365Order;
use convsync_sim::{
    ConversationState, D365Account, Faults, MessageDirection, MessageKind, Platform,
    RateLimitFault, RetryAfter, SimHandle, SimOptions, Simulator, TruthConversation,
};
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::{TestDb, sync_once};

const SOURCE: &str = "cc";

/// Knobs of one test's source configuration.
#[derive(Clone, Copy)]
struct Knobs {
    page_size: u32,
    messages: bool,
    max_share: f64,
    max_pages: u32,
    max_follow_ups: u32,
    /// `header_names`, when the test sets it.
    header_names: Option<&'static str>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            page_size: 50,
            messages: false,
            max_share: 0.5,
            max_pages: 10_000,
            max_follow_ups: 500,
            header_names: None,
        }
    }
}

/// A simulator with one D365 channel, `conversations` of history and no background
/// activity, so that only the test changes the world.
async fn simulator(conversations: u32, token_ttl: Duration) -> SimHandle {
    simulator_with(SimOptions {
        conversations,
        token_ttl,
        ..SimOptions::default()
    })
    .await
}

/// A simulator with these options and no background activity.
async fn simulator_with(options: SimOptions) -> SimHandle {
    Simulator::start(SimOptions {
        activity_rate: 0.0,
        ..options
    })
    .await
    .unwrap()
}

fn account(sim: &SimHandle) -> D365Account {
    sim.accounts().d365[0].clone()
}

/// Builds the engine from a config file for the simulator's channel.
async fn engine(sim: &SimHandle, db: &TestDb, knobs: Knobs) -> Engine {
    let secret = account(sim).client_secret;
    engine_with_secret(sim, db, knobs, &secret).await
}

/// Writes a convsync config file for the simulator's channel, with `client_secret` in a
/// secret file, and builds the engine from it exactly as the daemon would (the token scope
/// is derived from the organization id, not given).
async fn engine_with_secret(
    sim: &SimHandle,
    db: &TestDb,
    knobs: Knobs,
    client_secret: &str,
) -> Engine {
    let a = account(sim);
    // The secret and the config are read once, at start: the files may go right after.
    let files = tempfile::tempdir().unwrap();
    let secret = files.path().join("d365-client-secret");
    std::fs::write(&secret, format!("{client_secret}\n")).unwrap();
    let toml = format!(
        r#"
[database]
url = "{db}"

[http]
timeout = "5s"
max_retries = 6
min_backoff = "20ms"
max_backoff = "200ms"
max_inline_pause = "30s"

[[sources]]
name = "{SOURCE}"
provider = "d365"
poll_interval = "60s"
lookback = "2m"
sweep_interval = "1h"
rate_limit = {{ requests = 1000, per = "1s", burst = 50 }}
mass_change_max_share = {max_share}
mass_change_floor = 2
max_pages_per_cycle = {max_pages}
max_follow_ups_per_cycle = {max_follow_ups}

[sources.d365]
base_url = "{base}"
organization_id = "{org}"
channel_id = "{channel}"
tenant_id = "{tenant}"
client_id = "{client}"
client_secret = {{ file = "{secret}" }}
login_url = "{login}"
page_size = {page_size}
messages = {messages}
{header_names}
"#,
        db = db.settings.url,
        max_share = knobs.max_share,
        max_pages = knobs.max_pages,
        max_follow_ups = knobs.max_follow_ups,
        base = sim.d365_base_url(),
        org = a.organization_id,
        channel = a.channel_id,
        tenant = a.tenant_id,
        client = a.client_id,
        secret = secret.display(),
        login = sim.d365_login_url(),
        page_size = knobs.page_size,
        messages = knobs.messages,
        header_names = knobs
            .header_names
            .map(|names| format!("header_names = \"{names}\""))
            .unwrap_or_default(),
    );
    let path = files.path().join("convsync.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    Engine::new(db.open().await, &config.http, &config.sources).unwrap()
}

async fn truth(sim: &SimHandle) -> Vec<TruthConversation> {
    sim.truth(Platform::D365, &account(sim).account)
        .await
        .unwrap()
}

fn text(t: chrono::DateTime<chrono::Utc>) -> String {
    Timestamp::from(t).to_mirror_text()
}

/// One mirror row, as far as D365 fills it.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    conversation_id: String,
    account: String,
    created_at: Option<String>,
    active: Option<bool>,
    closed_at: Option<String>,
    last_activity_at: Option<String>,
    last_message_direction: Option<String>,
    last_inbound_at: Option<String>,
    last_outbound_at: Option<String>,
    awaiting_reply: Option<bool>,
    status: Option<String>,
    channel: Option<String>,
    title: Option<String>,
    contact_name: Option<String>,
    deleted_at: Option<String>,
    raw: String,
}

async fn rows(engine: &Engine) -> BTreeMap<String, Row> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT conversation_id, account, created_at, active, closed_at, last_activity_at,
                last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply,
                status, channel, title, contact_name, deleted_at, raw
         FROM conversations WHERE source = ?",
    )
    .bind(SOURCE)
    .fetch_all(engine.store().pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|r| (r.conversation_id.clone(), r))
        .collect()
}

/// The mirror equals what the API can show of the truth: exactly the active conversations
/// are active; every mirrored closure is real; creation times match to the microsecond;
/// message facts match when follow-ups are on and stay NULL otherwise; the columns the API
/// does not provide stay NULL.
async fn assert_mirror_equals_truth(engine: &Engine, sim: &SimHandle, messages: bool) {
    let truth: BTreeMap<String, TruthConversation> = truth(sim)
        .await
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    let rows = rows(engine).await;
    let active_truth: BTreeSet<&String> = truth
        .values()
        .filter(|c| c.state == ConversationState::Active && !c.deleted)
        .map(|c| &c.id)
        .collect();
    let active_mirror: BTreeSet<&String> = rows
        .values()
        .filter(|r| r.active == Some(true))
        .map(|r| &r.conversation_id)
        .collect();
    assert_eq!(active_mirror, active_truth, "active conversations differ");
    let channel = account(sim).channel_id;
    for row in rows.values() {
        let t = truth.get(&row.conversation_id).unwrap_or_else(|| {
            panic!(
                "mirror row {} unknown to the simulator",
                row.conversation_id
            )
        });
        let id = &row.conversation_id;
        assert_eq!(row.account, channel);
        assert_eq!(
            row.created_at.as_deref(),
            Some(text(t.created_at).as_str()),
            "{id}"
        );
        assert!(row.raw.contains(id.as_str()), "{id}: raw {}", row.raw);
        assert_eq!(row.deleted_at, None, "{id}");
        if row.active == Some(false) {
            assert_eq!(
                t.state,
                ConversationState::Closed,
                "{id} closed in the mirror only"
            );
            assert!(row.closed_at.is_some(), "{id}");
        } else {
            assert_eq!(row.closed_at, None, "{id}");
        }
        for (column, value) in [
            ("status", &row.status),
            ("channel", &row.channel),
            ("title", &row.title),
            ("contact_name", &row.contact_name),
        ] {
            assert_eq!(value, &None, "{id}: {column} is not provided by the API");
        }
        if !messages {
            assert_eq!(
                (
                    &row.last_activity_at,
                    &row.last_message_direction,
                    row.awaiting_reply
                ),
                (&None, &None, None),
                "{id}: message facts without follow-ups"
            );
        } else if row.active == Some(true) {
            let direction = t.last_message_direction.map(|d| match d {
                MessageDirection::Inbound => "inbound".to_owned(),
                _ => "outbound".to_owned(),
            });
            assert_eq!(row.last_activity_at, t.last_activity_at.map(text), "{id}");
            assert_eq!(row.last_message_direction, direction, "{id}");
            assert_eq!(row.last_inbound_at, t.last_inbound_at.map(text), "{id}");
            assert_eq!(row.last_outbound_at, t.last_outbound_at.map(text), "{id}");
            let awaiting = (t.message_count > 0).then_some(t.awaiting_reply);
            assert_eq!(row.awaiting_reply, awaiting, "{id}");
        }
    }
}

async fn last_run(engine: &Engine) -> (String, i64, i64, i64, i64, Option<String>) {
    sqlx::query_as(
        "SELECT outcome, requests, rows_inserted, rows_updated, rows_closed, notes
         FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(SOURCE)
    .fetch_one(engine.store().pool())
    .await
    .unwrap()
}

fn list_requests(sim: &SimHandle) -> u64 {
    sim.request_counts().total(Platform::D365, "/conversations")
}

fn token_requests(sim: &SimHandle) -> u64 {
    sim.request_counts().total(Platform::D365, "token")
}

fn active_ids(truth: &[TruthConversation]) -> Vec<String> {
    truth
        .iter()
        .filter(|c| c.state == ConversationState::Active)
        .map(|c| c.id.clone())
        .collect()
}

/// The initial sync lists every active conversation through all pages, with one token.
#[tokio::test]
async fn initial_sync_mirrors_every_active_conversation() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;

    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    let active = active_ids(&truth(&sim).await).len() as u64;
    assert!(
        active > 150,
        "the simulator should hold a few pages of active conversations"
    );
    assert_eq!(list_requests(&sim), active.div_ceil(50));
    assert_eq!(token_requests(&sim), 1);
    let (outcome, _, inserted, _, _, _) = last_run(&engine).await;
    assert_eq!((outcome.as_str(), inserted), ("caught_up", active as i64));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// After the initial sync, a delta asks only for recent creations: one page, however
/// large the listing, and only the new conversations are written.
#[tokio::test]
async fn delta_requests_only_new_conversations() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    sync_once(&engine, false).await;
    let full_listing = list_requests(&sim);
    assert!(full_listing >= 4);

    let created = sim
        .create_conversations(Platform::D365, &account(&sim).account, 3)
        .unwrap();
    sim.reset_counts();
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    assert_eq!(list_requests(&sim), 1, "a delta is one page");
    let (_, requests, inserted, updated, closed, _) = last_run(&engine).await;
    assert_eq!((requests, inserted, updated, closed), (1, 3, 0, 0));
    let rows = rows(&engine).await;
    assert!(created.iter().all(|id| rows.contains_key(id)));
    assert_mirror_equals_truth(&engine, &sim, false).await;

    // Nothing new: still one request, no writes.
    sim.reset_counts();
    sync_once(&engine, false).await;
    assert_eq!(list_requests(&sim), 1);
    let (_, _, inserted, updated, _, _) = last_run(&engine).await;
    assert_eq!((inserted, updated), (0, 0));
    sim.shutdown().await;
}

/// Conversations that vanish from the listing are closed by the next complete sweep, and
/// a conversation listed again is reopened.
#[tokio::test]
async fn sweep_closes_vanished_conversations_and_reopens_returning_ones() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    sync_once(&engine, false).await;

    let ids = active_ids(&truth(&sim).await);
    let channel = account(&sim).account;
    for id in &ids[..3] {
        sim.close(Platform::D365, &channel, id).unwrap();
    }
    // Deltas cannot see closures.
    sync_once(&engine, false).await;
    assert_eq!(rows(&engine).await[&ids[0]].active, Some(true));

    assert!(matches!(
        sync_once(&engine, true).await,
        CycleOutcome::CaughtUp
    ));
    let (_, _, _, _, closed, _) = last_run(&engine).await;
    assert_eq!(closed, 3);
    let rows_now = rows(&engine).await;
    assert_eq!(rows_now[&ids[0]].active, Some(false));
    assert_mirror_equals_truth(&engine, &sim, false).await;

    // A row closed by mistake (say, a listing outage) comes back with the next sweep.
    sqlx::query("UPDATE conversations SET active = 0, closed_at = '2026-01-01T00:00:00.000000Z' WHERE conversation_id = ?")
        .bind(&ids[5])
        .execute(engine.store().pool())
        .await
        .unwrap();
    sync_once(&engine, true).await;
    let reopened = &rows(&engine).await[&ids[5]];
    assert_eq!(
        (reopened.active, reopened.closed_at.as_deref()),
        (Some(true), None)
    );
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// A sweep that would close more than the allowed share applies nothing and says so
/// loudly; once the share is raised (the closures are real), it applies them.
#[tokio::test]
async fn mass_closure_guard_refuses_then_applies_when_allowed() {
    let sim = simulator(120, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine1 = engine(&sim, &db, Knobs::default()).await;
    sync_once(&engine1, false).await;

    let ids = active_ids(&truth(&sim).await);
    let channel = account(&sim).account;
    let closing = ids.len() * 3 / 4;
    for id in &ids[..closing] {
        sim.close(Platform::D365, &channel, id).unwrap();
    }
    sync_once(&engine1, true).await;
    let (_, _, _, _, closed, notes) = last_run(&engine1).await;
    assert_eq!(closed, 0);
    let notes = notes.unwrap_or_default();
    assert!(notes.contains("REFUSED"), "{notes}");
    assert!(
        rows(&engine1)
            .await
            .values()
            .all(|r| r.active == Some(true))
    );

    let engine2 = engine(
        &sim,
        &db,
        Knobs {
            max_share: 0.9,
            ..Knobs::default()
        },
    )
    .await;
    sync_once(&engine2, true).await;
    let (_, _, _, _, closed, _) = last_run(&engine2).await;
    assert_eq!(closed, closing as i64);
    assert_mirror_equals_truth(&engine2, &sim, false).await;
    sim.shutdown().await;
}

/// A token near the end of its stated lifetime is replaced before use: once the first
/// token has expired at the service, the next cycle still sees no 401.
#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let sim = simulator(60, Duration::from_secs(2)).await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    sync_once(&engine, false).await;
    let first_tokens = token_requests(&sim);
    assert!(first_tokens >= 1);

    // Past the service's 2 s lifetime: a client that waited for a 401 would get one now.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    sim.create_conversations(Platform::D365, &account(&sim).account, 2)
        .unwrap();
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    assert!(
        token_requests(&sim) > first_tokens,
        "a new token was fetched"
    );
    assert_eq!(
        sim.request_counts()
            .with_status(Platform::D365, "/conversations", Some(401)),
        0
    );
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// A token the service stops accepting (401) is replaced once and the request repeated.
#[tokio::test]
async fn token_is_refreshed_once_on_401() {
    let sim = simulator(60, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    sync_once(&engine, false).await;

    sim.revoke_tokens(Platform::D365);
    sim.create_conversations(Platform::D365, &account(&sim).account, 2)
        .unwrap();
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    let counts = sim.request_counts();
    assert_eq!(
        counts.with_status(Platform::D365, "/conversations", Some(401)),
        1
    );
    assert_eq!(token_requests(&sim), 2);
    let (outcome, _, inserted, _, _, _) = last_run(&engine).await;
    assert_eq!((outcome.as_str(), inserted), ("caught_up", 2));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// Wrong credentials stop the source with the Entra error, and nothing is written.
#[tokio::test]
async fn rejected_credentials_fail_with_the_entra_error() {
    let sim = simulator(20, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine_with_secret(&sim, &db, Knobs::default(), "wrong-secret-value").await;

    let CycleOutcome::Failed(error) = sync_once(&engine, false).await else {
        panic!("expected a failed cycle");
    };
    assert!(error.is_fatal(), "{error}");
    let message = convsync::error_text::error_chain(&error);
    assert!(message.contains("invalid_client"), "{message}");
    assert!(
        !message.contains("wrong-secret-value"),
        "the secret must not appear: {message}"
    );
    assert_eq!(list_requests(&sim), 0);
    assert!(
        rows(&engine).await.is_empty(),
        "nothing is mirrored without credentials"
    );
    sim.shutdown().await;
}

/// 429 answers with `Retry-After` are waited out and the sync completes.
#[tokio::test]
async fn rate_limited_requests_wait_for_retry_after() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    sim.set_faults(
        Platform::D365,
        Faults {
            rate_limit: Some(RateLimitFault {
                max_requests: 3,
                window_ms: 1000,
                retry_after: RetryAfter::Seconds,
            }),
            ..Faults::default()
        },
    );
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;

    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    let counts = sim.request_counts();
    assert!(counts.with_status(Platform::D365, "/conversations", Some(429)) >= 1);
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// 500 and 503 answers are retried; the mirror ends complete and exact.
#[tokio::test]
async fn server_errors_are_retried() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    sim.set_faults(
        Platform::D365,
        Faults {
            error_5xx_ratio: 0.3,
            ..Faults::default()
        },
    );
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;

    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    let counts = sim.request_counts();
    let failures = counts.with_status(Platform::D365, "/conversations", Some(500))
        + counts.with_status(Platform::D365, "/conversations", Some(503));
    assert!(failures >= 1, "the fault should have fired at least once");
    assert_mirror_equals_truth(&engine, &sim, false).await;

    sim.create_conversations(Platform::D365, &account(&sim).account, 4)
        .unwrap();
    assert!(matches!(
        sync_once(&engine, true).await,
        CycleOutcome::CaughtUp
    ));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// With `messages = true`, follow-ups fill last activity, direction and reply state for
/// every active conversation, and a sweep picks up new messages.
#[tokio::test]
async fn messages_follow_ups_fill_activity_and_direction() {
    let sim = simulator(60, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let knobs = Knobs {
        messages: true,
        ..Knobs::default()
    };
    let engine = engine(&sim, &db, knobs).await;

    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    assert_mirror_equals_truth(&engine, &sim, true).await;
    let active = active_ids(&truth(&sim).await);
    assert!(sim.request_counts().total(Platform::D365, "/messages") >= active.len() as u64);

    let channel = account(&sim).account;
    sim.add_message(Platform::D365, &channel, &active[0], MessageKind::Inbound)
        .unwrap();
    sim.add_message(
        Platform::D365,
        &channel,
        &active[1],
        MessageKind::OutboundAutomated,
    )
    .unwrap();
    assert!(matches!(
        sync_once(&engine, true).await,
        CycleOutcome::CaughtUp
    ));
    let row = &rows(&engine).await[&active[0]];
    assert_eq!(row.last_message_direction.as_deref(), Some("inbound"));
    assert_eq!(row.awaiting_reply, Some(true));
    assert_mirror_equals_truth(&engine, &sim, true).await;
    sim.shutdown().await;
}

/// The listing's order is not documented: with an unordered listing, a trailing empty page
/// that still carries a token, and an inclusive `StartTimeStamp`, nothing is lost or
/// duplicated and the watermark only moves when a walk completes.
#[tokio::test]
async fn unordered_listing_with_trailing_empty_pages_loses_nothing() {
    let sim = simulator_with(SimOptions {
        conversations: 300,
        d365_order: D365Order::Shuffled,
        d365_trailing_empty_page: true,
        d365_start_inclusive: true,
        ..SimOptions::default()
    })
    .await;
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    let active = active_ids(&truth(&sim).await);
    assert_eq!(
        list_requests(&sim),
        active.len().div_ceil(50) as u64 + 1,
        "data pages + the empty one"
    );
    assert_mirror_equals_truth(&engine, &sim, false).await;

    let channel = account(&sim).account;
    sim.create_conversations(Platform::D365, &channel, 5)
        .unwrap();
    sim.tie_cluster(Platform::D365, &channel, 7).unwrap();
    sim.close(Platform::D365, &channel, &active[0]).unwrap();
    sync_once(&engine, false).await;
    let (_, _, inserted, updated, _, _) = last_run(&engine).await;
    assert_eq!((inserted, updated), (12, 0));
    sync_once(&engine, true).await;
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// Conversations sharing one creation instant across several pages are all mirrored, and
/// the next delta re-lists them without writing anything.
#[tokio::test]
async fn tie_cluster_across_pages_is_mirrored_whole() {
    let sim = simulator(40, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let engine = engine(
        &sim,
        &db,
        Knobs {
            page_size: 5,
            ..Knobs::default()
        },
    )
    .await;
    sync_once(&engine, false).await;

    let cluster = sim
        .tie_cluster(Platform::D365, &account(&sim).account, 12)
        .unwrap();
    sim.reset_counts();
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    assert!(list_requests(&sim) >= 3, "the cluster spans pages");
    let rows = rows(&engine).await;
    assert!(cluster.iter().all(|id| rows.contains_key(id)));
    let (_, _, inserted, _, _, _) = last_run(&engine).await;
    assert_eq!(inserted, 12);

    sync_once(&engine, false).await;
    let (_, _, inserted, updated, _, _) = last_run(&engine).await;
    assert_eq!((inserted, updated), (0, 0));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// A saved continuation token that expired between cycles (error 30009) makes the walk
/// start again instead of failing, and the sync completes.
#[tokio::test]
async fn expired_continuation_token_restarts_the_walk() {
    let sim = simulator(300, Duration::from_secs(3600)).await;
    sim.set_faults(
        Platform::D365,
        Faults {
            page_token_ttl_ms: Some(60_000),
            ..Faults::default()
        },
    );
    let db = TestDb::new();
    let engine = engine(
        &sim,
        &db,
        Knobs {
            max_pages: 2,
            ..Knobs::default()
        },
    )
    .await;
    let source = &engine.sources()[0];
    let cancel = CancellationToken::new();

    let first = run_cycle(source, engine.store(), CycleOptions::default(), &cancel).await;
    assert!(matches!(first, CycleOutcome::MoreToDo), "{first:?}");
    sim.advance_clock(Duration::from_secs(120));
    let second = run_cycle(source, engine.store(), CycleOptions::default(), &cancel).await;
    assert!(matches!(second, CycleOutcome::MoreToDo), "{second:?}");
    let (_, _, _, _, _, notes) = last_run(&engine).await;
    assert!(notes.unwrap_or_default().contains("page position rejected"));
    assert_eq!(
        sim.request_counts()
            .with_status(Platform::D365, "/conversations", Some(400)),
        1
    );

    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// A conversation closed before its messages were read answers 404 there, which closes
/// its row without waiting for a sweep.
#[tokio::test]
async fn messages_404_closes_the_conversation() {
    let sim = simulator(60, Duration::from_secs(3600)).await;
    let db = TestDb::new();
    let knobs = Knobs {
        messages: true,
        max_follow_ups: 5,
        ..Knobs::default()
    };
    let engine = engine(&sim, &db, knobs).await;
    let cancel = CancellationToken::new();
    let first = run_cycle(
        &engine.sources()[0],
        engine.store(),
        CycleOptions::default(),
        &cancel,
    )
    .await;
    assert!(matches!(first, CycleOutcome::MoreToDo), "{first:?}");

    let pending: String =
        sqlx::query_scalar("SELECT conversation_id FROM follow_ups WHERE source = ? LIMIT 1")
            .bind(SOURCE)
            .fetch_one(engine.store().pool())
            .await
            .unwrap();
    sim.close(Platform::D365, &account(&sim).account, &pending)
        .unwrap();
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));

    assert_eq!(
        sim.request_counts()
            .with_status(Platform::D365, "/messages", Some(404)),
        1
    );
    let row = &rows(&engine).await[&pending];
    assert_eq!(row.active, Some(false));
    assert!(row.closed_at.is_some());
    assert_mirror_equals_truth(&engine, &sim, true).await;
    sim.shutdown().await;
}

/// Sightings of each generation of the channel/organization header names.
fn header_sightings(sim: &SimHandle) -> (u64, u64) {
    let counts = sim.request_counts();
    (
        counts.seen(Platform::D365, "auth headers: channel-id"),
        counts.seen(Platform::D365, "auth headers: x-ms-channel-id"),
    )
}

/// By default every request carries both generations of the header names, so tenants
/// whose build knows only `x-ms-channel-id` (2025-04 docs) or only `channel-id` (2025-09
/// docs) both sync completely; `header_names` narrows it to one pair.
#[tokio::test]
async fn both_generations_of_header_names_are_sent_by_default() {
    use convsync_sim::options::D365HeaderNames;
    for tenant in [
        D365HeaderNames::XMs,
        D365HeaderNames::Plain,
        D365HeaderNames::Either,
    ] {
        let sim = simulator_with(SimOptions {
            conversations: 120,
            d365_header_names: tenant,
            ..SimOptions::default()
        })
        .await;
        let db = TestDb::new();
        let engine = engine(&sim, &db, Knobs::default()).await;
        assert!(
            matches!(sync_once(&engine, true).await, CycleOutcome::CaughtUp),
            "{tenant:?}"
        );
        assert_mirror_equals_truth(&engine, &sim, false).await;
        let data_requests = list_requests(&sim);
        assert_eq!(
            header_sightings(&sim),
            (data_requests, data_requests),
            "{tenant:?}"
        );
        sim.shutdown().await;
    }

    let sim = simulator_with(SimOptions {
        conversations: 120,
        d365_header_names: D365HeaderNames::XMs,
        ..SimOptions::default()
    })
    .await;
    let db = TestDb::new();
    let legacy = Knobs {
        header_names: Some("x-ms"),
        ..Knobs::default()
    };
    let engine = engine(&sim, &db, legacy).await;
    assert!(matches!(
        sync_once(&engine, false).await,
        CycleOutcome::CaughtUp
    ));
    assert_eq!(header_sightings(&sim), (0, list_requests(&sim)));
    assert_mirror_equals_truth(&engine, &sim, false).await;
    sim.shutdown().await;
}

/// A D365 error names Microsoft's `x-ms-correlation-id` (the id support asks for) in the
/// run's recorded error.
#[tokio::test]
async fn errors_carry_the_correlation_id() {
    let sim = simulator(30, Duration::from_secs(3600)).await;
    sim.set_faults(
        Platform::D365,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;

    let outcome = sync_once(&engine, false).await;
    assert!(
        !matches!(outcome, CycleOutcome::CaughtUp),
        "every request fails: {outcome:?}"
    );
    let error: Option<String> =
        sqlx::query_scalar("SELECT error FROM sync_runs WHERE source = ? ORDER BY id DESC LIMIT 1")
            .bind(SOURCE)
            .fetch_one(engine.store().pool())
            .await
            .unwrap();
    let error = error.expect("the run records its error");
    let id = error
        .split("[x-ms-correlation-id: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no correlation id in {error:?}"));
    assert_eq!(id.len(), 36, "a GUID: {id}");
    sim.shutdown().await;
}

/// A 429 that outlasts the retries ends the cycle as rate limited; its log line still
/// names Microsoft's `x-ms-correlation-id`, the id support asks for.
#[tokio::test]
async fn rate_limited_requests_log_the_correlation_id() {
    let sim = simulator(5, Duration::from_secs(3600)).await;
    sim.set_faults(
        Platform::D365,
        Faults {
            rate_limit: Some(RateLimitFault {
                max_requests: 0,
                window_ms: 60_000,
                retry_after: RetryAfter::None,
            }),
            ..Faults::default()
        },
    );
    let db = TestDb::new();
    let engine = engine(&sim, &db, Knobs::default()).await;
    let (logs, _guard) = crate::support::capture::trace_capture();

    let outcome = run_cycle(
        &engine.sources()[0],
        engine.store(),
        CycleOptions::default(),
        &CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(outcome, CycleOutcome::RateLimited { .. }),
        "{outcome:?}"
    );
    let logs = logs.text();
    let gave_up = logs
        .lines()
        .find(|l| l.contains("request gave up after retrying"))
        .unwrap_or_else(|| panic!("no give-up line in:\n{logs}"));
    let id = gave_up
        .split("[x-ms-correlation-id: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no correlation id in {gave_up:?}"));
    assert_eq!(id.len(), 36, "a GUID: {id}");
    sim.shutdown().await;
}
