//! Paging `/conversations/search` by its only cursor, `startAfterDate`.
//!
//! HighLevel has no page token and no offset: a page starts "after" a sort value, newest
//! first. Each search result carries its own, `sort: [<lastMessageDate>]`, the value the
//! API expects back as `startAfterDate`; rows without a sane one are placed by their
//! `lastMessageDate` (see `conversation::sort_value`). "Date" below means that value. Three
//! things the docs leave open decide how the next value is chosen:
//!
//! - **Ties.** Whether the server compares strictly ("older than") or inclusively is not
//!   documented, and live reports say strict, which skips rows sharing the boundary
//!   millisecond. The next page therefore starts one millisecond *above* the oldest row
//!   seen (`oldest + 1`): a strict server lists the boundary millisecond again, an
//!   inclusive one also the millisecond above it, which was already read completely.
//!   Re-listed rows are harmless (an unchanged row costs no write).
//! - **Progress.** The value never repeats: it is `min(oldest + 1, previous − 1)`, so a
//!   page made entirely of one tied millisecond (a tie cluster as large as a page) steps one
//!   millisecond down instead of requesting the same page forever. Only then can rows be
//!   skipped (a strict server hides the rest of that cluster); the walk says so in a note.
//! - **Page size.** `limit` has no documented maximum and larger values may be clamped
//!   silently. A short first page is read as "clamped" when `total` says more rows exist,
//!   and the observed size is used from then on, so that a clamp never ends a walk early.
//!
//! A sweep adds a catch-up phase: a conversation that receives a message while the sweep
//! pages downwards jumps above the sweep's position and would be missed, and then wrongly
//! marked deleted. After the last page the sweep lists the top again, down to just below
//! the newest date it saw when it began.
//!
//! **Why newest first, not ascending.** A third-party integration pages `sort=asc` from
//! `startAfterDate = sort[0]` of the last row, which is resumable page by page. So is this
//! walk: the engine stores its `Position` with every page, in the page's transaction, and a
//! restarted walk continues there; only the watermark waits for the walk's end. Ascending
//! would let a delta advance its watermark per page, but it buys nothing else and costs
//! guarantees: a delta newest first reads only the new top (one page when little changed)
//! and ends by itself; `asc` semantics of `startAfterDate` (strict or not, ties) are known
//! only from that one third-party fixture; and positions stored by running installations
//! would no longer mean anything. The walk therefore stays newest first.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::ProviderError;

/// How far below the sweep's starting top the catch-up phase reads: covers messages whose
/// date lags their arrival in the search index.
pub(super) const CATCH_UP_MARGIN_MS: i64 = 5 * 60 * 1000;

/// Which part of a walk a page belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Phase {
    /// Newest first down to the end of the listing (or to `since` for a delta).
    #[default]
    List,
    /// A sweep's second look at the top, for conversations that moved during the sweep.
    CatchUp,
}

/// Where a walk stands; stored by the engine as the walk's position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Position {
    /// The phase of the walk.
    #[serde(default)]
    pub phase: Phase,
    /// `startAfterDate` of the next request; `None` for the first page of a phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// Rows in a full page as the server actually returns them (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// The newest date on a sweep's first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<i64>,
    /// Catch-up phase: rows older than this end the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_below: Option<i64>,
}

impl Position {
    /// Reads the engine's stored position (`None`: the walk's first page).
    pub fn from_cursor(value: Option<&Value>) -> Result<Position, ProviderError> {
        match value {
            None => Ok(Position::default()),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| ProviderError::BadCursor(format!("{v}: {e}"))),
        }
    }

    /// The position as the engine stores it.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// What a walk is for, as far as paging is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Stop once rows are older than `since_ms` (epoch ms); `None` reads everything.
    Delta {
        /// Lower bound of the delta.
        since_ms: Option<i64>,
    },
    /// Read everything, then catch up on the top.
    Sweep,
}

/// The dates (sort values) of one page, in listing order, and its `total`.
#[derive(Debug, Clone, Default)]
pub(super) struct PageShape {
    /// Rows returned, dated or not.
    pub rows: usize,
    /// The dates of the rows that have one, in listing order.
    pub dates: Vec<i64>,
    /// The response's `total`, when readable.
    pub total: Option<u64>,
}

impl PageShape {
    fn oldest(&self) -> Option<i64> {
        self.dates.iter().copied().min()
    }

    fn newest(&self) -> Option<i64> {
        self.dates.iter().copied().max()
    }
}

/// Where the walk goes after a page, and what an operator should know about it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Step {
    /// The next position; `None` ends the walk.
    pub next: Option<Position>,
    /// Operator notes (possible skips, unreadable pages).
    pub notes: Vec<String>,
}

/// Decides the next position after a page requested at `at` with `limit` rows.
pub(super) fn step(
    role: Role,
    at: &Position,
    limit: u32,
    page: &PageShape,
) -> Result<Step, ProviderError> {
    check_order(at, page)?;
    let mut notes = Vec::new();
    let (full, page_size) = page_fullness(at, limit, page);
    let oldest = page.oldest();
    let lower_bound = match (at.phase, role) {
        (Phase::CatchUp, _) => at.stop_below,
        (Phase::List, Role::Delta { since_ms }) => since_ms,
        (Phase::List, Role::Sweep) => None,
    };
    let mut phase_done = !full || matches!((oldest, lower_bound), (Some(o), Some(b)) if o < b);
    if !phase_done && oldest.is_none() {
        if at.phase == Phase::List && role == Role::Sweep {
            return Err(ProviderError::Malformed(format!(
                "a full page of {} conversations without any sort value or lastMessageDate: the \
                 listing cannot be paged further, and ending the sweep here would mark the rest deleted",
                page.rows
            )));
        }
        notes.push(format!(
            "a full page of {} conversations had no sort value or lastMessageDate; the walk \
             ended there",
            page.rows
        ));
        phase_done = true;
    }
    if phase_done {
        return Ok(Step {
            next: after_phase(role, at, page_size),
            notes,
        });
    }
    // `oldest` is Some here: a full page without dates ended the phase above.
    let oldest = oldest.unwrap_or_default();
    let overlap = oldest.saturating_add(1);
    let after = match at.after {
        None => overlap,
        Some(previous) => {
            let below_previous = previous.saturating_sub(1);
            if overlap > below_previous {
                notes.push(format!(
                    "a whole page of {} conversations shares the sort value {oldest}: the \
                     listing cannot page through such a tie, so some of them may have been \
                     skipped (a larger page_size avoids this)",
                    page.rows
                ));
            }
            overlap.min(below_previous)
        }
    };
    let top = match (at.phase, at.after) {
        (Phase::List, None) if role == Role::Sweep => page.newest(),
        _ => at.top,
    };
    Ok(Step {
        next: Some(Position {
            phase: at.phase,
            after: Some(after),
            page_size: Some(page_size),
            top,
            stop_below: at.stop_below,
        }),
        notes,
    })
}

/// Whether the page is full, and the page size to expect from now on.
fn page_fullness(at: &Position, limit: u32, page: &PageShape) -> (bool, u32) {
    let rows = u32::try_from(page.rows).unwrap_or(u32::MAX);
    match at.page_size {
        Some(size) => (rows > 0 && rows >= size, size.max(rows)),
        None if rows > 0 && rows >= limit => (true, rows),
        // A short first page while `total` promises more: the server clamped `limit`.
        None if rows > 0 && page.total.is_some_and(|t| t > u64::from(rows)) => (true, rows),
        None => (false, limit),
    }
}

/// The position after a phase ends: a sweep that took more than one page catches up on
/// the top; everything else is complete.
fn after_phase(role: Role, at: &Position, page_size: u32) -> Option<Position> {
    if role != Role::Sweep || at.phase != Phase::List || at.after.is_none() {
        return None;
    }
    let top = at.top?;
    Some(Position {
        phase: Phase::CatchUp,
        after: None,
        page_size: Some(page_size),
        top: None,
        stop_below: Some(top.saturating_sub(CATCH_UP_MARGIN_MS)),
    })
}

/// Refuses pages that break the keyset's contract: rows newer than `startAfterDate`, or a
/// page that is not newest first. Either means the server ignores `sort` or
/// `startAfterDate`, and continuing would skip conversations silently.
fn check_order(at: &Position, page: &PageShape) -> Result<(), ProviderError> {
    if let (Some(after), Some(newest)) = (at.after, page.newest())
        && newest > after
    {
        return Err(ProviderError::Malformed(format!(
            "a page requested with startAfterDate={after} lists a conversation with the \
                 newer sort value {newest}: the server does not honour startAfterDate"
        )));
    }
    if let Some(pair) = page.dates.windows(2).find(|w| w[1] > w[0]) {
        return Err(ProviderError::Malformed(format!(
            "the page is not sorted newest first (sort value {} before {}): the server \
             does not honour sort=desc",
            pair[0], pair[1]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dates: &[i64], total: Option<u64>) -> PageShape {
        PageShape {
            rows: dates.len(),
            dates: dates.to_vec(),
            total,
        }
    }

    fn at(after: Option<i64>, page_size: Option<u32>) -> Position {
        Position {
            after,
            page_size,
            ..Position::default()
        }
    }

    const FULL: Role = Role::Delta { since_ms: None };

    /// The next page starts one millisecond above the oldest row, so rows tied with it are
    /// listed again instead of skipped.
    #[test]
    fn next_page_overlaps_the_boundary_millisecond() {
        let step = step(FULL, &at(None, None), 3, &shape(&[900, 800, 700], Some(10))).unwrap();
        assert_eq!(step.next, Some(at(Some(701), Some(3))));
        assert!(step.notes.is_empty());
    }

    /// A page consisting of one tied millisecond steps one millisecond down instead of
    /// requesting the same page again, and says rows may have been skipped.
    #[test]
    fn a_page_wide_tie_cluster_still_makes_progress() {
        let step = step(
            FULL,
            &at(Some(701), Some(3)),
            3,
            &shape(&[700, 700, 700], None),
        )
        .unwrap();
        assert_eq!(step.next.unwrap().after, Some(700));
        assert_eq!(step.notes.len(), 1, "{:?}", step.notes);
        // An inclusive server answers startAfterDate=700 with the same page: one more step.
        let step = step_again(&at(Some(700), Some(3)), &[700, 700, 700]);
        assert_eq!(step.next.unwrap().after, Some(699));
    }

    fn step_again(position: &Position, dates: &[i64]) -> Step {
        step(FULL, position, 3, &shape(dates, None)).unwrap()
    }

    /// The cursor value strictly decreases from page to page, whatever the page holds.
    #[test]
    fn the_cursor_never_repeats() {
        let mut position = at(None, None);
        let mut previous = i64::MAX;
        for dates in [[5, 5, 5], [5, 5, 5], [4, 4, 4], [4, 3, 3], [3, 2, 1]] {
            let next = step_again(&position, &dates).next.unwrap();
            let after = next.after.unwrap();
            assert!(after < previous, "{after} !< {previous}");
            previous = after;
            position = next;
        }
    }

    /// A short page ends the walk; so does an empty one.
    #[test]
    fn short_and_empty_pages_end_the_walk() {
        assert_eq!(step_again(&at(Some(701), Some(3)), &[650, 640]).next, None);
        assert_eq!(step_again(&at(Some(701), Some(3)), &[]).next, None);
        assert_eq!(
            step(FULL, &at(None, None), 3, &shape(&[1], Some(1)))
                .unwrap()
                .next,
            None
        );
    }

    /// A short first page while `total` promises more rows means the server clamped
    /// `limit`: the walk continues and expects pages of the clamped size.
    #[test]
    fn a_silently_clamped_limit_does_not_end_the_walk() {
        let step = step(FULL, &at(None, None), 100, &shape(&[9, 8], Some(5))).unwrap();
        assert_eq!(step.next, Some(at(Some(9), Some(2))));
        let step = step_again(&at(Some(9), Some(2)), &[8, 7]);
        assert!(step.next.is_some());
        // Without `total`, a short first page is the end.
        let step = super::step(FULL, &at(None, None), 100, &shape(&[9, 8], None)).unwrap();
        assert_eq!(step.next, None);
    }

    /// A delta stops at the first page reaching below `watermark − lookback`.
    #[test]
    fn delta_stops_below_its_lower_bound() {
        let delta = Role::Delta {
            since_ms: Some(750),
        };
        let step = step(delta, &at(None, None), 3, &shape(&[900, 800, 760], None)).unwrap();
        assert!(step.next.is_some());
        let step = super::step(
            delta,
            &at(Some(761), Some(3)),
            3,
            &shape(&[760, 750, 749], None),
        )
        .unwrap();
        assert_eq!(step.next, None);
    }

    /// A sweep that took several pages ends with a catch-up phase from the top down to just
    /// below the newest date it started with; the catch-up then ends normally.
    #[test]
    fn a_multi_page_sweep_catches_up_on_the_top() {
        let first = step(Role::Sweep, &at(None, None), 2, &shape(&[900, 800], None)).unwrap();
        let second_at = first.next.unwrap();
        assert_eq!(second_at.top, Some(900));
        let last = step(Role::Sweep, &second_at, 2, &shape(&[700], None)).unwrap();
        let catch_up = last.next.unwrap();
        assert_eq!(catch_up.phase, Phase::CatchUp);
        assert_eq!(catch_up.after, None);
        assert_eq!(catch_up.stop_below, Some(900 - CATCH_UP_MARGIN_MS));
        let done = step(
            Role::Sweep,
            &catch_up,
            2,
            &shape(&[950, 900 - CATCH_UP_MARGIN_MS - 1], None),
        )
        .unwrap();
        assert_eq!(done.next, None);
    }

    /// A sweep answered by a single page needs no catch-up: nothing could move behind it.
    #[test]
    fn a_single_page_sweep_is_complete() {
        let step = step(
            Role::Sweep,
            &at(None, None),
            5,
            &shape(&[900, 800], Some(2)),
        )
        .unwrap();
        assert_eq!(step.next, None);
    }

    /// Rows newer than `startAfterDate`, or a page that is not newest first, are refused
    /// instead of silently skipping conversations.
    #[test]
    fn pages_breaking_the_keyset_contract_are_malformed() {
        let err = step(
            FULL,
            &at(Some(701), Some(3)),
            3,
            &shape(&[900, 700, 600], None),
        );
        assert!(matches!(err, Err(ProviderError::Malformed(m)) if m.contains("startAfterDate")));
        let err = step(FULL, &at(None, None), 3, &shape(&[100, 200, 300], None));
        assert!(matches!(err, Err(ProviderError::Malformed(m)) if m.contains("sort=desc")));
    }

    /// A full page without any date cannot be paged past: a delta ends with a note, a sweep
    /// refuses to complete (it would mark the unseen rest deleted).
    #[test]
    fn full_pages_without_dates() {
        let undated = PageShape {
            rows: 3,
            dates: Vec::new(),
            total: None,
        };
        let delta = step(FULL, &at(None, Some(3)), 3, &undated).unwrap();
        assert_eq!(delta.next, None);
        assert_eq!(delta.notes.len(), 1);
        assert!(matches!(
            step(Role::Sweep, &at(None, Some(3)), 3, &undated),
            Err(ProviderError::Malformed(_))
        ));
    }

    /// Positions survive the engine's JSON round trip, and garbage is a cursor error.
    #[test]
    fn positions_round_trip_and_garbage_is_rejected() {
        let p = Position {
            phase: Phase::CatchUp,
            after: Some(1_772_443_200_124),
            page_size: Some(100),
            top: None,
            stop_below: Some(5),
        };
        assert_eq!(Position::from_cursor(Some(&p.to_value())).unwrap(), p);
        assert_eq!(Position::from_cursor(None).unwrap(), Position::default());
        assert!(matches!(
            Position::from_cursor(Some(&serde_json::json!({"after": "soon"}))),
            Err(ProviderError::BadCursor(_))
        ));
    }
}
