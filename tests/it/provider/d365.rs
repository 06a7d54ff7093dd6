//! The D365 adapter against the simulator over real HTTP: configuration from a TOML file,
//! Entra client credentials, delta by creation time, closures by sweep, the mass-closure
//! guard, token refresh, 429 and 5xx faults, and the optional messages follow-up. Every
//! test ends with the mirror equal to the simulator's truth, and runs on both stores.

use std::time::Duration;

use convsync::sync::CycleOutcome;
use convsync_sim::options::D365Order;
use convsync_sim::{
    ConversationState, D365Account, Faults, MessageKind, Platform, RateLimitFault, RetryAfter,
    SimHandle, SimOptions, Simulator, TruthConversation,
};

use crate::support::TestDb;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Reach, Truth, TruthSource};

const SOURCE: &str = "cc";
const HOUR: Duration = Duration::from_secs(3600);

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

/// A D365 test bed: a simulator with one channel and no background activity (only the
/// test changes the world), and a mirror database on the test's backend.
struct D365Bed {
    sim: SimHandle,
    db: TestDb,
}

impl D365Bed {
    /// `conversations` of history, tokens that live `token_ttl`.
    async fn start(backend: Backend, conversations: u32, token_ttl: Duration) -> D365Bed {
        D365Bed::start_with(
            backend,
            SimOptions {
                conversations,
                token_ttl,
                ..SimOptions::default()
            },
        )
        .await
    }

    async fn start_with(backend: Backend, options: SimOptions) -> D365Bed {
        let sim = Simulator::start(SimOptions {
            activity_rate: 0.0,
            ..options
        })
        .await
        .unwrap();
        D365Bed {
            sim,
            db: TestDb::on(backend).await,
        }
    }

    fn account(&self) -> D365Account {
        self.sim.accounts().d365[0].clone()
    }

    /// The daemon built from a config file for the simulator's channel.
    async fn app(&self, knobs: Knobs) -> TestApp {
        self.app_with_secret(knobs, &self.account().client_secret)
            .await
    }

    /// Writes a convsync config file for the simulator's channel, with `client_secret` in
    /// a secret file, and builds the daemon from it (the token scope is derived from the
    /// organization id, not given).
    async fn app_with_secret(&self, knobs: Knobs, client_secret: &str) -> TestApp {
        let a = self.account();
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
            db = self.db.settings.url,
            max_share = knobs.max_share,
            max_pages = knobs.max_pages,
            max_follow_ups = knobs.max_follow_ups,
            base = self.sim.d365_base_url(),
            org = a.organization_id,
            channel = a.channel_id,
            tenant = a.tenant_id,
            client = a.client_id,
            secret = secret.display(),
            login = self.sim.d365_login_url(),
            page_size = knobs.page_size,
            messages = knobs.messages,
            header_names = knobs
                .header_names
                .map(|names| format!("header_names = \"{names}\""))
                .unwrap_or_default(),
        );
        let path = files.path().join("convsync.toml");
        std::fs::write(&path, toml).unwrap();
        let truth = TruthSource::d365(&self.sim, 0, SOURCE).reaching(Reach {
            d365_messages: knobs.messages,
            ..Reach::EXACT
        });
        spawn_app(&self.db.load_config(&path))
            .await
            .following(Truth::simulator(&self.sim, vec![truth]))
    }

    async fn truth(&self) -> Vec<TruthConversation> {
        self.sim
            .truth(Platform::D365, &self.account().account)
            .await
            .unwrap()
    }

    /// Ids of the active conversations.
    async fn active_ids(&self) -> Vec<String> {
        self.truth()
            .await
            .into_iter()
            .filter(|c| c.state == ConversationState::Active)
            .map(|c| c.id)
            .collect()
    }

    fn list_requests(&self) -> u64 {
        self.sim
            .request_counts()
            .total(Platform::D365, "/conversations")
    }

    fn token_requests(&self) -> u64 {
        self.sim.request_counts().total(Platform::D365, "token")
    }

    fn with_status(&self, endpoint: &str, status: u16) -> u64 {
        self.sim
            .request_counts()
            .with_status(Platform::D365, endpoint, Some(status))
    }

    /// Sightings of each generation of the channel/organization header names.
    fn header_sightings(&self) -> (u64, u64) {
        let counts = self.sim.request_counts();
        (
            counts.seen(Platform::D365, "auth headers: channel-id"),
            counts.seen(Platform::D365, "auth headers: x-ms-channel-id"),
        )
    }
}

/// The `x-ms-correlation-id` quoted in `text`: a GUID.
fn correlation_id(text: &str) -> &str {
    let id = text
        .split("[x-ms-correlation-id: ")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap_or_else(|| panic!("no correlation id in {text:?}"));
    assert_eq!(id.len(), 36, "a GUID: {id}");
    id
}

/// The initial sync lists every active conversation through all pages, with one token.
async fn initial_sync_mirrors_every_active_conversation(backend: Backend) {
    let bed = D365Bed::start(backend, 300, HOUR).await;
    let app = bed.app(Knobs::default()).await;

    app.sync_caught_up(Sweep::IfDue).await;

    let active = bed.active_ids().await.len() as u64;
    assert!(
        active > 150,
        "the simulator should hold a few pages of active conversations"
    );
    assert_eq!(bed.list_requests(), active.div_ceil(50));
    assert_eq!(bed.token_requests(), 1);
    let run = app.last_run(SOURCE).await;
    assert_eq!(
        (run.outcome.as_str(), run.inserted),
        ("caught_up", active as i64)
    );
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// After the initial sync, a delta asks only for recent creations: one page, however
/// large the listing, and only the new conversations are written.
async fn delta_requests_only_new_conversations(backend: Backend) {
    let bed = D365Bed::start(backend, 300, HOUR).await;
    let app = bed.app(Knobs::default()).await;
    app.sync_once(Sweep::IfDue).await;
    assert!(bed.list_requests() >= 4);

    let created = bed
        .sim
        .create_conversations(Platform::D365, &bed.account().account, 3)
        .unwrap();
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(bed.list_requests(), 1, "a delta is one page");
    let run = app.last_run(SOURCE).await;
    assert_eq!(
        (run.requests, run.inserted, run.updated, run.closed),
        (1, 3, 0, 0)
    );
    let rows = app.mirror(SOURCE).await;
    assert!(created.iter().all(|id| rows.contains_key(id)));
    app.assert_mirror_matches_truth().await;

    // Nothing new: still one request, no writes.
    bed.sim.reset_counts();
    app.sync_once(Sweep::IfDue).await;
    assert_eq!(bed.list_requests(), 1);
    let run = app.last_run(SOURCE).await;
    assert_eq!((run.inserted, run.updated), (0, 0));
    bed.sim.shutdown().await;
}

/// Conversations that vanish from the listing are closed by the next complete sweep, and
/// a conversation listed again is reopened.
async fn sweep_closes_vanished_conversations_and_reopens_returning_ones(backend: Backend) {
    let bed = D365Bed::start(backend, 300, HOUR).await;
    let app = bed.app(Knobs::default()).await;
    app.sync_once(Sweep::IfDue).await;

    let ids = bed.active_ids().await;
    let channel = bed.account().account;
    for id in &ids[..3] {
        bed.sim.close(Platform::D365, &channel, id).unwrap();
    }
    // Deltas cannot see closures.
    app.sync_once(Sweep::IfDue).await;
    assert_eq!(app.mirror(SOURCE).await[&ids[0]].active, Some(true));

    app.sync_caught_up(Sweep::Now).await;
    assert_eq!(app.last_run(SOURCE).await.closed, 3);
    assert_eq!(app.mirror(SOURCE).await[&ids[0]].active, Some(false));
    app.assert_mirror_matches_truth().await;

    // A row closed by mistake (say, a listing outage) comes back with the next sweep.
    let closed = app
        .store()
        .sql_execute(&format!(
            "UPDATE conversations SET active = false, closed_at = '2026-01-01T00:00:00.000000Z'
             WHERE conversation_id = '{}'",
            ids[5]
        ))
        .await;
    assert_eq!(closed, 1);
    app.sync_once(Sweep::Now).await;
    let reopened = &app.mirror(SOURCE).await[&ids[5]];
    assert_eq!(
        (reopened.active, reopened.closed_at.as_deref()),
        (Some(true), None)
    );
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A sweep that would close more than the allowed share applies nothing and says so
/// loudly; once the share is raised (the closures are real), it applies them.
async fn mass_closure_guard_refuses_then_applies_when_allowed(backend: Backend) {
    let bed = D365Bed::start(backend, 120, HOUR).await;
    let app = bed.app(Knobs::default()).await;
    app.sync_once(Sweep::IfDue).await;

    let ids = bed.active_ids().await;
    let channel = bed.account().account;
    let closing = ids.len() * 3 / 4;
    for id in &ids[..closing] {
        bed.sim.close(Platform::D365, &channel, id).unwrap();
    }
    app.sync_once(Sweep::Now).await;
    let run = app.last_run(SOURCE).await;
    assert_eq!(run.closed, 0);
    assert!(run.notes().contains("REFUSED"), "{}", run.notes());
    assert!(
        app.mirror(SOURCE)
            .await
            .values()
            .all(|r| r.active == Some(true))
    );
    // The operator raises the share: the daemon restarts with the new configuration.
    drop(app);

    let app = bed
        .app(Knobs {
            max_share: 0.9,
            ..Knobs::default()
        })
        .await;
    app.sync_once(Sweep::Now).await;
    assert_eq!(app.last_run(SOURCE).await.closed, closing as i64);
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A token near the end of its stated lifetime is replaced before use: once the first
/// token has expired at the service, the next cycle still sees no 401.
async fn token_is_refreshed_before_it_expires(backend: Backend) {
    let bed = D365Bed::start(backend, 60, Duration::from_secs(2)).await;
    let app = bed.app(Knobs::default()).await;
    app.sync_once(Sweep::IfDue).await;
    let first_tokens = bed.token_requests();
    assert!(first_tokens >= 1);

    // Past the service's 2 s lifetime: a client that waited for a 401 would get one now.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    bed.sim
        .create_conversations(Platform::D365, &bed.account().account, 2)
        .unwrap();
    app.sync_caught_up(Sweep::IfDue).await;

    assert!(
        bed.token_requests() > first_tokens,
        "a new token was fetched"
    );
    assert_eq!(bed.with_status("/conversations", 401), 0);
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A token the service stops accepting (401) is replaced once and the request repeated.
async fn token_is_refreshed_once_on_401(backend: Backend) {
    let bed = D365Bed::start(backend, 60, HOUR).await;
    let app = bed.app(Knobs::default()).await;
    app.sync_once(Sweep::IfDue).await;

    bed.sim.revoke_tokens(Platform::D365);
    bed.sim
        .create_conversations(Platform::D365, &bed.account().account, 2)
        .unwrap();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(bed.with_status("/conversations", 401), 1);
    assert_eq!(bed.token_requests(), 2);
    let run = app.last_run(SOURCE).await;
    assert_eq!((run.outcome.as_str(), run.inserted), ("caught_up", 2));
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// Wrong credentials stop the source with the Entra error, and nothing is written.
async fn rejected_credentials_fail_with_the_entra_error(backend: Backend) {
    let bed = D365Bed::start(backend, 20, HOUR).await;
    let app = bed
        .app_with_secret(Knobs::default(), "wrong-secret-value")
        .await;

    let error = app.sync_once_failed(Sweep::IfDue).await;
    assert!(error.is_fatal(), "{error}");
    let message = convsync::error_text::error_chain(&error);
    assert!(message.contains("invalid_client"), "{message}");
    assert!(
        !message.contains("wrong-secret-value"),
        "the secret must not appear: {message}"
    );
    assert_eq!(bed.list_requests(), 0);
    assert!(
        app.mirror(SOURCE).await.is_empty(),
        "nothing is mirrored without credentials"
    );
    bed.sim.shutdown().await;
}

/// A sync that meets `faults` on the listing still catches up, exactly, having met each
/// of `statuses` at least once.
async fn catches_up_through(backend: Backend, faults: Faults, statuses: &[u16]) {
    let bed = D365Bed::start(backend, 300, HOUR).await;
    bed.sim.set_faults(Platform::D365, faults);
    let app = bed.app(Knobs::default()).await;

    app.sync_caught_up(Sweep::IfDue).await;

    let met: u64 = statuses
        .iter()
        .map(|&status| bed.with_status("/conversations", status))
        .sum();
    assert!(met >= 1, "the fault should have fired at least once");
    app.assert_mirror_matches_truth().await;

    bed.sim
        .create_conversations(Platform::D365, &bed.account().account, 4)
        .unwrap();
    app.sync_caught_up(Sweep::Now).await;
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// 429 answers with `Retry-After` are waited out and the sync completes.
async fn rate_limited_requests_wait_for_retry_after(backend: Backend) {
    let limited = Faults {
        rate_limit: Some(RateLimitFault {
            max_requests: 3,
            window_ms: 1000,
            retry_after: RetryAfter::Seconds,
        }),
        ..Faults::default()
    };
    catches_up_through(backend, limited, &[429]).await;
}

/// 500 and 503 answers are retried; the mirror ends complete and exact.
async fn server_errors_are_retried(backend: Backend) {
    let failing = Faults {
        error_5xx_ratio: 0.3,
        ..Faults::default()
    };
    catches_up_through(backend, failing, &[500, 503]).await;
}

/// With `messages = true`, follow-ups fill last activity, direction and reply state for
/// every active conversation, and a sweep picks up new messages.
async fn messages_follow_ups_fill_activity_and_direction(backend: Backend) {
    let bed = D365Bed::start(backend, 60, HOUR).await;
    let knobs = Knobs {
        messages: true,
        ..Knobs::default()
    };
    let app = bed.app(knobs).await;

    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    let active = bed.active_ids().await;
    assert!(bed.sim.request_counts().total(Platform::D365, "/messages") >= active.len() as u64);

    let channel = bed.account().account;
    bed.sim
        .add_message(Platform::D365, &channel, &active[0], MessageKind::Inbound)
        .unwrap();
    bed.sim
        .add_message(
            Platform::D365,
            &channel,
            &active[1],
            MessageKind::OutboundAutomated,
        )
        .unwrap();
    app.sync_caught_up(Sweep::Now).await;
    let row = &app.mirror(SOURCE).await[&active[0]];
    assert_eq!(row.last_message_direction.as_deref(), Some("inbound"));
    assert_eq!(row.awaiting_reply, Some(true));
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// The listing's order is not documented: with an unordered listing, a trailing empty page
/// that still carries a token, and an inclusive `StartTimeStamp`, nothing is lost or
/// duplicated and the watermark only moves when a walk completes.
async fn unordered_listing_with_trailing_empty_pages_loses_nothing(backend: Backend) {
    let bed = D365Bed::start_with(
        backend,
        SimOptions {
            conversations: 300,
            d365_order: D365Order::Shuffled,
            d365_trailing_empty_page: true,
            d365_start_inclusive: true,
            ..SimOptions::default()
        },
    )
    .await;
    let app = bed.app(Knobs::default()).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let active = bed.active_ids().await;
    assert_eq!(
        bed.list_requests(),
        active.len().div_ceil(50) as u64 + 1,
        "data pages + the empty one"
    );
    app.assert_mirror_matches_truth().await;

    let channel = bed.account().account;
    bed.sim
        .create_conversations(Platform::D365, &channel, 5)
        .unwrap();
    bed.sim.tie_cluster(Platform::D365, &channel, 7).unwrap();
    bed.sim.close(Platform::D365, &channel, &active[0]).unwrap();
    app.sync_once(Sweep::IfDue).await;
    let run = app.last_run(SOURCE).await;
    assert_eq!((run.inserted, run.updated), (12, 0));
    app.sync_once(Sweep::Now).await;
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// Conversations sharing one creation instant across several pages are all mirrored, and
/// the next delta re-lists them without writing anything.
async fn tie_cluster_across_pages_is_mirrored_whole(backend: Backend) {
    let bed = D365Bed::start(backend, 40, HOUR).await;
    let app = bed
        .app(Knobs {
            page_size: 5,
            ..Knobs::default()
        })
        .await;
    app.sync_once(Sweep::IfDue).await;

    let cluster = bed
        .sim
        .tie_cluster(Platform::D365, &bed.account().account, 12)
        .unwrap();
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;
    assert!(bed.list_requests() >= 3, "the cluster spans pages");
    let rows = app.mirror(SOURCE).await;
    assert!(cluster.iter().all(|id| rows.contains_key(id)));
    assert_eq!(app.last_run(SOURCE).await.inserted, 12);

    app.sync_once(Sweep::IfDue).await;
    let run = app.last_run(SOURCE).await;
    assert_eq!((run.inserted, run.updated), (0, 0));
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A saved continuation token that expired between cycles (error 30009) makes the walk
/// start again instead of failing, and the sync completes.
async fn expired_continuation_token_restarts_the_walk(backend: Backend) {
    let bed = D365Bed::start(backend, 300, HOUR).await;
    bed.sim.set_faults(
        Platform::D365,
        Faults {
            page_token_ttl_ms: Some(60_000),
            ..Faults::default()
        },
    );
    let app = bed
        .app(Knobs {
            max_pages: 2,
            ..Knobs::default()
        })
        .await;

    let first = app.cycle(SOURCE, Sweep::IfDue).await;
    assert!(matches!(first, CycleOutcome::MoreToDo), "{first:?}");
    bed.sim.advance_clock(Duration::from_secs(120));
    let second = app.cycle(SOURCE, Sweep::IfDue).await;
    assert!(matches!(second, CycleOutcome::MoreToDo), "{second:?}");
    let run = app.last_run(SOURCE).await;
    assert!(run.notes().contains("page position rejected"));
    assert_eq!(bed.with_status("/conversations", 400), 1);

    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A conversation closed before its messages were read answers 404 there, which closes
/// its row without waiting for a sweep.
async fn messages_404_closes_the_conversation(backend: Backend) {
    let bed = D365Bed::start(backend, 60, HOUR).await;
    let knobs = Knobs {
        messages: true,
        max_follow_ups: 5,
        ..Knobs::default()
    };
    let app = bed.app(knobs).await;
    let first = app.cycle(SOURCE, Sweep::IfDue).await;
    assert!(matches!(first, CycleOutcome::MoreToDo), "{first:?}");

    let pending: String = app
        .store()
        .sql_value(&format!(
            "SELECT conversation_id FROM follow_ups WHERE source = '{SOURCE}' LIMIT 1"
        ))
        .await;
    bed.sim
        .close(Platform::D365, &bed.account().account, &pending)
        .unwrap();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(bed.with_status("/messages", 404), 1);
    let row = &app.mirror(SOURCE).await[&pending];
    assert_eq!(row.active, Some(false));
    assert!(row.closed_at.is_some());
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// By default every request carries both generations of the header names, so tenants
/// whose build knows only `x-ms-channel-id` (2025-04 docs) or only `channel-id` (2025-09
/// docs) both sync completely; `header_names` narrows it to one pair.
async fn both_generations_of_header_names_are_sent_by_default(backend: Backend) {
    use convsync_sim::options::D365HeaderNames;
    let tenant = |names| {
        D365Bed::start_with(
            backend,
            SimOptions {
                conversations: 120,
                d365_header_names: names,
                ..SimOptions::default()
            },
        )
    };
    for names in [
        D365HeaderNames::XMs,
        D365HeaderNames::Plain,
        D365HeaderNames::Either,
    ] {
        let bed = tenant(names).await;
        let app = bed.app(Knobs::default()).await;
        assert!(
            matches!(app.sync_once(Sweep::Now).await, CycleOutcome::CaughtUp),
            "{names:?}"
        );
        app.assert_mirror_matches_truth().await;
        let data_requests = bed.list_requests();
        assert_eq!(
            bed.header_sightings(),
            (data_requests, data_requests),
            "{names:?}"
        );
        bed.sim.shutdown().await;
    }

    let bed = tenant(D365HeaderNames::XMs).await;
    let legacy = Knobs {
        header_names: Some("x-ms"),
        ..Knobs::default()
    };
    let app = bed.app(legacy).await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(bed.header_sightings(), (0, bed.list_requests()));
    app.assert_mirror_matches_truth().await;
    bed.sim.shutdown().await;
}

/// A D365 error names Microsoft's `x-ms-correlation-id` (the id support asks for) in the
/// run's recorded error.
async fn errors_carry_the_correlation_id(backend: Backend) {
    let bed = D365Bed::start(backend, 30, HOUR).await;
    bed.sim.set_faults(
        Platform::D365,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    let app = bed.app(Knobs::default()).await;

    let outcome = app.sync_once(Sweep::IfDue).await;
    assert!(
        !matches!(outcome, CycleOutcome::CaughtUp),
        "every request fails: {outcome:?}"
    );
    let error = app.last_run(SOURCE).await.error;
    correlation_id(&error.expect("the run records its error"));
    bed.sim.shutdown().await;
}

/// A 429 that outlasts the retries ends the cycle as rate limited; its log line still
/// names Microsoft's `x-ms-correlation-id`, the id support asks for.
async fn rate_limited_requests_log_the_correlation_id(backend: Backend) {
    let bed = D365Bed::start(backend, 5, HOUR).await;
    bed.sim.set_faults(
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
    let app = bed.app(Knobs::default()).await;
    let (logs, _guard) = crate::support::capture::trace_capture();

    let outcome = app.cycle(SOURCE, Sweep::IfDue).await;
    assert!(
        matches!(outcome, CycleOutcome::RateLimited { .. }),
        "{outcome:?}"
    );
    let logs = logs.text();
    let gave_up = logs
        .lines()
        .find(|l| l.contains("request gave up after retrying"))
        .unwrap_or_else(|| panic!("no give-up line in:\n{logs}"));
    correlation_id(gave_up);
    bed.sim.shutdown().await;
}

on_both_stores!(
    initial_sync_mirrors_every_active_conversation,
    delta_requests_only_new_conversations,
    sweep_closes_vanished_conversations_and_reopens_returning_ones,
    mass_closure_guard_refuses_then_applies_when_allowed,
    token_is_refreshed_before_it_expires,
    token_is_refreshed_once_on_401,
    rejected_credentials_fail_with_the_entra_error,
    rate_limited_requests_wait_for_retry_after,
    server_errors_are_retried,
    messages_follow_ups_fill_activity_and_direction,
    unordered_listing_with_trailing_empty_pages_loses_nothing,
    tie_cluster_across_pages_is_mirrored_whole,
    expired_continuation_token_restarts_the_walk,
    messages_404_closes_the_conversation,
    both_generations_of_header_names_are_sent_by_default,
    errors_carry_the_correlation_id,
    rate_limited_requests_log_the_correlation_id,
);
