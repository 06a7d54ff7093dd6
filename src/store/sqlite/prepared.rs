//! New rows through prepared statements on the SQLite handle of the connection that holds
//! the transaction.
//!
//! sqlx runs every statement on its connection's worker thread and hands it a copy of every
//! argument, one round trip per statement. A backfill inserts tens of thousands of rows a
//! second through the same two statements, and those round trips and copies cost more than
//! SQLite's own work (BENCHMARKS.md). So new rows, and the follow-ups they queue, are
//! written here: one synchronous call per batch, each row bound in place to a statement
//! prepared once per batch. The transaction stays sqlx's: it began and commits there.
//!
//! The batch's `first_seen` events are written here too, by one statement per batch: a row
//! trigger on insert did it before and cost a backfill 40 % even when it wrote nothing
//! (migration 0011).

use rusqlite::{Connection, params};
use sqlx::{Sqlite, Transaction};

use crate::store::StoreError;
use crate::store::upsert::{Hashed, Owner};

const INSERT_CONVERSATION: &str = "INSERT INTO conversations (
    source, conversation_id, provider, account, created_at, last_activity_at, active,
    status, channel, contact_id, contact_name, contact_phone, contact_email, title,
    assignee, unread_count, last_message_direction, last_inbound_at, last_outbound_at,
    awaiting_reply, raw, payload_hash,
    first_seen_at, last_seen_at, last_changed_at, run_id, closed_at, deleted_at)
 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
         ?19, ?20, ?21, ?22, ?23, ?23, ?23, ?24, ?25, NULL)
 ON CONFLICT (source, conversation_id) DO NOTHING";

/// New rows read their details from the start (no `since`); a follow-up already queued
/// for the same conversation keeps the earliest `since` (none), so no message is skipped.
const QUEUE_FOLLOW_UP: &str = "INSERT INTO follow_ups
    (source, conversation_id, kind, since, position, queued_at)
 VALUES (?1, ?2, ?3, NULL, NULL, ?4)
 ON CONFLICT (source, conversation_id, kind) DO UPDATE SET since = NULL, position = NULL";

/// The newest row id before a batch: rows inserted after it have larger ids (SQLite gives a
/// new row the largest id plus one while the largest is below `i64::MAX`, which a mirror's
/// row count never reaches), so `rowid > before` is exactly the batch's new rows.
const LAST_ROW_ID: &str = "SELECT COALESCE(MAX(rowid), 0) FROM conversations";

/// The `first_seen` event of each row inserted after `?1`, in insert order, when the
/// history records one: always with `[history] backfill = "first_seen"`, and with `"none"`
/// once the source's backfill is over (`backfilled_sources`), as docs/schema.md says.
/// `new_value` is whether the contact waited for a reply when first seen.
const WRITE_FIRST_SEEN: &str = "INSERT INTO conversation_events
    (source, conversation_id, kind, new_value, provider_at, observed_at, run_id)
 SELECT c.source, c.conversation_id, 'first_seen',
        CASE c.awaiting_reply WHEN 1 THEN 'true' WHEN 0 THEN 'false' END,
        c.created_at, c.first_seen_at, c.run_id
 FROM conversations c
 WHERE c.rowid > ?1
   AND ((SELECT backfill FROM event_settings) = 'first_seen'
        OR EXISTS (SELECT 1 FROM backfilled_sources b WHERE b.source = c.source))
 ORDER BY c.rowid";

/// Inserts those of `rows` (of `owner`) the mirror does not hold yet and queues the
/// follow-ups they ask for, inside `tx`, at the transaction's time `now` (first seen, last
/// seen, last changed, and closed for rows listed as closed) and their `first_seen` events.
/// Says, row by row, which were inserted (the others are left as they are, for the caller to compare and update).
pub(super) async fn insert_new_rows(
    tx: &mut Transaction<'static, Sqlite>,
    owner: Owner<'_>,
    now: &str,
    rows: &[Hashed<'_>],
) -> Result<Vec<bool>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    with_handle(tx, |conn| write_new_rows(conn, owner, now, rows)).await
}

fn write_new_rows(
    conn: &Connection,
    c: Owner<'_>,
    now: &str,
    rows: &[Hashed<'_>],
) -> rusqlite::Result<Vec<bool>> {
    let before: i64 = conn.query_row(LAST_ROW_ID, [], |row| row.get(0))?;
    let mut insert = conn.prepare(INSERT_CONVERSATION)?;
    let mut inserted = Vec::with_capacity(rows.len());
    for (r, hash) in rows {
        let text = |t: Option<crate::time::Timestamp>| t.map(|t| t.to_mirror_text());
        let changed = insert.execute(params![
            c.source,
            r.id,
            c.provider,
            c.account,
            text(r.created_at),
            text(r.last_activity_at),
            r.active,
            r.status,
            r.channel,
            r.contact_id,
            r.contact_name,
            r.contact_phone,
            r.contact_email,
            r.title,
            r.assignee,
            r.unread_count,
            r.last_message_direction.map(|d| d.as_str()),
            text(r.last_inbound_at),
            text(r.last_outbound_at),
            r.awaiting_reply,
            r.raw.get(),
            &hash[..],
            now,
            c.run_id,
            (r.active == Some(false)).then_some(now),
        ])?;
        inserted.push(changed == 1);
    }
    if inserted.contains(&true) {
        conn.execute(WRITE_FIRST_SEEN, params![before])?;
    }
    let mut queue = None;
    for ((r, _), _) in rows.iter().zip(&inserted).filter(|(_, new)| **new) {
        if let Some(kind) = r.detail_on_activity {
            let queue = match &mut queue {
                Some(statement) => statement,
                None => queue.insert(conn.prepare(QUEUE_FOLLOW_UP)?),
            };
            queue.execute(params![c.source, r.id, kind, now])?;
        }
    }
    Ok(inserted)
}

/// Runs `write` on the SQLite handle of `tx`'s connection. sqlx's worker thread makes no
/// call on the handle while it is locked, and the rusqlite view of it neither closes it nor
/// outlives the lock.
async fn with_handle<R>(
    tx: &mut Transaction<'static, Sqlite>,
    write: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> Result<R, StoreError> {
    let mut locked = tx.lock_handle().await?;
    let raw = locked.as_raw_handle().as_ptr();
    // SAFETY: `raw` is the open handle of a live connection, locked for this thread until
    // `locked` drops; `from_handle` does not take ownership (it never closes it), and the
    // connection is dropped (finalizing its statements) before the lock is released.
    let conn = unsafe { Connection::from_handle(raw) }?;
    let result = on_this_thread(|| write(&conn));
    drop(conn);
    drop(locked);
    Ok(result?)
}

/// Runs blocking SQLite work on the current thread, telling a multi-threaded tokio runtime
/// to move its other tasks elsewhere meanwhile (a current-thread runtime has nowhere else).
fn on_this_thread<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
