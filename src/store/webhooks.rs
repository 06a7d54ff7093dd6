//! Webhook events into the mirror: each accepted event is recorded by its id (the dedupe
//! key) and applied in the same transaction, so that a provider's retry of an event
//! already applied is recognised by the unique key and writes nothing else.
//!
//! How an event is applied lives here once ([`write_event`]); a backend supplies the
//! statements ([`EventStatements`], on top of the follow-up answers' statements), run
//! inside its open transaction.
//!
//! **The ordering rule** (docs/webhooks.md, "Ordering"): the mirror merges by the
//! provider's own times, so an older fact never overwrites a newer one, whichever path
//! (event or poll) brought it:
//! - an event older (`changed_at`) than an event already applied to the conversation is
//!   stale;
//! - an event about a conversation fact older than the row's newest activity (or the
//!   activity time an event already applied, `state_changed_at`) is stale;
//! - a poll (or event) record whose last activity is older than `state_changed_at` is
//!   stale (`store::upsert`);
//! - message times only move forward (the follow-up rules).
//!
//! A stale event is recorded (so that its retries are duplicates) and changes nothing.

use std::future::Future;

use async_trait::async_trait;

use super::StoreError;
use super::follow_ups::DetailStatements;
use super::upsert::Owner;
use crate::record::{Absence, ActivityPatch, ConversationRecord, DetailRequest};
use crate::time::Timestamp;

/// The `run_id` of rows an event changed: no sync run wrote them (runs count from 1), and
/// the change history's rows say so the same way.
pub const WEBHOOK_RUN_ID: i64 = 0;

/// One accepted event, in the store's terms, written in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct EventWrite<'a> {
    /// The source it is for.
    pub source: &'a str,
    /// Provider name for a new row.
    pub provider: &'a str,
    /// Provider account for a new row.
    pub account: &'a str,
    /// The provider's event id: the dedupe key within the source.
    pub event_id: &'a str,
    /// The provider's event name, kept for the record.
    pub kind: &'a str,
    /// When the provider sent it.
    pub sent_at: Option<Timestamp>,
    /// When the change happened, by the provider's clock: the ordering rule's key.
    pub changed_at: Option<Timestamp>,
    /// What it changes.
    pub change: EventChange<'a>,
    /// The follow-up the source's polls queue when a conversation's activity moves
    /// (`Webhooks::follow_up_on_activity`): queued when this event moves it, since the
    /// next poll will find the activity already moved and not queue it.
    pub follow_up_on_activity: Option<&'a str>,
}

/// What an event changes in the mirror.
#[derive(Debug, Clone, Copy)]
pub enum EventChange<'a> {
    /// A full copy of the conversation, upserted by the rows' rules.
    Conversation(&'a ConversationRecord),
    /// New activity: times, direction and `awaiting_reply` as the event tells them.
    Activity {
        /// The conversation.
        conversation_id: &'a str,
        /// The facts.
        patch: &'a ActivityPatch,
    },
    /// The unread count.
    UnreadCount {
        /// The conversation.
        conversation_id: &'a str,
        /// The new count.
        unread_count: i64,
    },
    /// The conversation was closed or deleted.
    Gone {
        /// The conversation.
        conversation_id: &'a str,
        /// Which.
        absence: Absence,
    },
    /// A follow-up to queue: only a fresh read can tell what changed.
    Refetch(&'a DetailRequest),
    /// Nothing the mirror keeps: only the delivery is recorded.
    Nothing,
}

impl EventChange<'_> {
    /// The conversation the change is about.
    fn conversation_id(&self) -> Option<&str> {
        match self {
            EventChange::Conversation(record) => Some(&record.id),
            EventChange::Activity {
                conversation_id, ..
            }
            | EventChange::UnreadCount {
                conversation_id, ..
            }
            | EventChange::Gone {
                conversation_id, ..
            } => Some(conversation_id),
            EventChange::Refetch(detail) => Some(&detail.conversation_id),
            EventChange::Nothing => None,
        }
    }
}

/// What writing an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// The mirror changed: the event was the first to tell.
    Applied,
    /// Applied, but the mirror already held it (a poll or another event was first).
    Unchanged,
    /// Older than the state the mirror holds (the ordering rule): nothing changed.
    Stale,
    /// About a conversation the mirror does not hold yet: the poll will bring it.
    NotMirrored,
    /// A follow-up was queued.
    Queued,
    /// About nothing the mirror keeps.
    Unrelated,
    /// The event id was already recorded for the source: nothing written.
    Duplicate,
}

impl EventOutcome {
    /// A short stable word for logs, metrics and the `webhook_deliveries.outcome` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Unchanged => "unchanged",
            EventOutcome::Stale => "stale",
            EventOutcome::NotMirrored => "not_mirrored",
            EventOutcome::Queued => "queued",
            EventOutcome::Unrelated => "unrelated",
            EventOutcome::Duplicate => "duplicate",
        }
    }
}

/// Accepted webhook events, each recorded and applied in one transaction.
#[async_trait]
pub trait WebhookWrites: Send + Sync {
    /// Records `write`'s event id and applies it, atomically. A duplicate id writes nothing.
    async fn apply_event(&self, write: &EventWrite<'_>) -> Result<EventOutcome, StoreError>;

    /// The newest `sent_at` of the events recorded for `source`: where a replay of the
    /// provider's event log resumes. It moves in the transactions that apply the events,
    /// so it never runs ahead of what the mirror holds.
    async fn newest_delivery(&self, source: &str) -> Result<Option<Timestamp>, StoreError>;
}

/// A mirrored row's versions, as the ordering rule reads them.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RowVersion {
    /// `last_activity_at`.
    pub last_activity_at: Option<Timestamp>,
    /// `state_changed_at`.
    pub state_changed_at: Option<Timestamp>,
    /// Who spoke last was never read for the row: every reply column is NULL (archived
    /// or dormant when first listed, outside the reply-state horizon).
    pub reply_never_read: bool,
}

impl RowVersion {
    /// The newest provider time the row's state reflects.
    fn newest(&self) -> Option<Timestamp> {
        self.last_activity_at.max(self.state_changed_at)
    }

    /// Where a follow-up the event queues starts reading: after the activity already
    /// mirrored, since only newer messages matter, unless who spoke last was never read
    /// for the row; then from the start, as a poll's follow-up does (`store::upsert`),
    /// or the messages before that activity (the newest outbound one) are never read.
    fn follow_up_since(&self) -> Option<Timestamp> {
        self.last_activity_at.filter(|_| !self.reply_never_read)
    }
}

/// The statements an event needs besides the follow-up answers' ones.
pub(super) trait EventStatements: DetailStatements {
    /// Records the delivery (outcome `applied`); `false` when the (source, event id) is
    /// already recorded: a duplicate.
    fn claim(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Sets the recorded delivery's outcome.
    fn settle(
        &mut self,
        write: &EventWrite<'_>,
        outcome: EventOutcome,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest `changed_at` of the other events applied to the conversation.
    fn newest_event(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: &str,
    ) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// The row's versions, or `None` when the mirror does not hold it.
    fn row_version(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> impl Future<Output = Result<Option<RowVersion>, StoreError>> + Send;

    /// Raises `state_changed_at` to `at` (never lowers it).
    fn raise_state_version(
        &mut self,
        source: &str,
        conversation_id: &str,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets the unread count; says whether it changed.
    fn set_unread(
        &mut self,
        source: &str,
        conversation_id: &str,
        unread_count: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Queues a follow-up through the existing queue (queued twice, it keeps the earlier
    /// `since`).
    fn queue(
        &mut self,
        source: &str,
        detail: &DetailRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Records and applies one event through `statements`; see the module's ordering rule.
pub(super) async fn write_event<S: EventStatements>(
    statements: &mut S,
    write: &EventWrite<'_>,
) -> Result<EventOutcome, StoreError> {
    let conversation_id = write.change.conversation_id();
    if !statements.claim(write, conversation_id).await? {
        return Ok(EventOutcome::Duplicate);
    }
    let outcome = apply(statements, write).await?;
    if outcome != EventOutcome::Applied {
        statements.settle(write, outcome).await?;
    }
    Ok(outcome)
}

/// Applies a claimed event.
async fn apply<S: EventStatements>(
    statements: &mut S,
    write: &EventWrite<'_>,
) -> Result<EventOutcome, StoreError> {
    let source = write.source;
    let Some(id) = write.change.conversation_id() else {
        return Ok(EventOutcome::Unrelated);
    };
    // Event against event: one that happened before an event already applied is stale.
    if let (Some(at), Some(newest)) = (write.changed_at, statements.newest_event(write, id).await?)
        && at < newest
    {
        return Ok(EventOutcome::Stale);
    }
    let version = statements.row_version(source, id).await?;
    let owner = Owner {
        source,
        provider: write.provider,
        account: write.account,
        run_id: WEBHOOK_RUN_ID,
    };
    let outcome = match write.change {
        EventChange::Conversation(record) => {
            // A new row is inserted: only a mirrored row can be newer.
            if version.is_some()
                && let Some(refused) = gate(version, record.last_activity_at)
            {
                return Ok(refused);
            }
            let counts = statements.upsert_record(owner, record).await?;
            if let Some(at) = record.last_activity_at {
                statements.raise_state_version(source, id, at).await?;
            }
            let previous = version.and_then(|v| v.last_activity_at);
            if record.last_activity_at.is_some() && record.last_activity_at != previous {
                let since = version.and_then(|v| v.follow_up_since());
                queue_on_activity(statements, write, id, since).await?;
            }
            changed(counts.inserted + counts.updated > 0)
        }
        EventChange::Activity { patch, .. } => {
            let at = patch.last_activity_at.or(write.changed_at);
            if let Some(refused) = gate(version, at) {
                return Ok(refused);
            }
            let moved = !patch.is_empty()
                && statements
                    .apply_patch(source, id, patch, WEBHOOK_RUN_ID)
                    .await?;
            if let Some(at) = at {
                statements.raise_state_version(source, id, at).await?;
            }
            let previous = version.and_then(|v| v.last_activity_at);
            if at.is_some() && at > previous {
                let since = version.and_then(|v| v.follow_up_since());
                queue_on_activity(statements, write, id, since).await?;
            }
            changed(moved)
        }
        EventChange::UnreadCount { unread_count, .. } => {
            if let Some(refused) = gate(version, write.changed_at) {
                return Ok(refused);
            }
            changed(statements.set_unread(source, id, unread_count).await?)
        }
        EventChange::Gone { absence, .. } => {
            if let Some(refused) = gate(version, write.changed_at) {
                return Ok(refused);
            }
            changed(
                statements
                    .mark_gone(source, id, absence, WEBHOOK_RUN_ID)
                    .await?
                    > 0,
            )
        }
        EventChange::Refetch(detail) => {
            let Some(version) = version else {
                return Ok(EventOutcome::NotMirrored);
            };
            let detail = DetailRequest {
                since: detail.since.or(version.follow_up_since()),
                ..detail.clone()
            };
            statements.queue(source, &detail).await?;
            EventOutcome::Queued
        }
        EventChange::Nothing => EventOutcome::Unrelated,
    };
    Ok(outcome)
}

/// Queues the source's on-activity follow-up for conversation `id`, whose activity the
/// event moved, reading from `since` ([`RowVersion::follow_up_since`]).
async fn queue_on_activity<S: EventStatements>(
    statements: &mut S,
    write: &EventWrite<'_>,
    id: &str,
    since: Option<Timestamp>,
) -> Result<(), StoreError> {
    let Some(kind) = write.follow_up_on_activity else {
        return Ok(());
    };
    let detail = DetailRequest {
        conversation_id: id.to_owned(),
        kind: kind.to_owned(),
        since,
        position: None,
    };
    statements.queue(write.source, &detail).await
}

/// Whether a fact of time `at` about a row at `version` is refused: the mirror does not
/// hold the row (the poll brings it with all its facts), or the fact is older than the
/// row's newest provider time (the ordering rule).
fn gate(version: Option<RowVersion>, at: Option<Timestamp>) -> Option<EventOutcome> {
    let Some(version) = version else {
        return Some(EventOutcome::NotMirrored);
    };
    match (at, version.newest()) {
        (Some(at), Some(newest)) if at < newest => Some(EventOutcome::Stale),
        _ => None,
    }
}

/// `Applied` when the write changed the mirror, `Unchanged` otherwise.
fn changed(mirror_changed: bool) -> EventOutcome {
    if mirror_changed {
        EventOutcome::Applied
    } else {
        EventOutcome::Unchanged
    }
}
