//! The change history (`conversation_events`) as a feed: committed events in `seq` order,
//! for `convsync changes` and downstream consumers, and the one setting the history's
//! writers read from the database (what a backfill writes).
//!
//! The events themselves are written by the database's triggers on `conversations`
//! (migrations `0008_conversation_events.sql`), in the transaction that changed the row,
//! whichever path changed it; nothing here writes one. The feed's guarantee: every
//! committed event is answered exactly once, in `seq` order, to a reader that resumes
//! after the last `seq` it stored. SQLite gets it from its single writer; PostgreSQL, whose
//! sequence values are allocated before commit, answers only below a safe horizon
//! (`postgres/events.rs`).

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;

/// One observed change of a tracked fact of a conversation (docs/schema.md "Change
/// history"). Instants are in the mirror's text form on both backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConversationEvent {
    /// Position in the feed: increases in commit order, never reused.
    pub seq: i64,
    /// The source.
    pub source: String,
    /// The provider's conversation id.
    pub conversation_id: String,
    /// `first_seen`, `activity`, `assigned`, `opened`, `closed`, `reopened`, `deleted`,
    /// `restored`, `unread` or `awaiting_reply`.
    pub kind: String,
    /// The fact before the change.
    pub old_value: Option<String>,
    /// The fact after the change.
    pub new_value: Option<String>,
    /// The newest message's direction, for `activity`.
    pub direction: Option<String>,
    /// The provider's own time of the change, where it has one.
    pub provider_at: Option<String>,
    /// When convsync observed it (the writing transaction's time).
    pub observed_at: String,
    /// The run that observed it (`sync_runs.id`).
    pub run_id: Option<i64>,
}

/// What a source's backfill (every page written before its first cycle that caught up)
/// writes to the history: `[history] backfill`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillEvents {
    /// A `first_seen` event per conversation, as later new conversations get.
    #[default]
    FirstSeen,
    /// Nothing: the history starts when the backfill is over.
    None,
}

impl BackfillEvents {
    /// The value as `event_settings.backfill` stores it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillEvents::FirstSeen => "first_seen",
            BackfillEvents::None => "none",
        }
    }
}

/// The change feed and the history's setting.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Committed events with `seq` above `after`, in `seq` order, at most `limit`, only of
    /// `source` when given. An event not answered yet (still uncommitted, or behind the
    /// safe horizon) always comes with a higher `seq` than every event answered: a reader
    /// that resumes after the last `seq` it got misses none and repeats none.
    async fn events_after(
        &self,
        after: i64,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConversationEvent>, StoreError>;

    /// Stores what a backfill writes (read by the database's triggers), set at start from
    /// `[history] backfill`; writes only when the stored setting differs.
    async fn set_backfill_events(&self, mode: BackfillEvents) -> Result<(), StoreError>;
}
