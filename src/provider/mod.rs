//! The seam between the sync engine and the platforms.
//!
//! A provider adapter is pure translation: it turns cursor state into the next HTTP
//! request and a response into mirror records plus the next cursor state. It never talks
//! to the database, never sleeps and never retries; the engine in [`crate::sync`] owns
//! scheduling, rate limits, retries, checkpoints, metrics and shutdown, and never knows a
//! provider's field names.
//!
//! To add a provider, implement [`Provider`], which hands the engine three small parts:
//! - [`Provider::walks`]: the paged listings it runs, each a [`Walk`] object with its own
//!   request building and page parsing ([`walk`]). A *delta* walk fetches what changed
//!   since its watermark; a *sweep* walks everything and lets the engine mark the rows it
//!   did not see as closed or deleted. A walk's stable name only keys its cursor.
//! - optionally [`Provider::follow_ups`]: per-conversation follow-up requests (messages,
//!   items) queued by pages, their stored kind read back into a typed [`FollowUp`]
//!   ([`follow_up`]), and the share of a cycle's budget they may use.
//! - optionally page-token rejection ([`Provider::is_position_rejected`]), and its
//!   [`ResponsePolicy`]: error description and rate-limit header pacing.
//!
//! Then give it a folder of its own following the template of [`registry`] (`setup`,
//! `defaults`, `account_suffixes` and its `[sources.<name>]` settings type) and one line in
//! its `for_each_provider!`.

pub mod d365;
pub mod directory;
pub mod follow_up;
pub mod highlevel;
pub mod registry;
pub mod sinch;
pub mod spruce;
pub mod walk;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

// The record types live in the base module `crate::record` (the store uses them too).
pub use crate::record::{
    Absence, ActivityPatch, ConversationRecord, DetailRequest, Direction, RejectedRecord,
};

pub use follow_up::{DetailPage, FollowUp, FollowUpKind, FollowUps, NoFollowUps};
pub use registry::{ProviderKind, ProviderTable};
pub use walk::{InitialSweep, Page, Walk, WalkContext, WalkKind, WalkSpec, WatermarkAdvance};
pub use webhook::{WebhookChange, WebhookEvent, WebhookRejection, WebhookRequest, Webhooks};

use crate::http::{AuthScheme, RateQuota, ResponsePolicy};

impl ProviderKind {
    /// The kind named `name` in a config file (`provider = "…"`).
    pub fn from_config_name(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Passed to a provider's `setup` so its errors name the right config key.
#[derive(Debug, Clone, Copy)]
pub struct SetupContext<'a> {
    /// The source's key prefix, e.g. `sources[support-sms]`.
    pub key: &'a str,
}

impl SetupContext<'_> {
    /// The full key of a provider setting, e.g. `sources[support-sms].sinch.app_id`.
    pub fn key(&self, provider: ProviderKind, field: &str) -> String {
        format!("{}.{}.{}", self.key, provider.as_str(), field)
    }
}

/// A provider's defaults for the source settings a user may leave out.
#[derive(Debug, Clone)]
pub struct ProviderDefaults {
    /// Default time between cycles.
    pub poll_interval: Duration,
    /// The shortest interval accepted, with the reason shown when a config asks for less.
    pub min_poll_interval: Duration,
    /// Why the minimum exists.
    pub min_poll_reason: &'static str,
    /// Default delta overlap.
    pub lookback: Duration,
    /// Default time between sweeps.
    pub sweep_interval: Duration,
    /// The provider's documented request quota, if any.
    pub quota: Option<RateQuota>,
}

/// What a provider's `setup` produces for one source (or one of several, e.g. one per
/// HighLevel location): the adapter, how to authenticate, and which sources share a
/// credential.
#[derive(Clone)]
pub struct ProviderSetup {
    /// The adapter.
    pub provider: Arc<dyn Provider>,
    /// Authentication for its requests.
    pub auth: AuthScheme,
    /// Sources with equal keys share one token cache (same credential). Must not contain
    /// a secret (use [`crate::secret::Secret::fingerprint`]).
    pub credential_key: String,
    /// Sources with equal keys share one request budget (the provider's rate-limit scope).
    pub budget_key: String,
    /// Appended to the source name (`name/suffix`) whenever present, so that a source's name
    /// does not change when the entry gains a second account.
    pub name_suffix: Option<String>,
    /// Defaults for this provider.
    pub defaults: ProviderDefaults,
}

impl std::fmt::Debug for ProviderSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSetup")
            .field("provider", &self.provider.kind())
            .field("account", &self.provider.account())
            .field("auth", &self.auth)
            .field("name_suffix", &self.name_suffix)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// A count a provider reports (a page's total): a non-negative integer, or a string holding
/// one (as protobuf JSON gateways write integers); anything else is no count at all.
pub(crate) fn lenient_count(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A provider's response or request could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The page is not what the API documents (malformed JSON, missing required keys).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The cursor state cannot be turned into a request.
    #[error("invalid cursor state: {0}")]
    BadCursor(String),
    /// A queued follow-up's stored kind is none this provider knows: queued by another
    /// version of convsync, or the queue was edited.
    #[error("unknown follow-up kind {kind:?} (this provider queues {known})")]
    UnknownFollowUpKind {
        /// The stored kind.
        kind: String,
        /// The kinds the provider knows, quoted, or "no follow-ups".
        known: String,
    },
}

impl ProviderError {
    /// [`ProviderError::UnknownFollowUpKind`] for the stored `kind`, given the kinds the
    /// provider knows.
    pub fn unknown_follow_up_kind<'k>(
        kind: &str,
        known: impl IntoIterator<Item = &'k str>,
    ) -> Self {
        let known: Vec<String> = known.into_iter().map(|k| format!("{k:?}")).collect();
        ProviderError::UnknownFollowUpKind {
            kind: kind.to_owned(),
            known: if known.is_empty() {
                "no follow-ups".to_owned()
            } else {
                known.join(", ")
            },
        }
    }

    /// The same error with the provider text it quotes scrubbed of secrets and cut to a
    /// bounded length (a malformed page may quote a megabyte-long id).
    pub fn redacted(self) -> Self {
        use crate::secret::redact::provider_text;
        match self {
            ProviderError::Malformed(text) => ProviderError::Malformed(provider_text(&text)),
            ProviderError::BadCursor(text) => ProviderError::BadCursor(provider_text(&text)),
            ProviderError::UnknownFollowUpKind { kind, known } => {
                ProviderError::UnknownFollowUpKind {
                    kind: provider_text(&kind),
                    known,
                }
            }
        }
    }
}

impl crate::retry::Transient for ProviderError {
    /// A malformed page may be a provider's hiccup (a truncated or half-written answer):
    /// fetched again, it may parse. A bad cursor or an unknown follow-up kind stays bad.
    fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Malformed(_))
    }
}

/// A platform adapter. See the module documentation. How its error answers and rate-limit
/// headers are read is its [`ResponsePolicy`], which the HTTP client is given with each
/// request.
pub trait Provider: ResponsePolicy + Send + Sync + 'static {
    /// Which platform.
    fn kind(&self) -> ProviderKind;

    /// The provider account this adapter reads (org, app, location id), for the mirror's
    /// `account` column.
    fn account(&self) -> &str;

    /// The walks this provider runs; deltas run in this order every cycle.
    fn walks(&self) -> &[Arc<dyn Walk>];

    /// Its follow-ups; none by default.
    fn follow_ups(&self) -> &dyn FollowUps {
        &NoFollowUps
    }

    /// Whether a rejected request means "your page token is no longer valid", so that the
    /// engine restarts the walk (or follow-up) from its start instead of failing.
    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        let _ = (status, body);
        false
    }

    /// Its webhooks ([`webhook`]), when the source's config gives their key; none by
    /// default.
    fn webhooks(&self) -> Option<&dyn Webhooks> {
        None
    }

    /// The log of the webhook events the provider sent ([`webhook::replay`]), when it keeps
    /// one and the source's config names it; none by default.
    fn event_log(&self) -> Option<&dyn webhook::replay::EventLog> {
        None
    }
}
