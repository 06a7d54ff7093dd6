//! Every store operation on both backends, through the neutral `Store` handle: the same
//! calls must leave the same mirror on SQLite and on PostgreSQL (pages and cursors in one
//! transaction, unchanged rows left alone, the follow-up queue, runs, rejected records,
//! the token vault, sweeps and absences behind the mass-change guard, retention, reports,
//! locks).

use std::collections::BTreeMap;
use std::time::Duration;

use convsync::record::{
    Absence, ActivityPatch, ConversationRecord, DetailRequest, Direction, RejectedRecord,
};
use convsync::secret::Secret;
use convsync::store::{
    AbsenceOutcome, CursorState, DetailWrite, MassChangeGuard, PageWrite, PurgeCounts,
    RenameOutcome, RetentionPolicy, RowChange, RunOutcome, RunReport, Store, StoreError,
    SweepCompletion,
};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

const SOURCE: &str = "src";

/// A conversation with an id, a name and its last activity.
fn record(id: &str, name: &str, activity: Timestamp) -> ConversationRecord {
    let raw = serde_json::json!({ "id": id, "name": name, "at": activity.to_mirror_text() });
    let mut record = ConversationRecord::new(id, RawValue::from_string(raw.to_string()).unwrap());
    record.contact_name = Some(name.to_owned());
    record.last_activity_at = Some(activity);
    record.active = Some(true);
    record
}

/// A page of `records` of the delta walk.
fn page(records: &[ConversationRecord]) -> PageWrite<'_> {
    PageWrite {
        source: SOURCE,
        provider: "double",
        account: "acct",
        walk: "delta",
        run_id: 1,
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

async fn open(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    (db, store)
}

async fn count(store: &Store, from_where: &str) -> i64 {
    store
        .sql_value(&format!("SELECT COUNT(*) FROM {from_where}"))
        .await
}

/// A page and its cursor land together or not at all: a transaction dropped before its
/// commit leaves neither.
async fn a_page_and_its_cursor_land_together_or_not_at_all(backend: Backend) {
    let (_db, store) = open(backend).await;
    let records = [record("a", "Ann", ago(60)), record("b", "Bob", ago(50))];

    let mut open_pages = store.begin_pages().await.unwrap();
    let outcomes = open_pages.apply(&[page(&records)]).await.unwrap();
    assert_eq!(outcomes[0].rows, [RowChange::Inserted, RowChange::Inserted]);
    drop(open_pages);
    assert_eq!(count(&store, "conversations").await, 0);
    assert!(store.load_cursors(SOURCE).await.unwrap().is_empty());

    let counts = store.apply_page(&page(&records), &cursor(2)).await.unwrap();
    assert_eq!((counts.inserted, counts.updated), (2, 0));
    assert_eq!(count(&store, "conversations").await, 2);
    assert_eq!(
        store.load_cursors(SOURCE).await.unwrap()["delta"],
        cursor(2)
    );
}

/// A row read again unchanged is not written; a sweep only refreshes its `last_seen_at`;
/// a changed row is updated and its moved activity queues the follow-up it asks for,
/// reading from the activity already mirrored.
async fn unchanged_rows_are_left_alone_and_changed_rows_updated(backend: Backend) {
    let (_db, store) = open(backend).await;
    let first_activity = ago(600);
    let mut original = record("a", "Ann", first_activity);
    original.detail_on_activity = Some("messages");
    original.set_last_message(Direction::Outbound, Some(first_activity));
    store
        .apply_page(&page(std::slice::from_ref(&original)), &cursor(1))
        .await
        .unwrap();
    // A new row reads its messages from the start.
    let queued = store.pending_follow_ups(SOURCE, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].since, None);
    store
        .apply_details(&[answer(&queued[0], None, None)])
        .await
        .unwrap();
    let changed_at = "SELECT CAST(last_changed_at AS TEXT) FROM conversations";
    let seen_at = "SELECT CAST(last_seen_at AS TEXT) FROM conversations";
    let (changed_before, seen_before): (String, String) = (
        store.sql_value(changed_at).await,
        store.sql_value(seen_at).await,
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut again = store.begin_pages().await.unwrap();
    let outcome = again
        .apply(&[page(std::slice::from_ref(&original))])
        .await
        .unwrap();
    again.commit(SOURCE, "delta", &cursor(2)).await.unwrap();
    assert_eq!(outcome[0].rows, [RowChange::Unchanged]);
    assert_eq!(store.sql_value::<String>(changed_at).await, changed_before);
    assert_eq!(store.sql_value::<String>(seen_at).await, seen_before);

    let sweep = PageWrite {
        walk: "sweep",
        touch_seen_before: Some(Timestamp::now()),
        ..page(std::slice::from_ref(&original))
    };
    let counts = store.apply_page(&sweep, &cursor(1)).await.unwrap();
    assert_eq!(counts.unchanged, 1);
    assert_eq!(store.sql_value::<String>(changed_at).await, changed_before);
    assert_ne!(store.sql_value::<String>(seen_at).await, seen_before);

    let mut edited = record("a", "Ann B.", ago(5));
    edited.detail_on_activity = Some("messages");
    let mut open_pages = store.begin_pages().await.unwrap();
    let outcome = open_pages
        .apply(&[page(std::slice::from_ref(&edited))])
        .await
        .unwrap();
    open_pages
        .commit(SOURCE, "delta", &cursor(3))
        .await
        .unwrap();
    assert_eq!(
        outcome[0].rows,
        [RowChange::Updated {
            activity_moved: true
        }]
    );
    let name: String = store
        .sql_value("SELECT contact_name FROM conversations")
        .await;
    assert_eq!(name, "Ann B.");
    let queued = store.pending_follow_ups(SOURCE, 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].since.map(Timestamp::to_mirror_text),
        Some(first_activity.to_mirror_text()),
        "the follow-up reads the messages after the activity already mirrored"
    );
}

/// A follow-up's answer, with an optional patch and next position.
fn answer<'a>(
    detail: &'a DetailRequest,
    patch: Option<&'a ActivityPatch>,
    next: Option<&'a serde_json::Value>,
) -> DetailWrite<'a> {
    DetailWrite {
        source: SOURCE,
        provider: "double",
        account: "acct",
        run_id: 1,
        detail,
        record: None,
        patch,
        gone: None,
        next,
    }
}

/// The follow-up queue: a page's follow-ups are queued with it, failed ones yield to the
/// others, an answer patches who spoke last and either moves on to its next page or
/// leaves the queue, and a conversation found gone is marked.
async fn follow_ups_are_queued_answered_and_dequeued(backend: Backend) {
    let (_db, store) = open(backend).await;
    let records = [record("a", "Ann", ago(300)), record("b", "Bob", ago(200))];
    let asks: Vec<DetailRequest> = ["a", "b"]
        .into_iter()
        .map(|id| DetailRequest {
            conversation_id: id.to_owned(),
            kind: "messages".to_owned(),
            since: None,
            position: None,
        })
        .collect();
    let with_follow_ups = PageWrite {
        follow_ups: &asks,
        ..page(&records)
    };
    store
        .apply_page(&with_follow_ups, &cursor(1))
        .await
        .unwrap();
    assert_eq!(store.count_follow_ups(SOURCE).await.unwrap(), 2);
    assert_eq!(
        store.follow_up_backlog().await.unwrap(),
        [(SOURCE.to_owned(), 2)]
    );
    let queued = store.pending_follow_ups(SOURCE, 10).await.unwrap();
    let order: Vec<&str> = queued.iter().map(|d| d.conversation_id.as_str()).collect();
    assert_eq!(order, ["b", "a"], "the newest activity first");

    store.defer_follow_up(SOURCE, &queued[0]).await.unwrap();
    let queued = store.pending_follow_ups(SOURCE, 10).await.unwrap();
    let order: Vec<&str> = queued.iter().map(|d| d.conversation_id.as_str()).collect();
    assert_eq!(order, ["a", "b"], "a failed follow-up yields to the others");

    let patch = ActivityPatch {
        last_inbound_at: Some(ago(10)),
        last_message_direction: Some(Direction::Inbound),
        awaiting_reply: Some(true),
        ..ActivityPatch::default()
    };
    let next = serde_json::json!({ "page": 2 });
    let counts = store
        .apply_details(&[answer(&queued[0], Some(&patch), Some(&next))])
        .await
        .unwrap();
    assert_eq!(counts.updated, 1);
    let continued = store.pending_follow_ups(SOURCE, 10).await.unwrap();
    let a = continued.iter().find(|d| d.conversation_id == "a").unwrap();
    assert_eq!(a.position, Some(next.clone()));
    let waiting: i64 = count(&store, "conversations WHERE awaiting_reply = true").await;
    assert_eq!(waiting, 1);
    // The same facts again change nothing.
    let counts = store
        .apply_details(&[answer(a, Some(&patch), None)])
        .await
        .unwrap();
    assert_eq!(counts.updated, 0);
    assert_eq!(store.count_follow_ups(SOURCE).await.unwrap(), 1);

    store.restart_follow_up(SOURCE, &queued[1]).await.unwrap();
    let gone = DetailWrite {
        gone: Some(Absence::Deleted),
        ..answer(&queued[1], None, None)
    };
    let counts = store.apply_details(&[gone]).await.unwrap();
    assert_eq!(counts.updated, 1);
    assert_eq!(
        count(&store, "conversations WHERE deleted_at IS NOT NULL").await,
        1
    );
    assert_eq!(store.count_follow_ups(SOURCE).await.unwrap(), 0);
}

/// A rejected item read again is counted on its first row, not recorded twice.
async fn a_rejected_item_is_recorded_once_and_counted(backend: Backend) {
    let (_db, store) = open(backend).await;
    let bad = [RejectedRecord {
        reason: "no id".to_owned(),
        raw: r#"{"name":"nobody"}"#.to_owned(),
    }];
    let with_rejected = PageWrite {
        rejected: &bad,
        ..page(&[])
    };
    for position in 1..=3 {
        let counts = store
            .apply_page(&with_rejected, &cursor(position))
            .await
            .unwrap();
        assert_eq!(counts.rejected, 1);
    }
    assert_eq!(count(&store, "rejected_records").await, 1);
    let seen: i64 = store
        .sql_value("SELECT times_seen FROM rejected_records")
        .await;
    assert_eq!(seen, 3);
}

/// A completed sweep closes or deletes what it did not see, unless that is too much at
/// once; its cursor is written either way.
async fn a_sweep_applies_its_absences_behind_the_guard(backend: Backend) {
    let (_db, store) = open(backend).await;
    let records: Vec<ConversationRecord> = (0..10)
        .map(|i| record(&format!("c{i}"), "x", ago(1000 - i)))
        .collect();
    store.apply_page(&page(&records), &cursor(1)).await.unwrap();
    let sweep_started_at = Timestamp::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let sweep = PageWrite {
        walk: "sweep",
        touch_seen_before: Some(sweep_started_at),
        ..page(&records[2..])
    };
    store.apply_page(&sweep, &cursor(1)).await.unwrap();
    let guard = MassChangeGuard {
        max_share: 0.5,
        floor: 1,
    };
    let completion = SweepCompletion {
        source: SOURCE,
        walk: "sweep",
        run_id: 2,
        absence: Absence::Closed,
        sweep_started_at,
        guard,
        cursor: &cursor(9),
    };
    assert_eq!(
        store.apply_absence(&completion).await.unwrap(),
        AbsenceOutcome::Applied { count: 2 }
    );
    assert_eq!(
        count(
            &store,
            "conversations WHERE active = false AND closed_at IS NOT NULL"
        )
        .await,
        2
    );
    assert_eq!(
        store.load_cursors(SOURCE).await.unwrap()["sweep"],
        cursor(9)
    );

    // A sweep that saw nothing at all would delete all eight open rows: refused.
    let wipe = SweepCompletion {
        absence: Absence::Deleted,
        sweep_started_at: Timestamp::now(),
        cursor: &cursor(10),
        ..completion
    };
    assert_eq!(
        store.apply_absence(&wipe).await.unwrap(),
        AbsenceOutcome::Refused {
            missing: 10,
            candidates: 10
        }
    );
    assert_eq!(
        count(&store, "conversations WHERE deleted_at IS NOT NULL").await,
        0
    );
    assert_eq!(
        store.load_cursors(SOURCE).await.unwrap()["sweep"],
        cursor(10)
    );
}

/// Runs are recorded with their figures, and runs a dead process left open are marked
/// interrupted; `status` reads them back.
async fn runs_are_recorded_and_reported(backend: Backend) {
    let (_db, store) = open(backend).await;
    let run = store.begin_run(SOURCE).await.unwrap();
    let report = RunReport {
        pages: 2,
        requests: 3,
        inserted: 4,
        updated: 1,
        notes: vec!["first".into(), "second".into()],
        ..RunReport::default()
    };
    store
        .finish_run(run, RunOutcome::CaughtUp, &report)
        .await
        .unwrap();
    let status = store.source_status(SOURCE).await.unwrap();
    let last = status.last_run.unwrap();
    assert_eq!(
        (last.id, last.outcome.as_str(), last.rows_changed),
        (run, "caught_up", 5)
    );
    assert!(last.finished_at.is_some());
    Timestamp::parse_rfc3339(&last.started_at).unwrap();
    assert!(status.last_success_at.is_some());
    let notes: String = store.sql_value("SELECT notes FROM sync_runs").await;
    assert_eq!(notes, "first\nsecond");

    store.begin_run(SOURCE).await.unwrap();
    store.begin_run("other").await.unwrap();
    let interrupted = store.mark_interrupted_runs().await.unwrap();
    assert_eq!(
        interrupted,
        BTreeMap::from([("other".to_owned(), 1), (SOURCE.to_owned(), 1)])
    );
}

/// The refresh-token vault: a saved token reads back clean, "sent" is recorded before a
/// refresh and cleared by an answer, a refused token stays refused, and a configured
/// token marked sent is kept from then on.
async fn the_vault_keeps_what_happened_to_a_token(backend: Backend) {
    let (_db, store) = open(backend).await;
    let key = "highlevel/loc";
    let token = Secret::new("rt-1".to_owned());
    assert!(store.load_refresh_token(key).await.unwrap().is_none());
    store.save_refresh_token(key, &token).await.unwrap();
    let stored = store.load_refresh_token(key).await.unwrap().unwrap();
    assert_eq!(stored.token.expose(), "rt-1");
    assert!(stored.sent_at.is_none() && stored.refused.is_none());

    let sent = || async {
        store
            .load_refresh_token(key)
            .await
            .unwrap()
            .unwrap()
            .sent_at
    };
    store.mark_refresh_sent(key, &token).await.unwrap();
    assert!(sent().await.is_some());
    // Another token's mark does not touch the stored one.
    store
        .mark_refresh_unspent(key, &Secret::new("other".to_owned()))
        .await
        .unwrap();
    assert!(sent().await.is_some());
    store.mark_refresh_unspent(key, &token).await.unwrap();
    assert!(sent().await.is_none());

    store.mark_refresh_refused(key, &token, true).await.unwrap();
    let refused = store
        .load_refresh_token(key)
        .await
        .unwrap()
        .unwrap()
        .refused;
    assert!(refused.is_some_and(|r| r.after_lost_answer));

    let configured = Secret::configured("rt-configured".to_owned());
    store
        .mark_refresh_sent("sinch/app", &configured)
        .await
        .unwrap();
    let kept = store
        .load_refresh_token("sinch/app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.token.expose(), "rt-configured");
    let ages: Vec<String> = store
        .refresh_token_ages()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.vault_key)
        .collect();
    assert_eq!(ages, ["highlevel/loc", "sinch/app"]);
}

/// Walk cursors outside pages: saved one by one, written together, and rewritten (or only
/// shown, in a dry run) walk by walk in name order.
async fn cursors_are_saved_written_and_rewritten(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .save_cursor(SOURCE, "sweep", &cursor(1))
        .await
        .unwrap();
    let walks = BTreeMap::from([("delta".to_owned(), cursor(2)), ("Z".to_owned(), cursor(3))]);
    store.write_cursors(SOURCE, &walks).await.unwrap();
    let mut seen = Vec::new();
    store
        .rewrite_cursors(SOURCE, false, &mut |walk, _| {
            seen.push(walk.to_owned());
            Ok(cursor(0))
        })
        .await
        .unwrap();
    assert_eq!(seen, ["Z", "delta", "sweep"], "byte order, as SQLite sorts");
    assert_eq!(
        store.load_cursors(SOURCE).await.unwrap()["delta"],
        cursor(2)
    );
    store
        .rewrite_cursors(SOURCE, true, &mut |_, _| Ok(cursor(7)))
        .await
        .unwrap();
    let loaded = store.load_cursors(SOURCE).await.unwrap();
    assert!(loaded.values().all(|c| *c == cursor(7)), "{loaded:?}");
}

/// Sources are listed with what the database holds for them, renamed (never onto a name
/// in use) and forgotten.
async fn sources_are_listed_renamed_and_forgotten(backend: Backend) {
    let (_db, store) = open(backend).await;
    store
        .apply_page(&page(&[record("a", "Ann", ago(9))]), &cursor(1))
        .await
        .unwrap();
    store.begin_run("taken").await.unwrap();
    let names: Vec<(String, u64, u64, u64)> = store
        .stored_sources()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.rows, s.walks, s.runs))
        .collect();
    assert_eq!(
        names,
        [(SOURCE.to_owned(), 1, 1, 0), ("taken".to_owned(), 0, 0, 1)]
    );
    assert_eq!(store.source_accounts(SOURCE).await.unwrap(), ["acct"]);
    assert_eq!(
        store.rename_source(SOURCE, "taken").await.unwrap(),
        RenameOutcome::TargetInUse
    );
    assert_eq!(
        store.rename_source("nothing", "new").await.unwrap(),
        RenameOutcome::NothingToRename
    );
    assert_eq!(
        store.rename_source(SOURCE, "renamed").await.unwrap(),
        RenameOutcome::Renamed { rows: 1 }
    );
    assert_eq!(store.load_cursors("renamed").await.unwrap().len(), 1);
    let forgotten = store.forget_source("renamed").await.unwrap();
    assert_eq!((forgotten.rows, forgotten.walks), (1, 1));
    assert_eq!(count(&store, "conversations").await, 0);
}

/// Retention redacts and removes only conversations that ended before the cutoff and did
/// not change since; a dry run changes nothing, an applied purge is recorded.
async fn retention_purges_only_what_ended_long_ago(backend: Backend) {
    let (_db, store) = open(backend).await;
    let mut closed = record("closed", "Carl", ago(100));
    closed.active = Some(false);
    let records = [
        closed,
        record("gone", "Gina", ago(100)),
        record("open", "Olga", ago(100)),
    ];
    store.apply_page(&page(&records), &cursor(1)).await.unwrap();
    let gone = DetailRequest {
        conversation_id: "gone".to_owned(),
        kind: "messages".to_owned(),
        since: None,
        position: None,
    };
    let deleted = DetailWrite {
        gone: Some(Absence::Deleted),
        ..answer(&gone, None, None)
    };
    store.apply_details(&[deleted]).await.unwrap();

    let policy = RetentionPolicy {
        redact_closed_after: Some(Duration::from_secs(86_400)),
        delete_closed_after: Some(Duration::from_secs(2 * 86_400)),
        ..RetentionPolicy::default()
    };
    let in_three_days = Timestamp::now().saturating_add(Duration::from_secs(3 * 86_400));
    let in_a_day_and_a_half = Timestamp::now().saturating_add(Duration::from_secs(129_600));
    let dry = store.purge(&policy, in_three_days, false).await.unwrap();
    assert_eq!(
        dry,
        BTreeMap::from([(
            SOURCE.to_owned(),
            PurgeCounts {
                deleted: 2,
                ..PurgeCounts::default()
            }
        )])
    );
    assert_eq!(count(&store, "conversations").await, 3);

    let applied = store
        .purge(&policy, in_a_day_and_a_half, true)
        .await
        .unwrap();
    assert_eq!(applied[SOURCE].redacted, 2);
    let redacted: Vec<String> = store
        .sql_column(
            "SELECT conversation_id FROM conversations
             WHERE redacted_at IS NOT NULL AND contact_name IS NULL ORDER BY conversation_id",
        )
        .await;
    assert_eq!(redacted, ["closed", "gone"]);
    assert_eq!(count(&store, "retention_purges").await, 1);
    let applied = store.purge(&policy, in_three_days, true).await.unwrap();
    assert_eq!(applied[SOURCE].deleted, 2);
    let left: Vec<String> = store
        .sql_column("SELECT conversation_id FROM conversations")
        .await;
    assert_eq!(left, ["open"]);
}

/// What `status`, readiness and the demo read: counts per source, the sample report and
/// the database's health.
async fn reports_and_probes_read_the_mirror(backend: Backend) {
    let (_db, store) = open(backend).await;
    let inbound = ago(30);
    let mut waiting = record("w", "Wanda", inbound);
    waiting.set_last_message(Direction::Inbound, Some(inbound));
    let mut closed = record("c", "Carl", ago(40));
    closed.active = Some(false);
    store
        .apply_page(&page(&[waiting, closed]), &cursor(1))
        .await
        .unwrap();
    let status = store.source_status(SOURCE).await.unwrap();
    assert_eq!((status.rows, status.active_rows), (2, 1));
    let summaries = store.source_summaries().await.unwrap();
    assert_eq!(summaries.len(), 1);
    let summary = &summaries[0];
    assert_eq!(
        (
            summary.rows,
            summary.open,
            summary.awaiting,
            summary.closed_or_deleted
        ),
        (2, 1, Some(1), 1)
    );
    let longest = store.longest_waiting().await.unwrap();
    assert_eq!(longest.len(), 1);
    assert_eq!(longest[0].contact_name.as_deref(), Some("Wanda"));
    assert_eq!(longest[0].waiting_since, Some(inbound.to_mirror_text()));
    let rows: i64 = store
        .sql_value(&format!(
            "SELECT COUNT(*) FROM ({}) AS report",
            store.waiting_query()
        ))
        .await;
    assert_eq!(rows, 1, "the printed report query runs as printed");

    store.check_writable().await.unwrap();
    store.integrity_check().await.unwrap();
    assert!(store.database_size_bytes().await.unwrap() > 0);
    assert!(store.last_write_failure().is_none());
    assert_eq!(store.applied_migrations().await.unwrap().last(), Some(&11));
}

/// Text a provider sends with NUL characters is mirrored (PostgreSQL stores them as
/// U+FFFD), and reading the same record again writes nothing.
async fn text_with_nul_characters_is_mirrored(backend: Backend) {
    let (_db, store) = open(backend).await;
    let raw = r#"{"id":"n\u0000ul","name":"a\u0000b"}"#;
    let mut nul = ConversationRecord::new("n\0ul", RawValue::from_string(raw.into()).unwrap());
    nul.contact_name = Some("a\0b".to_owned());
    store
        .apply_page(&page(std::slice::from_ref(&nul)), &cursor(1))
        .await
        .unwrap();
    let counts = store
        .apply_page(&page(std::slice::from_ref(&nul)), &cursor(2))
        .await
        .unwrap();
    assert_eq!((counts.inserted, counts.unchanged), (0, 1));
    let name: String = store
        .sql_value("SELECT contact_name FROM conversations")
        .await;
    let expected = match backend {
        Backend::Sqlite => "a\0b",
        Backend::Postgres => "a\u{FFFD}b",
    };
    assert_eq!(name, expected);
}

/// A writer that finds another writer's lock held past `busy_timeout` fails as busy
/// (which `while_busy` waits out), and succeeds once the lock is released.
async fn a_write_blocked_past_the_busy_timeout_is_busy(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let mut settings = db.settings.clone();
    settings.busy_timeout = Duration::from_millis(200);
    let other = Store::open(&settings).await.unwrap();

    let mut holding = store.begin_pages().await.unwrap();
    holding
        .apply(&[page(&[record("a", "Ann", ago(9))])])
        .await
        .unwrap();
    let blocked = other.save_cursor(SOURCE, "delta", &cursor(5)).await;
    assert!(matches!(blocked, Err(StoreError::Busy(_))), "{blocked:?}");
    holding.commit(SOURCE, "delta", &cursor(1)).await.unwrap();
    other
        .save_cursor(SOURCE, "delta", &cursor(5))
        .await
        .unwrap();
    assert_eq!(
        store.load_cursors(SOURCE).await.unwrap()["delta"],
        cursor(5)
    );
}

/// A database that holds someone else's tables is refused before anything is written, and
/// the refusal names it without the password its URL carries.
async fn a_database_that_is_not_convsyncs_is_left_untouched(backend: Backend) {
    let db = TestDb::on(backend).await;
    let mut settings = db.settings.clone();
    if backend == Backend::Postgres {
        // The test cluster trusts loopback, so the password is never asked for.
        settings.url =
            settings
                .url
                .replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    }
    let store = Store::connect(&settings).await.unwrap();
    let _: Vec<i64> = store.sql_column("CREATE TABLE theirs (x INTEGER)").await;

    let refused = store.migrate(&settings.url).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::NotConvsync { .. }),
        "{refused}"
    );
    assert!(!refused.to_string().contains("hunter2"), "{refused}");
    let theirs: i64 = store.sql_value("SELECT COUNT(*) FROM theirs").await;
    assert_eq!(theirs, 0);
    assert!(store.applied_migrations().await.unwrap().is_empty());
}

on_both_stores!(
    a_page_and_its_cursor_land_together_or_not_at_all,
    unchanged_rows_are_left_alone_and_changed_rows_updated,
    follow_ups_are_queued_answered_and_dequeued,
    a_rejected_item_is_recorded_once_and_counted,
    a_sweep_applies_its_absences_behind_the_guard,
    runs_are_recorded_and_reported,
    the_vault_keeps_what_happened_to_a_token,
    cursors_are_saved_written_and_rewritten,
    sources_are_listed_renamed_and_forgotten,
    retention_purges_only_what_ended_long_ago,
    reports_and_probes_read_the_mirror,
    text_with_nul_characters_is_mirrored,
    a_write_blocked_past_the_busy_timeout_is_busy,
    a_database_that_is_not_convsyncs_is_left_untouched,
);
