//! Sinch Conversation API v1: the conversations of one (or several) Conversation API apps.
//!
//! # Change detection without a time filter
//!
//! `GET /conversations` has no "changed since" parameter, no documented order and at most
//! 20 rows per page, so walking it every cycle would cost `active / 20` requests however
//! little changed. Two cheaper listings exist:
//!
//! - `GET /conversations:recent` lists conversations with their latest message, newest
//!   message first, 50 per page, and embeds the full conversation object.
//! - `GET /messages` filters by time, but only names conversations: each one then needs its
//!   own `GET /conversations/{id}`, so `k` changed conversations cost `1 + k` requests.
//!
//! The **`recent` delta** walks `conversations:recent?order=DESC` from the newest message
//! down and stops at the first conversation whose latest message is at or before
//! `watermark − lookback`: a cycle in which `k` conversations received messages costs
//! `⌈(k + 1) / 50⌉` requests (one when nothing happened), and the page already carries the
//! rows to upsert plus who sent the last message. Its watermark (the newest message time
//! seen) moves only when the walk completes, because the listing is newest-first. Without a
//! watermark (first cycle, or after a full reset) it walks the whole listing, which fills
//! the mirror with every conversation that has messages, most recent first, at 50 per page.
//!
//! What carries no new message — a conversation stopped or expired, metadata edited, an
//! empty conversation created, a conversation deleted by the retention policy — is found by
//! the **`inventory` sweep**, every `sweep_interval` and in the first cycle: the
//! `only_active=true` listing, then the `only_active=false` listing (inactive *only*), as
//! one walk, so that a conversation that moved from active to inactive during the sweep is
//! seen in one of them. Conversations absent from both are marked deleted, behind the
//! engine's mass-change guard. A sweep costs `⌈active / 20⌉ + ⌈inactive / 20⌉` requests.
//!
//! Rows are written only when the conversation object (or its `active` flag) changed: the
//! record's `raw` is the conversation object exactly as listed, identical in both
//! listings, so reading a conversation again costs no write.
//!
//! No follow-up requests are needed: both listings return whole conversation objects.

mod position;
mod webhook;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use self::position::{InventoryPosition, Phase, RecentPosition};
pub use self::webhook::SinchWebhooks;
use super::{
    Absence, InitialSweep, Page, Provider, ProviderDefaults, ProviderError, ProviderKind,
    ProviderSetup, RejectedRecord, SetupContext, Walk, WalkContext, WalkSpec, WatermarkAdvance,
    Webhooks,
};
use crate::config_error::{ConfigError, validate_base_url};
use crate::http::auth::{ClientCredentials, CredentialPlacement};
use crate::http::{AuthScheme, HttpResponse, RateQuota, RequestSpec, ResponsePolicy};
use crate::secret::SecretRef;
use crate::time::Timestamp;

/// Sinch's OAuth2 token endpoint; it serves every region.
pub const DEFAULT_TOKEN_URL: &str = "https://auth.sinch.com/oauth2/token";

/// Largest `page_size` `GET /conversations` accepts.
const LIST_PAGE_SIZE: u32 = 20;
/// Largest `page_size` `GET /conversations:recent` accepts.
const RECENT_PAGE_SIZE: u32 = 50;

/// Sinch's documented Conversation API limit: 800 requests per second per project, shared
/// by every client of the project, including the app's own message sending.
const PROJECT_REQUESTS_PER_SECOND: u32 = 800;
/// The share of that limit convsync takes by default, so that a long sweep never crowds out
/// the sends of the application that owns the project.
const DEFAULT_PROJECT_SHARE_DIVISOR: u32 = 4;

/// The recent-conversations delta (see the module documentation). Its name keys its
/// cursor in the database: never rename it.
const RECENT: WalkSpec = WalkSpec::delta("recent", WatermarkAdvance::AtWalkEnd);
/// The two-listing inventory sweep (see the module documentation). It runs in the first
/// cycle: the delta cannot see conversations without messages, nor stops and deletions.
const INVENTORY: WalkSpec =
    WalkSpec::sweep("inventory", Absence::Deleted, InitialSweep::Immediately);

/// `[sources.sinch]`: one Sinch project and the Conversation API app(s) to mirror.
///
/// ```toml
/// [sources.sinch]
/// region = "eu"
/// project_id = "b3f0c0de-0000-4000-8000-000000000001"
/// app_id = "01EB37HMH1M6SV18ASNS3G135H"
/// key_id = "6f1c2d3e-0000-4000-8000-00000000abcd"
/// key_secret = { env = "SINCH_KEY_SECRET" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinchConfig {
    /// Region the Conversation API app was created in: `us`, `eu` or `br`. It must match
    /// the app's region: Sinch answers 404 for an app of another region. Give either this
    /// or `base_url`.
    #[serde(default)]
    pub region: Option<String>,
    /// Full API base URL instead of a region (a proxy, the simulator). https, or http on
    /// loopback only.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The Sinch project id (the `{project_id}` path segment).
    pub project_id: String,
    /// The Conversation API app id, or a list of app ids of the same project; each app
    /// becomes its own source, named `<source>/<app_id>` (also when there is only one).
    pub app_id: AppIds,
    /// Access key id of a project access key (the OAuth2 client id).
    pub key_id: String,
    /// Access key secret: `{ env = "..." }`, `{ file = "..." }` or `{ credential = "..." }`.
    pub key_secret: SecretRef,
    /// OAuth2 token endpoint (default `https://auth.sinch.com/oauth2/token`).
    #[serde(default)]
    pub token_url: Option<String>,
    /// The secret of the Conversation API webhook that posts to this source's
    /// `/webhooks/NAME` (the webhook's "Secret token"), as a secret reference. When set, the
    /// receiver accepts the callbacks it signs (docs/webhooks.md); one webhook serves every
    /// app of the entry when they share the secret.
    #[serde(default)]
    pub webhook_secret: Option<SecretRef>,
}

/// One app id or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum AppIds {
    /// `app_id = "01EB..."`.
    One(String),
    /// `app_id = ["01EB...", "01HN..."]`.
    Many(Vec<String>),
}

impl AppIds {
    /// The app ids, one or several.
    pub fn ids(&self) -> &[String] {
        match self {
            AppIds::One(id) => std::slice::from_ref(id),
            AppIds::Many(ids) => ids,
        }
    }
}

/// A Sinch region and its Conversation API host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Us,
    Eu,
    Br,
}

impl Region {
    fn parse(key: &str, value: &str) -> Result<Region, ConfigError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "us" => Ok(Region::Us),
            "eu" => Ok(Region::Eu),
            "br" => Ok(Region::Br),
            _ => Err(ConfigError::new(
                key,
                format!(
                    "unknown region {value:?}: expected \"us\", \"eu\" or \"br\" (the region the app was created in)"
                ),
            )),
        }
    }

    fn base_url(self) -> &'static str {
        match self {
            Region::Us => "https://us.conversation.api.sinch.com",
            Region::Eu => "https://eu.conversation.api.sinch.com",
            Region::Br => "https://br.conversation.api.sinch.com",
        }
    }
}

/// Validates the settings, reads the key secret and builds one adapter per app.
pub fn setup(cfg: &SinchConfig, ctx: &SetupContext<'_>) -> Result<Vec<ProviderSetup>, ConfigError> {
    let key = |field: &str| ctx.key(ProviderKind::Sinch, field);
    let base_url = match (&cfg.region, &cfg.base_url) {
        (Some(region), None) => {
            let region = Region::parse(&key("region"), region)?;
            validate_base_url(&key("region"), region.base_url())?
        }
        (None, Some(url)) => validate_base_url(&key("base_url"), url)?,
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                key("base_url"),
                "give either region or base_url, not both",
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                key("region"),
                "missing: set region = \"us\", \"eu\" or \"br\" (the region the app was created in), or base_url",
            ));
        }
    };
    let project_id = path_id(&key("project_id"), &cfg.project_id)?;
    let key_id = cfg.key_id.trim();
    if key_id.is_empty() {
        return Err(ConfigError::new(key("key_id"), "must be the access key id"));
    }
    let app_ids = cfg.app_id.ids();
    if app_ids.is_empty() {
        return Err(ConfigError::new(
            key("app_id"),
            "must name at least one app",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for app_id in app_ids {
        path_id(&key("app_id"), app_id)?;
        if !seen.insert(app_id.trim()) {
            return Err(ConfigError::new(
                key("app_id"),
                format!("app {app_id:?} is listed twice"),
            ));
        }
    }
    let token_url = validate_base_url(
        &key("token_url"),
        cfg.token_url.as_deref().unwrap_or(DEFAULT_TOKEN_URL),
    )?;
    let secret = cfg
        .key_secret
        .resolve()
        .map_err(|e| ConfigError::new(key("key_secret"), e.to_string()))?;
    let credential_key = format!("sinch:{token_url}:{key_id}:{}", secret.fingerprint());
    let webhooks = match &cfg.webhook_secret {
        None => None,
        Some(reference) => {
            let secret = reference
                .resolve()
                .map_err(|e| ConfigError::new(key("webhook_secret"), e.to_string()))?;
            if secret.expose().is_empty() {
                return Err(ConfigError::new(
                    key("webhook_secret"),
                    "is empty: give the secret set on the Sinch webhook",
                ));
            }
            Some(Arc::new(SinchWebhooks::new(secret)))
        }
    };
    let auth = AuthScheme::ClientCredentials(ClientCredentials {
        token_url,
        client_id: key_id.to_owned(),
        client_secret: secret,
        scope: None,
        placement: CredentialPlacement::BasicHeader,
    });
    let setups = app_ids
        .iter()
        .map(|app_id| {
            let app_id = app_id.trim();
            ProviderSetup {
                provider: Arc::new(
                    SinchProvider::new(&base_url, project_id, app_id)
                        .with_webhooks(webhooks.clone()),
                ),
                auth: auth.clone(),
                credential_key: credential_key.clone(),
                // The documented limit is per project.
                budget_key: format!("sinch:project:{project_id}"),
                name_suffix: Some(app_id.to_owned()),
                defaults: defaults(),
            }
        })
        .collect();
    Ok(setups)
}

/// One account per app (`name/<app id>`), listed without resolving a secret.
pub(crate) fn account_suffixes(cfg: &SinchConfig) -> Vec<Option<&str>> {
    cfg.app_id.ids().iter().map(|id| Some(id.trim())).collect()
}

/// Defaults for Sinch sources.
pub(crate) fn defaults() -> ProviderDefaults {
    let requests = PROJECT_REQUESTS_PER_SECOND / DEFAULT_PROJECT_SHARE_DIVISOR;
    ProviderDefaults {
        poll_interval: Duration::from_secs(60),
        min_poll_interval: Duration::from_secs(10),
        min_poll_reason: "every cycle costs at least one request against the project's shared rate limit; use Sinch webhooks for lower latency",
        lookback: Duration::from_secs(5 * 60),
        sweep_interval: Duration::from_secs(60 * 60),
        quota: Some(RateQuota {
            requests: std::num::NonZeroU32::new(requests).unwrap_or(std::num::NonZeroU32::MIN),
            per: Duration::from_secs(1),
            burst: std::num::NonZeroU32::MIN,
        }),
    }
}

/// An id that becomes a URL path segment: non-empty, no whitespace or `/`.
fn path_id<'a>(key: &str, value: &'a str) -> Result<&'a str, ConfigError> {
    let value = value.trim();
    if value.is_empty()
        || value.contains(|c: char| c.is_whitespace() || c == '/' || c == '?' || c == '#')
    {
        return Err(ConfigError::new(
            key,
            format!("{value:?} is not an id: expected a non-empty value without spaces or '/'"),
        ));
    }
    Ok(value)
}

/// The adapter for one Conversation API app.
#[derive(Debug)]
pub struct SinchProvider {
    app_id: String,
    base_url: Url,
    /// The recent delta, then the inventory sweep (when due).
    walks: [Arc<dyn Walk>; 2],
    /// Its callbacks' check and reading, when `webhook_secret` is configured.
    webhooks: Option<Arc<SinchWebhooks>>,
}

impl SinchProvider {
    /// An adapter reading `app_id` of `project_id` at `base_url`.
    pub fn new(base_url: &Url, project_id: &str, app_id: &str) -> Self {
        let endpoint = |last: &str| {
            let mut url = base_url.clone();
            url.set_query(None);
            url.set_fragment(None);
            if let Ok(mut segments) = url.path_segments_mut() {
                segments
                    .pop_if_empty()
                    .extend(["v1", "projects", project_id, last]);
            }
            url
        };
        SinchProvider {
            app_id: app_id.to_owned(),
            base_url: base_url.clone(),
            walks: [
                Arc::new(RecentWalk {
                    app_id: app_id.to_owned(),
                    recent_url: endpoint("conversations:recent"),
                }),
                Arc::new(InventoryWalk {
                    app_id: app_id.to_owned(),
                    conversations_url: endpoint("conversations"),
                }),
            ],
            webhooks: None,
        }
    }

    /// The same adapter, accepting the callbacks `webhooks` checks.
    pub fn with_webhooks(mut self, webhooks: Option<Arc<SinchWebhooks>>) -> Self {
        self.webhooks = webhooks;
        self
    }
}

/// The `recent` delta over `GET /conversations:recent`.
#[derive(Debug)]
struct RecentWalk {
    app_id: String,
    recent_url: Url,
}

impl Walk for RecentWalk {
    fn spec(&self) -> WalkSpec {
        RECENT
    }

    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let position = RecentPosition::from_cursor(at.position)?;
        let mut url = self.recent_url.clone();
        {
            // `only_active` stays out: its default (false) lists every conversation here.
            let mut query = url.query_pairs_mut();
            query
                .append_pair("app_id", &self.app_id)
                .append_pair("order", "DESC")
                .append_pair("page_size", &RECENT_PAGE_SIZE.to_string());
            if let Some(p) = &position {
                query.append_pair("page_token", &p.page_token);
            }
        }
        Ok(RequestSpec::get(url, "conversations:recent"))
    }

    /// A page of the recent delta: newest message first, so the walk ends at the first
    /// conversation whose latest message is at or before `since`.
    fn parse_page(
        &self,
        at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let envelope = wire::read_envelope(&response.body)?;
        let (mut page, activities) = read_items(&envelope.items, wire::recent_item);
        page.high_water = activities.iter().flatten().max().copied();
        // Only a real time can end the walk: where message-less conversations sort is
        // undocumented.
        let reached_since = at
            .since
            .is_some_and(|since| activities.iter().flatten().any(|t| *t <= since));
        // Without `since` the walk reads the whole listing, which `total_size` counts; a
        // delta stops at `since`, far short of it.
        page.total_hint = envelope.total_size.filter(|_| at.since.is_none());
        page.next = envelope
            .next_page_token
            .filter(|_| !reached_since)
            .map(|page_token| RecentPosition { page_token }.to_cursor());
        if at.since.is_none() && at.position.is_none() && envelope.items.is_empty() {
            page.notes.push(format!(
                "app {} has no conversation with messages yet (an app in DISPATCH processing mode never has any)",
                self.app_id
            ));
        }
        Ok(page)
    }
}

/// The `inventory` sweep over `GET /conversations`, active then inactive.
#[derive(Debug)]
struct InventoryWalk {
    app_id: String,
    conversations_url: Url,
}

impl Walk for InventoryWalk {
    fn spec(&self) -> WalkSpec {
        INVENTORY
    }

    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let position = InventoryPosition::from_cursor(at.position)?;
        let mut url = self.conversations_url.clone();
        {
            // `only_active` is always explicit: the older spec makes it required and what
            // omitting it returns is undocumented.
            let mut query = url.query_pairs_mut();
            query
                .append_pair("app_id", &self.app_id)
                .append_pair("only_active", position.phase.only_active())
                .append_pair("page_size", &LIST_PAGE_SIZE.to_string());
            if let Some(token) = &position.page_token {
                query.append_pair("page_token", token);
            }
        }
        Ok(RequestSpec::get(url, "conversations"))
    }

    fn parse_page(
        &self,
        at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let position = InventoryPosition::from_cursor(at.position)?;
        let envelope = wire::read_envelope(&response.body)?;
        let implied_active = Some(position.phase.implied_active());
        let (mut page, _) = read_items(&envelope.items, |item| {
            wire::conversation(item, implied_active)
        });
        // The sweep lists active conversations, then inactive ones: only once the second
        // listing starts is the whole known (those listed so far plus its count).
        if position.phase == Phase::Inactive && position.page_token.is_none() {
            page.total_hint = envelope
                .total_size
                .and_then(|n| n.checked_add(position.listed));
        }
        let next = position.advance(envelope.items.len(), envelope.next_page_token);
        if next.is_none() && position.listed == 0 && envelope.items.is_empty() {
            page.notes.push(format!(
                "app {} lists no conversations, active or inactive: apps in DISPATCH processing mode keep none; switch the app to CONVERSATION mode to mirror it",
                self.app_id
            ));
        }
        page.next = next.map(|p| p.to_cursor());
        Ok(page)
    }
}

/// Reads a page's items into records and rejects, returning each record's activity time
/// alongside; unreadable times are reported in the page's notes.
fn read_items(
    items: &[&RawValue],
    read: impl Fn(&RawValue) -> Result<wire::Listed, RejectedRecord>,
) -> (Page, Vec<Option<Timestamp>>) {
    let mut page = Page::default();
    let mut activities = Vec::with_capacity(items.len());
    let mut unreadable = 0;
    for item in items {
        match read(item) {
            Ok(listed) => {
                unreadable += usize::from(listed.unreadable_time);
                activities.push(listed.activity);
                page.records.push(listed.record);
            }
            Err(rejected) => page.rejected.push(rejected),
        }
    }
    if unreadable > 0 {
        page.notes.push(format!(
            "{unreadable} conversation(s) had an unreadable last_received; stored without last_activity_at"
        ));
    }
    (page, activities)
}

impl Provider for SinchProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sinch
    }

    fn account(&self) -> &str {
        &self.app_id
    }

    fn walks(&self) -> &[Arc<dyn Walk>] {
        &self.walks
    }

    /// An expired or unknown page token comes back as a 400 (or 410) that mentions a token:
    /// every other parameter of a later page was already accepted on the walk's first page.
    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        matches!(status, StatusCode::BAD_REQUEST | StatusCode::GONE) && wire::mentions_token(body)
    }

    fn webhooks(&self) -> Option<&dyn Webhooks> {
        self.webhooks.as_deref().map(|w| w as &dyn Webhooks)
    }
}

impl ResponsePolicy for SinchProvider {
    fn describe_error(&self, status: StatusCode, body: &[u8]) -> String {
        let mut text = wire::describe_error(body);
        match status {
            StatusCode::NOT_FOUND => text.push_str(&format!(
                " (Sinch answers 404 when the app was created in another region than {} serves, or when project_id or app_id {} is wrong)",
                self.base_url.host_str().unwrap_or("the base URL"),
                self.app_id
            )),
            StatusCode::FORBIDDEN => text.push_str(
                " (Sinch also answers 403 when the access key belongs to another project or billing is not set up)",
            ),
            _ => {}
        }
        text
    }

    /// Sinch explains a refused token in `WWW-Authenticate`.
    fn correlation_headers(&self) -> &[&'static str] {
        &["www-authenticate"]
    }
}

#[cfg(test)]
mod tests;
