//! What a sync costs in requests, pinned on the simulator: a provider's rate limit, not
//! CPU, decides how long a first sync takes and how fresh the mirror stays (issue #17).
//!
//! Counts, not timings: the first sync lists everything once and reads reply state only
//! where it can matter, the follow-up backlog is read newest activity first, and a due
//! delta runs before the rest of that backlog. Every provider's first sync of N and delta
//! of K are pinned at the defaults against the API's minimum, with the reason wherever a
//! count is above it, and Sinch's message-less conversations against the sweep's cost.

use std::time::Duration;

use convsync::config::Schedule;
use convsync::provider::ProviderKind;
use convsync::sim_config::{SecretPlacement, SourceTuning, convsync_sources};
use convsync::store::Store;
use convsync::sync::{CycleOutcome, WalkCursor};
use convsync::time::Timestamp;
use convsync_sim::{
    ConversationState, MessageKind, Mutation, Platform, SimHandle, SimOptions, Simulator,
    TruthConversation,
};
use tokio_util::sync::CancellationToken;

use crate::provider::spruce::{CLINIC, SpruceBed, open_conversations, with_messages};
use crate::support::StorePool;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::world::one_provider;
use crate::support::{TestDb, schedule};

/// The default `reply_state_horizon`.
const HORIZON: Duration = Duration::from_secs(30 * 86_400);

fn open(t: &TruthConversation) -> bool {
    t.state != ConversationState::Archived && !t.deleted
}

/// Open conversations whose activity (or creation) lies at or after `start`.
fn open_since(truth: &[TruthConversation], start: Timestamp) -> u64 {
    truth
        .iter()
        .filter(|t| open(t) && Timestamp::from(t.last_activity_at.unwrap_or(t.created_at)) >= start)
        .count() as u64
}

/// Conversations whose follow-up still waits.
async fn queued(store: &Store, source: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT conversation_id FROM follow_ups WHERE source = ?")
        .bind(source)
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// Spruce's first sync lists every conversation once (the `created` walk, ⌈N/200⌉ pages)
/// plus one page of the `activity` delta from where that listing began, and reads items
/// only for the open conversations active within the horizon: 90 days of history, 30 of
/// them inside it.
#[tokio::test]
async fn spruce_first_sync_lists_once_and_reads_items_inside_the_horizon() {
    let bed = SpruceBed::start(450, |o| o.history = Duration::from_secs(90 * 86_400)).await;
    let app = bed
        .app_with(
            200,
            Schedule {
                reply_state_horizon: HORIZON,
                max_follow_ups_per_cycle: 1000,
                ..schedule()
            },
        )
        .await;

    let before = Timestamp::now();
    app.sync_caught_up(Sweep::IfDue).await;
    let after = Timestamp::now();

    assert_eq!(
        bed.list_requests(),
        3 + 1,
        "⌈450/200⌉ pages of one full listing, one page of the other delta"
    );
    let truth = bed.truth().await;
    let items = bed.item_requests();
    // The horizon moves with the clock: bracket it by the sync's start and end.
    let (fewest, most) = (
        open_since(&truth, after.saturating_sub(HORIZON)),
        open_since(&truth, before.saturating_sub(HORIZON)),
    );
    assert!(
        (fewest..=most).contains(&items),
        "{items} items requests; {fewest}..={most} open conversations inside the horizon"
    );
    let all_open = open_conversations(&bed).await;
    assert!(
        items < all_open,
        "dormant open conversations are not read ({items} of {all_open})"
    );
    assert_eq!(
        app.mirror(CLINIC).await.len(),
        truth.len(),
        "every conversation is mirrored"
    );
    assert_eq!(bed.throttled(), 0);

    // A delta with K changed conversations: one page per delta walk, one items request per
    // changed conversation.
    let ids = with_messages(&bed).await;
    let recent: Vec<&String> = ids
        .iter()
        .filter(|id| {
            truth.iter().any(|t| {
                &t.id == *id
                    && Timestamp::from(t.last_activity_at.unwrap_or(t.created_at))
                        >= before.saturating_sub(HORIZON)
            })
        })
        .take(3)
        .collect();
    for id in &recent {
        bed.message(id, MessageKind::Inbound);
    }
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        (bed.list_requests(), bed.item_requests()),
        (2, recent.len() as u64),
        "a delta costs one page per walk and one items request per changed conversation"
    );
}

/// A backlog of items follow-ups is read newest activity first: those are the
/// conversations most likely to be waiting for a reply.
#[tokio::test]
async fn the_items_backlog_is_read_newest_activity_first() {
    let bed = SpruceBed::start(60, |_| {}).await;
    let app = bed
        .app_with(
            200,
            Schedule {
                max_follow_ups_per_cycle: 10,
                ..schedule()
            },
        )
        .await;

    let outcome = app.cycle(CLINIC, Sweep::IfDue).await;
    assert!(matches!(outcome, CycleOutcome::MoreToDo), "{outcome:?}");

    let mut open: Vec<TruthConversation> = bed.truth().await.into_iter().filter(open).collect();
    // Newest activity first; conversations without messages last.
    open.sort_by_key(|t| std::cmp::Reverse(t.last_activity_at.map(|a| (1, a))));
    let (read, waiting) = open.split_at(10);
    let queued = queued(app.store(), CLINIC).await;
    for t in read {
        assert!(
            !queued.contains(&t.id),
            "{} is among the 10 newest: read first",
            t.id
        );
    }
    for t in waiting {
        assert!(queued.contains(&t.id), "{} still waits", t.id);
    }
    assert_eq!(bed.item_requests(), 10);
}

/// Who spoke last, as the mirror holds it: (direction, awaiting_reply).
async fn reply_state(app: &TestApp, id: &str) -> (Option<String>, Option<bool>) {
    let row = &app.mirror(CLINIC).await[id];
    (row.last_message_direction.clone(), row.awaiting_reply)
}

fn mirror_text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| Timestamp::from(t).to_mirror_text())
}

/// After long downtime, a conversation whose activity moved while it lay outside the
/// horizon costs no items request, and the who-spoke-last the mirror held (which described
/// an older message) becomes unknown instead of staying wrong.
#[tokio::test]
async fn activity_outside_the_horizon_makes_reply_state_unknown() {
    let bed = SpruceBed::start(30, |o| {
        o.clock_start = Some(chrono::Utc::now() - chrono::Duration::days(10));
    })
    .await;
    // The organization's clock runs ten days behind: a skew and lookback that wide keep
    // its messages within the deltas' reach (the horizon is measured on convsync's clock).
    let wide = Schedule {
        max_clock_skew: Duration::from_secs(20 * 86_400),
        lookback: Duration::from_secs(20 * 86_400),
        ..schedule()
    };
    let app = bed.app_with(200, wide.clone()).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let mut known = None;
    for id in with_messages(&bed).await {
        let state = reply_state(&app, &id).await;
        if state.0.is_some() && state.1.is_some() {
            known = Some(id);
            break;
        }
    }
    let id = known.expect("an open conversation whose reply state was read");
    drop(app);

    bed.message(&id, MessageKind::Inbound);
    let app = bed
        .app_with(
            200,
            Schedule {
                reply_state_horizon: Duration::from_secs(5 * 86_400),
                ..wide
            },
        )
        .await;
    bed.sim.reset_counts();
    app.sync_caught_up(Sweep::IfDue).await;

    assert_eq!(
        bed.item_requests(),
        0,
        "ten-day-old activity is outside a 5-day horizon"
    );
    assert_eq!(reply_state(&app, &id).await, (None, None));
    let truth = bed.truth().await;
    let t = truth.iter().find(|t| t.id == id).unwrap();
    let activity = app.mirror(CLINIC).await[&id].last_activity_at.clone();
    assert_eq!(activity, mirror_text(t.last_activity_at));
}

/// A conversation archived when first listed has its items skipped; when a patient's
/// message reopens it, its items are read from the start, not only after the activity the
/// listing showed, so its older outbound message is known too.
#[tokio::test]
async fn a_reopened_conversation_reads_its_reply_state_from_the_start() {
    let bed = SpruceBed::start(60, |_| {}).await;
    let app = bed.app(200).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let truth = bed.truth().await;
    let archived = truth
        .iter()
        .find(|t| {
            t.state == ConversationState::Archived
                && !t.deleted
                && t.last_outbound_at.is_some()
                && t.last_outbound_at < t.last_activity_at
        })
        .expect("an archived conversation the care team answered before its last message");
    assert_eq!(reply_state(&app, &archived.id).await, (None, None));

    bed.message(&archived.id, MessageKind::Inbound);
    app.sync_caught_up(Sweep::IfDue).await;

    let truth = bed.truth().await;
    let now = truth.iter().find(|t| t.id == archived.id).unwrap();
    assert_eq!(
        now.state,
        ConversationState::Active,
        "the message reopened it"
    );
    let outbound = app.mirror(CLINIC).await[&archived.id]
        .last_outbound_at
        .clone();
    assert_eq!(outbound, mirror_text(now.last_outbound_at));
    assert_eq!(
        reply_state(&app, &archived.id).await,
        (Some("inbound".to_owned()), Some(true))
    );
}

/// One account of one provider with `n` conversations, no background activity and a
/// frozen clock, and the daemon built from the configuration `convsync_sources` generates:
/// every setting at its product default, page sizes included.
struct DefaultsBed {
    sim: SimHandle,
    provider: Platform,
    account: String,
    app: TestApp,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

impl DefaultsBed {
    async fn start(provider: Platform, n: u32) -> DefaultsBed {
        DefaultsBed::start_with(provider, n, |_| {}).await
    }

    /// As [`DefaultsBed::start`], with simulator options changed by `tune` (the engine's
    /// settings stay at the defaults).
    async fn start_with(
        provider: Platform,
        n: u32,
        tune: impl FnOnce(&mut SimOptions),
    ) -> DefaultsBed {
        let mut options = SimOptions {
            conversations: n,
            ..one_provider(provider, 1)
        };
        tune(&mut options);
        let sim = Simulator::start(options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let generated = convsync_sources(
            &sim,
            &SecretPlacement::Files(dir.path().join("secrets")),
            &SourceTuning::default(),
        );
        generated.write_secret_files().unwrap();
        let db = TestDb::new();
        let path = dir.path().join("convsync.toml");
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"{}\"\n\n{}",
                db.settings.url, generated.toml
            ),
        )
        .unwrap();
        let app = spawn_app(&db.load_config(&path)).await;
        let accounts = sim.accounts();
        let account = match provider {
            Platform::D365 => accounts.d365[0].account.clone(),
            Platform::Spruce => accounts.spruce[0].account.clone(),
            Platform::Sinch => accounts.sinch[0].account.clone(),
            Platform::HighLevel => accounts.highlevel[0].account.clone(),
        };
        DefaultsBed {
            sim,
            provider,
            account,
            app,
            _db: db,
            _dir: dir,
        }
    }

    /// `sync --once` until caught up; the requests it cost.
    async fn sync(&self) -> Cost {
        self.sim.reset_counts();
        self.app.sync_caught_up(Sweep::IfDue).await;
        self.cost()
    }

    /// Requests answered since the last reset: listing routes, per-conversation follow-up
    /// routes (`{id}` in the route) and token requests, split by route suffix where a
    /// provider has two listings.
    fn cost(&self) -> Cost {
        let counts = self.sim.request_counts();
        let mut cost = Cost::default();
        for e in counts
            .entries
            .iter()
            .filter(|e| e.provider == self.provider)
        {
            if e.endpoint.contains("token") {
                cost.tokens += e.count;
            } else if e.endpoint.contains("{id}") {
                cost.follow_ups += e.count;
            } else if e.endpoint.ends_with(":recent") {
                cost.recent += e.count;
            } else {
                cost.listing += e.count;
            }
        }
        cost
    }

    /// Live conversations, as the simulator holds them.
    async fn truth(&self) -> Vec<TruthConversation> {
        self.sim
            .truth(self.provider, &self.account)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| !t.deleted)
            .collect()
    }

    /// Conversations whose listing time (D365: creation; the others: last message) lies
    /// within the provider's default lookback below the newest: the rows a delta re-reads
    /// (never rewrites) because its walk starts at `watermark − lookback`.
    async fn in_lookback(&self) -> u64 {
        let kind = match self.provider {
            Platform::D365 => ProviderKind::D365,
            Platform::Spruce => ProviderKind::Spruce,
            Platform::Sinch => ProviderKind::Sinch,
            Platform::HighLevel => ProviderKind::Highlevel,
        };
        let lookback = chrono::Duration::from_std(kind.defaults().lookback).unwrap();
        let listed = |t: &TruthConversation| match self.provider {
            Platform::D365 => (t.state == ConversationState::Active).then_some(t.created_at),
            _ => t.last_activity_at,
        };
        let truth = self.truth().await;
        let newest = truth.iter().filter_map(listed).max().unwrap();
        truth
            .iter()
            .filter_map(listed)
            .filter(|at| *at >= newest - lookback)
            .count() as u64
    }

    /// K changes a delta must list: new conversations for D365 (its listing is by
    /// creation time), an inbound message on K active conversations elsewhere; the
    /// simulated clock moves 50 ms between them so that they share no timestamp.
    async fn change(&self, k: usize) {
        if self.provider == Platform::D365 {
            for _ in 0..k {
                self.sim.advance_clock(Duration::from_millis(50));
                self.sim
                    .create_conversations(self.provider, &self.account, 1)
                    .unwrap();
            }
            return;
        }
        let ids: Vec<String> = self
            .truth()
            .await
            .into_iter()
            .filter(|t| t.state == ConversationState::Active)
            .map(|t| t.id)
            .take(k)
            .collect();
        assert_eq!(ids.len(), k, "enough active conversations to change");
        for id in ids {
            self.sim.advance_clock(Duration::from_millis(50));
            self.sim
                .add_message(self.provider, &self.account, &id, MessageKind::Inbound)
                .unwrap();
        }
    }

    /// Spruce API requests answered so far, refused ones included.
    fn spruce_requests(&self) -> u64 {
        self.sim.request_counts().total(Platform::Spruce, "/v1/")
    }

    /// Live rows of the bed's one source.
    async fn mirrored(&self) -> u64 {
        let source = &self.app.engine().sources()[0].name;
        let mirror = self.app.mirror(source).await;
        mirror.values().filter(|r| !r.is_deleted()).count() as u64
    }
}

/// Requests of one sync, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct Cost {
    /// The plain listing (D365 and HighLevel: the only one; Sinch: `/conversations`).
    listing: u64,
    /// Sinch's `conversations:recent`.
    recent: u64,
    follow_ups: u64,
    tokens: u64,
}

/// ⌈rows / page⌉, at least one request (an empty listing is still one answer).
fn pages(rows: u64, page: u64) -> u64 {
    rows.div_ceil(page).max(1)
}

/// D365 at the defaults (page size 250, its maximum; `messages` off): a first sync of N is
/// one listing of the active conversations, ⌈active / 250⌉ requests, plus one token, and a
/// delta of K new conversations is ⌈(K + rows in the lookback) / 250⌉ — the minimum: the
/// API has no other listing and no cheaper token.
#[tokio::test]
async fn d365_first_sync_and_delta_are_at_the_minimum() {
    let bed = DefaultsBed::start(Platform::D365, 700).await;
    let first = bed.sync().await;
    let active = bed
        .truth()
        .await
        .iter()
        .filter(|t| t.state == ConversationState::Active)
        .count() as u64;
    assert!(active > 500, "more than two pages of active conversations");
    assert_eq!(
        first,
        Cost {
            listing: pages(active, 250),
            tokens: 1,
            ..Cost::default()
        }
    );
    assert_eq!(bed.mirrored().await, active);

    let overlap = bed.in_lookback().await;
    bed.change(300).await;
    let delta = bed.sync().await;
    assert_eq!(
        delta,
        Cost {
            listing: pages(300 + overlap, 250),
            ..Cost::default()
        },
        "{overlap} rows in the lookback; the cached token is reused"
    );
    assert_eq!(delta.listing, 2, "300 new conversations fit two pages");
    assert_eq!(bed.mirrored().await, active + 300);
}

/// Sinch at the defaults: a first sync of N lists `conversations:recent` once at its
/// maximum page (⌈N / 50⌉) and runs the inventory sweep (⌈active / 20⌉ + ⌈inactive / 20⌉),
/// plus one token. One listing is the minimum for the mirror's rows, but not for what they
/// hold: only `:recent` names who spoke last and only `/conversations` is documented to
/// list inactive and message-less conversations, so neither can stand in for the other
/// (docs/providers/sinch.md). A delta of K is ⌈(K + rows in the lookback + 1) / 50⌉ on
/// `:recent` alone: the row at or below the watermark ends the walk.
#[tokio::test]
async fn sinch_first_sync_and_delta_are_at_the_documented_minimum() {
    let bed = DefaultsBed::start(Platform::Sinch, 700).await;
    let first = bed.sync().await;
    let truth = bed.truth().await;
    let n = truth.len() as u64;
    let active = truth
        .iter()
        .filter(|t| t.state == ConversationState::Active)
        .count() as u64;
    assert!(active > 0 && active < n, "both kinds");
    assert_eq!(
        first,
        Cost {
            recent: pages(n, 50),
            listing: pages(active, 20) + pages(n - active, 20),
            tokens: 1,
            ..Cost::default()
        }
    );
    assert_eq!(bed.mirrored().await, n);

    let overlap = bed.in_lookback().await;
    bed.change(120).await;
    let delta = bed.sync().await;
    assert_eq!(
        delta,
        Cost {
            recent: pages(120 + overlap + 1, 50),
            ..Cost::default()
        },
        "{overlap} rows in the lookback; the cached token is reused"
    );
    assert_eq!(delta.recent, 3, "121 rows or more: three pages of 50");
}

/// HighLevel at the defaults (page size 100, no follow-ups, private integration token): a
/// first sync of N costs ⌈N / 99⌉ pages, not the ⌈N / 100⌉ of a listing that could be
/// resumed after a row: `startAfterDate` is a time, so each page starts again at its
/// boundary millisecond and re-reads that row — the price of never losing a tie at a page
/// boundary (docs/providers/highlevel.md). A delta of K is ⌈(K + rows in the lookback +
/// 1) / 99⌉.
#[tokio::test]
async fn highlevel_first_sync_and_delta_are_at_the_documented_minimum() {
    let bed = DefaultsBed::start(Platform::HighLevel, 700).await;
    let first = bed.sync().await;
    let n = bed.truth().await.len() as u64;
    assert_eq!(
        first,
        Cost {
            listing: pages(n, 99),
            ..Cost::default()
        }
    );
    assert_eq!(
        first.listing,
        pages(n, 100) + 1,
        "one page more than ⌈N / 100⌉ at N = {n}"
    );
    assert_eq!(bed.mirrored().await, n);

    let overlap = bed.in_lookback().await;
    bed.change(120).await;
    let delta = bed.sync().await;
    assert_eq!(
        delta,
        Cost {
            listing: pages(120 + overlap + 1, 99),
            ..Cost::default()
        },
        "{overlap} rows in the lookback"
    );
    assert_eq!(delta.listing, 2);
}

/// A new Sinch conversation without a message (`last_received` = 1970) is not in
/// `:recent`'s window, and `/conversations` has no documented order to find it cheaply
/// every cycle, so it reaches the mirror with the next inventory sweep, `sweep_interval`
/// (1 h by default) later, as docs/providers/sinch.md says: the cycles before cost one
/// `:recent` page each, and the sweep costs ⌈active / 20⌉ + ⌈inactive / 20⌉.
#[tokio::test]
async fn a_sinch_conversation_without_messages_waits_for_the_sweep() {
    let bed = DefaultsBed::start(Platform::Sinch, 300).await;
    bed.sync().await;
    let source = bed.app.engine().sources()[0].name.clone();
    let created = bed
        .sim
        .mutate(
            Platform::Sinch,
            &bed.account,
            Mutation::CreateEmptyConversations { count: 1 },
        )
        .unwrap();
    let id = &created[0];
    let truth = bed.truth().await;
    let new = truth.iter().find(|t| &t.id == id).unwrap();
    assert_eq!(
        new.last_activity_at, None,
        "a conversation without messages"
    );
    let in_mirror = || async { bed.app.mirror(&source).await.contains_key(id) };

    // Cycles before the sweep is due: one `:recent` page each, and no sight of it.
    let overlap = bed.in_lookback().await;
    for _ in 0..2 {
        bed.sim.advance_clock(Duration::from_secs(60));
        assert_eq!(
            bed.sync().await,
            Cost {
                recent: pages(overlap + 1, 50),
                ..Cost::default()
            }
        );
        assert!(!in_mirror().await, "not listed by `:recent`");
    }

    // An hour after the last sweep (moved back rather than waited for), the sweep runs.
    let store = bed.app.store();
    let mut cursor = WalkCursor::load_all(store, &source).await.unwrap()["inventory"].clone();
    let interval = ProviderKind::Sinch.defaults().sweep_interval;
    cursor.last_completed_at = cursor.last_completed_at.map(|t| t.saturating_sub(interval));
    store
        .save_cursor(&source, "inventory", &cursor.to_state().unwrap())
        .await
        .unwrap();
    let active = truth
        .iter()
        .filter(|t| t.state == ConversationState::Active)
        .count() as u64;
    let inactive = truth.len() as u64 - active;
    assert_eq!(
        bed.sync().await,
        Cost {
            recent: pages(overlap + 1, 50),
            listing: pages(active, 20) + pages(inactive, 20),
            ..Cost::default()
        },
        "the sweep lists both halves of the inventory, 20 per page"
    );
    assert!(in_mirror().await, "the sweep mirrored it");
}

/// Spruce's documented-style limit: requests per minute per organization.
const SPRUCE_PER_MINUTE: u32 = 100;

/// Changes sent while the backlog drains, and how many conversations each touches.
const ROUNDS: usize = 4;
const PER_ROUND: usize = 3;

/// The id of the newest `sync_runs` row of `source` (0 when none).
async fn last_run_id(store: &Store, source: &str) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM sync_runs WHERE source = ?")
        .bind(source)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Cycles of `source` started after the run `mark`.
async fn cycles_since(store: &Store, source: &str, mark: i64) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM sync_runs WHERE source = ? AND id > ?")
        .bind(source)
        .bind(mark)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// `last_activity_at` of each of `ids`, as the mirror holds it.
async fn mirrored_activity(store: &Store, ids: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let at: Option<String> = sqlx::query_scalar(
            "SELECT last_activity_at FROM conversations WHERE conversation_id = ?",
        )
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap();
        out.push(at);
    }
    out
}

/// One round of activity: the conversations it touched, their activity as the simulator
/// holds it, and the last cycle that began before the change.
struct Round {
    ids: Vec<String>,
    want: Vec<Option<String>>,
    mark: i64,
    /// Spruce requests answered before the change.
    sent: u64,
    /// Follow-ups still queued when the round reached the mirror.
    landed: Option<u64>,
}

/// Deltas first, with every setting at the product default (the configuration
/// `convsync_sources` generates) against Spruce's 100 requests/min: while a first sync's
/// items backlog of more than five minutes' budget drains, each round of new messages
/// reaches the mirror, equal to the simulator's truth, within two cycles that began after
/// it and within the 200 requests two poll intervals allow at the limit (so no cycle read
/// the backlog for longer), and most of the backlog still waits when it does.
///
/// The default Spruce source has no configured quota: it paces on the `s-ratelimit-*`
/// headers (a burst until nothing is left, then a pause of one window), so no request may
/// be refused. The simulator's clock runs in real time here, as its window must renew with
/// the pause. Rounds go out every 30 s, in both phases of the window (sending and paused);
/// cycles are counted from `sync_runs`, not timed.
#[tokio::test]
async fn deltas_reach_the_mirror_within_two_cycles_while_the_backlog_drains() {
    let bed = DefaultsBed::start_with(Platform::Spruce, 2_000, |o| {
        o.frozen_clock = false;
        o.spruce_rate_limit = SPRUCE_PER_MINUTE;
    })
    .await;
    let source = bed.app.engine().sources()[0].name.clone();
    let store = bed.app.store().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let engine = bed.app.engine().clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });

    // The first cycle's walks are done once both deltas completed; its items backlog is
    // then being read. Bounded: 600 × 50 ms.
    let mut listed = false;
    for _ in 0..600 {
        let cursors = WalkCursor::load_all(&store, &source).await.unwrap();
        let done = |walk: &str| {
            cursors
                .get(walk)
                .is_some_and(|c| c.last_completed_at.is_some())
        };
        if done("created") && done("activity") {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed, "the first cycle's walks completed");
    let backlog = queued(&store, &source).await.len() as u64;
    assert!(
        backlog > 5 * u64::from(SPRUCE_PER_MINUTE),
        "a backlog that lasts more than five minutes at the limit ({backlog})"
    );

    // The oldest open conversations: their own items wait at the end of the backlog.
    let mut candidates: Vec<TruthConversation> = bed
        .truth()
        .await
        .into_iter()
        .filter(|t| t.state == ConversationState::Active && t.last_activity_at.is_some())
        .collect();
    candidates.sort_by_key(|t| t.created_at);
    assert!(candidates.len() >= ROUNDS * PER_ROUND);
    let mut candidates = candidates.into_iter().map(|t| t.id);

    // Bounded: 3,000 × 100 ms; a round goes out every 300 ticks.
    let mut rounds: Vec<Round> = Vec::new();
    for tick in 0..3_000 {
        if tick % 300 == 0 && rounds.len() < ROUNDS {
            let ids: Vec<String> = candidates.by_ref().take(PER_ROUND).collect();
            let before = mirrored_activity(&store, &ids).await;
            let mark = last_run_id(&store, &source).await;
            let sent = bed.spruce_requests();
            for id in &ids {
                bed.sim
                    .add_message(Platform::Spruce, &bed.account, id, MessageKind::Inbound)
                    .unwrap();
            }
            let truth = bed.truth().await;
            let want: Vec<Option<String>> = ids
                .iter()
                .map(|id| {
                    let t = truth.iter().find(|t| &t.id == id).unwrap();
                    mirror_text(t.last_activity_at)
                })
                .collect();
            for (was, now) in before.iter().zip(&want) {
                assert_ne!(was, now, "the message moved the activity");
            }
            rounds.push(Round {
                ids,
                want,
                mark,
                sent,
                landed: None,
            });
        }
        for (i, round) in rounds.iter_mut().enumerate() {
            if round.landed.is_some() {
                continue;
            }
            let started_before = cycles_since(&store, &source, round.mark).await;
            let spent_before = bed.spruce_requests() - round.sent;
            let got = mirrored_activity(&store, &round.ids).await;
            let started_after = cycles_since(&store, &source, round.mark).await;
            if got == round.want {
                assert!(
                    started_after <= 2,
                    "round {i} reached the mirror {started_after} cycles after it"
                );
                // Two poll intervals at the limit: no cycle read the backlog for longer.
                let spent = bed.spruce_requests() - round.sent;
                assert!(
                    spent <= 2 * u64::from(SPRUCE_PER_MINUTE),
                    "round {i} reached the mirror {spent} requests after it"
                );
                round.landed = Some(queued(&store, &source).await.len() as u64);
            } else {
                // A third cycle began, so the second ended without the change.
                assert!(
                    started_before < 3,
                    "round {i} was not in the mirror two cycles after it: {got:?}, want {:?}",
                    round.want
                );
                assert!(
                    spent_before <= 2 * u64::from(SPRUCE_PER_MINUTE),
                    "round {i} was not in the mirror {spent_before} requests after it"
                );
            }
        }
        if rounds.len() == ROUNDS && rounds.iter().all(|r| r.landed.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(rounds.len(), ROUNDS);
    let mut last = backlog;
    for (i, round) in rounds.iter().enumerate() {
        let waiting = round.landed.unwrap_or_else(|| panic!("round {i} landed"));
        assert!(
            waiting * 2 > backlog,
            "round {i} landed while most of the backlog still waited ({waiting} of {backlog})"
        );
        // Not monotonic round by round: a delta queues items for the conversations it
        // changed before the backlog's turn comes, some of them outside the first backlog.
        last = waiting;
    }
    assert!(
        last + u64::from(SPRUCE_PER_MINUTE) < backlog,
        "the backlog drained meanwhile ({last} of {backlog} left)"
    );
    let throttled = bed
        .sim
        .request_counts()
        .with_status(Platform::Spruce, "/v1/", Some(429));
    assert_eq!(throttled, 0, "no request was refused");
    assert!(
        bed.spruce_requests() > 2 * u64::from(SPRUCE_PER_MINUTE),
        "the run spanned more than two windows of the limit"
    );
}
