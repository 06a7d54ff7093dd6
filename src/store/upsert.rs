//! Writing pages of records (or one follow-up's fresh copy) into the mirror, by the rules
//! every backend follows: a new row is inserted; a row read again unchanged is left alone
//! (a sweep only refreshes its `last_seen_at`); a changed row is updated, queuing the
//! follow-up its moved activity asks for; a page's rejected items are recorded and its
//! follow-ups queued. The answer is a [`RowChange`] per record, in page order.
//!
//! The rules live here once; a backend supplies the statements ([`RowStatements`]), run
//! inside its open transaction, and its representation of an instant ([`MirrorTime`]).

use std::collections::HashMap;
use std::future::Future;

use super::{PageCounts, PageOutcome, PageWrite, RowChange, StoreError};
use crate::record::{ConversationRecord, DetailRequest, RejectedRecord};
use crate::time::Timestamp;

/// A record with its [`ConversationRecord::content_hash`], computed once per write.
pub(super) type Hashed<'r> = (&'r ConversationRecord, [u8; 16]);

/// An instant as a backend stores it, compared in the backend's own terms: what the mirror
/// holds is what the rules compare, so a record's time goes through [`MirrorTime::of`]
/// (the mirror keeps microseconds) before it is compared with a stored one.
pub(super) trait MirrorTime: Clone + Ord + Send + Sync {
    /// `t` as the mirror stores it.
    fn of(t: Timestamp) -> Self;

    /// The stored value as a [`Timestamp`], when it reads as one.
    fn to_timestamp(&self) -> Option<Timestamp>;
}

/// The who-spoke-last columns as stored. A listing may carry them outside the record's raw
/// JSON (Sinch's recent listing reads them from the last message), so an equal payload
/// hash does not prove they are unchanged.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ReplyFacts<T> {
    /// `last_message_direction`.
    pub direction: Option<String>,
    /// `last_inbound_at`.
    pub inbound: Option<T>,
    /// `last_outbound_at`.
    pub outbound: Option<T>,
    /// `awaiting_reply`.
    pub awaiting: Option<bool>,
}

impl<T: MirrorTime> ReplyFacts<T> {
    /// The facts a new row gets from `r`.
    fn of(r: &ConversationRecord) -> Self {
        ReplyFacts {
            direction: r.last_message_direction.map(|d| d.as_str().to_owned()),
            inbound: r.last_inbound_at.map(T::of),
            outbound: r.last_outbound_at.map(T::of),
            awaiting: r.awaiting_reply,
        }
    }

    /// The stored facts once `r` is written, by the backends' update rules: a fact the
    /// record does not carry is kept, and message times only move forward.
    fn merged(&self, r: &ConversationRecord) -> Self {
        let later = |stored: &Option<T>, new: Option<Timestamp>| match (stored, new.map(T::of)) {
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

    /// Who spoke last was never read for the row (archived or dormant when first listed,
    /// outside the reply-state horizon).
    fn never_read(&self) -> bool {
        self.direction.is_none()
            && self.inbound.is_none()
            && self.outbound.is_none()
            && self.awaiting.is_none()
    }
}

/// What the rules need of a mirrored row.
#[derive(Debug, Clone)]
pub(super) struct StoredRow<T> {
    /// `payload_hash`.
    pub hash: Vec<u8>,
    /// `last_activity_at`.
    pub last_activity_at: Option<T>,
    /// `last_seen_at`.
    pub last_seen_at: T,
    /// `closed_at` is set.
    pub closed: bool,
    /// `deleted_at` is set.
    pub deleted: bool,
    /// The who-spoke-last columns.
    pub reply: ReplyFacts<T>,
    /// `state_changed_at`: the activity time of the newest state a webhook event applied
    /// (the ordering rule's version; `None` until an event changed the row).
    pub state_changed_at: Option<T>,
}

/// The ordering rule (docs/webhooks.md, "Ordering"): a record whose provider
/// time (its last activity) is older than the state an event already applied to the row
/// is stale, whichever path brought it: a poll page read before the event must not roll
/// the row back. A record without a time, or at the same time, is applied.
fn is_stale<T: MirrorTime>(record: &ConversationRecord, stored: &StoredRow<T>) -> bool {
    match (record.last_activity_at, &stored.state_changed_at) {
        (Some(at), Some(version)) => T::of(at) < *version,
        _ => false,
    }
}

/// Whose rows a write writes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner<'a> {
    /// The source.
    pub source: &'a str,
    /// Provider name for the `provider` column of new rows.
    pub provider: &'a str,
    /// Provider account for the `account` column of new rows.
    pub account: &'a str,
    /// The run writing them (`run_id`).
    pub run_id: i64,
}

impl<'a> Owner<'a> {
    /// The owner of `page`'s rows.
    pub fn of(page: &PageWrite<'a>) -> Self {
        Owner {
            source: page.source,
            provider: page.provider,
            account: page.account,
            run_id: page.run_id,
        }
    }
}

/// The statements the rules need, run by a backend inside its open transaction, at the
/// transaction's time ([`RowStatements::now`]: first seen, last seen and last changed of
/// what it writes).
pub(super) trait RowStatements: Send {
    /// The backend's instant.
    type Time: MirrorTime;

    /// The transaction's time.
    fn now(&self) -> &Self::Time;

    /// The stored rows among `ids` of `source`, by id.
    fn load_existing(
        &mut self,
        source: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, StoredRow<Self::Time>>, StoreError>> + Send;

    /// Inserts those of `rows` the mirror does not hold yet, with the follow-ups new rows
    /// ask for (from the start: no `since`). Says, row by row, which were inserted.
    fn insert_new(
        &mut self,
        owner: Owner<'_>,
        rows: &[Hashed<'_>],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Rewrites a changed row from `record`: listing fields the provider does not report
    /// keep what follow-ups learned, message times only move forward, a reappearing row is
    /// no longer deleted.
    fn update(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
        hash: &[u8; 16],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Queues `detail` for `source`; queued twice, it keeps the earlier `since`.
    fn queue_follow_up(
        &mut self,
        source: &str,
        detail: &DetailRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Clears who spoke last of a row whose activity moved without its reply state being
    /// read (outside the source's `reply_state_horizon`): the stored direction and
    /// `awaiting_reply` described an older message. The newest inbound and outbound times
    /// stay: they are still true, and only ever move forward.
    fn forget_reply_state(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Refreshes `last_seen_at` of rows a sweep listed unchanged.
    fn touch(
        &mut self,
        source: &str,
        ids: &[&str],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records one sighting of a rejected item of `owner`'s walk `walk`.
    fn record_rejected(
        &mut self,
        owner: Owner<'_>,
        walk: &str,
        rejected: &RejectedRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored `last_activity_at` of a conversation, if it is mirrored and has one.
    fn last_activity(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;
}

/// Writes consecutive pages of one walk (not their cursor): their rows, rejected items and
/// follow-ups. Returns what each page did, in order.
pub(super) async fn write_pages<S: RowStatements>(
    statements: &mut S,
    pages: &[PageWrite<'_>],
) -> Result<Vec<PageOutcome>, StoreError> {
    let Some(last) = pages.last() else {
        return Ok(Vec::new());
    };
    debug_assert!(
        pages.iter().all(|p| p.source == last.source
            && p.walk == last.walk
            && p.insert_first == last.insert_first),
        "a batch holds pages of one walk"
    );
    let rows: Vec<Hashed<'_>> = pages
        .iter()
        .flat_map(|p| p.records.iter().map(|r| (r, r.content_hash())))
        .collect();
    // Insert-first pages try all their rows in one go; each page then looks up only the
    // rows that were already there. (Rows are distinct per id, so trying a later page's
    // insert before an earlier page's update changes nothing: an id listed on both fails
    // the later insert and is compared, in page order, like any mirrored row.)
    let inserted = if last.insert_first {
        statements.insert_new(Owner::of(last), &rows).await?
    } else {
        vec![false; rows.len()]
    };
    let mut outcomes = Vec::with_capacity(pages.len());
    let mut offset = 0;
    for page in pages {
        let range = offset..offset + page.records.len();
        offset = range.end;
        let (page_rows, page_inserted) = (&rows[range.clone()], &inserted[range]);
        outcomes.push(write_page(statements, page, page_rows, page_inserted).await?);
    }
    Ok(outcomes)
}

/// Writes one page's rows (`rows`, of which `inserted` says which were already inserted),
/// rejected records and follow-ups (not its cursor).
async fn write_page<S: RowStatements>(
    statements: &mut S,
    page: &PageWrite<'_>,
    rows: &[Hashed<'_>],
    inserted: &[bool],
) -> Result<PageOutcome, StoreError> {
    let owner = Owner::of(page);
    let mut outcome =
        upsert_records(statements, owner, rows, page.touch_seen_before, inserted).await?;
    for rejected in page.rejected {
        statements
            .record_rejected(owner, page.walk, rejected)
            .await?;
        outcome.counts.rejected += 1;
    }
    for follow_up in page.follow_ups {
        if follow_up.since.is_some() {
            statements.queue_follow_up(page.source, follow_up).await?;
            continue;
        }
        // Only messages after the activity already mirrored matter.
        let since = statements
            .last_activity(page.source, &follow_up.conversation_id)
            .await?;
        let with_since = DetailRequest {
            since,
            ..follow_up.clone()
        };
        statements.queue_follow_up(page.source, &with_since).await?;
    }
    Ok(outcome)
}

/// Writes `records` of `owner`: rows `inserted` says an insert-first pass already wrote
/// are counted; the others are looked up and inserted, updated (queuing the follow-up a
/// moved activity asks for) or left alone, and a sweep's unchanged rows last seen before
/// `touch_seen_before` are touched. Answers a [`RowChange`] per record.
pub(super) async fn upsert_records<S: RowStatements>(
    statements: &mut S,
    owner: Owner<'_>,
    records: &[Hashed<'_>],
    touch_seen_before: Option<Timestamp>,
    inserted: &[bool],
) -> Result<PageOutcome, StoreError> {
    let source = owner.source;
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
    let ids: Vec<&str> = to_look_up.iter().map(|(_, (r, _))| r.id.as_str()).collect();
    let mut existing = statements.load_existing(source, &ids).await?;
    let touch_before = touch_seen_before.map(S::Time::of);
    // New rows (with the follow-ups they queue) go in together, and re-listed unchanged
    // rows are touched together: a statement per row costs a round trip.
    let mut new_rows: Vec<Hashed<'_>> = Vec::new();
    let mut touched: Vec<&str> = Vec::new();
    for &(i, (record, hash)) in &to_look_up {
        match existing.get(&record.id) {
            Some(prev) if is_stale(record, prev) => {
                counts.unchanged += 1;
                continue;
            }
            None => {
                counts.inserted += 1;
                rows[i] = RowChange::Inserted;
                new_rows.push((record, hash));
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
                let activity_moved = record.last_activity_at.is_some()
                    && record.last_activity_at.map(S::Time::of) != prev.last_activity_at;
                // Only messages after the activity already mirrored matter, unless who spoke
                // last was never read: then the follow-up reads from the start.
                let previous_activity = prev
                    .last_activity_at
                    .as_ref()
                    .and_then(MirrorTime::to_timestamp)
                    .filter(|_| !prev.reply.never_read());
                // The row may be one of this page's new rows listed twice: insert those first.
                flush_new_rows(statements, owner, &mut new_rows).await?;
                statements.update(owner, record, &hash).await?;
                counts.updated += 1;
                rows[i] = RowChange::Updated { activity_moved };
                if let (Some(kind), true) = (record.detail_on_activity, activity_moved) {
                    let detail = DetailRequest {
                        conversation_id: record.id.clone(),
                        kind: kind.to_owned(),
                        since: previous_activity,
                        position: None,
                    };
                    statements.queue_follow_up(source, &detail).await?;
                }
                if activity_moved && record.reply_state_unknown {
                    statements.forget_reply_state(source, &record.id).await?;
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
            None => ReplyFacts::of(record),
        };
        let written = StoredRow {
            hash: hash.to_vec(),
            last_activity_at: record.last_activity_at.map(S::Time::of),
            last_seen_at: statements.now().clone(),
            closed: record.active == Some(false),
            deleted: false,
            reply,
            state_changed_at: existing
                .get(&record.id)
                .and_then(|prev| prev.state_changed_at.clone()),
        };
        existing.insert(record.id.clone(), written);
    }
    flush_new_rows(statements, owner, &mut new_rows).await?;
    if !touched.is_empty() {
        statements.touch(source, &touched).await?;
    }
    Ok(PageOutcome { counts, rows })
}

/// Inserts the buffered new rows (looked up as absent, so every one goes in).
async fn flush_new_rows<S: RowStatements>(
    statements: &mut S,
    owner: Owner<'_>,
    new_rows: &mut Vec<Hashed<'_>>,
) -> Result<(), StoreError> {
    if new_rows.is_empty() {
        return Ok(());
    }
    let inserted = statements.insert_new(owner, new_rows).await?;
    debug_assert!(inserted.iter().all(|new| *new), "looked up as absent");
    new_rows.clear();
    Ok(())
}
