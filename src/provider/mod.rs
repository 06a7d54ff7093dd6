//! The seam between the sync engine and the platforms.
//!
//! A provider adapter is pure translation: it turns cursor state into the next HTTP
//! request and a response into mirror records plus the next cursor state. It never talks
//! to the database, never sleeps and never retries; the engine in [`crate::sync`] owns
//! scheduling, rate limits, retries, checkpoints, metrics and shutdown, and never knows a
//! provider's field names.
//!
//! To add a provider, implement [`Provider`]:
//! - [`Provider::walks`]: the paged listings it runs. A *delta* walk fetches what changed
//!   since its watermark; a *sweep* walks everything and lets the engine mark the rows it did
//!   not see as closed or deleted.
//! - [`Provider::build_request`] / [`Provider::parse_page`]: one page of a walk.
//! - optionally [`Provider::build_detail_request`] / [`Provider::parse_detail`]: per-conversation
//!   follow-up requests (messages, items) queued by pages.
//! - optionally page-token rejection ([`Provider::is_position_rejected`]), and its
//!   [`ResponsePolicy`]: error description and rate-limit
//!   header pacing.
//!
//! Then give it a folder of its own following the template of [`registry`] (`setup`,
//! `defaults`, `account_suffixes` and its `[sources.<name>]` settings type) and one line in
//! its `for_each_provider!`.

pub mod d365;
pub mod highlevel;
pub mod registry;
pub mod sinch;
pub mod spruce;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

// The record types live in the base module `crate::record` (the store uses them too).
pub use crate::record::{
    Absence, ActivityPatch, ConversationRecord, DetailRequest, Direction, RejectedRecord,
};

pub use registry::{ProviderKind, ProviderTable};

use crate::http::{AuthScheme, HttpResponse, RateQuota, RequestSpec, ResponsePolicy};
use crate::time::Timestamp;

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

/// One paged listing a provider offers. `name` keys its cursor in the database, so it must
/// stay stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkSpec {
    /// Stable name (`delta`, `created`, `sweep`, ...).
    pub name: &'static str,
    /// Delta or sweep.
    pub kind: WalkKind,
}

/// Everything a provider needs to build or read one page of a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkContext<'a> {
    /// Which walk.
    pub walk: &'a WalkSpec,
    /// Lower bound for a delta walk (`watermark − lookback`); `None` for a full walk.
    pub since: Option<Timestamp>,
    /// Where the walk stands: `None` for its first page, else what the previous page
    /// returned as [`Page::next`].
    pub position: Option<&'a Value>,
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

/// The result of one follow-up request.
#[derive(Debug, Default)]
pub struct DetailPage {
    /// A fresh copy of the conversation, to upsert.
    pub record: Option<ConversationRecord>,
    /// Who-spoke-last facts to merge into the row.
    pub patch: Option<ActivityPatch>,
    /// The conversation no longer exists or is closed (the provider answered 404).
    pub gone: Option<Absence>,
    /// More pages of this follow-up are needed from this position.
    pub next: Option<Value>,
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
    /// The provider does not implement this follow-up kind.
    #[error("unsupported follow-up kind {0:?}")]
    UnsupportedDetail(String),
}

impl ProviderError {
    /// The same error with the provider text it quotes scrubbed of secrets and cut to a
    /// bounded length (a malformed page may quote a megabyte-long id).
    pub fn redacted(self) -> Self {
        use crate::secret::redact::provider_text;
        match self {
            ProviderError::Malformed(text) => ProviderError::Malformed(provider_text(&text)),
            ProviderError::BadCursor(text) => ProviderError::BadCursor(provider_text(&text)),
            ProviderError::UnsupportedDetail(text) => {
                ProviderError::UnsupportedDetail(provider_text(&text))
            }
        }
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
    fn walks(&self) -> &[WalkSpec];

    /// The request for the page of `ctx.walk` at `ctx.position`.
    fn build_request(&self, ctx: &WalkContext<'_>) -> Result<RequestSpec, ProviderError>;

    /// Reads one page of `ctx.walk`.
    fn parse_page(
        &self,
        ctx: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError>;

    /// The request for a queued follow-up.
    fn build_detail_request(&self, detail: &DetailRequest) -> Result<RequestSpec, ProviderError> {
        Err(ProviderError::UnsupportedDetail(detail.kind.clone()))
    }

    /// Reads a follow-up's response (404 responses reach this method when the request
    /// allowed them).
    fn parse_detail(
        &self,
        detail: &DetailRequest,
        response: &HttpResponse,
    ) -> Result<DetailPage, ProviderError> {
        let _ = response;
        Err(ProviderError::UnsupportedDetail(detail.kind.clone()))
    }

    /// Whether a rejected request means "your page token is no longer valid", so that the
    /// engine restarts the walk from its watermark instead of failing the cycle.
    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        let _ = (status, body);
        false
    }

    /// The later delta walks that a first, unbounded listing of `walk` makes unnecessary:
    /// it lists every conversation with the fields they watch, so they start from the
    /// listing's start instead of listing everything once more (see
    /// `sync::cycle::first_sync`). None by default.
    fn covered_by_first_listing(&self, walk: &WalkSpec) -> &[&'static str] {
        let _ = walk;
        &[]
    }

    /// Share (0.0–1.0) of the source's `max_follow_ups_per_cycle` that this provider's
    /// follow-ups may use in one cycle: providers whose follow-ups are optional enrichment
    /// (D365 messages) keep them to a small share of the request budget.
    fn follow_up_share(&self) -> f64 {
        1.0
    }
}
