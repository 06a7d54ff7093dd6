//! The rows of one page (or one follow-up's fresh copy) against the mirror: new rows
//! inserted through the prepared fast path, changed rows updated, unchanged rows left
//! alone (or touched by a sweep), and a per-row [`RowChange`] answered. Everything runs
//! inside the caller's open transaction.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::prepared::{Hashed, RowContext, insert_new_rows};
use super::queue::queue_follow_up;
use crate::record::{ConversationRecord, DetailRequest};
use crate::store::{PageCounts, PageOutcome, RowChange, StoreError};
use crate::time::Timestamp;

#[derive(sqlx::FromRow)]
struct ExistingRow {
    conversation_id: String,
    payload_hash: Vec<u8>,
    last_activity_at: Option<String>,
    last_seen_at: String,
    closed: bool,
    deleted: bool,
    last_message_direction: Option<String>,
    last_inbound_at: Option<String>,
    last_outbound_at: Option<String>,
    awaiting_reply: Option<bool>,
}

struct Existing {
    hash: Vec<u8>,
    last_activity_at: Option<String>,
    last_seen_at: String,
    closed: bool,
    deleted: bool,
    reply: ReplyFacts,
}

/// The who-spoke-last columns as stored. A listing may carry them outside the record's raw
/// JSON (Sinch's recent listing reads them from the last message), so an equal payload
/// hash does not prove they are unchanged.
#[derive(Debug, Clone, PartialEq)]
struct ReplyFacts {
    direction: Option<String>,
    inbound: Option<String>,
    outbound: Option<String>,
    awaiting: Option<bool>,
}

impl ReplyFacts {
    /// The stored facts once `r` is written, by `update_record`'s rules: a fact the record
    /// does not carry is kept, and message times only move forward.
    fn merged(&self, r: &ConversationRecord) -> ReplyFacts {
        let later = |stored: &Option<String>, new: Option<Timestamp>| match (
            stored,
            new.map(|t| t.to_mirror_text()),
        ) {
            (Some(s), Some(n)) if n > *s => Some(n),
            (None, n) => n,
            (s, _) => s.clone(),
        };
        ReplyFacts {
            direction: r
                .last_message_direction
                .map(|d| d.as_str().to_owned())
                .or_else(|| self.direction.clone()),
            inbound: later(&self.inbound, r.last_inbound_at),
            outbound: later(&self.outbound, r.last_outbound_at),
            awaiting: r.awaiting_reply.or(self.awaiting),
        }
    }
}

const SELECT_CHUNK: usize = 400;

/// Writes `records` of one source: rows `inserted` says an insert-first pass already
/// wrote are counted; the others are looked up and inserted, updated (queuing the
/// follow-up a moved activity asks for) or left alone, and a sweep's unchanged rows last
/// seen before `touch_seen_before` are touched. Answers a [`RowChange`] per record.
pub(super) async fn upsert_records(
    tx: &mut Transaction<'static, Sqlite>,
    context: RowContext<'_>,
    records: &[Hashed<'_>],
    touch_seen_before: Option<Timestamp>,
    inserted: &[bool],
) -> Result<PageOutcome, StoreError> {
    let RowContext {
        source,
        run_id,
        now,
        ..
    } = context;
    let mut counts = PageCounts::default();
    let mut rows = vec![RowChange::Unchanged; records.len()];
    // Rows an insert-first pass wrote are done; the others are compared with the mirror.
    let mut to_look_up = Vec::with_capacity(records.len());
    for (i, &(record, hash)) in records.iter().enumerate() {
        if inserted.get(i).copied().unwrap_or(false) {
            counts.inserted += 1;
            rows[i] = RowChange::Inserted;
        } else {
            to_look_up.push((i, (record, hash)));
        }
    }
    let mut existing = load_existing(tx, source, to_look_up.iter().map(|(_, row)| row)).await?;
    let touch_before = touch_seen_before.map(|t| t.to_mirror_text());
    // New rows (with the follow-ups they queue) go in together through `prepared.rs`,
    // and re-listed unchanged rows are touched a chunk at a time: a statement per row
    // through sqlx costs a round trip to its worker thread (see BENCHMARKS.md).
    let mut new_rows = NewRows::default();
    let mut touched: Vec<&str> = Vec::new();
    for &(i, (record, hash)) in &to_look_up {
        let previous = existing.get(&record.id);
        match previous {
            None => {
                counts.inserted += 1;
                rows[i] = RowChange::Inserted;
                new_rows.push(record, hash);
            }
            Some(prev)
                if prev.hash == hash
                    && !prev.deleted
                    && !(prev.closed && record.active == Some(true))
                    && prev.reply.merged(record) == prev.reply =>
            {
                counts.unchanged += 1;
                if touch_before
                    .as_ref()
                    .is_some_and(|before| prev.last_seen_at < *before)
                {
                    touched.push(&record.id);
                }
                continue;
            }
            Some(prev) => {
                let activity_moved = record.last_activity_at.map(|t| t.to_mirror_text())
                    != prev.last_activity_at
                    && record.last_activity_at.is_some();
                // Only messages after the activity already mirrored matter, unless who spoke
                // last was never read (e.g. the row was archived or dormant when first
                // listed, outside the reply-state horizon): then the follow-up reads from
                // the start.
                let reply_never_read = prev.reply.direction.is_none()
                    && prev.reply.inbound.is_none()
                    && prev.reply.outbound.is_none()
                    && prev.reply.awaiting.is_none();
                let previous_activity = prev
                    .last_activity_at
                    .as_deref()
                    .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                    .filter(|_| !reply_never_read);
                // The row may be one of this page's new rows listed twice: insert those first.
                new_rows.flush(tx, context).await?;
                update_record(tx, source, run_id, record, &hash, now).await?;
                counts.updated += 1;
                rows[i] = RowChange::Updated { activity_moved };
                if let (Some(kind), true) = (record.detail_on_activity, activity_moved) {
                    queue_follow_up(
                        tx,
                        source,
                        &DetailRequest {
                            conversation_id: record.id.clone(),
                            kind: kind.to_owned(),
                            since: previous_activity,
                            position: None,
                        },
                        now,
                    )
                    .await?;
                }
                if activity_moved && record.reply_state_unknown {
                    forget_reply_state(tx, source, &record.id).await?;
                    if let Some(stored) = existing.get_mut(&record.id) {
                        stored.reply.direction = None;
                        stored.reply.awaiting = None;
                    }
                }
            }
        }
        // A page may list the same id twice (tie clusters); the second copy compares
        // against what was just written.
        let reply = match existing.get(&record.id) {
            Some(prev) => prev.reply.merged(record),
            None => ReplyFacts {
                direction: record.last_message_direction.map(|d| d.as_str().to_owned()),
                inbound: record.last_inbound_at.map(|t| t.to_mirror_text()),
                outbound: record.last_outbound_at.map(|t| t.to_mirror_text()),
                awaiting: record.awaiting_reply,
            },
        };
        existing.insert(
            record.id.clone(),
            Existing {
                hash: hash.to_vec(),
                last_activity_at: record.last_activity_at.map(|t| t.to_mirror_text()),
                last_seen_at: now.to_owned(),
                closed: record.active == Some(false),
                deleted: false,
                reply,
            },
        );
    }
    new_rows.flush(tx, context).await?;
    touch_rows(tx, source, &touched, now).await?;
    Ok(PageOutcome { counts, rows })
}

/// Clears who spoke last of a row whose activity moved without its reply state being read
/// (outside the source's `reply_state_horizon`): the stored direction and `awaiting_reply`
/// described an older message. The newest inbound and outbound times stay: they are still
/// true, and only ever move forward.
async fn forget_reply_state(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    conversation_id: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE conversations SET last_message_direction = NULL, awaiting_reply = NULL
         WHERE source = ? AND conversation_id = ?",
        source,
        conversation_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load_existing<'r>(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    records: impl ExactSizeIterator<Item = &'r Hashed<'r>>,
) -> Result<HashMap<String, Existing>, StoreError> {
    let mut found = HashMap::with_capacity(records.len());
    let records: Vec<&Hashed<'_>> = records.collect();
    for chunk in records.chunks(SELECT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT conversation_id, payload_hash, last_activity_at, last_seen_at,
                    closed_at IS NOT NULL AS closed, deleted_at IS NOT NULL AS deleted,
                    last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply
             FROM conversations WHERE source = ",
        );
        q.push_bind(source);
        q.push(" AND conversation_id IN (");
        let mut separated = q.separated(", ");
        for (r, _) in chunk {
            separated.push_bind(&r.id);
        }
        q.push(")");
        let rows: Vec<ExistingRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        for row in rows {
            found.insert(
                row.conversation_id,
                Existing {
                    hash: row.payload_hash,
                    last_activity_at: row.last_activity_at,
                    last_seen_at: row.last_seen_at,
                    closed: row.closed,
                    deleted: row.deleted,
                    reply: ReplyFacts {
                        direction: row.last_message_direction,
                        inbound: row.last_inbound_at,
                        outbound: row.last_outbound_at,
                        awaiting: row.awaiting_reply,
                    },
                },
            );
        }
    }
    Ok(found)
}

/// A page's new rows, waiting to be inserted together with the follow-ups they queue.
#[derive(Default)]
struct NewRows<'r> {
    rows: Vec<Hashed<'r>>,
}

impl<'r> NewRows<'r> {
    fn push(&mut self, record: &'r ConversationRecord, hash: [u8; 16]) {
        self.rows.push((record, hash));
    }

    /// Inserts the buffered rows, then queues their follow-ups (new rows read their
    /// details from the start: no `since`).
    async fn flush(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        context: RowContext<'_>,
    ) -> Result<(), StoreError> {
        let inserted = insert_new_rows(tx, context, &self.rows).await?;
        debug_assert!(inserted.iter().all(|new| *new), "looked up as absent");
        self.rows.clear();
        Ok(())
    }
}

/// Refreshes `last_seen_at` of rows a sweep listed unchanged, a chunk of ids at a time.
async fn touch_rows(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    ids: &[&str],
    now: &str,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(SELECT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE conversations SET last_seen_at = ");
        q.push_bind(now);
        q.push(" WHERE source = ");
        q.push_bind(source);
        q.push(" AND conversation_id IN (");
        let mut separated = q.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn update_record(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    run_id: i64,
    r: &ConversationRecord,
    hash: &[u8; 16],
    now: &str,
) -> Result<(), StoreError> {
    // Listing fields a provider does not report (None) keep what follow-ups learned.
    let inbound = r.last_inbound_at.map(|t| t.to_mirror_text());
    let outbound = r.last_outbound_at.map(|t| t.to_mirror_text());
    let created_at = r.created_at.map(|t| t.to_mirror_text());
    let last_activity_at = r.last_activity_at.map(|t| t.to_mirror_text());
    let direction = r.last_message_direction.map(|d| d.as_str());
    let (raw, hash) = (r.raw.get(), &hash[..]);
    sqlx::query!(
        "UPDATE conversations SET
            created_at = COALESCE(?, created_at),
            last_activity_at = COALESCE(?, last_activity_at),
            active = COALESCE(?, active),
            status = ?, channel = ?, contact_id = ?, contact_name = ?, contact_phone = ?,
            contact_email = ?, title = ?, assignee = ?, unread_count = ?,
            last_message_direction = COALESCE(?, last_message_direction),
            last_inbound_at = CASE WHEN last_inbound_at IS NULL OR ? > last_inbound_at
                                   THEN COALESCE(?, last_inbound_at) ELSE last_inbound_at END,
            last_outbound_at = CASE WHEN last_outbound_at IS NULL OR ? > last_outbound_at
                                    THEN COALESCE(?, last_outbound_at) ELSE last_outbound_at END,
            awaiting_reply = COALESCE(?, awaiting_reply),
            raw = ?, payload_hash = ?, last_seen_at = ?, last_changed_at = ?, run_id = ?,
            closed_at = CASE WHEN ? = 0 THEN COALESCE(closed_at, ?)
                             WHEN ? = 1 THEN NULL ELSE closed_at END,
            deleted_at = NULL
         WHERE source = ? AND conversation_id = ?",
        created_at,
        last_activity_at,
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
        direction,
        inbound,
        inbound,
        outbound,
        outbound,
        r.awaiting_reply,
        raw,
        hash,
        now,
        now,
        run_id,
        r.active,
        now,
        r.active,
        source,
        r.id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
