//! Each kind of event, written through the store's own page, absence and retention
//! operations on both backends: one event per changed tracked fact, none for an unchanged
//! row, none without its committed row.

use std::time::Duration;

use convsync::record::{Absence, ConversationRecord, Direction};
use convsync::store::{
    BackfillEvents, CursorState, MassChangeGuard, PageWrite, RetentionPolicy, RunOutcome,
    RunReport, Store, SweepCompletion,
};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

const SOURCE: &str = "src";

/// A conversation whose raw JSON reflects every field set, so each change is a new hash.
fn record(id: &str, activity: Timestamp) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id, "at": activity.to_mirror_text() });
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw.to_string()).unwrap());
    record.created_at = Some(activity);
    record.last_activity_at = Some(activity);
    record.active = Some(true);
    record
}

/// `record` with its raw JSON rewritten from its fields (a changed listing).
fn relisted(mut record: ConversationRecord, note: &str) -> ConversationRecord {
    let raw = serde_json::json!({ "id": record.id, "note": note });
    let fresh = ConversationRecord::new(
        record.id.clone(),
        RawValue::from_string(raw.to_string()).unwrap(),
    );
    record.raw = fresh.raw;
    record
}

fn page<'a>(records: &'a [ConversationRecord], run_id: i64) -> PageWrite<'a> {
    PageWrite {
        source: SOURCE,
        provider: "double",
        account: "acct",
        walk: "delta",
        run_id,
        records,
        rejected: &[],
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: false,
    }
}

fn cursor(position: u32) -> CursorState {
    CursorState::encode(&serde_json::json!({ "position": position })).unwrap()
}

fn ago(seconds: u64) -> Timestamp {
    Timestamp::now().saturating_sub(Duration::from_secs(seconds))
}

/// (kind, old, new, direction) of every event of conversation `id`, in seq order.
type EventShape = (String, Option<String>, Option<String>, Option<String>);

async fn events_of(store: &Store, id: &str) -> Vec<EventShape> {
    store
        .events_after(0, Some(SOURCE), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.conversation_id == id)
        .map(|e| (e.kind, e.old_value, e.new_value, e.direction))
        .collect()
}

fn shape(kind: &str, old: Option<&str>, new: Option<&str>) -> EventShape {
    (kind.into(), old.map(Into::into), new.map(Into::into), None)
}

/// After the backfill, every tracked fact's change writes one event with its old and new
/// value; a re-read unchanged row and a changed untracked field write none.
async fn each_tracked_change_writes_one_event(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let run = store.begin_run(SOURCE).await.unwrap();
    let first = ago(600);
    let mut a = record("a", first);
    a.unread_count = Some(0);
    a.awaiting_reply = Some(false);
    store
        .apply_page(&page(&[a.clone()], run), &cursor(1))
        .await
        .unwrap();
    assert_eq!(
        events_of(&store, "a").await,
        [shape("first_seen", None, Some("false"))]
    );
    let first_seen = &store.events_after(0, None, 10).await.unwrap()[0];
    assert_eq!(
        first_seen.provider_at.as_deref(),
        Some(&*first.to_mirror_text())
    );
    assert_eq!(first_seen.run_id, Some(run));
    // The backfill is over: from now on changes are recorded.
    store
        .finish_run(run, RunOutcome::CaughtUp, &RunReport::default())
        .await
        .unwrap();

    // Read again unchanged, and with only an untracked field changed: no event.
    store
        .apply_page(&page(&[a.clone()], run), &cursor(2))
        .await
        .unwrap();
    a.title = Some("Renamed".into());
    a = relisted(a, "title");
    store
        .apply_page(&page(&[a.clone()], run), &cursor(3))
        .await
        .unwrap();
    assert_eq!(events_of(&store, "a").await.len(), 1);

    // New inbound activity: activity (with its direction), unread and awaiting reply.
    let moved = ago(300);
    a.set_last_message(Direction::Inbound, Some(moved));
    a.last_activity_at = Some(moved);
    a.unread_count = Some(1);
    a.awaiting_reply = Some(true);
    a.assignee = Some("agent-7".into());
    a = relisted(a, "inbound");
    store
        .apply_page(&page(&[a.clone()], run), &cursor(4))
        .await
        .unwrap();
    // Closed, then reopened.
    a.active = Some(false);
    a = relisted(a, "closed");
    store
        .apply_page(&page(&[a.clone()], run), &cursor(5))
        .await
        .unwrap();
    a.active = Some(true);
    a = relisted(a, "reopened");
    store
        .apply_page(&page(&[a.clone()], run), &cursor(6))
        .await
        .unwrap();

    let (first_text, moved_text) = (first.to_mirror_text(), moved.to_mirror_text());
    let mut activity = shape("activity", Some(&first_text), Some(&moved_text));
    activity.3 = Some("inbound".into());
    assert_eq!(
        events_of(&store, "a").await,
        [
            shape("first_seen", None, Some("false")),
            activity,
            shape("assigned", None, Some("agent-7")),
            shape("unread", Some("0"), Some("1")),
            shape("awaiting_reply", Some("false"), Some("true")),
            shape("closed", Some("true"), Some("false")),
            shape("reopened", Some("false"), Some("true")),
        ]
    );

    // A sweep that no longer lists it marks it deleted; listed again, it is restored.
    let b = record("b", ago(500));
    store
        .apply_page(&page(std::slice::from_ref(&b), run), &cursor(7))
        .await
        .unwrap();
    let sweep_started = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut sweep = page(std::slice::from_ref(&b), run);
    sweep.walk = "sweep";
    sweep.touch_seen_before = Some(sweep_started);
    store.apply_page(&sweep, &cursor(1)).await.unwrap();
    let guard = MassChangeGuard {
        max_share: 1.0,
        floor: 10,
    };
    store
        .apply_absence(&SweepCompletion {
            source: SOURCE,
            walk: "sweep",
            run_id: run,
            absence: Absence::Deleted,
            sweep_started_at: sweep_started,
            guard,
            cursor: &cursor(2),
        })
        .await
        .unwrap();
    let deleted = events_of(&store, "a").await;
    assert_eq!(deleted.last().unwrap().0, "deleted", "{deleted:?}");
    assert_eq!(
        events_of(&store, "b").await.len(),
        1,
        "b was listed: no event"
    );
    a = relisted(a, "back");
    store
        .apply_page(&page(&[a.clone()], run), &cursor(8))
        .await
        .unwrap();
    let restored = events_of(&store, "a").await;
    assert_eq!(restored.last().unwrap().0, "restored", "{restored:?}");

    // seq increases, and observed_at is the writing transaction's time.
    let all = store.events_after(0, None, 1000).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        all.iter()
            .all(|e| e.run_id == Some(run) && !e.observed_at.is_empty())
    );
    store.close().await;
}

/// A page transaction dropped before its commit (a crash between pages) leaves neither
/// its rows nor their events; the committed page before it keeps both.
async fn an_uncommitted_page_leaves_no_event(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let committed = [record("kept", ago(60))];
    store
        .apply_page(&page(&committed, 1), &cursor(1))
        .await
        .unwrap();
    let lost = [record("lost-1", ago(50)), record("lost-2", ago(40))];
    let mut open = store.begin_pages().await.unwrap();
    open.apply(&[page(&lost, 1)]).await.unwrap();
    drop(open);

    let events = store.events_after(0, None, 100).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.conversation_id.as_str()).collect();
    assert_eq!(ids, ["kept"]);
    let orphans: i64 = store
        .sql_value(
            "SELECT COUNT(*) FROM conversation_events e WHERE NOT EXISTS (SELECT 1 FROM \
             conversations c WHERE c.source = e.source AND c.conversation_id = e.conversation_id)",
        )
        .await;
    assert_eq!(orphans, 0);
    store.close().await;
}

/// With `[history] backfill = "none"` a source's backfill (everything before its first
/// cycle that caught up) writes no event; once it has caught up, changes and new
/// conversations do.
async fn backfill_none_records_nothing_until_the_first_catch_up(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    store
        .set_backfill_events(BackfillEvents::None)
        .await
        .unwrap();
    let run = store.begin_run(SOURCE).await.unwrap();
    let backfill: Vec<_> = (0..5)
        .map(|i| record(&format!("old-{i}"), ago(900 - i)))
        .collect();
    store
        .apply_page(&page(&backfill, run), &cursor(1))
        .await
        .unwrap();
    // What the backfill learns later (a follow-up's reply state, a re-listed row) is the
    // first known state, not a change.
    let mut learned = backfill[1].clone();
    learned.awaiting_reply = Some(true);
    let learned = relisted(learned, "learned");
    store
        .apply_page(&page(std::slice::from_ref(&learned), run), &cursor(2))
        .await
        .unwrap();
    assert!(store.events_after(0, None, 10).await.unwrap().is_empty());
    store
        .finish_run(run, RunOutcome::CaughtUp, &RunReport::default())
        .await
        .unwrap();

    let run = store.begin_run(SOURCE).await.unwrap();
    let mut changed = backfill[0].clone();
    changed.assignee = Some("agent-1".into());
    let changed = relisted(changed, "assigned");
    let fresh = record("new", ago(10));
    store
        .apply_page(&page(&[changed, fresh], run), &cursor(2))
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = store
        .events_after(0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.conversation_id, e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("old-0".to_owned(), "assigned".to_owned()),
            ("new".to_owned(), "first_seen".to_owned())
        ]
    );
    store.close().await;
}

/// `events_after` trims old events; a conversation deleted by retention takes its events
/// with it.
async fn retention_trims_events_and_deleted_conversations_take_theirs(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let mut ended = record("ended", ago(90 * 86_400));
    ended.active = Some(false);
    store
        .apply_page(&page(&[ended, record("open", ago(60))], 1), &cursor(1))
        .await
        .unwrap();
    assert_eq!(store.events_after(0, None, 10).await.unwrap().len(), 2);

    // Retention's deletion of the long-closed conversation removes its event too.
    store
        .sql_execute(
            "UPDATE conversations SET closed_at = last_activity_at, \
             last_changed_at = last_activity_at WHERE conversation_id = 'ended'",
        )
        .await;
    let deletion = RetentionPolicy {
        delete_closed_after: Some(Duration::from_secs(30 * 86_400)),
        ..RetentionPolicy::default()
    };
    store
        .purge(&deletion, Timestamp::now(), true)
        .await
        .unwrap();
    let left: Vec<String> = store
        .events_after(0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.conversation_id)
        .collect();
    assert_eq!(left, ["open"]);

    // events_after: nothing is old enough yet, then everything is.
    let trim = RetentionPolicy {
        events_after: Some(Duration::from_secs(3600)),
        ..RetentionPolicy::default()
    };
    let counts = store.purge(&trim, Timestamp::now(), true).await.unwrap();
    assert!(counts.values().all(|c| c.events == 0), "{counts:?}");
    let later = Timestamp::now().saturating_add(Duration::from_secs(7200));
    let counts = store.purge(&trim, later, true).await.unwrap();
    assert_eq!(counts[SOURCE].events, 1);
    assert!(store.events_after(0, None, 10).await.unwrap().is_empty());
    store.close().await;
}

/// A backfill's batch (insert-first, as the walks write it) that holds rows the mirror
/// already has and new ones writes `first_seen` for the new ones only, in the page's order,
/// also after the newest row was deleted (SQLite writes them per batch from the rows
/// inserted after the batch's newest row id; migration 0011).
async fn a_batch_of_known_and_new_rows_writes_first_seen_for_the_new_ones(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let run = store.begin_run(SOURCE).await.unwrap();
    let known: Vec<_> = ["k1", "k2", "gone"]
        .iter()
        .map(|id| record(id, ago(900)))
        .collect();
    store
        .apply_page(&page(&known, run), &cursor(1))
        .await
        .unwrap();
    // The newest row goes: a new row may now reuse its row id.
    let forgotten = store
        .sql_execute(&format!(
            "DELETE FROM conversations WHERE source = '{SOURCE}' AND conversation_id = 'gone'"
        ))
        .await;
    assert_eq!(forgotten, 1);
    let batch = [
        record("n1", ago(60)),
        known[0].clone(),
        record("n2", ago(50)),
        known[1].clone(),
        record("gone", ago(40)),
    ];
    let mut first = page(&batch[..3], run);
    first.insert_first = true;
    let mut second = page(&batch[3..], run);
    second.insert_first = true;
    store
        .apply_pages(&[first, second], &cursor(2))
        .await
        .unwrap();
    let seen: Vec<String> = store
        .events_after(0, Some(SOURCE), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "first_seen")
        .map(|e| e.conversation_id)
        .collect();
    assert_eq!(seen, ["k1", "k2", "n1", "n2", "gone"]);
    store.close().await;
}

on_both_stores!(
    each_tracked_change_writes_one_event,
    a_batch_of_known_and_new_rows_writes_first_seen_for_the_new_ones,
    an_uncommitted_page_leaves_no_event,
    backfill_none_records_nothing_until_the_first_catch_up,
    retention_trims_events_and_deleted_conversations_take_theirs,
);
