//! The follow-up queue: per-conversation detail requests (messages, items) that pages
//! queue, and their results, applied in one transaction with their dequeues.
//!
//! How an answer is written — its fresh copy upserted by the rows' rules, who spoke last
//! patched, a vanished conversation closed or deleted, then the follow-up dequeued or its
//! next page stored — lives here once ([`write_detail`]); a backend supplies the
//! statements ([`DetailStatements`]), run inside its open transaction.

use std::collections::BTreeSet;
use std::future::Future;

use async_trait::async_trait;

use super::upsert::Owner;
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

/// The statements that write one follow-up's answer, run by a backend inside its open
/// transaction; [`write_detail`] decides which run.
pub(super) trait DetailStatements: Send {
    /// Writes the fresh copy of a conversation by the rows' rules (`store::upsert`).
    fn upsert_record(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
    ) -> impl Future<Output = Result<PageCounts, StoreError>> + Send;

    /// Writes who spoke last as the conversation's messages tell it: message times only
    /// move forward. Says whether a stored value moved.
    fn apply_patch(
        &mut self,
        source: &str,
        conversation_id: &str,
        patch: &ActivityPatch,
        run_id: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks a vanished conversation closed or deleted: a deletion also reaches a closed
    /// row, a closing leaves it as it is, a deleted row stays as it is. Returns the rows
    /// changed.
    fn mark_gone(
        &mut self,
        source: &str,
        conversation_id: &str,
        absence: Absence,
        run_id: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Stores where `detail` continues: it stays queued.
    fn store_position(
        &mut self,
        source: &str,
        detail: &DetailRequest,
        position: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the answered `detail` from the queue.
    fn dequeue(
        &mut self,
        source: &str,
        detail: &DetailRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Writes one follow-up's answer and its dequeue (or next position) through `statements`.
/// Returns what it changed.
pub(super) async fn write_detail<S: DetailStatements>(
    statements: &mut S,
    write: &DetailWrite<'_>,
) -> Result<PageCounts, StoreError> {
    let DetailWrite {
        source,
        provider,
        account,
        run_id,
        detail,
        record,
        patch,
        gone,
        next,
    } = *write;
    let mut counts = match record {
        Some(record) => {
            let owner = Owner {
                source,
                provider,
                account,
                run_id,
            };
            statements.upsert_record(owner, record).await?
        }
        None => PageCounts::default(),
    };
    if let Some(patch) = patch.filter(|p| !p.is_empty())
        && statements
            .apply_patch(source, &detail.conversation_id, patch, run_id)
            .await?
    {
        counts.updated += 1;
    }
    if let Some(absence) = gone {
        counts.updated += statements
            .mark_gone(source, &detail.conversation_id, absence, run_id)
            .await?;
    }
    match next {
        Some(position) => statements.store_position(source, detail, position).await?,
        None => statements.dequeue(source, detail).await?,
    }
    Ok(counts)
}

/// The sources a batch of answers writes for, each once, in order.
pub(super) fn sources_of<'a>(writes: &[DetailWrite<'a>]) -> BTreeSet<&'a str> {
    writes.iter().map(|w| w.source).collect()
}

/// The runs a batch of answers commits for, each once, in order.
pub(super) fn runs_of(writes: &[DetailWrite<'_>]) -> Vec<i64> {
    let mut runs: Vec<i64> = writes.iter().map(|w| w.run_id).collect();
    runs.sort_unstable();
    runs.dedup();
    runs
}
