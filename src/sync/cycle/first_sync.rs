//! A source's first sync lists every conversation once.
//!
//! Some providers list the same conversations in several orders (Spruce: by creation and by
//! last message), one delta walk each. Without watermarks every one of those walks would
//! list everything: the first sync would pay for all of them. When the provider says that
//! one walk's first, unbounded listing covers another walk
//! ([`Walk::first_listing_covers`](crate::provider::Walk::first_listing_covers)),
//! the covered walk gets a watermark at the moment that listing starts, before its first
//! page. From then on it lists only from `watermark − lookback`: whatever changed while
//! the listing ran (possibly after the listing had passed the conversation) is still
//! listed, and whatever changed before was listed by the covering walk.
//!
//! The watermark is set before the listing's first page and survives a crash, so a
//! resumed first listing keeps it; it sits `max_clock_skew` before the engine's clock,
//! because later bounds are compared with the provider's timestamps.

use std::collections::HashMap;

use super::{Cycle, SyncError};
use crate::provider::Walk;
use crate::sync::cursor::WalkCursor;
use crate::time::Timestamp;

impl Cycle<'_> {
    /// Called before `walk` runs from `cursor`: if this is its first, unbounded listing,
    /// gives the walks it covers that have never run a watermark at its start.
    pub(super) async fn seed_covered_walks(
        &self,
        walk: &dyn Walk,
        cursor: &WalkCursor,
        cursors: &mut HashMap<String, WalkCursor>,
    ) -> Result<(), SyncError> {
        let spec = walk.spec();
        if !cursor.lists_everything(spec.kind) {
            return Ok(());
        }
        let start = Timestamp::now().saturating_sub(self.source.schedule.max_clock_skew);
        for &covered in walk.first_listing_covers() {
            let state = cursors.entry(covered.to_owned()).or_default();
            if !state.seed_from_covering_listing(start) {
                continue;
            }
            self.store
                .save_cursor(&self.source.name, covered, &state.to_state()?)
                .await?;
            tracing::info!(
                walk = spec.name,
                covered,
                from = %start,
                "first listing covers another walk; it starts from now instead of listing everything again"
            );
        }
        Ok(())
    }
}
