//! The webhook receiver (docs/webhooks.md, "Receiver"): one path per source entry,
//! `POST /webhooks/{entry}` (and `/webhooks/{entry}/{*subpath}` for D365), on its own
//! listener, never the health port's.
//!
//! A request goes through, in this order, and stops at the first refusal:
//! 1. the path names a configured entry that takes events (404 otherwise);
//! 2. the body fits `max_body_bytes` (413, read no further);
//! 3. the provider authenticates it (401, counted by reason, logged without the body or
//!    the key, nothing written; 503 when what the token is checked against cannot be
//!    fetched now, so that the provider sends it again);
//! 4. the provider parses it (400 `malformed`);
//! 5. each event was sent within the replay window (400 `stale`: a replay or an event held
//!    back too long, nothing written; never 429, which HighLevel would retry);
//! 6. each event is recorded by its id and applied in one transaction (a known id is a
//!    duplicate: 200, nothing else written);
//! 7. 200 once committed.
//!
//! There is no inbox: the answer waits for the commit, which is one short transaction, well
//! within the providers' acknowledgement windows (Spruce 5 s, D365 10 s). When more
//! events than `max_in_flight` are being written, or the write fails, the receiver answers
//! 429 to HighLevel (it retries only on 429) and 503 to the others, which retry on any
//! failure; polling covers what is dropped.

pub mod freshness;
pub mod metrics;
pub mod replay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use self::metrics::WebhookMetrics;
use super::server::{ConnectionLimits, serve_bounded};
use crate::config::WebhookSettings;
use crate::provider::webhook::{WebhookChange, WebhookEvent, WebhookRequest};
use crate::provider::{Provider, ProviderKind};
use crate::record::Absence;
use crate::store::{EventChange, EventOutcome, EventWrite, Store};
use crate::sync::{AccountChange, SourceRegistry};
use crate::time::Timestamp;

/// One source that takes events at its entry's path.
#[derive(Clone)]
pub struct WebhookTarget {
    /// The `[sources.NAME]` entry: the path segment.
    pub entry: String,
    /// The source's name (the mirror's `source`).
    pub source: String,
    /// Its provider, whose [`Provider::webhooks`] is set.
    pub provider: Arc<dyn Provider>,
}

/// Where the receiver finds an entry's sources.
enum Routes {
    /// A set fixed when the receiver was built.
    Fixed(HashMap<String, Vec<WebhookTarget>>),
    /// The engine's running sources, looked up per request: a location installed while
    /// running is routed as soon as it runs, a retired one no more.
    Live(SourceRegistry),
}

/// The receiver's state: the routes, the store, the bounds and the counters.
pub struct Receiver {
    routes: Routes,
    store: Store,
    settings: WebhookSettings,
    metrics: Arc<WebhookMetrics>,
    writes: Semaphore,
}

impl Receiver {
    /// A receiver for `targets` (those whose provider has no webhooks are left out) writing
    /// into `store`.
    pub fn new(
        targets: Vec<WebhookTarget>,
        store: Store,
        settings: WebhookSettings,
        metrics: Arc<WebhookMetrics>,
    ) -> Receiver {
        let mut by_entry: HashMap<String, Vec<WebhookTarget>> = HashMap::new();
        for target in targets {
            if target.provider.webhooks().is_some() {
                by_entry
                    .entry(target.entry.clone())
                    .or_default()
                    .push(target);
            }
        }
        Receiver {
            routes: Routes::Fixed(by_entry),
            store,
            writes: Semaphore::new(settings.max_in_flight.max(1)),
            settings,
            metrics,
        }
    }

    /// A receiver for the engine's running sources, looked up per request, that asks the
    /// engine to start or retire an agency's location on its verified install and
    /// uninstall events.
    pub fn live(
        registry: SourceRegistry,
        store: Store,
        settings: WebhookSettings,
        metrics: Arc<WebhookMetrics>,
    ) -> Receiver {
        Receiver {
            routes: Routes::Live(registry),
            store,
            writes: Semaphore::new(settings.max_in_flight.max(1)),
            settings,
            metrics,
        }
    }

    /// The sources at `entry` that take events, at least one.
    fn targets(&self, entry: &str) -> Option<Vec<WebhookTarget>> {
        let targets = match &self.routes {
            Routes::Fixed(by_entry) => by_entry.get(entry)?.clone(),
            Routes::Live(registry) => targets_of(&registry.snapshot())
                .into_iter()
                .filter(|t| t.entry == entry)
                .collect(),
        };
        (!targets.is_empty()).then_some(targets)
    }

    /// Where an install or uninstall event at a directory entry is recorded (the
    /// account's source name, stable across retries whether or not it runs), and the
    /// change it asks of the engine: none when it names another company (HighLevel's
    /// `companyId`) than the directory's, which is recorded as unrelated. An install must
    /// name the directory's company; an uninstall may name none (HighLevel's documented
    /// example does not), since it only stops a location the directory runs.
    fn account_change(
        &self,
        entry: &str,
        first: &WebhookTarget,
        event: &WebhookEvent,
    ) -> Option<(WebhookTarget, Option<AccountChange>)> {
        let Routes::Live(registry) = &self.routes else {
            return None;
        };
        let directory = registry.directory(entry)?;
        let owner = directory.settings().directory.owner();
        let (account, ours, installed) = match &event.change {
            WebhookChange::AccountInstalled { account, company } => {
                (account, company.as_deref() == Some(owner), true)
            }
            WebhookChange::AccountUninstalled { account, company } => (
                account,
                company.as_deref().is_none_or(|c| c == owner),
                false,
            ),
            _ => return None,
        };
        let target = WebhookTarget {
            entry: entry.to_owned(),
            source: directory.source_name(account),
            provider: first.provider.clone(),
        };
        let change = ours.then(|| {
            let (entry, account) = (entry.to_owned(), account.clone());
            if installed {
                AccountChange::Installed { entry, account }
            } else {
                AccountChange::Uninstalled { entry, account }
            }
        });
        Some((target, change))
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/webhooks/{entry}", post(receive_at_entry))
            .route("/webhooks/{entry}/{*subpath}", post(receive_below_entry))
            .with_state(self)
    }
}

/// Serves `receiver` on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>, shutdown: CancellationToken) {
    let limits = ConnectionLimits {
        read_timeout: receiver.settings.read_timeout,
        max_connections: receiver.settings.max_connections,
    };
    serve_bounded(listener, receiver.router(), limits, shutdown).await
}

async fn receive_at_entry(
    State(receiver): State<Arc<Receiver>>,
    Path(entry): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    receiver.receive(&entry, "", &headers, body).await
}

async fn receive_below_entry(
    State(receiver): State<Arc<Receiver>>,
    Path((entry, subpath)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let subpath = format!("/{subpath}");
    receiver.receive(&entry, &subpath, &headers, body).await
}

/// The sources whose provider takes events, each at its entry's path: a source's entry is
/// its name before the `/` an expanded entry adds (`NAME/<location>`).
pub fn targets_of(sources: &[Arc<crate::sync::Source>]) -> Vec<WebhookTarget> {
    sources
        .iter()
        .filter(|s| s.provider.webhooks().is_some())
        .map(|s| WebhookTarget {
            entry: s.name.split('/').next().unwrap_or(&s.name).to_owned(),
            source: s.name.clone(),
            provider: s.provider.clone(),
        })
        .collect()
}

/// The status that asks the provider to send again later: HighLevel retries only 429.
fn busy(kind: ProviderKind) -> StatusCode {
    match kind {
        ProviderKind::Highlevel => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl Receiver {
    async fn receive(
        &self,
        entry: &str,
        subpath: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> StatusCode {
        let received = Instant::now();
        let Some(targets) = self.targets(entry) else {
            return StatusCode::NOT_FOUND;
        };
        let first = &targets[0];
        let Some(webhooks) = first.provider.webhooks() else {
            return StatusCode::NOT_FOUND;
        };
        let body: Bytes = match axum::body::to_bytes(body, self.settings.max_body_bytes).await {
            Ok(body) => body,
            Err(_) => {
                self.metrics.rejected(&first.source, "too_large");
                tracing::warn!(source = %first.source, "webhook refused: body over webhooks.max_body_bytes");
                return StatusCode::PAYLOAD_TOO_LARGE;
            }
        };
        let request = WebhookRequest {
            subpath,
            headers,
            body: &body,
        };
        if let Err(rejection) = webhooks.authenticate(&request).await {
            self.metrics.rejected(&first.source, rejection.reason());
            // The rejection names the header only: never the body, the token or the key.
            if rejection.is_retryable() {
                tracing::warn!(source = %first.source, reason = rejection.reason(), error = %rejection, "webhook deferred: it cannot be authenticated now; the provider is asked to send it again");
                return busy(first.provider.kind());
            }
            tracing::warn!(source = %first.source, reason = rejection.reason(), error = %rejection, "webhook refused");
            return StatusCode::UNAUTHORIZED;
        }
        let events = match webhooks.parse(&request) {
            Ok(events) => events,
            Err(rejection) => {
                self.metrics.rejected(&first.source, rejection.reason());
                tracing::warn!(source = %first.source, reason = rejection.reason(), error = %rejection, "webhook refused");
                return StatusCode::BAD_REQUEST;
            }
        };
        // Every event of the request must be fresh and for a known source before any is
        // written.
        let now = Timestamp::now();
        let replay_window = self
            .settings
            .replay_window
            .saturating_add(webhooks.retry_horizon());
        let mut routed = Vec::with_capacity(events.len());
        for event in &events {
            let (target, change) = match self.account_change(entry, first, event) {
                Some((target, change)) => (target, change),
                None => match pick(&targets, event) {
                    Some(target) => (target.clone(), None),
                    None => {
                        self.metrics.rejected(&first.source, "unknown_account");
                        tracing::warn!(source = %first.source, kind = %event.kind, "webhook refused: its account is none of this entry's sources");
                        return StatusCode::BAD_REQUEST;
                    }
                },
            };
            if let Some(sent_at) = event.sent_at
                && outside_window(sent_at, now, replay_window)
            {
                self.metrics.rejected(&target.source, "stale");
                tracing::warn!(source = %target.source, kind = %event.kind, sent_at = %sent_at, "webhook refused: sent outside webhooks.replay_window (and the provider's retry horizon)");
                return StatusCode::BAD_REQUEST;
            }
            routed.push((target, event, change));
        }
        let Ok(_slot) = self.writes.try_acquire() else {
            self.metrics.rejected(&first.source, "busy");
            tracing::warn!(source = %first.source, "webhook deferred: webhooks.max_in_flight events are being written");
            return busy(first.provider.kind());
        };
        for (target, event, change) in routed {
            match self.store.apply_event(&event_write(&target, event)).await {
                Ok(outcome) => {
                    self.metrics
                        .written(&target.source, outcome, event.sent_at, received);
                    tracing::debug!(source = %target.source, kind = %event.kind, outcome = outcome.as_str(), "webhook event");
                    // A retried delivery is a duplicate: it asks nothing twice.
                    if let (Some(change), Routes::Live(registry)) = (change, &self.routes)
                        && outcome != EventOutcome::Duplicate
                        && !registry.request(change)
                    {
                        tracing::warn!(source = %target.source, kind = %event.kind, "the engine does not take account changes now (a PostgreSQL replica, or stopping): the next start's listing applies it");
                    }
                }
                Err(e) => {
                    self.metrics.rejected(&target.source, "store");
                    tracing::warn!(source = %target.source, kind = %event.kind, error = %e, "webhook event not written; the provider is asked to send it again");
                    return busy(target.provider.kind());
                }
            }
        }
        StatusCode::OK
    }
}

/// The source an event is for: the one whose account it names, or the entry's only one.
fn pick<'t>(targets: &'t [WebhookTarget], event: &WebhookEvent) -> Option<&'t WebhookTarget> {
    match (&event.account, targets) {
        (_, [only])
            if event
                .account
                .as_deref()
                .is_none_or(|a| a == only.provider.account()) =>
        {
            Some(only)
        }
        (Some(account), _) => targets.iter().find(|t| t.provider.account() == account),
        (None, _) => None,
    }
}

/// Whether `sent_at` is further than `window` from `now`, either way (a clock ahead by more
/// than the window is as suspect as an old event).
fn outside_window(sent_at: Timestamp, now: Timestamp, window: std::time::Duration) -> bool {
    let (early, late) = if sent_at <= now {
        (sent_at, now)
    } else {
        (now, sent_at)
    };
    early.saturating_add(window) < late
}

/// What writing `event` for `target` asks of the store: the one apply path of the
/// receiver and the replay (`replay`).
fn event_write<'e>(target: &'e WebhookTarget, event: &'e WebhookEvent) -> EventWrite<'e> {
    EventWrite {
        source: &target.source,
        provider: target.provider.kind().as_str(),
        account: target.provider.account(),
        event_id: &event.event_id,
        kind: &event.kind,
        sent_at: event.sent_at,
        changed_at: event.changed_at,
        change: store_change(&event.change),
        follow_up_on_activity: target
            .provider
            .webhooks()
            .and_then(|webhooks| webhooks.follow_up_on_activity()),
    }
}

/// What `change` asks of the store.
fn store_change(change: &WebhookChange) -> EventChange<'_> {
    match change {
        WebhookChange::Conversation(record) => EventChange::Conversation(record),
        WebhookChange::Activity {
            conversation_id,
            patch,
        } => EventChange::Activity {
            conversation_id,
            patch,
        },
        WebhookChange::UnreadCount {
            conversation_id,
            unread_count,
        } => EventChange::UnreadCount {
            conversation_id,
            unread_count: *unread_count,
        },
        WebhookChange::Closed { conversation_id } => EventChange::Gone {
            conversation_id,
            absence: Absence::Closed,
        },
        WebhookChange::Deleted { conversation_id } => EventChange::Gone {
            conversation_id,
            absence: Absence::Deleted,
        },
        WebhookChange::Refetch(detail) => EventChange::Refetch(detail),
        // Installs and uninstalls change which sources run, not the mirror: recorded (so a
        // retry is a duplicate); the receiver asks the engine to start or retire the
        // location (`Receiver::account_change`, docs/webhooks.md).
        WebhookChange::AccountInstalled { .. }
        | WebhookChange::AccountUninstalled { .. }
        | WebhookChange::Unrelated => EventChange::Nothing,
    }
}
