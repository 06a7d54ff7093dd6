//! Deltas first: within a source's request budget, a due delta walk goes before
//! follow-ups.
//!
//! Follow-ups (Spruce's items, D365's messages) can form a backlog of thousands of
//! requests, a first sync's above all. Sent within one cycle, that backlog would hold the
//! next delta back for as long as the provider's rate limit makes it last (minutes to
//! hours), and the mirror would fall behind while it reads details of conversations that
//! changed long ago. So the follow-up phase of a cycle ends when the next delta is due:
//! one poll interval after the delta walks last completed. It stops sending; requests
//! still waiting for the budget are abandoned (their follow-ups stay queued), so that the
//! delta waits for at most the one request the budget is already letting through. The
//! cycle ends as `more_to_do`, the next one runs the due deltas first, then goes on with
//! the backlog, newest activity first.

use std::time::Duration;

use tokio::time::Instant;

use super::{Cycle, SyncError};
use crate::provider::WalkKind;
use crate::sync::cursor::WalkCursor;
use crate::time::Timestamp;

impl Cycle<'_> {
    /// When the follow-up phase must yield to the next delta: a poll interval after the
    /// delta walks last completed (the earliest of them), or after the cycle began when
    /// none has completed yet.
    pub(super) async fn follow_ups_yield_at(&self) -> Result<Instant, SyncError> {
        let cursors = WalkCursor::load_all(self.store, &self.source.name).await?;
        let last_deltas = self
            .source
            .provider
            .walks()
            .iter()
            .map(|w| w.spec())
            .filter(|w| matches!(w.kind, WalkKind::Delta(_)))
            .filter_map(|w| cursors.get(w.name).and_then(|c| c.last_completed_at))
            .min()
            .unwrap_or(self.started_at);
        let due = last_deltas.saturating_add(self.source.schedule.poll_interval);
        let wait = Timestamp::now().elapsed_until(due);
        // A poll interval beyond what the clock can hold never comes: a year is as good.
        Ok(Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400)))
    }
}
