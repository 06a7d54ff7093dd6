//! The follow-up queue: per-conversation detail requests (messages, items) that pages
//! queue, and their results, applied in one transaction with their dequeues.

use async_trait::async_trait;

use super::{PageCounts, StoreError};
use crate::record::{Absence, ActivityPatch, ConversationRecord, DetailRequest};

/// A follow-up's result, written in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct DetailWrite<'a> {
    /// The source.
    pub source: &'a str,
    /// Provider name for new rows.
    pub provider: &'a str,
    /// Provider account for new rows.
    pub account: &'a str,
    /// The run writing it.
    pub run_id: i64,
    /// The follow-up being answered.
    pub detail: &'a DetailRequest,
    /// A fresh copy of the conversation.
    pub record: Option<&'a ConversationRecord>,
    /// Who-spoke-last facts.
    pub patch: Option<&'a ActivityPatch>,
    /// The conversation is gone.
    pub gone: Option<Absence>,
    /// Where the follow-up continues, if it needs more pages.
    pub next: Option<&'a serde_json::Value>,
}

/// The queue of follow-ups pages left behind, and their answers.
#[async_trait]
pub trait FollowUpQueue: Send + Sync {
    /// Up to `limit` queued follow-ups of `source`: those that failed least often first,
    /// then the conversations with the newest activity (the ones most likely to be waiting
    /// for a reply), then the oldest queued.
    async fn pending_follow_ups(
        &self,
        source: &str,
        limit: u32,
    ) -> Result<Vec<DetailRequest>, StoreError>;

    /// Number of follow-ups waiting for `source`.
    async fn count_follow_ups(&self, source: &str) -> Result<u64, StoreError>;

    /// Number of follow-ups waiting, per source that has any.
    async fn follow_up_backlog(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Counts a failed attempt so that a follow-up that keeps failing yields to others.
    async fn defer_follow_up(&self, source: &str, detail: &DetailRequest)
    -> Result<(), StoreError>;

    /// Forgets a follow-up's page position (the provider refused it), so it starts again.
    async fn restart_follow_up(
        &self,
        source: &str,
        detail: &DetailRequest,
    ) -> Result<(), StoreError>;

    /// Applies follow-up results and dequeues them (or stores their next positions), all in
    /// one transaction: a backfill answers thousands of follow-ups, and one commit per
    /// answer would cost more than the answers themselves. Returns the summed counts.
    async fn apply_details(&self, writes: &[DetailWrite<'_>]) -> Result<PageCounts, StoreError>;
}
