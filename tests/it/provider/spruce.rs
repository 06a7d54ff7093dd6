//! The Spruce adapter against the simulator over real HTTP: initial sync, both deltas,
//! boundary ties, late-visible conversations, reply state, sweeps and their guard, a
//! refused token, and pacing on Spruce's rate-limit headers. Every scenario ends by
//! comparing the mirror with the simulator's truth.
//!
//! Every scenario runs on both stores (`spruce::sqlite::…`, `spruce::postgres::…`).
//!
//! The simulator's clock is frozen and moved explicitly, so timestamps are exact and
//! Spruce's per-minute window only renews when a test says so.

use std::time::Duration;

use convsync::config::{Schedule, SourceSettings};
use convsync::provider::SetupContext;
use convsync::provider::spruce::{SpruceConfig, setup};
use convsync::secret::SecretRef;
use convsync::sync::CycleOutcome;
use convsync::time::Timestamp;
use convsync_sim::{
    ConversationState, EditField, Faults, MessageKind, Platform, SimHandle, SimOptions,
    TruthConversation,
};

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::mirror::Mirror;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Truth, TruthSource};
use crate::support::world::start_one_provider_tuned;
use crate::support::{GUARD, TestDb, quick_http, schedule};

pub(crate) const SPRUCE: Platform = Platform::Spruce;
const LIST: &str = "GET /v1/conversations";
const ITEMS: &str = "/items";
/// The source every scenario syncs.
pub(crate) const CLINIC: &str = "clinic";

/// A Spruce test bed: the simulator (frozen clock, no background activity), a mirror
/// database (SQLite unless started on another backend) and the token files.
pub(crate) struct SpruceBed {
    pub(crate) sim: SimHandle,
    pub(crate) db: TestDb,
    /// Holds the token files (the mirror's directory is the harness's own).
    secrets: tempfile::TempDir,
    pub(crate) account: String,
}

impl SpruceBed {
    pub(crate) async fn start(conversations: u32, tune: impl FnOnce(&mut SimOptions)) -> SpruceBed {
        SpruceBed::start_on(Backend::Sqlite, conversations, tune).await
    }

    /// As [`SpruceBed::start`], with the mirror on `backend`.
    pub(crate) async fn start_on(
        backend: Backend,
        conversations: u32,
        tune: impl FnOnce(&mut SimOptions),
    ) -> SpruceBed {
        let sim = start_one_provider_tuned(SPRUCE, 1, 5, conversations, tune).await;
        let account = sim.accounts().spruce[0].organization_id.clone();
        SpruceBed {
            sim,
            db: TestDb::on(backend).await,
            secrets: tempfile::tempdir().unwrap(),
            account,
        }
    }

    /// A source configured the way a user would: through `[sources.spruce]` and `setup`.
    pub(crate) fn source(
        &self,
        name: &str,
        token: &str,
        page_size: u32,
        schedule: Schedule,
    ) -> SourceSettings {
        let token_file = self.secrets.path().join(format!("{name}.token"));
        std::fs::write(&token_file, token).unwrap();
        let config = SpruceConfig {
            organization_id: self.account.clone(),
            api_token: SecretRef::File { file: token_file },
            base_url: self.sim.spruce_base_url().to_string(),
            page_size,
            track_reply_state: true,
            webhook_secret: None,
            webhook_endpoint_id: None,
        };
        let key = format!("sources[{name}]");
        let mut setups = setup(&config, &SetupContext { key: &key }).expect("valid spruce config");
        SourceSettings {
            name: name.into(),
            setup: setups.remove(0),
            schedule,
            guard: GUARD,
            quota: None,
        }
    }

    pub(crate) fn token(&self) -> String {
        self.sim.accounts().spruce[0].api_token.clone()
    }

    pub(crate) async fn app(&self, page_size: u32) -> TestApp {
        self.app_with(page_size, schedule()).await
    }

    /// The daemon over source `clinic` with `schedule`, following the organization's truth.
    pub(crate) async fn app_with(&self, page_size: u32, schedule: Schedule) -> TestApp {
        let settings = self.source(CLINIC, &self.token(), page_size, schedule);
        self.app_over(vec![settings]).await
    }

    /// The daemon over `sources`, of which `clinic` follows the organization's truth.
    pub(crate) async fn app_over(&self, sources: Vec<SourceSettings>) -> TestApp {
        let truth = TruthSource::spruce(&self.sim, 0, CLINIC);
        spawn_app(&self.db.config(quick_http(), sources))
            .await
            .following(Truth::simulator(&self.sim, vec![truth]))
    }

    pub(crate) async fn truth(&self) -> Vec<TruthConversation> {
        self.sim.truth(SPRUCE, &self.account).await.unwrap()
    }

    /// Moves the frozen clock so the next change gets its own instant.
    pub(crate) fn tick(&self) {
        self.sim.advance_clock(Duration::from_secs(1));
    }

    pub(crate) fn message(&self, id: &str, kind: MessageKind) {
        self.tick();
        self.sim
            .add_message(SPRUCE, &self.account, id, kind)
            .unwrap();
    }

    pub(crate) fn list_requests(&self) -> u64 {
        self.sim.request_counts().total(SPRUCE, LIST) - self.item_requests()
    }

    pub(crate) fn item_requests(&self) -> u64 {
        self.sim.request_counts().total(SPRUCE, ITEMS)
    }

    pub(crate) fn throttled(&self) -> u64 {
        self.sim
            .request_counts()
            .with_status(SPRUCE, "/v1/", Some(429))
    }
}

fn text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| Timestamp::from(t).to_mirror_text())
}

/// How many conversations are open (not archived, not deleted): those whose reply state a
/// first sync reads.
pub(crate) async fn open_conversations(bed: &SpruceBed) -> u64 {
    let truth = bed.truth().await;
    truth
        .iter()
        .filter(|t| t.state != ConversationState::Archived && !t.deleted)
        .count() as u64
}

/// Ids of open conversations that have at least one message, oldest first.
pub(crate) async fn with_messages(bed: &SpruceBed) -> Vec<String> {
    let mut truth: Vec<_> = bed
        .truth()
        .await
        .into_iter()
        .filter(|t| {
            !t.deleted && t.state == ConversationState::Active && t.last_activity_at.is_some()
        })
        .collect();
    truth.sort_by_key(|t| t.created_at);
    truth.into_iter().map(|t| t.id).collect()
}

/// The first sync mirrors every conversation, including those without messages, which
/// `orderBy=last_message` leaves out here so that only the `created` delta can catch them
/// (and whose `lastMessageAt` is an explicit `null`), with who spoke last for each.
async fn initial_sync_mirrors_everything_with_reply_state(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 150, |o| {
        o.spruce_messageless_order = convsync_sim::options::MessagelessOrder::Excluded;
        o.spruce_null_last_message_at = true;
    })
    .await;
    let truth = bed.truth().await;
    assert!(
        truth.iter().any(|t| t.last_activity_at.is_none()),
        "the world has message-less conversations"
    );
    let all_follow_ups_at_once = Schedule {
        max_follow_ups_per_cycle: 1000,
        ..schedule()
    };
    let app = bed.app_with(50, all_follow_ups_at_once).await;

    app.sync_caught_up(Sweep::IfDue).await;

    app.assert_mirror_matches_truth().await;
    // One full listing of 150 at 50 per page and one page of the `activity` delta from
    // where it began; one items request per open conversation.
    assert_eq!(bed.list_requests(), 4);
    assert_eq!(bed.item_requests(), open_conversations(&bed).await);
    assert_eq!(bed.throttled(), 0);
}

/// With Spruce's other plausible behaviours (message-less conversations listed first,
/// `lastMessageAt` omitted) the first sync is just as complete.
async fn initial_sync_handles_omitted_last_message_at(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 80, |_| {}).await;
    let app = bed.app(200).await;

    app.sync_caught_up(Sweep::IfDue).await;

    app.assert_mirror_matches_truth().await;
}

/// After the first sync each delta asks only from its watermark: a quiet cycle costs one
/// page per delta and no items; changed conversations cost one items request each.
async fn deltas_request_only_what_changed(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 60, |_| {}).await;
    let app = bed.app(10).await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        bed.list_requests(),
        7,
        "the first sync lists everything once (6 pages), then one page of the other delta"
    );

    bed.sim.reset_counts();
    bed.tick();
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        (bed.list_requests(), bed.item_requests()),
        (2, 0),
        "a quiet cycle"
    );
    let run = app.last_run(CLINIC).await;
    assert_eq!((run.inserted, run.updated), (0, 0));

    let ids = with_messages(&bed).await;
    bed.message(&ids[0], MessageKind::Inbound);
    bed.message(&ids[1], MessageKind::Outbound);
    bed.message(&ids[2], MessageKind::Inbound);
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(bed.list_requests(), 2, "one page per delta");
    assert_eq!(
        bed.item_requests(),
        3,
        "one items request per changed conversation"
    );
    app.assert_mirror_matches_truth().await;
}

/// New conversations are caught by the deltas, with the patient's first message owed a
/// reply.
async fn new_conversations_arrive_through_the_deltas(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 30, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;

    bed.tick();
    let created = bed
        .sim
        .create_conversations(SPRUCE, &bed.account, 4)
        .unwrap();
    app.sync_caught_up(Sweep::IfDue).await;

    let mirror = app.mirror(CLINIC).await;
    for id in &created {
        assert_eq!(mirror[id].awaiting_reply, Some(true), "{id}");
        assert_eq!(
            mirror[id].last_message_direction.as_deref(),
            Some("inbound"),
            "{id}"
        );
    }
    app.assert_mirror_matches_truth().await;
}

/// Conversations sharing one `lastMessageAt` across page boundaries are all mirrored, and
/// re-reading the tie at the inclusive `startFrom` costs no writes.
async fn boundary_ties_are_not_lost(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 40, |_| {}).await;
    let app = bed.app(5).await;
    app.sync_caught_up(Sweep::IfDue).await;

    bed.tick();
    let tied = bed.sim.tie_cluster(SPRUCE, &bed.account, 12).unwrap();
    assert_eq!(tied.len(), 12);
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    let mirror_now = app.mirror(CLINIC).await;
    assert!(
        tied.iter()
            .all(|id| mirror_now[id].awaiting_reply == Some(true))
    );

    // The watermark sits on the tie: the next delta lists it again, unchanged.
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;
    let run = app.last_run(CLINIC).await;
    assert_eq!((run.inserted, run.updated), (0, 0));
    assert!(
        run.unchanged >= 12,
        "the tie is re-read, not skipped ({})",
        run.unchanged
    );
    assert_eq!(bed.item_requests(), 0);
    app.assert_mirror_matches_truth().await;
}

/// A message that becomes visible in the listing after a newer one moved the watermark is
/// still caught, because each delta starts a lookback before its watermark.
async fn late_visible_conversations_within_the_lookback_are_caught(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 30, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let ids = with_messages(&bed).await;
    let (late, early) = (&ids[0], &ids[1]);

    // `late` gets its message first, but the listing shows it only 30 s later…
    bed.sim.set_faults(
        SPRUCE,
        Faults {
            consistency_delay_ms: 30_000,
            ..Faults::default()
        },
    );
    bed.message(late, MessageKind::Inbound);
    let late_at = text(
        bed.truth()
            .await
            .iter()
            .find(|t| &t.id == late)
            .unwrap()
            .last_activity_at,
    );
    // …while `early` is visible at once, with a newer time that moves the watermark.
    bed.sim.set_faults(SPRUCE, Faults::default());
    bed.message(early, MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;
    let before = app.mirror(CLINIC).await;
    assert_eq!(before[early].awaiting_reply, Some(true));
    assert_ne!(before[late].last_activity_at, late_at, "not visible yet");

    bed.sim.advance_clock(Duration::from_secs(31));
    app.sync_caught_up(Sweep::IfDue).await;

    let after = app.mirror(CLINIC).await;
    assert_eq!(after[late].last_activity_at, late_at);
    assert_eq!(after[late].awaiting_reply, Some(true));
    app.assert_mirror_matches_truth().await;
}

/// Reply state follows the conversation: inbound → owed; outbound → answered; a new
/// inbound → owed again; an internal note after it changes nothing.
async fn reply_state_follows_inbound_outbound_and_internal_notes(backend: Backend) {
    reply_state_scenario(backend, false).await;
}

/// The same holds when the items `startFrom` is strictly "after" (as its docs word it)
/// rather than inclusive.
async fn reply_state_holds_with_an_exclusive_items_start(backend: Backend) {
    reply_state_scenario(backend, true).await;
}

async fn reply_state_scenario(backend: Backend, items_start_exclusive: bool) {
    let bed = SpruceBed::start_on(backend, 20, |o| {
        o.spruce_items_start_exclusive = items_start_exclusive
    })
    .await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let id = with_messages(&bed).await[0].clone();
    let state = |m: &Mirror| (m[&id].last_message_direction.clone(), m[&id].awaiting_reply);

    bed.message(&id, MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        state(&app.mirror(CLINIC).await),
        (Some("inbound".into()), Some(true))
    );
    app.assert_mirror_matches_truth().await;

    bed.message(&id, MessageKind::Outbound);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        state(&app.mirror(CLINIC).await),
        (Some("outbound".into()), Some(false))
    );
    app.assert_mirror_matches_truth().await;

    bed.message(&id, MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        state(&app.mirror(CLINIC).await),
        (Some("inbound".into()), Some(true))
    );

    bed.message(&id, MessageKind::InternalNote);
    app.sync_caught_up(Sweep::IfDue).await;
    let after_note = app.mirror(CLINIC).await;
    assert_eq!(
        state(&after_note),
        (Some("inbound".into()), Some(true)),
        "a note is not a reply"
    );
    assert_eq!(
        after_note[&id].last_activity_at,
        text(
            bed.truth()
                .await
                .iter()
                .find(|t| t.id == id)
                .unwrap()
                .last_activity_at
        ),
        "the note still moves the activity time"
    );
    app.assert_mirror_matches_truth().await;
}

/// A conversation deleted before its queued items request runs is marked deleted by
/// Spruce's 404 instead of failing the follow-up forever.
async fn a_conversation_deleted_before_its_items_are_read_is_marked_deleted(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 20, |_| {}).await;
    let one_follow_up = Schedule {
        max_follow_ups_per_cycle: 1,
        ..schedule()
    };
    let app = bed
        .app_with(
            200,
            Schedule {
                max_follow_ups_per_cycle: 100,
                ..schedule()
            },
        )
        .await;
    app.sync_caught_up(Sweep::IfDue).await;
    drop(app);
    let app = bed.app_with(200, one_follow_up).await;
    let ids = with_messages(&bed).await;
    bed.message(&ids[0], MessageKind::Inbound);
    bed.message(&ids[1], MessageKind::Inbound);

    // One follow-up per cycle: the second waits in the queue…
    let first = app.cycle(CLINIC, Sweep::IfDue).await;
    assert!(matches!(first, CycleOutcome::MoreToDo), "{first:?}");
    let pending = app.store().count_follow_ups(CLINIC).await.unwrap();
    assert_eq!(pending, 1);
    // …while its conversation is deleted at Spruce.
    let waiting: String = app
        .store()
        .sql_value("SELECT conversation_id FROM follow_ups WHERE source = 'clinic'")
        .await;
    bed.sim.delete(SPRUCE, &bed.account, &waiting).unwrap();

    let second = app.cycle(CLINIC, Sweep::IfDue).await;
    assert!(
        matches!(second, CycleOutcome::CaughtUp | CycleOutcome::MoreToDo),
        "{second:?}"
    );

    assert_eq!(app.store().count_follow_ups(CLINIC).await.unwrap(), 0);
    assert!(app.mirror(CLINIC).await[&waiting].is_deleted());
    app.assert_mirror_matches_truth().await;
}

/// A sweep refreshes what the deltas cannot see (archive, title, assignment) and marks
/// conversations Spruce no longer lists as deleted.
async fn sweep_refreshes_silent_changes_and_marks_deletions(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 40, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let ids = with_messages(&bed).await;

    bed.tick();
    bed.sim.close(SPRUCE, &bed.account, &ids[0]).unwrap();
    bed.sim
        .edit(SPRUCE, &bed.account, &ids[1], EditField::Title)
        .unwrap();
    bed.sim
        .edit(SPRUCE, &bed.account, &ids[2], EditField::Assignee)
        .unwrap();
    bed.sim.delete(SPRUCE, &bed.account, &ids[3]).unwrap();
    bed.sim.delete(SPRUCE, &bed.account, &ids[4]).unwrap();

    // The deltas alone see none of it.
    app.sync_caught_up(Sweep::IfDue).await;
    let stale = app.mirror(CLINIC).await;
    assert_eq!(stale[&ids[0]].active, Some(true));
    assert!(!stale[&ids[3]].is_deleted());

    app.sync_caught_up(Sweep::Now).await;

    assert_eq!(app.last_run(CLINIC).await.deleted, 2);
    let swept = app.mirror(CLINIC).await;
    assert_eq!(swept[&ids[0]].active, Some(false));
    assert!(swept[&ids[3]].is_deleted() && swept[&ids[4]].is_deleted());
    app.assert_mirror_matches_truth().await;
}

/// A sweep that would delete most of the mirror at once (an outage-shaped listing) is
/// refused: nothing is marked and the run says why.
async fn sweep_guard_refuses_mass_deletion(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 12, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;

    let truth = bed.truth().await;
    for t in truth.iter().take(9) {
        bed.sim.delete(SPRUCE, &bed.account, &t.id).unwrap();
    }
    app.sync_caught_up(Sweep::Now).await;

    let run = app.last_run(CLINIC).await;
    assert_eq!(run.deleted, 0);
    assert!(run.notes().contains("REFUSED"));
    assert!(app.mirror(CLINIC).await.values().all(|r| !r.is_deleted()));
}

/// A refused token (Spruce answers 403) stops that source at once with a clear error,
/// without a retry loop, while another source of the same organization keeps syncing.
async fn forbidden_token_stops_only_its_source(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 20, |_| {}).await;
    let good = bed.source("clinic", &bed.token(), 200, schedule());
    let bad = bed.source("revoked", "spr_this-token-was-disabled", 200, schedule());
    let app = bed.app_over(vec![good, bad]).await;

    let results = app.sync_all(Sweep::IfDue).await;

    let outcome = |name: &str| &results.iter().find(|r| r.source == name).unwrap().outcome;
    assert!(
        matches!(outcome("clinic"), CycleOutcome::CaughtUp),
        "{:?}",
        outcome("clinic")
    );
    match outcome("revoked") {
        CycleOutcome::Failed(e) => {
            assert!(e.is_fatal(), "{e}");
            let message = convsync::error_text::error_chain(e);
            assert!(
                message.contains("token is wrong or has been disabled"),
                "{message}"
            );
            assert!(
                !message.contains("spr_this-token"),
                "the token never appears: {message}"
            );
        }
        other => panic!("expected a fatal failure, got {other:?}"),
    }
    assert_eq!(
        bed.sim
            .request_counts()
            .with_status(SPRUCE, "/v1/", Some(403)),
        1,
        "no retries"
    );
    app.assert_mirror_matches_truth().await;
}

/// Syncs window by window until caught up: each cycle runs on a fresh daemon, standing for
/// the previous daemon's budget pause (a real minute, or up to an hour) having elapsed, and
/// every rate-limited cycle moves the simulator's clock on by `window`. Checks that no
/// window carried more than `per_window` requests and that every pause was longer than
/// `min_pause`; returns the windows used and the daemon that caught up.
async fn sync_window_by_window(
    bed: &SpruceBed,
    schedule: &Schedule,
    per_window: u64,
    window: Duration,
    min_pause: Duration,
) -> (u64, TestApp) {
    let mut windows = 0;
    loop {
        windows += 1;
        assert!(windows <= 10, "the sync never caught up");
        let app = bed.app_with(200, schedule.clone()).await;
        let outcome = app.cycle(CLINIC, Sweep::IfDue).await;
        let sent = bed.sim.request_counts().total(SPRUCE, "/v1/");
        assert!(
            sent <= per_window * windows,
            "at most a window's worth per window ({sent})"
        );
        match outcome {
            CycleOutcome::CaughtUp => return (windows, app),
            CycleOutcome::RateLimited { wait } => {
                assert!(wait > min_pause, "paused for the window ({wait:?})");
                bed.sim.advance_clock(window);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

/// When `s-ratelimit-remaining` reaches 0 the source stops sending until the window has
/// renewed, so Spruce never has to refuse a request; the work resumes from its checkpoint.
async fn pacing_on_rate_limit_headers_avoids_refusals(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 10, |o| o.spruce_rate_limit = 6).await;
    let schedule = Schedule {
        max_clock_skew: Duration::from_secs(3600),
        ..schedule()
    };

    let minute = Duration::from_secs(60);
    let (windows, app) = sync_window_by_window(&bed, &schedule, 6, minute, minute / 2).await;

    assert!(windows >= 2, "the budget ran out at least once");
    assert_eq!(
        bed.throttled(),
        0,
        "pacing kept every request within the budget"
    );
    app.assert_mirror_matches_truth().await;
}

/// When `s-ratelimit-daily-remaining` reaches 0 the source stops sending for the day, even
/// with the minute window far from spent: Spruce never has to refuse a request, and the
/// work resumes from its checkpoint once the day has renewed.
async fn pacing_on_the_daily_window_avoids_refusals(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 16, |o| {
        o.spruce_rate_limit = 1000;
        o.spruce_daily_limit = Some(5);
    })
    .await;
    let schedule = Schedule {
        max_clock_skew: Duration::from_secs(10 * 86_400),
        ..schedule()
    };

    let day = Duration::from_secs(86_400);
    // The daily pause is an hour, or less just before midnight UTC: any pause will do.
    let (days, app) = sync_window_by_window(&bed, &schedule, 5, day, Duration::ZERO).await;

    assert!(
        days >= 3,
        "the open conversations' items and the listings take several days of 5 ({days})"
    );
    assert_eq!(
        bed.throttled(),
        0,
        "pacing kept every request within the daily budget"
    );
    app.assert_mirror_matches_truth().await;
}

/// An expired page token makes the interrupted walk start again from its watermark
/// instead of failing every cycle.
async fn expired_page_token_restarts_the_walk(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 30, |_| {}).await;
    bed.sim.set_faults(
        SPRUCE,
        Faults {
            page_token_ttl_ms: Some(10_000),
            ..Faults::default()
        },
    );
    let schedule = Schedule {
        max_pages_per_cycle: 2,
        ..schedule()
    };
    let app = bed.app_with(5, schedule).await;
    let cycle = || app.cycle(CLINIC, Sweep::IfDue);

    assert!(
        matches!(cycle().await, CycleOutcome::MoreToDo),
        "stopped mid-walk by the page cap"
    );
    bed.sim.advance_clock(Duration::from_secs(11));
    let mut outcome = cycle().await;
    let mut cycles = 1;
    while matches!(outcome, CycleOutcome::MoreToDo) {
        cycles += 1;
        assert!(cycles < 100, "the sync never caught up");
        outcome = cycle().await;
    }
    assert!(matches!(outcome, CycleOutcome::CaughtUp), "{outcome:?}");
    let notes: Vec<Option<String>> = app
        .store()
        .sql_column("SELECT notes FROM sync_runs WHERE source = 'clinic'")
        .await;
    assert!(
        notes
            .iter()
            .flatten()
            .any(|n| n.contains("page position rejected")),
        "{notes:?}"
    );
    app.assert_mirror_matches_truth().await;
}

/// A backlog of follow-ups larger than a cycle's share is drained by extra cycles that do
/// not list again what the deltas listed moments before: the listing costs its minimum
/// (one page per delta walk) however many cycles the items take.
async fn draining_follow_ups_does_not_repeat_fresh_deltas(backend: Backend) {
    let bed = SpruceBed::start_on(backend, 40, |_| {}).await;
    let app = bed
        .app_with(
            200,
            Schedule {
                max_follow_ups_per_cycle: 7,
                ..schedule()
            },
        )
        .await;
    app.sync_caught_up(Sweep::IfDue).await;
    let runs: i64 = app
        .store()
        .sql_value("SELECT COUNT(*) FROM sync_runs")
        .await;
    let open = open_conversations(&bed).await;
    assert!(
        runs >= open.div_ceil(7) as i64,
        "{open} follow-ups, 7 per cycle, take several cycles ({runs})"
    );
    assert_eq!(
        bed.item_requests(),
        open,
        "every open conversation's items were read once"
    );
    assert_eq!(
        bed.list_requests(),
        2,
        "each delta walk listed its one page once, in the first cycle"
    );
    assert_eq!(app.store().count_follow_ups(CLINIC).await.unwrap(), 0);
    app.assert_mirror_matches_truth().await;
}

on_both_stores!(
    initial_sync_mirrors_everything_with_reply_state,
    initial_sync_handles_omitted_last_message_at,
    deltas_request_only_what_changed,
    new_conversations_arrive_through_the_deltas,
    boundary_ties_are_not_lost,
    late_visible_conversations_within_the_lookback_are_caught,
    reply_state_follows_inbound_outbound_and_internal_notes,
    reply_state_holds_with_an_exclusive_items_start,
    a_conversation_deleted_before_its_items_are_read_is_marked_deleted,
    sweep_refreshes_silent_changes_and_marks_deletions,
    sweep_guard_refuses_mass_deletion,
    forbidden_token_stops_only_its_source,
    pacing_on_rate_limit_headers_avoids_refusals,
    pacing_on_the_daily_window_avoids_refusals,
    expired_page_token_restarts_the_walk,
    draining_follow_ups_does_not_repeat_fresh_deltas,
);
