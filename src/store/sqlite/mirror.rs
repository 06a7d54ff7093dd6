//! Writing pages into the mirror: upserts that skip unchanged rows, sweep absences behind a
//! mass-change guard, and follow-up results — each atomic with the cursor it advances.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, Transaction};

use super::cursor::write_cursor;
use super::follow_ups::queue_follow_up;
use super::last_write::LastWrite;
use super::prepared::{NewRowContext, insert_new_rows};
use super::rejected::record_rejected;
use super::{CursorState, Store, StoreError};
use crate::record::{Absence, ConversationRecord, DetailRequest, RejectedRecord};
use crate::time::Timestamp;

/// Everything one page changes, written in one transaction.
#[derive(Debug)]
pub struct PageWrite<'a> {
    /// The source.
    pub source: &'a str,
    /// Provider name for the `provider` column.
    pub provider: &'a str,
    /// Provider account for the `account` column.
    pub account: &'a str,
    /// The walk the page belongs to.
    pub walk: &'a str,
    /// The run writing it.
    pub run_id: i64,
    /// Conversations to upsert.
    pub records: &'a [ConversationRecord],
    /// Items that could not be read.
    pub rejected: &'a [RejectedRecord],
    /// Follow-ups to queue.
    pub follow_ups: &'a [DetailRequest],
    /// A sweep's window start: unchanged rows last seen before it get `last_seen_at`
    /// refreshed, which is how the sweep's completion tells them from absent ones. Rows
    /// seen since (by a delta of the same cycle, or twice in one sweep) need no write.
    /// `None` for deltas: re-reading an unchanged row writes nothing.
    pub touch_seen_before: Option<Timestamp>,
    /// Insert each record straight away and look up only those already mirrored: right
    /// for a delta, whose pages during a backfill are all new (a lookup first would probe
    /// the primary key twice per row). A sweep re-reads mirrored rows: it looks up first.
    /// Pages applied together must agree.
    pub insert_first: bool,
}

/// A record with its [`ConversationRecord::content_hash`], computed once per write.
pub(super) type Hashed<'r> = (&'r ConversationRecord, [u8; 16]);

/// What writing one record did to its row, in page order: the engine reads from it what
/// its own rules need (which rows count as late) without the store knowing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowChange {
    /// The row is new.
    Inserted,
    /// The row's content changed.
    Updated {
        /// Its last activity time changed (to the record's, which it carries).
        activity_moved: bool,
    },
    /// Nothing changed.
    Unchanged,
}

/// What a page did: the counts, and each record's [`RowChange`] in page order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Rows new, changed, unchanged and rejected.
    pub counts: PageCounts,
    /// One change per record of the page, in order.
    pub rows: Vec<RowChange>,
}

/// What a page did to the mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    /// New rows.
    pub inserted: u64,
    /// Rows whose content changed.
    pub updated: u64,
    /// Rows read again with no change (no write, unless a sweep touched `last_seen_at`).
    pub unchanged: u64,
    /// Records rejected.
    pub rejected: u64,
    /// New or moved rows whose activity was older than the delta's lower bound: a listing
    /// showed them later than the lookback allows for. The store leaves it at zero; the
    /// engine counts it from each page's [`RowChange`]s (`sync::cursor::LateBounds`).
    pub late: u64,
}

impl std::ops::AddAssign for PageCounts {
    fn add_assign(&mut self, o: Self) {
        self.inserted += o.inserted;
        self.updated += o.updated;
        self.unchanged += o.unchanged;
        self.rejected += o.rejected;
        self.late += o.late;
    }
}

/// Refuses to apply a sweep's absences when they would close or delete too much at once:
/// an empty or truncated listing during an outage must not wipe the mirror.
#[derive(Debug, Clone, Copy)]
pub struct MassChangeGuard {
    /// Largest share (0.0–1.0) of the candidate rows one sweep may close or delete.
    pub max_share: f64,
    /// Absences up to this count are always applied (small mirrors).
    pub floor: u64,
}

/// A sweep that listed everything, ready to apply what it did not see.
#[derive(Debug, Clone, Copy)]
pub struct SweepCompletion<'a> {
    /// The source.
    pub source: &'a str,
    /// The sweep's walk name.
    pub walk: &'a str,
    /// The run applying it.
    pub run_id: i64,
    /// What absence means for this provider.
    pub absence: Absence,
    /// When the sweep started: rows not seen since then were not listed.
    pub sweep_started_at: Timestamp,
    /// The mass-change guard.
    pub guard: MassChangeGuard,
    /// The walk's final cursor.
    pub cursor: &'a CursorState,
}

/// The result of applying a completed sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsenceOutcome {
    /// `count` rows were closed or deleted.
    Applied {
        /// Rows changed.
        count: u64,
    },
    /// The guard refused: `missing` of `candidates` rows were absent.
    Refused {
        /// Rows the sweep did not see.
        missing: u64,
        /// Rows that could have been affected.
        candidates: u64,
    },
}

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

impl Store {
    /// Applies one page and the walk's cursor after it atomically.
    pub async fn apply_page(
        &self,
        page: &PageWrite<'_>,
        cursor: &CursorState,
    ) -> Result<PageCounts, StoreError> {
        let counts = self.apply_pages(std::slice::from_ref(page), cursor).await?;
        Ok(counts[0])
    }

    /// Applies consecutive pages of one walk in one transaction, with the walk's cursor
    /// after the last: one commit for many pages when they arrive faster than commits
    /// take. Returns each page's counts, in order.
    pub async fn apply_pages(
        &self,
        pages: &[PageWrite<'_>],
        cursor: &CursorState,
    ) -> Result<Vec<PageCounts>, StoreError> {
        let Some(last) = pages.last() else {
            return Ok(Vec::new());
        };
        let mut open = self.begin_pages().await?;
        let outcomes = open.apply(pages).await?;
        open.commit(last.source, last.walk, cursor).await?;
        Ok(outcomes.into_iter().map(|o| o.counts).collect())
    }

    /// Starts a write transaction that pages can be applied to in several calls before
    /// it commits: a backfill's writer applies pages as they arrive and commits every few
    /// thousand rows, so that commits are rare without holding many pages in memory.
    pub async fn begin_pages(&self) -> Result<PageTransaction, StoreError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(PageTransaction {
            tx,
            now: Timestamp::now().to_mirror_text(),
            last_write: self.last_write.clone(),
        })
    }

    /// Completes a sweep: closes or deletes rows not seen since it started, unless the guard
    /// refuses, and stores the walk's cursor, in one transaction.
    pub async fn apply_absence(
        &self,
        sweep: &SweepCompletion<'_>,
    ) -> Result<AbsenceOutcome, StoreError> {
        let result = self.write_absence(sweep).await;
        self.last_write.note(sweep.source, &result);
        result
    }

    async fn write_absence(
        &self,
        sweep: &SweepCompletion<'_>,
    ) -> Result<AbsenceOutcome, StoreError> {
        let SweepCompletion {
            source,
            walk,
            run_id,
            absence,
            sweep_started_at,
            guard,
            cursor,
        } = *sweep;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let candidate_filter = match absence {
            Absence::Closed => "source = ? AND deleted_at IS NULL AND closed_at IS NULL",
            Absence::Deleted => "source = ? AND deleted_at IS NULL",
        };
        let started = sweep_started_at.to_mirror_text();
        let candidates: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM conversations WHERE {candidate_filter}"
        )))
        .bind(source)
        .fetch_one(&mut *tx)
        .await?;
        let missing: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM conversations WHERE {candidate_filter} AND last_seen_at < ?"
        )))
        .bind(source)
        .bind(&started)
        .fetch_one(&mut *tx)
        .await?;
        let (candidates, missing) = (candidates as u64, missing as u64);
        let too_many = missing > guard.floor
            && candidates > 0
            && (missing as f64 / candidates as f64) > guard.max_share;
        let outcome = if too_many {
            AbsenceOutcome::Refused {
                missing,
                candidates,
            }
        } else if missing == 0 {
            AbsenceOutcome::Applied { count: 0 }
        } else {
            let now = Timestamp::now().to_mirror_text();
            let set = match absence {
                Absence::Closed => "active = 0, closed_at = ?, last_changed_at = ?, run_id = ?",
                Absence::Deleted => "deleted_at = ?, last_changed_at = ?, run_id = ?",
            };
            let done = sqlx::query(AssertSqlSafe(format!(
                "UPDATE conversations SET {set} WHERE {candidate_filter} AND last_seen_at < ?"
            )))
            .bind(&now)
            .bind(&now)
            .bind(run_id)
            .bind(source)
            .bind(&started)
            .execute(&mut *tx)
            .await?;
            AbsenceOutcome::Applied {
                count: done.rows_affected(),
            }
        };
        write_cursor(&mut tx, source, walk, cursor).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// An open write transaction of page writes (see [`Store::begin_pages`]). Dropping it
/// without [`PageTransaction::commit`] rolls everything back, cursor included: the walk
/// resumes from its last committed page.
#[derive(Debug)]
pub struct PageTransaction {
    tx: Transaction<'static, Sqlite>,
    /// The transaction's time: first seen, last seen and last changed of what it writes.
    now: String,
    /// The store's record of what its latest write met.
    last_write: Arc<LastWrite>,
}

impl PageTransaction {
    /// Applies consecutive pages of one walk (not their cursor). Returns what each page
    /// did, in order.
    pub async fn apply(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError> {
        let result = self.write(pages).await;
        if let Some(page) = pages.last() {
            self.last_write.note(page.source, &result);
        }
        result
    }

    async fn write(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError> {
        let Some(last) = pages.last() else {
            return Ok(Vec::new());
        };
        debug_assert!(
            pages.iter().all(|p| p.source == last.source
                && p.walk == last.walk
                && p.insert_first == last.insert_first),
            "a batch holds pages of one walk"
        );
        let tx = &mut self.tx;
        let now = &self.now;
        let rows: Vec<Hashed<'_>> = pages
            .iter()
            .flat_map(|p| p.records.iter().map(|r| (r, r.content_hash())))
            .collect();
        // Insert-first pages try all their rows in one go; each page then looks up only the
        // rows that were already there. (Rows are distinct per id, so trying a later page's
        // insert before an earlier page's update changes nothing: an id listed on both
        // fails the later insert and is compared, in page order, like any mirrored row.)
        let inserted = if last.insert_first {
            let context = NewRowContext {
                source: last.source,
                provider: last.provider,
                account: last.account,
                run_id: last.run_id,
                now,
            };
            insert_new_rows(tx, context, &rows).await?
        } else {
            vec![false; rows.len()]
        };
        let mut all_counts = Vec::with_capacity(pages.len());
        let mut offset = 0;
        for page in pages {
            let range = offset..offset + page.records.len();
            offset = range.end;
            let (page_rows, page_inserted) = (&rows[range.clone()], &inserted[range]);
            all_counts.push(write_page(tx, page, page_rows, page_inserted, now).await?);
        }
        Ok(all_counts)
    }

    /// Stores `cursor` as the walk's position and commits everything applied.
    pub async fn commit(
        mut self,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError> {
        let last_write = self.last_write.clone();
        let result = async {
            write_cursor(&mut self.tx, source, walk, cursor).await?;
            self.tx.commit().await?;
            Ok(())
        }
        .await;
        last_write.note(source, &result);
        result
    }
}

/// Writes one page's rows (`rows`, of which `inserted` says which were already inserted),
/// rejected records and follow-ups (not its cursor).
async fn write_page(
    tx: &mut Transaction<'static, Sqlite>,
    page: &PageWrite<'_>,
    rows: &[Hashed<'_>],
    inserted: &[bool],
    now: &str,
) -> Result<PageOutcome, StoreError> {
    let mut outcome = upsert_records(
        tx,
        page.source,
        page.provider,
        page.account,
        page.run_id,
        rows,
        page.touch_seen_before,
        inserted,
        now,
    )
    .await?;
    for rejected in page.rejected {
        record_rejected(tx, page.source, page.run_id, page.walk, rejected, now).await?;
        outcome.counts.rejected += 1;
    }
    for follow_up in page.follow_ups {
        if follow_up.since.is_some() {
            queue_follow_up(tx, page.source, follow_up, now).await?;
            continue;
        }
        // Only messages after the activity already mirrored matter.
        let known: Option<String> = sqlx::query_scalar(
            "SELECT last_activity_at FROM conversations WHERE source = ? AND conversation_id = ?",
        )
        .bind(page.source)
        .bind(&follow_up.conversation_id)
        .fetch_optional(&mut **tx)
        .await?
        .flatten();
        let since = known.and_then(|t| Timestamp::parse_rfc3339(&t).ok());
        let with_since = DetailRequest {
            since,
            ..follow_up.clone()
        };
        queue_follow_up(tx, page.source, &with_since, now).await?;
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn upsert_records(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    provider: &str,
    account: &str,
    run_id: i64,
    records: &[Hashed<'_>],
    touch_seen_before: Option<Timestamp>,
    inserted: &[bool],
    now: &str,
) -> Result<PageOutcome, StoreError> {
    let mut counts = PageCounts::default();
    let mut rows = vec![RowChange::Unchanged; records.len()];
    let context = NewRowContext {
        source,
        provider,
        account,
        run_id,
        now,
    };
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
    // New rows (with the follow-ups they queue) go in together through `store::prepared`,
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
    sqlx::query(
        "UPDATE conversations SET last_message_direction = NULL, awaiting_reply = NULL
         WHERE source = ? AND conversation_id = ?",
    )
    .bind(source)
    .bind(conversation_id)
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
        context: NewRowContext<'_>,
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
    sqlx::query(
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
    )
    .bind(r.created_at.map(|t| t.to_mirror_text()))
    .bind(r.last_activity_at.map(|t| t.to_mirror_text()))
    .bind(r.active)
    .bind(&r.status)
    .bind(&r.channel)
    .bind(&r.contact_id)
    .bind(&r.contact_name)
    .bind(&r.contact_phone)
    .bind(&r.contact_email)
    .bind(&r.title)
    .bind(&r.assignee)
    .bind(r.unread_count)
    .bind(r.last_message_direction.map(|d| d.as_str()))
    .bind(&inbound)
    .bind(&inbound)
    .bind(&outbound)
    .bind(&outbound)
    .bind(r.awaiting_reply)
    .bind(r.raw.get())
    .bind(&hash[..])
    .bind(now)
    .bind(now)
    .bind(run_id)
    .bind(r.active)
    .bind(now)
    .bind(r.active)
    .bind(source)
    .bind(&r.id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
