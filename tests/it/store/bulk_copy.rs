//! PostgreSQL's fast path for new rows (a batch of at least `COPY_MIN_ROWS` goes through
//! `COPY` into a staging table) against its slow path (smaller batches: one `unnest`
//! statement): the same records, written as one large page or as pages too small for
//! `COPY`, give the same `RowChange` per record, the same follow-ups and the same rows.

use std::time::Duration;

use convsync::record::{ConversationRecord, Direction};
use convsync::store::postgres::COPY_MIN_ROWS;
use convsync::store::{CursorState, PageOutcome, PageWrite, RowChange, Store};
use convsync::time::Timestamp;
use serde_json::value::RawValue;

use crate::support::TestDb;
use crate::support::stores::Backend;

const SOURCE: &str = "src";
/// The slow side's page size: every batch of new rows stays under `COPY_MIN_ROWS`.
const SMALL_PAGE: usize = 10;

fn raw(value: serde_json::Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

/// Record `i` of a varied first listing: NULLs in every optional column, unicode, NUL
/// characters, a closed row, reply facts, follow-ups, one raw of several MiB.
fn varied(i: usize) -> ConversationRecord {
    let at = Timestamp::parse_rfc3339("2026-03-01T10:00:00.123456Z")
        .unwrap()
        .saturating_sub(Duration::from_secs(i as u64 * 60));
    let id = format!("c{i:03}");
    match i % 6 {
        // Nothing but an id and a raw: every optional column NULL.
        0 => ConversationRecord::new(&id, raw(serde_json::json!({ "id": id }))),
        1 => {
            let name = format!("Zoë 🙂 東京 ＡＢＣ e\u{301} {i}");
            let mut r = ConversationRecord::new(
                format!("ü-ид-{i}"),
                raw(serde_json::json!({ "id": id, "name": name, "tab": "a\tb\nc\\d" })),
            );
            r.contact_name = Some(name);
            r.title = Some("\t\n\\N".to_owned());
            r.last_activity_at = Some(at);
            r
        }
        2 => {
            let text = format!(r#"{{"id":"{id}","note":"a\u0000b"}}"#);
            let mut r =
                ConversationRecord::new(format!("nul\0{i}"), RawValue::from_string(text).unwrap());
            r.contact_name = Some("x\0y".to_owned());
            r.created_at = Some(at);
            r
        }
        3 => {
            let mut r = ConversationRecord::new(&id, raw(serde_json::json!({ "id": id })));
            r.active = Some(false);
            r.status = Some("closed".to_owned());
            r.unread_count = Some(i64::MAX);
            r.detail_on_activity = Some("messages");
            r.last_activity_at = Some(at);
            r
        }
        4 => {
            let mut r = ConversationRecord::new(&id, raw(serde_json::json!({ "id": id })));
            r.active = Some(true);
            r.set_last_message(Direction::Inbound, Some(at));
            r.last_activity_at = Some(at);
            r.detail_on_activity = Some("messages");
            r.channel = Some("sms".to_owned());
            r.contact_phone = Some("+15550100".to_owned());
            r.contact_email = Some("a@example.test".to_owned());
            r.assignee = Some("agent".to_owned());
            r.contact_id = Some("contact".to_owned());
            r
        }
        _ => {
            let huge = if i == 5 { 3 << 20 } else { 1000 };
            let mut r = ConversationRecord::new(
                &id,
                raw(serde_json::json!({ "id": id, "blob": "é".repeat(huge / 2) })),
            );
            r.set_last_message(Direction::Outbound, Some(at));
            r.last_activity_at = Some(at);
            r
        }
    }
}

/// The first listing: 120 varied records, with ids listed twice in the same page (once
/// identical, once changed).
fn first_listing() -> Vec<ConversationRecord> {
    let mut records: Vec<ConversationRecord> = (0..120).map(varied).collect();
    records.insert(31, varied(30));
    let mut changed = varied(40);
    changed.contact_name = Some("renamed".to_owned());
    changed.raw = raw(serde_json::json!({ "id": "c040", "renamed": true }));
    records.insert(45, changed);
    records
}

/// The second listing: every first record again (some changed: a new name, moved
/// activity, reopened, listed twice) and 80 new ones.
fn second_listing() -> Vec<ConversationRecord> {
    let later = Timestamp::parse_rfc3339("2026-03-02T08:00:00Z").unwrap();
    let mut records = Vec::new();
    for i in 0..120 {
        let mut r = varied(i);
        match i % 10 {
            7 => {
                r.last_activity_at = Some(later);
                r.raw = raw(serde_json::json!({ "id": r.id, "moved": true }));
            }
            9 if i % 6 == 3 => r.active = Some(true),
            _ => {}
        }
        records.push(r);
        if i % 25 == 0 {
            records.push(varied(200 + i));
        }
    }
    records.extend((300..380).map(varied));
    records
}

fn page<'a>(records: &'a [ConversationRecord], sweep: bool) -> PageWrite<'a> {
    PageWrite {
        source: SOURCE,
        provider: "double",
        account: "acct",
        walk: if sweep { "sweep" } else { "delta" },
        run_id: 1,
        records,
        rejected: &[],
        follow_ups: &[],
        // Every row written before this page was last seen before it.
        touch_seen_before: sweep.then(Timestamp::now),
        insert_first: !sweep,
    }
}

/// Writes `records` in one transaction: as one page (`small_pages` false: the fast path)
/// or as pages of [`SMALL_PAGE`] applied one by one (the slow path). Answers the
/// `RowChange`s of all records, in order, with the summed counts.
async fn write(
    store: &Store,
    records: &[ConversationRecord],
    sweep: bool,
    small_pages: bool,
) -> PageOutcome {
    let mut open = store.begin_pages().await.unwrap();
    let mut all = PageOutcome::default();
    let chunk = if small_pages {
        SMALL_PAGE
    } else {
        records.len()
    };
    for part in records.chunks(chunk) {
        for outcome in open.apply(&[page(part, sweep)]).await.unwrap() {
            all.counts += outcome.counts;
            all.rows.extend(outcome.rows);
        }
    }
    let cursor = CursorState::encode(&serde_json::json!({ "at": 1 })).unwrap();
    open.commit(SOURCE, page(&[], sweep).walk, &cursor)
        .await
        .unwrap();
    all
}

/// The mirror's rows and follow-ups, with the transaction times replaced by which
/// transaction wrote them (1 or 2), the only part that may differ between two databases.
async fn contents(store: &Store) -> Vec<String> {
    let pool = store.as_postgres().unwrap().pool();
    let rows: Vec<String> = sqlx::query_scalar(
        "WITH t AS (SELECT min(first_seen_at) AS first FROM conversations),
              w AS (SELECT c.*, t.first FROM conversations c, t)
         SELECT concat_ws(' | ',
             (to_jsonb(w) - 'first' - 'first_seen_at' - 'last_seen_at' - 'last_changed_at'
                 - 'closed_at')::text,
             CASE WHEN first_seen_at = first THEN 1 ELSE 2 END,
             CASE WHEN last_seen_at = first THEN 1 ELSE 2 END,
             CASE WHEN last_changed_at = first THEN 1 ELSE 2 END,
             CASE WHEN closed_at IS NULL THEN 0 WHEN closed_at = first THEN 1 ELSE 2 END)
         FROM w ORDER BY conversation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let follow_ups: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' | ', conversation_id, kind, since::text, position, attempts)
         FROM follow_ups ORDER BY conversation_id, kind",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().chain(follow_ups).collect()
}

/// Two empty PostgreSQL mirrors.
async fn two_mirrors() -> ((TestDb, Store), (TestDb, Store)) {
    let fast = TestDb::on(Backend::Postgres).await;
    let slow = TestDb::on(Backend::Postgres).await;
    let (fast_store, slow_store) = (fast.open().await, slow.open().await);
    ((fast, fast_store), (slow, slow_store))
}

/// A delta's pages (insert first) and then a sweep's pages (look up first, touching
/// unchanged rows) give the same outcomes and the same mirror through `COPY` as through
/// `unnest`, duplicates, NULLs, unicode, NUL characters and a raw of several MiB included.
#[tokio::test]
async fn copying_new_rows_writes_what_binding_arrays_writes() {
    let first = first_listing();
    let second = second_listing();
    assert!(SMALL_PAGE < COPY_MIN_ROWS && first.len() >= COPY_MIN_ROWS);
    let ((_fast_db, fast), (_slow_db, slow)) = two_mirrors().await;

    for (listing, sweep) in [(&first, false), (&second, true)] {
        let fast_outcome = write(&fast, listing, sweep, false).await;
        let slow_outcome = write(&slow, listing, sweep, true).await;
        assert_eq!(fast_outcome, slow_outcome, "sweep: {sweep}");
        // The time of the second transaction differs from the first's.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fast_contents = contents(&fast).await;
    assert_eq!(fast_contents, contents(&slow).await);

    // The cases the comparison is meant to cover did occur.
    let again = write(&fast, &second, true, false).await;
    assert!(again.rows.iter().all(|r| *r == RowChange::Unchanged));
    assert_eq!(again.counts.unchanged as usize, second.len());
    let pool = fast.as_postgres().unwrap().pool();
    let only_seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM conversations
         WHERE last_seen_at > last_changed_at AND last_changed_at = first_seen_at",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(only_seen > 0, "rows a sweep only touched");
    let huge: i64 =
        sqlx::query_scalar("SELECT max(octet_length(raw::text))::bigint FROM conversations")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(huge > 3 << 20);
}

/// Listed twice in one large batch of new rows, an id is inserted once, from its first
/// copy; the second copy is compared with it, so a changed copy is an update and an equal
/// one unchanged, exactly as with small batches.
#[tokio::test]
async fn an_id_listed_twice_in_a_copied_batch_is_inserted_once() {
    let mut records: Vec<ConversationRecord> = (0..COPY_MIN_ROWS).map(varied).collect();
    records.push(varied(0));
    let mut renamed = varied(4);
    renamed.contact_name = Some("renamed".to_owned());
    renamed.raw = raw(serde_json::json!({ "id": "c004", "renamed": true }));
    records.push(renamed);
    let ((_fast_db, fast), (_slow_db, slow)) = two_mirrors().await;

    let fast_outcome = write(&fast, &records, false, false).await;
    let slow_outcome = write(&slow, &records, false, true).await;

    assert_eq!(fast_outcome, slow_outcome);
    assert_eq!(
        fast_outcome.rows[COPY_MIN_ROWS..],
        [
            RowChange::Unchanged,
            RowChange::Updated {
                activity_moved: false
            }
        ]
    );
    assert_eq!(contents(&fast).await, contents(&slow).await);
}
