//! Webhooks: a provider's pushed events, authenticated and read into what they mean for the
//! mirror.
//!
//! A provider that can push events hands the receiver a [`Webhooks`] object, built at setup
//! from the source's webhook key (a shared secret, or HighLevel's published public key). Like
//! the rest of a provider it is pure translation: it checks a request's signature or token
//! ([`Webhooks::authenticate`]) and reads an authenticated body into [`WebhookEvent`]s
//! ([`Webhooks::parse`]). The receiver owns everything else: the listener and its caps, the
//! replay window (from [`WebhookEvent::sent_at`]), dedupe (on [`WebhookEvent::event_id`]),
//! the durable write, and the ordering rule that keeps an older event from overwriting newer
//! state (from [`WebhookEvent::changed_at`]).

pub mod fields;
pub mod replay;
pub mod signature;

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::record::{ActivityPatch, ConversationRecord, DetailRequest};
use crate::time::Timestamp;

/// One HTTP request as the receiver got it: nothing in it is trusted until
/// [`Webhooks::authenticate`] accepts it.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// The path below the source's own webhook path, `""` when the provider posts to the
    /// configured URL itself (D365 appends `/v3/conversations/{id}/activities`).
    pub subpath: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as received (signatures cover these bytes).
    pub body: &'a [u8],
}

/// Why a webhook request is refused. Never quotes the body or a secret: it is logged and
/// counted (by [`WebhookRejection::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// The signature or token header is absent.
    #[error("missing {header} header")]
    MissingSignature {
        /// The header the provider signs with.
        header: &'static str,
    },
    /// The signature or token does not match the source's key.
    #[error("bad signature in {header}")]
    BadSignature {
        /// The header that carried it.
        header: &'static str,
    },
    /// The bearer token is not one the source accepts (D365's Entra-issued tokens): the
    /// problem names the check that failed, never the token.
    #[error("invalid token in {header}: {problem}")]
    InvalidToken {
        /// The header that carried it.
        header: &'static str,
        /// Which check failed.
        problem: &'static str,
    },
    /// What the token is checked against (an identity provider's signing keys) cannot be
    /// had now: the request is neither accepted nor refused for good, and the provider is
    /// asked to send it again.
    #[error("the keys to check the {header} token against cannot be fetched")]
    KeysUnavailable {
        /// The header that carried the token.
        header: &'static str,
    },
    /// Authentic, but not what the provider documents.
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl WebhookRejection {
    /// A short stable word for metrics labels and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookRejection::MissingSignature { .. } => "missing_signature",
            WebhookRejection::BadSignature { .. } => "bad_signature",
            WebhookRejection::InvalidToken { .. } => "invalid_token",
            WebhookRejection::KeysUnavailable { .. } => "keys_unavailable",
            WebhookRejection::Malformed(_) => "malformed",
        }
    }

    /// Whether the request may succeed when sent again unchanged (the receiver then asks
    /// the provider to retry instead of answering 401).
    pub fn is_retryable(&self) -> bool {
        matches!(self, WebhookRejection::KeysUnavailable { .. })
    }
}

/// One event a provider pushed, in the mirror's vocabulary.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// Unique per source and stable across the provider's retries: the provider's event id
    /// (Spruce's event id, HighLevel's `webhookId`, Sinch's message or event id), or, where
    /// it gives none, a hash of what identifies the event.
    pub event_id: String,
    /// When the provider sent (and signed) it, for the replay window; `None` when the
    /// provider states no time, and then only dedupe guards against replays.
    pub sent_at: Option<Timestamp>,
    /// When the change itself happened, by the provider's clock: the ordering rule's key.
    pub changed_at: Option<Timestamp>,
    /// The provider account the event belongs to (HighLevel's `locationId`, Sinch's project
    /// or app, Spruce's organization), when one webhook URL serves several sources.
    pub account: Option<String>,
    /// The provider's own event name (`conversation.updated`, `InboundMessage`, …), for
    /// logs and metrics.
    pub kind: String,
    /// What it means for the mirror.
    pub change: WebhookChange,
}

/// What an event means for the mirror.
#[derive(Debug, Clone)]
pub enum WebhookChange {
    /// A full copy of the conversation (Spruce's envelopes carry the whole resource).
    Conversation(Box<ConversationRecord>),
    /// New activity in a conversation: its time and who spoke.
    Activity {
        /// The conversation.
        conversation_id: String,
        /// The facts the event tells.
        patch: ActivityPatch,
    },
    /// The conversation's unread count changed (HighLevel's `ConversationUnreadUpdate`).
    UnreadCount {
        /// The conversation.
        conversation_id: String,
        /// The new count.
        unread_count: i64,
    },
    /// The conversation was closed (D365's `ConversationClosed`, `AgentClosed`).
    Closed {
        /// The conversation.
        conversation_id: String,
    },
    /// The conversation was deleted at the provider.
    Deleted {
        /// The conversation.
        conversation_id: String,
    },
    /// Something changed that only a fresh read can tell: queue this follow-up.
    Refetch(DetailRequest),
    /// The app was installed on an account (HighLevel `AppInstall`): a new source to run.
    AccountInstalled {
        /// The account.
        account: String,
        /// Who installed it (HighLevel's `companyId`), when the event says.
        company: Option<String>,
    },
    /// The app was removed from an account (HighLevel `AppUninstall`).
    AccountUninstalled {
        /// The account.
        account: String,
        /// Who removed it (HighLevel's `companyId`), when the event says.
        company: Option<String>,
    },
    /// Authentic, but about nothing the mirror keeps (a contact, a typing indicator):
    /// acknowledged and counted, never written.
    Unrelated,
}

/// A provider's webhooks: how a request is authenticated and what its body means.
#[async_trait::async_trait]
pub trait Webhooks: Send + Sync {
    /// Accepts the request only when its signature or token matches the source's key.
    /// Called before [`Webhooks::parse`], which never sees an unauthenticated body.
    /// Asynchronous because a key may have to be fetched first (D365's Entra signing keys).
    async fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookRejection>;

    /// Reads an authenticated request into its events (usually one).
    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<WebhookEvent>, WebhookRejection>;

    /// How long after an event's [`WebhookEvent::sent_at`] the provider may still deliver
    /// it with that same time: its retries keep the original time. The receiver widens the
    /// replay window by this much, so that a provider's own late retry is not refused as a
    /// replay (dedupe still keeps it to one write). Zero for providers that sign each
    /// delivery afresh or state no time.
    fn retry_horizon(&self) -> Duration {
        Duration::ZERO
    }

    /// The follow-up this source's polls queue when a conversation's activity moves (it
    /// reads what a listing does not carry, e.g. who spoke last), or `None`. An event that
    /// moves the activity queues it too: the next poll then finds the activity already
    /// moved and would not, so without this what the event did not carry would never be
    /// read.
    fn follow_up_on_activity(&self) -> Option<&'static str> {
        None
    }
}
