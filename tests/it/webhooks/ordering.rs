//! The ordering rule, through the store's own event and page writes on both backends:
//! whichever path brings a fact, an older one never overwrites a newer one.

use std::time::Duration;

use convsync::record::{ActivityPatch, ConversationRecord, Direction};
use convsync::store::{
    CursorState, EventChange, EventOutcome, EventWrite, PageWrite, Store, WEBHOOK_RUN_ID,
};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

const SOURCE: &str = "clinic";

fn at(minutes_ago: u64) -> Timestamp {
    Timestamp::parse_rfc3339("2026-12-07T12:00:00Z")
        .unwrap()
        .saturating_sub(Duration::from_secs(minutes_ago * 60))
}

/// A conversation at activity `activity` whose title tells which copy it is.
fn record(id: &str, activity: Timestamp, title: &str) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id, "at": activity.to_mirror_text(), "title": title });
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw.to_string()).unwrap());
    record.last_activity_at = Some(activity);
    record.title = Some(title.to_owned());
    record.active = Some(true);
    record
}

async fn poll(store: &Store, records: &[ConversationRecord]) {
    let run = store.begin_run(SOURCE).await.unwrap();
    let page = PageWrite {
        source: SOURCE,
        provider: "spruce",
        account: "entity_org",
        walk: "activity",
        run_id: run,
        records,
        rejected: &[],
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: false,
    };
    let cursor = CursorState::encode(&serde_json::json!({ "run": run })).unwrap();
    store.apply_page(&page, &cursor).await.unwrap();
}

async fn event(
    store: &Store,
    id: &str,
    changed_at: Timestamp,
    change: EventChange<'_>,
) -> EventOutcome {
    event_of_source(store, id, changed_at, change, None).await
}

/// [`event`] for a source whose polls queue `follow_up_on_activity` when a
/// conversation's activity moves.
async fn event_of_source(
    store: &Store,
    id: &str,
    changed_at: Timestamp,
    change: EventChange<'_>,
    follow_up_on_activity: Option<&str>,
) -> EventOutcome {
    store
        .apply_event(&EventWrite {
            source: SOURCE,
            provider: "spruce",
            account: "entity_org",
            event_id: id,
            kind: "test",
            sent_at: Some(changed_at),
            changed_at: Some(changed_at),
            change,
            follow_up_on_activity,
        })
        .await
        .unwrap()
}

async fn title(store: &Store, id: &str) -> String {
    store
        .sql_value(&format!(
            "SELECT title FROM conversations WHERE source = '{SOURCE}' AND conversation_id = '{id}'"
        ))
        .await
}

async fn deliveries(store: &Store) -> i64 {
    store
        .sql_value("SELECT COUNT(*) FROM webhook_deliveries")
        .await
}

/// An event applied before the poll that lists an older copy: the poll leaves it; the poll
/// listing the same version later changes nothing the event wrote.
async fn event_before_poll(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    poll(&store, &[record("c1", at(30), "first")]).await;
    let fresh = record("c1", at(10), "from the event");
    let outcome = event(&store, "ev1", at(10), EventChange::Conversation(&fresh)).await;
    assert_eq!(outcome, EventOutcome::Applied);
    assert_eq!(title(&store, "c1").await, "from the event");
    let run_of: i64 = store
        .sql_value("SELECT run_id FROM conversations WHERE conversation_id = 'c1'")
        .await;
    assert_eq!(run_of, WEBHOOK_RUN_ID);
    // A page read before the event arrived: older, so stale.
    poll(&store, &[record("c1", at(30), "stale page")]).await;
    assert_eq!(title(&store, "c1").await, "from the event");
    // The next poll at the event's version and later applies as usual.
    poll(&store, &[record("c1", at(5), "newer poll")]).await;
    assert_eq!(title(&store, "c1").await, "newer poll");
    store.close().await;
}

/// The poll saw the newer state first: the older event is stale and changes nothing.
async fn poll_before_event(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    poll(&store, &[record("c1", at(5), "poll")]).await;
    let old = record("c1", at(10), "old event");
    let outcome = event(&store, "ev1", at(10), EventChange::Conversation(&old)).await;
    assert_eq!(outcome, EventOutcome::Stale);
    assert_eq!(title(&store, "c1").await, "poll");
    // Recorded all the same: its retries are duplicates.
    assert_eq!(deliveries(&store).await, 1);
    let outcome = event(&store, "ev1", at(10), EventChange::Conversation(&old)).await;
    assert_eq!(outcome, EventOutcome::Duplicate);
    // An event at the poll's version changes what the poll did not carry.
    let same = record("c1", at(5), "event at the poll's version");
    let outcome = event(&store, "ev2", at(5), EventChange::Conversation(&same)).await;
    assert_eq!(outcome, EventOutcome::Applied);
    assert_eq!(title(&store, "c1").await, "event at the poll's version");
    store.close().await;
}

/// Events without any poll: a conversation event inserts the row, activity patches it, a
/// deletion marks it; activity for a conversation the mirror does not hold waits for the
/// poll.
async fn event_without_poll(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let new = record("c1", at(20), "new");
    assert_eq!(
        event(&store, "ev1", at(20), EventChange::Conversation(&new)).await,
        EventOutcome::Applied
    );
    let inbound = ActivityPatch {
        last_activity_at: Some(at(10)),
        last_inbound_at: Some(at(10)),
        last_outbound_at: None,
        last_message_direction: Some(Direction::Inbound),
        awaiting_reply: Some(true),
    };
    assert_eq!(
        event(
            &store,
            "ev2",
            at(10),
            EventChange::Activity {
                conversation_id: "c1",
                patch: &inbound
            }
        )
        .await,
        EventOutcome::Applied
    );
    let (direction, awaiting): (Option<String>, Option<bool>) = store
        .sql_rows("SELECT last_message_direction, awaiting_reply FROM conversations WHERE conversation_id = 'c1'")
        .await
        .remove(0);
    assert_eq!(direction.as_deref(), Some("inbound"));
    assert_eq!(awaiting, Some(true));
    // An older outbound message arriving late: stale, the inbound one stays newest.
    let older = ActivityPatch {
        last_activity_at: Some(at(15)),
        last_outbound_at: Some(at(15)),
        last_message_direction: Some(Direction::Outbound),
        awaiting_reply: Some(false),
        ..ActivityPatch::default()
    };
    assert_eq!(
        event(
            &store,
            "ev3",
            at(15),
            EventChange::Activity {
                conversation_id: "c1",
                patch: &older
            }
        )
        .await,
        EventOutcome::Stale
    );
    let awaiting: Option<bool> = store
        .sql_value("SELECT awaiting_reply FROM conversations WHERE conversation_id = 'c1'")
        .await;
    assert_eq!(awaiting, Some(true));
    assert_eq!(
        event(
            &store,
            "ev4",
            at(10),
            EventChange::Activity {
                conversation_id: "unknown",
                patch: &inbound
            }
        )
        .await,
        EventOutcome::NotMirrored
    );
    assert_eq!(
        event(
            &store,
            "ev5",
            at(1),
            EventChange::Gone {
                conversation_id: "c1",
                absence: convsync::record::Absence::Deleted
            }
        )
        .await,
        EventOutcome::Applied
    );
    let deleted: i64 = store
        .sql_value("SELECT COUNT(*) FROM conversations WHERE deleted_at IS NOT NULL")
        .await;
    assert_eq!(deleted, 1);
    // Every event is recorded once, whatever it did.
    assert_eq!(deliveries(&store).await, 5);
    store.close().await;
}

/// The same event twice: written once, the second answer a duplicate that writes nothing.
async fn duplicate_is_written_once(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let first = record("c1", at(20), "first");
    assert_eq!(
        event(&store, "ev1", at(20), EventChange::Conversation(&first)).await,
        EventOutcome::Applied
    );
    let changed: String = store
        .sql_value("SELECT CAST(last_changed_at AS TEXT) FROM conversations")
        .await;
    // The retry carries the same id, even if a proxy altered its body.
    let altered = record("c1", at(20), "altered retry");
    assert_eq!(
        event(&store, "ev1", at(20), EventChange::Conversation(&altered)).await,
        EventOutcome::Duplicate
    );
    assert_eq!(title(&store, "c1").await, "first");
    let again: String = store
        .sql_value("SELECT CAST(last_changed_at AS TEXT) FROM conversations")
        .await;
    assert_eq!(again, changed);
    assert_eq!(deliveries(&store).await, 1);
    store.close().await;
}

/// Two events about one conversation arrive in reverse order: the later one wins, the
/// earlier one is stale when it comes.
async fn two_events_reversed(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    poll(&store, &[record("c1", at(30), "poll")]).await;
    // The same activity time, different facts: only the event times order them.
    let later = record("c1", at(30), "archived later");
    let earlier = record("c1", at(30), "renamed earlier");
    assert_eq!(
        event(&store, "ev2", at(2), EventChange::Conversation(&later)).await,
        EventOutcome::Applied
    );
    assert_eq!(
        event(&store, "ev1", at(3), EventChange::Conversation(&earlier)).await,
        EventOutcome::Stale
    );
    assert_eq!(title(&store, "c1").await, "archived later");
    let outcomes: Vec<String> = store
        .sql_column("SELECT outcome FROM webhook_deliveries ORDER BY event_id")
        .await;
    assert_eq!(outcomes, ["stale", "applied"]);
    store.close().await;
}

/// The follow-ups queued for `c1`, each as `kind:since`, or `kind:-` when it reads from
/// the start.
async fn queued(store: &Store) -> Vec<String> {
    store
        .sql_column(&format!(
            "SELECT kind || ':' || CASE WHEN since IS NULL THEN '-' ELSE 'since' END FROM follow_ups
             WHERE source = '{SOURCE}' AND conversation_id = 'c1' ORDER BY kind"
        ))
        .await
}

/// Applies event `id`, an outbound message on `c1` at `at(10)`, from a source whose polls
/// queue Spruce's items when a conversation's activity moves.
async fn outbound_message(store: &Store, id: &str) -> EventOutcome {
    let patch = ActivityPatch {
        last_activity_at: Some(at(10)),
        last_outbound_at: Some(at(10)),
        last_message_direction: Some(Direction::Outbound),
        awaiting_reply: Some(false),
        ..ActivityPatch::default()
    };
    let change = EventChange::Activity {
        conversation_id: "c1",
        patch: &patch,
    };
    event_of_source(store, id, at(10), change, Some("items")).await
}

/// An event that moves a conversation's activity queues the source's on-activity
/// follow-up (Spruce's items, D365's messages), from the activity mirrored before it: the
/// next poll finds the activity already moved and would not queue it. An event that does
/// not move the activity queues nothing.
async fn moved_activity_queues_the_follow_up(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    // Listed while open: who spoke last was read.
    let mut first = record("c1", at(30), "first");
    first.last_inbound_at = Some(at(30));
    first.last_message_direction = Some(Direction::Inbound);
    first.awaiting_reply = Some(true);
    poll(&store, &[first]).await;
    assert_eq!(queued(&store).await, Vec::<String>::new());
    assert_eq!(outbound_message(&store, "ev1").await, EventOutcome::Applied);
    // Queued from the activity mirrored before.
    assert_eq!(queued(&store).await, ["items:since"]);
    // The same activity again (another event id): nothing moves, nothing more is queued.
    outbound_message(&store, "ev2").await;
    assert_eq!(queued(&store).await, ["items:since"]);
    store.close().await;
}

/// An event that moves the activity of a conversation whose reply state was never read
/// (archived or dormant when first listed) queues the follow-up from the start, as a poll
/// does: reading only after the mirrored activity would never read the messages before
/// it, such as the newest outbound one (found by `webhooks::process`).
async fn never_read_reply_state_is_followed_up_from_the_start(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    poll(&store, &[record("c1", at(30), "archived when listed")]).await;
    assert_eq!(outbound_message(&store, "ev1").await, EventOutcome::Applied);
    assert_eq!(queued(&store).await, ["items:-"]);
    store.close().await;
}

on_both_stores!(
    event_before_poll,
    poll_before_event,
    event_without_poll,
    duplicate_is_written_once,
    two_events_reversed,
    moved_activity_queues_the_follow_up,
    never_read_reply_state_is_followed_up_from_the_start
);
