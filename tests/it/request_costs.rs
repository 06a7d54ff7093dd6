//! What a sync costs in requests, pinned on the simulator: a provider's rate limit, not
//! CPU, decides how long a first sync takes and how fresh the mirror stays (issue #17).
//!
//! Counts, not timings: the first sync lists everything once and reads reply state only
//! where it can matter, the follow-up backlog is read newest activity first, and a due
//! delta runs before the rest of that backlog.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use convsync::config::Schedule;
use convsync::http::RateQuota;
use convsync::sim::{ConversationState, MessageKind, TruthConversation};
use convsync::store::Store;
use convsync::sync::{CycleOptions, CycleOutcome, WalkCursor, run_cycle};
use convsync::time::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::common::{quick_http, schedule};
use crate::provider_spruce::{SpruceBed, open_conversations, sync_caught_up, with_messages};

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

async fn queued(store: &Store) -> Vec<String> {
    sqlx::query_scalar("SELECT conversation_id FROM follow_ups WHERE source = 'clinic'")
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
    let engine = bed
        .engine_with(
            200,
            Schedule {
                reply_state_horizon: HORIZON,
                max_follow_ups_per_cycle: 1000,
                ..schedule()
            },
        )
        .await;

    let before = Timestamp::now();
    sync_caught_up(&engine, false).await;
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
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(engine.store().pool())
        .await
        .unwrap();
    assert_eq!(rows as usize, truth.len(), "every conversation is mirrored");
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
    sync_caught_up(&engine, false).await;
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
    let engine = bed
        .engine_with(
            200,
            Schedule {
                max_follow_ups_per_cycle: 10,
                ..schedule()
            },
        )
        .await;
    let source = Arc::clone(&engine.sources()[0]);

    let outcome = run_cycle(
        &source,
        engine.store(),
        CycleOptions::default(),
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(outcome, CycleOutcome::MoreToDo), "{outcome:?}");

    let mut open: Vec<TruthConversation> = bed.truth().await.into_iter().filter(open).collect();
    // Newest activity first; conversations without messages last.
    open.sort_by_key(|t| std::cmp::Reverse(t.last_activity_at.map(|a| (1, a))));
    let (read, waiting) = open.split_at(10);
    let queued = queued(engine.store()).await;
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

/// Deltas first: against Spruce's 100 requests/min and the default follow-up settings,
/// a large items backlog does not hold back the next delta. A message sent right after
/// the first listing reaches the mirror while most of the backlog still waits (before,
/// the first cycle read up to 500 items, minutes at this rate, before any delta ran).
#[tokio::test]
async fn a_due_delta_runs_before_the_items_backlog() {
    let bed = SpruceBed::start(300, |_| {}).await;
    let mut settings = bed.source(
        "clinic",
        &bed.token(),
        200,
        Schedule {
            // Spruce's shortest poll interval, so that the test waits for few of them.
            poll_interval: Duration::from_secs(10),
            lookback: Duration::from_secs(300),
            max_follow_ups_per_cycle: 500,
            reply_state_horizon: HORIZON,
            ..schedule()
        },
    );
    settings.quota = Some(RateQuota {
        requests: NonZeroU32::new(100).unwrap(),
        per: Duration::from_secs(60),
        burst: NonZeroU32::new(1).unwrap(),
    });
    let engine =
        convsync::sync::Engine::new(bed.db.open().await, &quick_http(), &[settings]).unwrap();
    let store = engine.store().clone();
    let backlog_size = open_conversations(&bed).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });

    // The first cycle's walks (⌈300/200⌉ + 1 pages) are done once both deltas completed;
    // its items backlog is then being read.
    let mut listed = false;
    for _ in 0..600 {
        let cursors = WalkCursor::load_all(&store, "clinic").await.unwrap();
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
    let ids = with_messages(&bed).await;
    let changed = &ids[ids.len() - 2..];
    for id in changed {
        bed.message(id, MessageKind::Inbound);
    }
    let truth = bed.truth().await;
    let want: Vec<Option<String>> = changed
        .iter()
        .map(|id| {
            let t = truth.iter().find(|t| &t.id == id).unwrap();
            t.last_activity_at
                .map(|a| Timestamp::from(a).to_mirror_text())
        })
        .collect();

    // Bounded: 60 s is four poll intervals, and a quarter of the backlog at this rate.
    let mut in_mirror = false;
    let mut waiting = 0;
    for _ in 0..600 {
        let mut got = Vec::new();
        for id in changed {
            let at: Option<String> = sqlx::query_scalar(
                "SELECT last_activity_at FROM conversations WHERE conversation_id = ?",
            )
            .bind(id)
            .fetch_one(store.pool())
            .await
            .unwrap();
            got.push(at);
        }
        if got == want {
            waiting = queued(&store).await.len() as u64;
            in_mirror = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert!(
        in_mirror,
        "the changed conversations' activity reached the mirror"
    );
    assert!(
        waiting * 2 > backlog_size,
        "the delta ran while most of the backlog still waited ({waiting} of {backlog_size})"
    );
    assert_eq!(bed.throttled(), 0);
}

/// Who spoke last, as the mirror holds it: (direction, awaiting_reply).
async fn reply_state(store: &Store, id: &str) -> (Option<String>, Option<i64>) {
    sqlx::query_as(
        "SELECT last_message_direction, awaiting_reply FROM conversations
         WHERE source = 'clinic' AND conversation_id = ?",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// (last_activity_at, last_outbound_at), as the mirror holds them.
async fn activity_times(store: &Store, id: &str) -> (Option<String>, Option<String>) {
    sqlx::query_as(
        "SELECT last_activity_at, last_outbound_at FROM conversations
         WHERE source = 'clinic' AND conversation_id = ?",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await
    .unwrap()
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
    let engine = bed.engine_with(200, wide.clone()).await;
    sync_caught_up(&engine, false).await;
    let mut known = None;
    for id in with_messages(&bed).await {
        let state = reply_state(engine.store(), &id).await;
        if state.0.is_some() && state.1.is_some() {
            known = Some(id);
            break;
        }
    }
    let id = known.expect("an open conversation whose reply state was read");
    drop(engine);

    bed.message(&id, MessageKind::Inbound);
    let engine = bed
        .engine_with(
            200,
            Schedule {
                reply_state_horizon: Duration::from_secs(5 * 86_400),
                ..wide
            },
        )
        .await;
    bed.sim.reset_counts();
    sync_caught_up(&engine, false).await;

    assert_eq!(
        bed.item_requests(),
        0,
        "ten-day-old activity is outside a 5-day horizon"
    );
    assert_eq!(reply_state(engine.store(), &id).await, (None, None));
    let truth = bed.truth().await;
    let t = truth.iter().find(|t| t.id == id).unwrap();
    let (activity, _) = activity_times(engine.store(), &id).await;
    assert_eq!(activity, mirror_text(t.last_activity_at));
}

/// A conversation archived when first listed has its items skipped; when a patient's
/// message reopens it, its items are read from the start, not only after the activity the
/// listing showed, so its older outbound message is known too.
#[tokio::test]
async fn a_reopened_conversation_reads_its_reply_state_from_the_start() {
    let bed = SpruceBed::start(60, |_| {}).await;
    let engine = bed.engine(200).await;
    sync_caught_up(&engine, false).await;
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
    assert_eq!(
        reply_state(engine.store(), &archived.id).await,
        (None, None)
    );

    bed.message(&archived.id, MessageKind::Inbound);
    sync_caught_up(&engine, false).await;

    let truth = bed.truth().await;
    let now = truth.iter().find(|t| t.id == archived.id).unwrap();
    assert_eq!(
        now.state,
        ConversationState::Active,
        "the message reopened it"
    );
    let (_, outbound) = activity_times(engine.store(), &archived.id).await;
    assert_eq!(outbound, mirror_text(now.last_outbound_at));
    assert_eq!(
        reply_state(engine.store(), &archived.id).await,
        (Some("inbound".to_owned()), Some(1))
    );
}
