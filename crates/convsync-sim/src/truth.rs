//! Ground truth: what the simulated provider really holds, for comparison with a mirror.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::clock::us_to_datetime;
use super::fake::{self, Person};
use super::naming;
use super::platform::Platform;
use super::world::{AccountWorld, Conv, MessageDirection, MessageKind, NO_TS};

/// Lifecycle state of a conversation, in the provider's own terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Open / active / in the inbox.
    Active,
    /// D365: closed or wrapped up (no longer listed).
    Closed,
    /// Sinch: `active: false`.
    Inactive,
    /// Spruce: `archived: true`.
    Archived,
}

/// One conversation as the simulator knows it, changes included immediately (even those
/// not yet visible under the consistency delay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthConversation {
    /// Platform holding the conversation.
    pub provider: Platform,
    /// Account key (see `SimAccounts`).
    pub account: String,
    /// Conversation id as the API spells it.
    pub id: String,
    /// Contact id as the API spells it (Sinch `contact_id`, HighLevel `contactId`, …).
    pub contact_id: String,
    /// Creation time (D365 list `timestamp`, Spruce `createdAt`, HighLevel `dateAdded`).
    pub created_at: DateTime<Utc>,
    /// Last-activity time as the API shows it (Spruce `lastMessageAt`, Sinch
    /// `last_received`, HighLevel `lastMessageDate`); `None` without messages.
    pub last_activity_at: Option<DateTime<Utc>>,
    /// Lifecycle state.
    pub state: ConversationState,
    /// Deleted conversations vanish from every listing.
    pub deleted: bool,
    /// Spruce `title`; elsewhere the contact's display name.
    pub title: String,
    /// Contact's full name.
    pub contact_name: String,
    /// Channel / type wire value (may be a value the docs do not list).
    pub channel: String,
    /// Unread message count (HighLevel `unreadCount`).
    pub unread_count: u32,
    /// Starred (HighLevel).
    pub starred: bool,
    /// Assigned teammate id, if any.
    pub assignee: Option<String>,
    /// Number of messages (including internal notes).
    pub message_count: u32,
    /// Kind of the newest message.
    pub last_message_kind: Option<MessageKind>,
    /// Direction of the newest message.
    pub last_message_direction: Option<MessageDirection>,
    /// Time of the newest inbound message.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Time of the newest outbound message.
    pub last_outbound_at: Option<DateTime<Utc>>,
    /// The contact wrote last (internal notes ignored): a reply is owed.
    pub awaiting_reply: bool,
    /// When any field last changed.
    pub changed_at: DateTime<Utc>,
    /// When that change is (or was) visible in listings.
    pub visible_at: DateTime<Utc>,
}

fn opt_time(us: i64) -> Option<DateTime<Utc>> {
    (us != NO_TS).then(|| us_to_datetime(us))
}

/// Platform-specific state of a conversation.
pub(crate) fn state_of(provider: Platform, conv: &Conv) -> ConversationState {
    if conv.is_open() {
        return ConversationState::Active;
    }
    match provider {
        Platform::D365 | Platform::HighLevel => ConversationState::Closed,
        Platform::Sinch => ConversationState::Inactive,
        Platform::Spruce => ConversationState::Archived,
    }
}

/// Truth record of conversation `seq`.
pub(crate) fn truth_of(world: &AccountWorld, account: &str, seq: u32) -> TruthConversation {
    let conv = &world.convs[seq as usize];
    let person = Person::of(world.key, conv.contact, conv.title_rev);
    TruthConversation {
        provider: world.provider,
        account: account.to_owned(),
        id: naming::conversation_id(world, seq),
        contact_id: naming::contact_id(world, conv.contact),
        created_at: us_to_datetime(conv.created_us),
        last_activity_at: opt_time(conv.last_activity_us),
        state: state_of(world.provider, conv),
        deleted: conv.deleted,
        title: person.full_name(),
        contact_name: person.full_name(),
        channel: fake::channel_name(world.provider, conv.channel).to_owned(),
        unread_count: u32::from(conv.unread),
        starred: conv.starred,
        assignee: naming::teammate_id(world, conv.assignee),
        message_count: conv.msg_count,
        last_message_kind: conv.last_kind(),
        last_message_direction: conv.last_kind().map(MessageKind::direction),
        last_inbound_at: opt_time(conv.last_inbound_us),
        last_outbound_at: opt_time(conv.last_outbound_us),
        awaiting_reply: conv.last_inbound_us != NO_TS
            && conv.last_inbound_us > conv.last_outbound_us,
        changed_at: us_to_datetime(conv.changed_us),
        visible_at: us_to_datetime(conv.visible_at_us),
    }
}
