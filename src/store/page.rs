//! Writing pages into the mirror: what a page carries, what the store answers for each
//! row, and the transaction that makes a page, its follow-ups and its walk's cursor land
//! together or not at all. A sweep's completion (its absences behind a mass-change guard)
//! is written the same way, atomically with its cursor.

use async_trait::async_trait;

use super::{CursorState, StoreError};
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

impl MassChangeGuard {
    /// Whether closing or deleting `missing` of `candidates` rows is too much at once.
    pub fn refuses(&self, missing: u64, candidates: u64) -> bool {
        missing > self.floor
            && candidates > 0
            && (missing as f64 / candidates as f64) > self.max_share
    }
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

/// An open write transaction of page writes (see [`PageWrites::begin_pages`]). Dropping
/// it without [`PageTransaction::commit`] rolls everything back, cursor included: the walk
/// resumes from its last committed page.
#[async_trait]
pub trait PageTransaction: Send {
    /// Applies consecutive pages of one walk (not their cursor). Returns what each page
    /// did, in order.
    async fn apply(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError>;

    /// Stores `cursor` as the walk's position and commits everything applied.
    async fn commit(
        self: Box<Self>,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError>;
}

/// Pages and sweep completions, each atomic with the cursor it advances.
#[async_trait]
pub trait PageWrites: Send + Sync {
    /// Starts a write transaction that pages can be applied to in several calls before
    /// it commits: a backfill's writer applies pages as they arrive and commits every few
    /// thousand rows, so that commits are rare without holding many pages in memory.
    async fn begin_pages(&self) -> Result<Box<dyn PageTransaction>, StoreError>;

    /// Completes a sweep: closes or deletes rows not seen since it started, unless the
    /// guard refuses, and stores the walk's cursor, in one transaction.
    async fn apply_absence(
        &self,
        sweep: &SweepCompletion<'_>,
    ) -> Result<AbsenceOutcome, StoreError>;

    /// Applies one page and the walk's cursor after it atomically.
    async fn apply_page(
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
    async fn apply_pages(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small mirrors always take their absences; larger ones only up to the share.
    #[test]
    fn the_guard_refuses_only_beyond_its_floor_and_share() {
        let guard = MassChangeGuard {
            max_share: 0.5,
            floor: 2,
        };
        assert!(!guard.refuses(2, 2), "at the floor: applied");
        assert!(!guard.refuses(5, 10), "exactly the share: applied");
        assert!(guard.refuses(6, 10), "beyond the share: refused");
        assert!(!guard.refuses(0, 0));
    }
}
