//! A walk: one paged listing a provider offers, as an object that builds its own requests
//! and reads its own pages.
//!
//! The engine holds each of a provider's walks as an `Arc<dyn Walk>` and calls it
//! directly, so no provider maps a walk's name back to behaviour: a walk's
//! [`WalkSpec::name`] only keys its cursor in the database and names it in logs, metrics
//! and `sync_runs`.

use serde_json::Value;

use super::{Absence, ConversationRecord, DetailRequest, ProviderError, RejectedRecord};
use crate::http::{HttpResponse, RequestSpec};
use crate::time::Timestamp;

/// One paged listing of a provider: what it is ([`WalkSpec`]) and how to read it, one page
/// at a time. A walk never talks to the database, never sleeps and never retries.
pub trait Walk: Send + Sync + 'static {
    /// The walk's stable name and the role it plays in a cycle.
    fn spec(&self) -> WalkSpec;

    /// The request for the page at `at.position`.
    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError>;

    /// Reads one page, requested at `at`.
    fn parse_page(
        &self,
        at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError>;

    /// The names of the provider's later delta walks that a first, unbounded listing of
    /// this walk makes unnecessary: it lists every conversation with the fields they
    /// watch, so they start from the listing's start instead of listing everything once
    /// more (see `sync::cycle::first_sync`). None by default.
    fn first_listing_covers(&self) -> &'static [&'static str] {
        &[]
    }
}

impl std::fmt::Debug for dyn Walk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.spec().fmt(f)
    }
}

/// What a walk is: its stable name and its role. `name` keys the walk's cursor in the
/// database, so it must stay stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkSpec {
    /// Stable name (`delta`, `created`, `sweep`, ...).
    pub name: &'static str,
    /// Delta or sweep.
    pub kind: WalkKind,
}

impl WalkSpec {
    /// A delta walk named `name` whose watermark moves as `advance` says.
    pub const fn delta(name: &'static str, advance: WatermarkAdvance) -> Self {
        WalkSpec {
            name,
            kind: WalkKind::Delta(advance),
        }
    }

    /// A sweep named `name`: rows a complete sweep did not list get `absence`.
    pub const fn sweep(name: &'static str, absence: Absence, initial: InitialSweep) -> Self {
        WalkSpec {
            name,
            kind: WalkKind::Sweep { absence, initial },
        }
    }
}

/// The role a walk plays in a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkKind {
    /// Runs every cycle from `watermark − lookback`, or from the start when there is no
    /// watermark yet.
    Delta(WatermarkAdvance),
    /// Runs every `sweep_interval`, lists everything, and applies [`Absence`] to rows it did
    /// not see once it completes (subject to the mass-change guard).
    Sweep {
        /// What absence from a complete sweep means.
        absence: Absence,
        /// Whether the first sweep runs in the first cycle.
        initial: InitialSweep,
    },
}

/// When a delta walk's watermark may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkAdvance {
    /// After every committed page: the listing is ascending in the watermark's order, so
    /// everything before the page's highest value has been seen.
    PerPage,
    /// Only when the walk completes: the listing is newest-first or its order is not
    /// documented. The walk's position is still checkpointed after every page.
    AtWalkEnd,
}

/// When a source's first sweep runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialSweep {
    /// In the first cycle: the deltas alone do not list everything (e.g. Sinch's inactive
    /// conversations).
    Immediately,
    /// One sweep interval after the first cycle: a first delta without a watermark already
    /// lists everything the sweep would.
    AfterInterval,
}

/// Where a walk stands when its next page is built or read.
#[derive(Debug, Clone, Copy)]
pub struct WalkContext<'a> {
    /// Lower bound for a delta walk (`watermark − lookback`); `None` for a full walk.
    pub since: Option<Timestamp>,
    /// `None` for the walk's first page, else what the previous page returned as
    /// [`Page::next`].
    pub position: Option<&'a Value>,
}

/// One parsed page of a walk.
#[derive(Debug, Default)]
pub struct Page {
    /// Conversations to upsert.
    pub records: Vec<ConversationRecord>,
    /// Items that could not be read as conversations.
    pub rejected: Vec<RejectedRecord>,
    /// Follow-ups to queue unconditionally (e.g. conversations named by a messages list).
    pub follow_ups: Vec<DetailRequest>,
    /// The greatest watermark value on this page (creation or activity time, per walk).
    pub high_water: Option<Timestamp>,
    /// Where the next page starts; `None` when the walk is complete.
    pub next: Option<Value>,
    /// Things an operator should know (e.g. "app is in DISPATCH mode"), logged and kept in
    /// the run's record.
    pub notes: Vec<String>,
    /// How many records the provider says this walk lists in all (Spruce `totalCount`,
    /// Sinch `total_size`, HighLevel `total`), given only where the count covers what the
    /// walk reads. Shown as progress and an ETA, never a loop bound: providers document it
    /// as approximate, and the display distrusts it (see `cli::progress`).
    pub total_hint: Option<u64>,
}

impl Page {
    /// Applies [`ConversationRecord::omit_oversized_raw`] to every record and, when any
    /// raw was replaced, adds a note saying so (logged and kept in `sync_runs.notes`).
    pub fn omit_oversized_raw(&mut self, walk: &str, max_bytes: usize) {
        let mut omitted = false;
        for record in &mut self.records {
            omitted |= record.omit_oversized_raw(max_bytes);
        }
        if omitted {
            self.notes.push(format!(
                "{walk}: conversation(s) stored without their raw JSON, which was larger than max_raw_bytes ({max_bytes} bytes); raise the source's max_raw_bytes to keep it"
            ));
        }
    }
}

/// A provider's walks as one line each (name, role, the walks its first listing covers),
/// for the tests that pin them: the names key cursors in existing databases.
#[cfg(test)]
pub(crate) fn walk_table(provider: &dyn super::Provider) -> Vec<String> {
    provider
        .walks()
        .iter()
        .map(|walk| {
            let WalkSpec { name, kind } = walk.spec();
            match walk.first_listing_covers() {
                [] => format!("{name}: {kind:?}"),
                covers => format!("{name}: {kind:?}, covers {covers:?}"),
            }
        })
        .collect()
}
