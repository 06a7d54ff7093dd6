//! Provider simulator: a faithful fake of the four "list conversations" APIs (Dynamics 365
//! Contact Center, Spruce, Sinch, HighLevel), served over HTTP on loopback, for the
//! integration tests, the benchmarks and the one-command demo (`convsync simulate`, which
//! the daemon builds with its default cargo feature `sim`). It knows nothing of convsync
//! itself: the daemon's `sim_config` turns a running simulator into a convsync
//! configuration.
//!
//! Each provider gets its own listener (like separate hosts in the real world) and a
//! control listener exposes the ground truth, request counters, fault knobs, the
//! activity generator and the simulated clock. Everything is deterministic from the seed:
//! the same seed gives the same accounts, the same world, the same sequence of changes.
//!
//! Module map: [`options`] (start-up flags), `world` (conversations, messages, sorted
//! indexes, eventual consistency), `activity` (targeted and random changes), `faults`,
//! one front-end per provider (`d365`, `spruce`, `sinch`, `highlevel`) on the skeleton in
//! `frontend` (routing, admission, paging), `server` (accept loop and fault layer), `control` + [`SimClient`] (the control API),
//! `webhooks` (the signed events each change causes, sent to a loopback receiver, with
//! faults; Spruce's delivery log).

mod accounts;
mod activity;
mod client;
mod clock;
mod control;
mod core;
mod counters;
mod cursors;
mod d365;
pub mod entra;
mod fake;
mod faults;
mod frontend;
mod highlevel;
mod ids;
mod naming;
pub mod options;
mod platform;
mod quota;
mod server;
mod sinch;
mod spruce;
mod state;
mod tokens;
mod truth;
mod webhooks;
mod wire;
mod world;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

pub use self::accounts::{
    D365Account, HighLevelAgency, HighLevelLocation, SimAccounts, SinchAccount, SpruceAccount,
};
pub use self::activity::{Affected, EditField, Mutation, SimError};
pub use self::client::SimClient;
pub use self::control::{ActivityCommand, ActivityOutcome, ClockReading, SimUrls, WebhookTarget};
pub use self::counters::{RequestAuth, RequestCount, RequestCounts, ScopeCount, Sighting};
pub use self::fake::{channel_table, unknown_channel};
pub use self::faults::{Faults, LatencyFault, RateLimitFault, RetryAfter};
pub use self::options::SimOptions;
pub use self::platform::{Platform, PlatformSelector, UnknownPlatform};
pub use self::truth::{ConversationState, TruthConversation};
pub use self::webhooks::{
    HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM, WebhookCount, WebhookCounts, WebhookFaults, WebhookOutcome,
    WebhookTargetError,
};
pub use self::world::{MessageDirection, MessageKind};

use self::core::SimCore;

/// Entry point: starts a simulator.
pub struct Simulator;

impl Simulator {
    /// Generate the world, bind every listener and start serving. Returns as soon as the
    /// listeners accept connections; the simulator runs until [`SimHandle::shutdown`].
    pub async fn start(options: SimOptions) -> anyhow::Result<SimHandle> {
        Ok(SimHandle {
            core: SimCore::start(options).await?,
        })
    }
}

/// A running simulator (cheap to clone; every clone controls the same instance).
#[derive(Clone)]
pub struct SimHandle {
    core: Arc<SimCore>,
}

impl SimHandle {
    /// D365 Messaging API host (what the real `https://m-{org}.{geo}.omnichannelengagementhub.com` is).
    pub fn d365_base_url(&self) -> Url {
        self.core.urls.d365.clone()
    }

    /// Entra token endpoint of `tenant` (served by the D365 listener).
    pub fn d365_token_url(&self, tenant: &str) -> Url {
        let mut url = self.core.urls.d365.clone();
        url.set_path(&format!("/{tenant}/oauth2/v2.0/token"));
        url
    }

    /// D365 "login" authority (what `https://login.microsoftonline.com` is).
    pub fn d365_login_url(&self) -> Url {
        self.core.urls.d365.clone()
    }

    /// Spruce API host (what `https://api.sprucehealth.com` is; paths start with `/v1`).
    pub fn spruce_base_url(&self) -> Url {
        self.core.urls.spruce.clone()
    }

    /// Sinch Conversation API host (what `https://us.conversation.api.sinch.com` is).
    pub fn sinch_base_url(&self) -> Url {
        self.core.urls.sinch.clone()
    }

    /// Sinch OAuth token endpoint (what `https://auth.sinch.com/oauth2/token` is).
    pub fn sinch_token_url(&self) -> Url {
        let mut url = self.core.urls.sinch.clone();
        url.set_path("/oauth2/token");
        url
    }

    /// HighLevel API host (what `https://services.leadconnectorhq.com` is).
    pub fn highlevel_base_url(&self) -> Url {
        self.core.urls.highlevel.clone()
    }

    /// HighLevel OAuth token endpoint.
    pub fn highlevel_token_url(&self) -> Url {
        let mut url = self.core.urls.highlevel.clone();
        url.set_path("/oauth/token");
        url
    }

    /// Control/truth listener.
    pub fn control_url(&self) -> Url {
        self.core.urls.control.clone()
    }

    /// All listener URLs.
    pub fn urls(&self) -> SimUrls {
        self.core.urls.clone()
    }

    /// A control-API client for this instance (same as a process-level test would use).
    pub fn client(&self) -> SimClient {
        SimClient::new(self.control_url())
    }

    /// Accounts and credentials, to write a convsync configuration.
    pub fn accounts(&self) -> &SimAccounts {
        &self.core.accounts
    }

    /// Whether D365's webhooks authenticate with Entra access tokens in `Authorization:
    /// Bearer` (a 2025-09 tenant, `--d365-header-names plain`) rather than a static
    /// `x-ms-token`: a daemon then configures `webhook_entra`, not `webhook_token`.
    pub fn d365_sends_entra_tokens(&self) -> bool {
        self.core.webhooks.settings.d365_bearer
    }

    /// Truth of one account: every conversation ever created (deleted ones flagged),
    /// changes included immediately, with the time each becomes visible.
    pub async fn truth(
        &self,
        provider: Platform,
        account: &str,
    ) -> Result<Vec<TruthConversation>, SimError> {
        let core = Arc::clone(&self.core);
        let account = account.to_owned();
        tokio::task::spawn_blocking(move || core.truth(provider, &account))
            .await
            .unwrap_or_else(|_| Ok(Vec::new()))
    }

    /// Replace the faults of one provider or of all.
    pub fn set_faults(&self, selector: impl Into<PlatformSelector>, faults: Faults) {
        self.core.set_faults(selector.into(), faults);
    }

    /// Current faults of a provider.
    pub fn faults(&self, provider: Platform) -> Faults {
        self.core.faults(provider)
    }

    /// Request counters per provider, endpoint, status and auth scheme.
    pub fn request_counts(&self) -> RequestCounts {
        self.core.counters.snapshot()
    }

    /// Zero the request counters.
    pub fn reset_counts(&self) {
        self.core.counters.reset();
    }

    /// Stop the background activity generator.
    pub fn pause_activity(&self) {
        self.core.set_paused(true);
    }

    /// Restart the background activity generator.
    pub fn resume_activity(&self) {
        self.core.set_paused(false);
    }

    /// Apply `count` random changes now (the same sequence for the same seed).
    pub async fn apply_activity(&self, count: u64) -> Affected {
        let core = Arc::clone(&self.core);
        tokio::task::spawn_blocking(move || core.apply_random(count))
            .await
            .unwrap_or_default()
    }

    /// Apply one targeted change; returns the ids touched.
    pub fn mutate(
        &self,
        provider: Platform,
        account: &str,
        mutation: Mutation,
    ) -> Result<Affected, SimError> {
        self.core.mutate(provider, account, &mutation)
    }

    /// Create `count` conversations (each with a first inbound message, except D365).
    pub fn create_conversations(
        &self,
        provider: Platform,
        account: &str,
        count: u32,
    ) -> Result<Affected, SimError> {
        self.mutate(provider, account, Mutation::CreateConversations { count })
    }

    /// Add a message of `kind` to conversation `id`.
    pub fn add_message(
        &self,
        provider: Platform,
        account: &str,
        id: &str,
        kind: MessageKind,
    ) -> Result<Affected, SimError> {
        self.mutate(
            provider,
            account,
            Mutation::AddMessage {
                id: id.to_owned(),
                message: kind,
            },
        )
    }

    /// Close (D365), deactivate (Sinch) or archive (Spruce) conversation `id`.
    pub fn close(&self, provider: Platform, account: &str, id: &str) -> Result<Affected, SimError> {
        self.mutate(provider, account, Mutation::Close { id: id.to_owned() })
    }

    /// Delete conversation `id`.
    pub fn delete(
        &self,
        provider: Platform,
        account: &str,
        id: &str,
    ) -> Result<Affected, SimError> {
        self.mutate(provider, account, Mutation::Delete { id: id.to_owned() })
    }

    /// Change a non-activity field of conversation `id`.
    pub fn edit(
        &self,
        provider: Platform,
        account: &str,
        id: &str,
        field: EditField,
    ) -> Result<Affected, SimError> {
        self.mutate(
            provider,
            account,
            Mutation::Edit {
                id: id.to_owned(),
                field,
            },
        )
    }

    /// `size` conversations sharing one exact last-activity (D365: creation) timestamp.
    pub fn tie_cluster(
        &self,
        provider: Platform,
        account: &str,
        size: u32,
    ) -> Result<Affected, SimError> {
        self.mutate(provider, account, Mutation::TieCluster { size })
    }

    /// Forget every issued access token of one provider or all (static tokens survive).
    pub fn revoke_tokens(&self, selector: impl Into<PlatformSelector>) {
        self.core.revoke_tokens(selector.into());
    }

    /// Send `account`'s webhook events to `url` (`None`: stop). Only loopback `http` URLs
    /// are accepted: a test must never send anywhere else.
    pub fn set_webhook_target(
        &self,
        provider: Platform,
        account: &str,
        url: Option<Url>,
    ) -> Result<(), WebhookTargetError> {
        self.core.webhooks.set_target(provider, account, url)
    }

    /// Send every account's webhook events to `{base}{provider}-{i}` (HighLevel:
    /// `{base}highlevel`), as `--webhook-base` does at start: for a receiver whose port is
    /// known only once the simulator runs (`convsync demo`).
    pub fn set_webhook_base(&self, base: &Url) -> Result<(), WebhookTargetError> {
        self.core.webhooks.set_base(base)
    }

    /// Replace the webhook faults of one provider or of all.
    pub fn set_webhook_faults(&self, selector: impl Into<PlatformSelector>, faults: WebhookFaults) {
        for provider in selector.into().providers() {
            self.core.webhooks.set_faults(provider, faults.clone());
        }
    }

    /// Current webhook faults of a provider.
    pub fn webhook_faults(&self, provider: Platform) -> WebhookFaults {
        self.core.webhooks.faults(provider)
    }

    /// What happened to the webhook events so far, per account: the truth to compare a
    /// receiver's counts with.
    pub fn webhook_counts(&self) -> WebhookCounts {
        self.core.webhooks.snapshot()
    }

    /// Zero the webhook counters (the Spruce delivery log is kept).
    pub fn reset_webhook_counts(&self) {
        self.core.webhooks.reset();
    }

    /// Move the simulated clock forward.
    pub fn advance_clock(&self, by: Duration) {
        self.core.advance_clock(by);
    }

    /// The simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        self.core.clock.now()
    }

    /// Stop serving and wait (bounded) for open connections to finish.
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}
