//! Where each walk stands and how it may move: every watermark rule in one place.
//!
//! A walk's [`WalkCursor`] is kept by the store as an opaque value, committed with the
//! pages it follows. The rules, each a method here with a test that needs no database:
//! - **begin**: a walk not in progress starts from `watermark − lookback` (a delta) or from
//!   the start (a sweep, whose window opens with the cycle); one in progress resumes as it
//!   stands, lower bound included.
//! - **advance** after a page: a [`WatermarkAdvance::PerPage`] delta moves its watermark to
//!   the page's highest value, an [`WatermarkAdvance::AtWalkEnd`] one remembers it until
//!   the walk completes; no watermark ever passes `now + max_clock_skew` (a provider clock
//!   in the future would skip everything until then) or moves backwards.
//! - **restart** after the provider rejected a saved position: from the same lower bound,
//!   forgetting the position and what the abandoned pages promised.
//! - **abandon** a broken walk, and **reset** a source by hand: the walk starts over next
//!   cycle, from a watermark that only ever moves back.
//! - **late**: which rows a listing showed later than the lookback allows for
//!   ([`LateBounds`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::provider::{ConversationRecord, InitialSweep, WalkKind, WalkSpec, WatermarkAdvance};
use crate::store::{CursorState, RowChange, Store, StoreError};
use crate::time::Timestamp;

/// The persisted state of one walk. `position` is the provider's opaque page position
/// (page token, keyset value); every other field follows the rules of this module.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WalkCursor {
    /// Everything at or before this instant has been mirrored (delta walks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Timestamp>,
    /// Position of an unfinished walk; `None` when no walk is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Value>,
    /// When the unfinished walk started (sweeps compare `last_seen_at` against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_started_at: Option<Timestamp>,
    /// Where the unfinished walk started from (`since`), so a resumed walk keeps the same
    /// lower bound even if the lookback changed in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_since: Option<Timestamp>,
    /// Highest watermark value seen by the unfinished walk, committed as the watermark
    /// when a walk that may only advance at its end completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_high_water: Option<Timestamp>,
    /// When this walk last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_at: Option<Timestamp>,
}

/// A delta's lower bound: `watermark − lookback`, so that rows a listing shows a little
/// late (eventual consistency, clock skew) are still listed. `None`: list everything.
pub fn lower_bound(watermark: Option<Timestamp>, lookback: Duration) -> Option<Timestamp> {
    watermark.map(|w| w.saturating_sub(lookback))
}

/// The cursor after a page, and whether the future guard held its watermark back.
#[derive(Debug, Clone, PartialEq)]
pub struct Advanced {
    /// The cursor to commit with the page.
    pub cursor: WalkCursor,
    /// The page's highest value lay beyond `now + max_clock_skew`: (that value, the
    /// ceiling the watermark was held at), for the operator's note.
    pub held_back: Option<(Timestamp, Timestamp)>,
}

/// Whether a sweep runs this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepDue {
    /// It runs (forced, in progress, first one immediately, or an interval has passed).
    Now,
    /// Not yet.
    Later,
    /// It has never run and waits one interval: save [`WalkCursor::first_sweep_scheduled`].
    ScheduleFirst,
}

impl WalkCursor {
    /// Whether a walk is in progress (and should be resumed).
    pub fn in_progress(&self) -> bool {
        self.walk_started_at.is_some()
    }

    /// The cursor as the store keeps it.
    pub fn to_state(&self) -> Result<CursorState, StoreError> {
        CursorState::encode(self)
    }

    /// Every walk cursor of `source`, by walk name.
    pub async fn load_all(
        store: &Store,
        source: &str,
    ) -> Result<HashMap<String, WalkCursor>, StoreError> {
        store
            .load_cursors(source)
            .await?
            .into_iter()
            .map(|(walk, state)| state.decode(source, &walk).map(|c| (walk, c)))
            .collect()
    }

    /// Begins a walk of `kind` unless one is in progress (which resumes as it stands).
    /// Returns whether it resumed. A sweep's window opens with the cycle: rows this
    /// cycle's deltas just listed were seen inside it and need no second write.
    pub fn begin(
        &mut self,
        kind: WalkKind,
        cycle_started_at: Timestamp,
        now: Timestamp,
        lookback: Duration,
    ) -> bool {
        if self.in_progress() {
            return true;
        }
        let (started_at, since) = match kind {
            WalkKind::Sweep { .. } => (cycle_started_at, None),
            WalkKind::Delta(_) => (now, lower_bound(self.watermark, lookback)),
        };
        self.walk_started_at = Some(started_at);
        self.walk_since = since;
        self.position = None;
        self.pending_high_water = None;
        false
    }

    /// The cursor after a page whose highest watermark value is `high_water` and whose
    /// next position is `next` (`None`: the walk is complete).
    pub fn advanced(
        &self,
        kind: WalkKind,
        high_water: Option<Timestamp>,
        next: Option<&Value>,
        now: Timestamp,
        max_clock_skew: Duration,
    ) -> Advanced {
        let ceiling = now.saturating_add(max_clock_skew);
        let held_back = high_water
            .filter(|hw| *hw > ceiling)
            .map(|hw| (hw, ceiling));
        let high_water = high_water.map(|hw| hw.min(ceiling));
        let mut cursor = self.clone();
        match kind {
            WalkKind::Delta(WatermarkAdvance::PerPage) => {
                cursor.watermark = cursor.watermark.max(high_water);
            }
            WalkKind::Delta(WatermarkAdvance::AtWalkEnd) => {
                cursor.pending_high_water = cursor.pending_high_water.max(high_water);
            }
            WalkKind::Sweep { .. } => {}
        }
        match next {
            Some(next) => cursor.position = Some(next.clone()),
            None => {
                if matches!(kind, WalkKind::Delta(_)) {
                    cursor.watermark = cursor.watermark.max(cursor.pending_high_water);
                }
                cursor.forget_walk();
                cursor.last_completed_at = Some(now);
            }
        }
        Advanced { cursor, held_back }
    }

    /// Starts the walk again after the provider rejected its saved position: from the
    /// same lower bound, without the position or what the abandoned pages promised.
    pub fn restart_after_rejected_position(&mut self, now: Timestamp) {
        self.position = None;
        self.pending_high_water = None;
        self.walk_started_at = Some(now);
    }

    /// The cursor of a walk stopped as broken: the next cycle starts it again from its
    /// watermark instead of following the provider's endless tokens further. What was read
    /// stays; a delta's watermark only ever moved with pages that carried records.
    pub fn abandoned(&self) -> WalkCursor {
        let mut cursor = self.clone();
        cursor.forget_walk();
        cursor
    }

    /// The cursor after an operator's reset: the watermark moves back to `since` (never
    /// forward), or is forgotten for a full re-read; a walk in progress is abandoned.
    pub fn reset(&self, since: Option<Timestamp>) -> WalkCursor {
        let mut cursor = self.abandoned();
        cursor.watermark = match (self.watermark, since) {
            (Some(w), Some(s)) => Some(w.min(s)),
            _ => None,
        };
        cursor
    }

    /// Whether a sweep with this cursor runs now (`interval`: the source's sweep interval).
    pub fn sweep_due(
        &self,
        initial: InitialSweep,
        interval: Duration,
        now: Timestamp,
        force: bool,
    ) -> SweepDue {
        if force || self.in_progress() {
            return SweepDue::Now;
        }
        match (self.last_completed_at, initial) {
            (Some(last), _) if last.saturating_add(interval) <= now => SweepDue::Now,
            (Some(_), _) => SweepDue::Later,
            (None, InitialSweep::Immediately) => SweepDue::Now,
            (None, InitialSweep::AfterInterval) => SweepDue::ScheduleFirst,
        }
    }

    /// A sweep that never ran, scheduled one interval on (the first delta lists everything).
    pub fn first_sweep_scheduled(&self, now: Timestamp) -> WalkCursor {
        WalkCursor {
            last_completed_at: Some(now),
            ..self.clone()
        }
    }

    /// Whether a walk that is not in progress completed less than `interval` before `now`.
    pub fn completed_within(&self, interval: Duration, now: Timestamp) -> bool {
        !self.in_progress()
            && self
                .last_completed_at
                .is_some_and(|done| done.saturating_add(interval) > now)
    }

    /// Whether a walk of `kind` with this cursor is a delta's first, unbounded listing.
    pub fn lists_everything(&self, kind: WalkKind) -> bool {
        matches!(kind, WalkKind::Delta(_)) && self.watermark.is_none() && !self.in_progress()
    }

    /// Gives a walk covered by another's first listing a watermark at that listing's
    /// `start`, unless it already has one or is running. Returns whether it did.
    pub fn seed_from_covering_listing(&mut self, start: Timestamp) -> bool {
        if self.watermark.is_some() || self.in_progress() {
            return false;
        }
        self.watermark = Some(start);
        true
    }

    fn forget_walk(&mut self) {
        self.position = None;
        self.walk_started_at = None;
        self.walk_since = None;
        self.pending_high_water = None;
    }
}

/// What an operator's reset did to one walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkReset {
    /// The walk.
    pub walk: String,
    /// Its watermark before.
    pub before: Option<Timestamp>,
    /// Its watermark after (`None`: re-read from the beginning).
    pub after: Option<Timestamp>,
}

/// Moves every watermark of `source` back to `since` (or forgets them, for a full
/// re-sync) and abandons walks in progress, in one transaction. With `apply` false nothing
/// is written (a dry run). Returns each walk's watermark before and after.
pub async fn reset_source(
    store: &Store,
    source: &str,
    since: Option<Timestamp>,
    apply: bool,
) -> Result<Vec<WalkReset>, StoreError> {
    let mut resets = Vec::new();
    store
        .rewrite_cursors(source, apply, &mut |walk, state| {
            let cursor: WalkCursor = state.decode(source, walk)?;
            let reset = cursor.reset(since);
            resets.push(WalkReset {
                walk: walk.to_owned(),
                before: cursor.watermark,
                after: reset.watermark,
            });
            reset.to_state()
        })
        .await?;
    Ok(resets)
}

/// The delta watermarks as a cycle began: how far the deltas reach back, which tells a
/// sweep which of its rows came late.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaReach {
    /// The lowest delta's lower bound: a new row older than this no delta could list.
    lowest: Option<Timestamp>,
    /// The highest delta's lower bound: activity that moved below it should have been
    /// listed by some delta.
    highest: Option<Timestamp>,
}

impl DeltaReach {
    /// The reach of `walks`' deltas with `cursors`.
    pub fn of(
        walks: &[WalkSpec],
        cursors: &HashMap<String, WalkCursor>,
        lookback: Duration,
    ) -> DeltaReach {
        let watermarks = || {
            walks
                .iter()
                .filter(|w| matches!(w.kind, WalkKind::Delta(_)))
                .filter_map(|w| cursors.get(w.name).and_then(|c| c.watermark))
        };
        DeltaReach {
            lowest: lower_bound(watermarks().min(), lookback),
            highest: lower_bound(watermarks().max(), lookback),
        }
    }
}

/// Which rows of a walk count as late: the listing showed them later than the lookback
/// allows for (a hint that the lookback is too short).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateBounds {
    /// A new row whose activity (or creation) lies before this is late.
    new_before: Option<Timestamp>,
    /// A row whose activity moved to a time before this is late. Deltas list what moved
    /// after their own bound: only a sweep can find activity below every delta's reach.
    moved_before: Option<Timestamp>,
}

impl LateBounds {
    /// The bounds for a walk of `kind` whose cursor is `cursor` before it begins.
    pub fn for_walk(
        kind: WalkKind,
        cursor: &WalkCursor,
        reach: DeltaReach,
        lookback: Duration,
    ) -> LateBounds {
        match kind {
            WalkKind::Delta(_) => LateBounds {
                new_before: cursor
                    .walk_since
                    .or_else(|| lower_bound(cursor.watermark, lookback)),
                moved_before: None,
            },
            WalkKind::Sweep { .. } => LateBounds {
                new_before: reach.lowest,
                moved_before: reach.highest,
            },
        }
    }

    /// Whether writing `record` with `change` shows it came late.
    pub fn is_late(&self, record: &ConversationRecord, change: RowChange) -> bool {
        let before = |bound: Option<Timestamp>, at: Option<Timestamp>| matches!((bound, at), (Some(bound), Some(at)) if at < bound);
        match change {
            RowChange::Inserted => before(
                self.new_before,
                record.last_activity_at.or(record.created_at),
            ),
            RowChange::Updated {
                activity_moved: true,
            } => before(self.moved_before, record.last_activity_at),
            RowChange::Updated { .. } | RowChange::Unchanged => false,
        }
    }

    /// How many of a page's `records` (with their `changes`, in order) came late.
    pub fn count(&self, records: &[ConversationRecord], changes: &[RowChange]) -> u64 {
        records
            .iter()
            .zip(changes)
            .filter(|(record, change)| self.is_late(record, **change))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Absence;

    const PER_PAGE: WalkKind = WalkKind::Delta(WatermarkAdvance::PerPage);
    const AT_END: WalkKind = WalkKind::Delta(WatermarkAdvance::AtWalkEnd);
    const SWEEP: WalkKind = WalkKind::Sweep {
        absence: Absence::Deleted,
        initial: InitialSweep::AfterInterval,
    };
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn record(activity: Option<&str>, created: Option<&str>) -> ConversationRecord {
        let raw = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        let mut r = ConversationRecord::new("c", raw);
        r.last_activity_at = activity.map(at);
        r.created_at = created.map(at);
        r
    }

    fn position(token: &str) -> Value {
        serde_json::json!({ "token": token })
    }

    /// A delta begins from `watermark − lookback`; a sweep from nothing, its window
    /// opening with the cycle.
    #[test]
    fn a_walk_begins_from_its_lower_bound() {
        let (cycle, now) = (at("2026-01-01T10:00:00Z"), at("2026-01-01T10:00:05Z"));
        let mut delta = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            pending_high_water: Some(at("2026-01-01T09:30:00Z")),
            ..WalkCursor::default()
        };
        assert!(!delta.begin(PER_PAGE, cycle, now, 5 * MINUTE));
        assert_eq!(delta.walk_since, Some(at("2026-01-01T08:55:00Z")));
        assert_eq!(delta.walk_started_at, Some(now));
        assert_eq!(delta.pending_high_water, None);

        let mut sweep = WalkCursor::default();
        assert!(!sweep.begin(SWEEP, cycle, now, 5 * MINUTE));
        assert_eq!(
            (sweep.walk_started_at, sweep.walk_since),
            (Some(cycle), None)
        );
    }

    /// A walk in progress resumes with its position and the lower bound it began with,
    /// even when the lookback changed since.
    #[test]
    fn a_walk_in_progress_resumes_as_it_stands() {
        let saved = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            position: Some(position("p2")),
            walk_started_at: Some(at("2026-01-01T09:59:00Z")),
            walk_since: Some(at("2026-01-01T08:55:00Z")),
            ..WalkCursor::default()
        };
        let mut cursor = saved.clone();
        let now = at("2026-01-01T10:00:00Z");
        assert!(cursor.begin(PER_PAGE, now, now, HOUR));
        assert_eq!(cursor, saved);
    }

    /// A per-page delta moves its watermark with every page, never backwards; a walk-end
    /// delta only when it completes; a sweep never.
    #[test]
    fn watermarks_advance_per_page_or_at_walk_end() {
        let now = at("2026-01-01T10:00:00Z");
        let start = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            walk_started_at: Some(now),
            ..WalkCursor::default()
        };
        let older = Some(at("2026-01-01T08:00:00Z"));
        let newer = Some(at("2026-01-01T09:30:00Z"));
        let next = position("p2");

        let page = start.advanced(PER_PAGE, newer, Some(&next), now, MINUTE);
        assert_eq!(page.cursor.watermark, newer);
        assert_eq!(page.cursor.position, Some(next.clone()));
        let page = page
            .cursor
            .advanced(PER_PAGE, older, Some(&next), now, MINUTE);
        assert_eq!(page.cursor.watermark, newer, "never backwards");

        let page = start.advanced(AT_END, newer, Some(&next), now, MINUTE);
        assert_eq!(page.cursor.watermark, start.watermark);
        assert_eq!(page.cursor.pending_high_water, newer);
        let done = page
            .cursor
            .advanced(AT_END, older, None, now, MINUTE)
            .cursor;
        assert_eq!(done.watermark, newer);

        let swept = start.advanced(SWEEP, newer, None, now, MINUTE).cursor;
        assert_eq!(swept.watermark, start.watermark);
    }

    /// A completed walk forgets its position, start, lower bound and pending value, and
    /// records when it completed.
    #[test]
    fn a_completed_walk_is_no_longer_in_progress() {
        let now = at("2026-01-01T10:00:00Z");
        let running = WalkCursor {
            position: Some(position("p9")),
            walk_started_at: Some(now),
            walk_since: Some(at("2026-01-01T09:00:00Z")),
            pending_high_water: Some(at("2026-01-01T09:10:00Z")),
            ..WalkCursor::default()
        };
        let done = running.advanced(AT_END, None, None, now, MINUTE).cursor;
        assert_eq!(
            done,
            WalkCursor {
                watermark: Some(at("2026-01-01T09:10:00Z")),
                last_completed_at: Some(now),
                ..WalkCursor::default()
            }
        );
        assert!(!done.in_progress());
    }

    /// A provider timestamp beyond `now + max_clock_skew` holds the watermark at that
    /// ceiling and says so.
    #[test]
    fn the_watermark_never_passes_the_future_ceiling() {
        let now = at("2026-01-01T10:00:00Z");
        let future = at("2030-01-01T00:00:00Z");
        let ceiling = at("2026-01-01T10:01:00Z");
        for kind in [PER_PAGE, AT_END] {
            let page = WalkCursor::default().advanced(kind, Some(future), None, now, MINUTE);
            assert_eq!(page.cursor.watermark, Some(ceiling), "{kind:?}");
            assert_eq!(page.held_back, Some((future, ceiling)));
        }
        let page = WalkCursor::default().advanced(PER_PAGE, Some(ceiling), None, now, MINUTE);
        assert_eq!(page.held_back, None, "the ceiling itself is allowed");
    }

    /// A rejected position restarts the walk from the same lower bound, forgetting what
    /// the abandoned pages promised.
    #[test]
    fn a_rejected_position_restarts_from_the_same_lower_bound() {
        let since = Some(at("2026-01-01T08:55:00Z"));
        let mut cursor = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            position: Some(position("expired")),
            walk_started_at: Some(at("2026-01-01T09:59:00Z")),
            walk_since: since,
            pending_high_water: Some(at("2026-01-01T09:40:00Z")),
            ..WalkCursor::default()
        };
        let now = at("2026-01-01T10:00:00Z");
        cursor.restart_after_rejected_position(now);
        assert_eq!(cursor.position, None);
        assert_eq!(cursor.pending_high_water, None);
        assert_eq!(
            (cursor.walk_started_at, cursor.walk_since),
            (Some(now), since)
        );
        assert_eq!(cursor.watermark, Some(at("2026-01-01T09:00:00Z")));
    }

    /// A broken walk is abandoned: no longer in progress, its watermark and completion
    /// kept.
    #[test]
    fn an_abandoned_walk_keeps_its_watermark() {
        let cursor = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            position: Some(position("endless")),
            walk_started_at: Some(at("2026-01-01T09:59:00Z")),
            walk_since: Some(at("2026-01-01T08:55:00Z")),
            pending_high_water: Some(at("2026-01-01T09:40:00Z")),
            last_completed_at: Some(at("2026-01-01T09:50:00Z")),
        };
        assert_eq!(
            cursor.abandoned(),
            WalkCursor {
                watermark: cursor.watermark,
                last_completed_at: cursor.last_completed_at,
                ..WalkCursor::default()
            }
        );
    }

    /// A reset moves a watermark back to `since`, never forward, or forgets it.
    #[test]
    fn a_reset_only_moves_watermarks_back() {
        let cursor = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            walk_started_at: Some(at("2026-01-01T09:59:00Z")),
            ..WalkCursor::default()
        };
        let back = cursor.reset(Some(at("2025-12-01T00:00:00Z")));
        assert_eq!(back.watermark, Some(at("2025-12-01T00:00:00Z")));
        assert!(!back.in_progress());
        let later = cursor.reset(Some(at("2026-02-01T00:00:00Z")));
        assert_eq!(later.watermark, cursor.watermark);
        assert_eq!(cursor.reset(None).watermark, None);
        assert_eq!(
            WalkCursor::default()
                .reset(Some(at("2026-02-01T00:00:00Z")))
                .watermark,
            None
        );
    }

    /// A sweep runs when forced, in progress, due, or (first sweep) when its provider asks
    /// for it immediately; otherwise its first run is scheduled one interval on.
    #[test]
    fn sweeps_run_when_due() {
        let now = at("2026-01-02T00:00:00Z");
        let never = WalkCursor::default();
        let day = 24 * HOUR;
        assert_eq!(
            never.sweep_due(InitialSweep::Immediately, day, now, false),
            SweepDue::Now
        );
        assert_eq!(
            never.sweep_due(InitialSweep::AfterInterval, day, now, false),
            SweepDue::ScheduleFirst
        );
        assert_eq!(
            never.sweep_due(InitialSweep::AfterInterval, day, now, true),
            SweepDue::Now
        );
        let scheduled = never.first_sweep_scheduled(at("2026-01-01T00:00:01Z"));
        assert_eq!(
            scheduled.sweep_due(InitialSweep::AfterInterval, day, now, false),
            SweepDue::Later
        );
        let due = never.first_sweep_scheduled(at("2026-01-01T00:00:00Z"));
        assert_eq!(
            due.sweep_due(InitialSweep::AfterInterval, day, now, false),
            SweepDue::Now
        );
    }

    /// A delta's first listing (no watermark, not running) seeds the walks it covers that
    /// have neither.
    #[test]
    fn a_first_listing_seeds_covered_walks_once() {
        let start = at("2026-01-01T10:00:00Z");
        assert!(WalkCursor::default().lists_everything(PER_PAGE));
        assert!(!WalkCursor::default().lists_everything(SWEEP));
        let mut covered = WalkCursor::default();
        assert!(covered.seed_from_covering_listing(start));
        assert_eq!(covered.watermark, Some(start));
        assert!(!covered.lists_everything(PER_PAGE));
        assert!(!covered.seed_from_covering_listing(at("2026-01-02T00:00:00Z")));
        assert_eq!(covered.watermark, Some(start));
    }

    /// A delta counts new rows older than its own lower bound as late; a sweep counts new
    /// rows below every delta's reach, and rows whose activity moved below the highest.
    #[test]
    fn late_rows_are_those_below_the_deltas_reach() {
        let walks = [
            WalkSpec {
                name: "created",
                kind: PER_PAGE,
            },
            WalkSpec {
                name: "activity",
                kind: AT_END,
            },
            WalkSpec {
                name: "sweep",
                kind: SWEEP,
            },
        ];
        let cursors = HashMap::from([
            (
                "created".to_owned(),
                WalkCursor {
                    watermark: Some(at("2026-01-01T08:00:00Z")),
                    ..WalkCursor::default()
                },
            ),
            (
                "activity".to_owned(),
                WalkCursor {
                    watermark: Some(at("2026-01-01T09:00:00Z")),
                    ..WalkCursor::default()
                },
            ),
            (
                "sweep".to_owned(),
                WalkCursor {
                    watermark: Some(at("2026-01-01T11:00:00Z")),
                    ..WalkCursor::default()
                },
            ),
        ]);
        let reach = DeltaReach::of(&walks, &cursors, 10 * MINUTE);
        let moved = RowChange::Updated {
            activity_moved: true,
        };

        let delta = LateBounds::for_walk(AT_END, &cursors["activity"], reach, 10 * MINUTE);
        assert!(delta.is_late(
            &record(Some("2026-01-01T08:49:00Z"), None),
            RowChange::Inserted
        ));
        assert!(!delta.is_late(
            &record(Some("2026-01-01T08:51:00Z"), None),
            RowChange::Inserted
        ));
        assert!(delta.is_late(
            &record(None, Some("2026-01-01T08:00:00Z")),
            RowChange::Inserted
        ));
        assert!(!delta.is_late(&record(Some("2020-01-01T00:00:00Z"), None), moved));

        let sweep = LateBounds::for_walk(SWEEP, &cursors["sweep"], reach, 10 * MINUTE);
        assert!(sweep.is_late(
            &record(Some("2026-01-01T07:49:00Z"), None),
            RowChange::Inserted
        ));
        assert!(!sweep.is_late(
            &record(Some("2026-01-01T07:51:00Z"), None),
            RowChange::Inserted
        ));
        assert!(sweep.is_late(&record(Some("2026-01-01T08:49:00Z"), None), moved));
        assert!(!sweep.is_late(&record(Some("2026-01-01T08:51:00Z"), None), moved));
        let unmoved = RowChange::Updated {
            activity_moved: false,
        };
        assert!(!sweep.is_late(&record(Some("2020-01-01T00:00:00Z"), None), unmoved));
        assert!(!sweep.is_late(
            &record(Some("2020-01-01T00:00:00Z"), None),
            RowChange::Unchanged
        ));

        let records = [
            record(Some("2020-01-01T00:00:00Z"), None),
            record(None, None),
        ];
        assert_eq!(
            sweep.count(&records, &[RowChange::Inserted, RowChange::Inserted]),
            1
        );
    }

    /// A resumed delta keeps the lower bound it began with as its late bound.
    #[test]
    fn a_resumed_delta_is_late_against_its_own_start() {
        let cursor = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            walk_started_at: Some(at("2026-01-01T09:30:00Z")),
            walk_since: Some(at("2026-01-01T07:00:00Z")),
            ..WalkCursor::default()
        };
        let bounds = LateBounds::for_walk(PER_PAGE, &cursor, DeltaReach::default(), MINUTE);
        assert!(!bounds.is_late(
            &record(Some("2026-01-01T08:00:00Z"), None),
            RowChange::Inserted
        ));
        assert!(bounds.is_late(
            &record(Some("2026-01-01T06:59:00Z"), None),
            RowChange::Inserted
        ));
    }

    /// The stored form is the one earlier releases wrote: absent fields are left out.
    #[test]
    fn the_stored_form_is_unchanged() {
        let cursor = WalkCursor {
            watermark: Some(at("2026-01-01T09:00:00Z")),
            ..WalkCursor::default()
        };
        let state = cursor.to_state().unwrap();
        assert_eq!(
            state.decode::<Value>("s", "w").unwrap(),
            serde_json::json!({"watermark": "2026-01-01T09:00:00Z"})
        );
        assert_eq!(state.decode::<WalkCursor>("s", "w").unwrap(), cursor);
    }
}
