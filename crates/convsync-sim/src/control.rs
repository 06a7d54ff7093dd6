//! The control listener: truth, counters, faults, activity and clock over HTTP (JSON),
//! so that tests running `convsync simulate` as a separate process can drive it.
//!
//! | Method | Path | Body / query | Answer |
//! |---|---|---|---|
//! | GET | `/health` | | `{"status":"ok"}` |
//! | GET | `/urls` | | [`SimUrls`] |
//! | GET | `/accounts` | | `SimAccounts` |
//! | GET | `/truth` | `?provider=spruce&account=<key>` | `[TruthConversation]` |
//! | GET | `/requests` | | `RequestCounts` |
//! | POST | `/requests/reset` | | 204 |
//! | GET | `/faults` | | `{provider: Faults}` |
//! | PUT | `/faults/{provider or all}` | `Faults` | `{provider: Faults}` |
//! | POST | `/activity` | [`ActivityCommand`] | [`ActivityOutcome`] |
//! | POST | `/tokens/revoke` | `{"provider": "all"}` | 204 |
//! | GET | `/clock` | | [`ClockReading`] |
//! | POST | `/clock/advance` | `{"millis": 60000}` | [`ClockReading`] |
//! | GET | `/webhooks` | | `WebhookCounts` |
//! | POST | `/webhooks/reset` | | 204 |
//! | GET | `/webhooks/faults` | | `{provider: WebhookFaults}` |
//! | PUT | `/webhooks/faults/{provider or all}` | `WebhookFaults` | `{provider: WebhookFaults}` |
//! | PUT | `/webhooks/target` | [`WebhookTarget`] | 204 (400 for a non-loopback URL) |
//! | GET | `/webhooks/highlevel-public-key` | | PEM text |
//!
//! Errors are `{"error": "<message>"}` with 400 or 404.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::activity::{Affected, Mutation, SimError};
use super::core::SimCore;
use super::faults::Faults;
use super::platform::{Platform, PlatformSelector};
use super::webhooks::{HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM, WebhookFaults, WebhookTargetError};

/// Base URLs of every listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimUrls {
    /// D365 Messaging API host (token endpoint on the same listener:
    /// `{d365}/{tenant}/oauth2/v2.0/token`).
    pub d365: url::Url,
    /// Spruce API host (`/v1/…` is appended by clients).
    pub spruce: url::Url,
    /// Sinch Conversation API host (token endpoint `/oauth2/token` on the same listener).
    pub sinch: url::Url,
    /// HighLevel API host (token endpoint `/oauth/token`).
    pub highlevel: url::Url,
    /// This control listener.
    pub control: url::Url,
}

/// A command for the activity generator or a targeted change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ActivityCommand {
    /// Stop the background generator (targeted changes still work).
    Pause,
    /// Restart the background generator.
    Resume,
    /// Apply `count` random changes now (deterministic from the seed).
    Apply {
        /// Number of changes.
        count: u64,
    },
    /// Apply one targeted change.
    Mutate {
        /// Platform of the account.
        provider: Platform,
        /// Account key.
        account: String,
        /// The change.
        mutation: Mutation,
    },
}

/// What an activity command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityOutcome {
    /// Ids of the conversations touched (repeated if touched several times).
    pub affected: Affected,
    /// Whether the background generator is paused now.
    pub paused: bool,
}

/// The simulated clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// Simulated now.
    pub now: DateTime<Utc>,
    /// Whether it only moves when advanced.
    pub frozen: bool,
}

/// Body of `POST /clock/advance`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClockAdvance {
    /// Milliseconds to move forward.
    pub millis: u64,
}

/// Body of `POST /tokens/revoke`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeTokens {
    /// Whose tokens (`all` or one provider).
    pub provider: PlatformSelector,
}

/// Body of `PUT /webhooks/target`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// Platform of the account.
    pub provider: Platform,
    /// Account key.
    pub account: String,
    /// Where its events go; `null` stops them.
    pub url: Option<url::Url>,
}

#[derive(Deserialize)]
struct TruthQuery {
    provider: Platform,
    account: String,
}

struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SimError> for ControlError {
    fn from(error: SimError) -> Self {
        let status = match error {
            SimError::UnknownAccount { .. } | SimError::UnknownConversation { .. } => {
                StatusCode::NOT_FOUND
            }
            SimError::Conflict(_) => StatusCode::CONFLICT,
            SimError::Unsupported(_) => StatusCode::BAD_REQUEST,
        };
        ControlError(status, error.to_string())
    }
}

/// Build the control router.
pub(crate) fn router(core: Arc<SimCore>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/urls", get(urls))
        .route("/accounts", get(accounts))
        .route("/truth", get(truth))
        .route("/requests", get(requests))
        .route("/requests/reset", post(reset_requests))
        .route("/faults", get(faults))
        .route("/faults/{selector}", put(set_faults))
        .route("/activity", post(activity))
        .route("/tokens/revoke", post(revoke))
        .route("/clock", get(clock))
        .route("/clock/advance", post(advance))
        .route("/webhooks", get(webhook_counts))
        .route("/webhooks/reset", post(reset_webhooks))
        .route("/webhooks/faults", get(webhook_faults))
        .route("/webhooks/faults/{selector}", put(set_webhook_faults))
        .route("/webhooks/target", put(set_webhook_target))
        .route(
            "/webhooks/highlevel-public-key",
            get(|| async { HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM }),
        )
        .with_state(core)
}

async fn urls(State(core): State<Arc<SimCore>>) -> Json<SimUrls> {
    Json(core.urls.clone())
}

async fn accounts(State(core): State<Arc<SimCore>>) -> Response {
    Json(core.accounts.as_ref().clone()).into_response()
}

async fn truth(
    State(core): State<Arc<SimCore>>,
    Query(query): Query<TruthQuery>,
) -> Result<Response, ControlError> {
    let core2 = Arc::clone(&core);
    let rows = tokio::task::spawn_blocking(move || core2.truth(query.provider, &query.account))
        .await
        .map_err(|e| ControlError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(rows).into_response())
}

async fn requests(State(core): State<Arc<SimCore>>) -> Response {
    Json(core.counters.snapshot()).into_response()
}

async fn reset_requests(State(core): State<Arc<SimCore>>) -> StatusCode {
    core.counters.reset();
    StatusCode::NO_CONTENT
}

/// `all` or a provider name from a path segment (404 otherwise).
fn parse_selector(text: &str) -> Result<PlatformSelector, ControlError> {
    text.parse().map_err(|e: super::platform::UnknownPlatform| {
        ControlError(StatusCode::NOT_FOUND, e.to_string())
    })
}

async fn faults(State(core): State<Arc<SimCore>>) -> Json<BTreeMap<Platform, Faults>> {
    Json(core.all_faults())
}

async fn set_faults(
    State(core): State<Arc<SimCore>>,
    Path(selector): Path<String>,
    Json(faults): Json<Faults>,
) -> Result<Json<BTreeMap<Platform, Faults>>, ControlError> {
    let selector = parse_selector(&selector)?;
    core.set_faults(selector, faults);
    Ok(Json(core.all_faults()))
}

async fn activity(
    State(core): State<Arc<SimCore>>,
    Json(command): Json<ActivityCommand>,
) -> Result<Json<ActivityOutcome>, ControlError> {
    let core2 = Arc::clone(&core);
    let outcome = tokio::task::spawn_blocking(move || core2.activity(command))
        .await
        .map_err(|e| ControlError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(outcome))
}

async fn revoke(State(core): State<Arc<SimCore>>, Json(body): Json<RevokeTokens>) -> StatusCode {
    core.revoke_tokens(body.provider);
    StatusCode::NO_CONTENT
}

async fn clock(State(core): State<Arc<SimCore>>) -> Json<ClockReading> {
    Json(core.clock_reading())
}

async fn advance(
    State(core): State<Arc<SimCore>>,
    Json(body): Json<ClockAdvance>,
) -> Json<ClockReading> {
    core.advance_clock(Duration::from_millis(body.millis));
    Json(core.clock_reading())
}

async fn webhook_counts(State(core): State<Arc<SimCore>>) -> Response {
    Json(core.webhooks.snapshot()).into_response()
}

async fn reset_webhooks(State(core): State<Arc<SimCore>>) -> StatusCode {
    core.webhooks.reset();
    StatusCode::NO_CONTENT
}

fn all_webhook_faults(core: &SimCore) -> BTreeMap<Platform, WebhookFaults> {
    Platform::ALL
        .iter()
        .map(|p| (*p, core.webhooks.faults(*p)))
        .collect()
}

async fn webhook_faults(
    State(core): State<Arc<SimCore>>,
) -> Json<BTreeMap<Platform, WebhookFaults>> {
    Json(all_webhook_faults(&core))
}

async fn set_webhook_faults(
    State(core): State<Arc<SimCore>>,
    Path(selector): Path<String>,
    Json(faults): Json<WebhookFaults>,
) -> Result<Json<BTreeMap<Platform, WebhookFaults>>, ControlError> {
    let selector = parse_selector(&selector)?;
    for provider in selector.providers() {
        core.webhooks.set_faults(provider, faults.clone());
    }
    Ok(Json(all_webhook_faults(&core)))
}

async fn set_webhook_target(
    State(core): State<Arc<SimCore>>,
    Json(target): Json<WebhookTarget>,
) -> Result<StatusCode, ControlError> {
    core.webhooks
        .set_target(target.provider, &target.account, target.url)
        .map_err(|error| {
            let status = match error {
                WebhookTargetError::UnknownAccount { .. } => StatusCode::NOT_FOUND,
                WebhookTargetError::NotLoopback(_) => StatusCode::BAD_REQUEST,
            };
            ControlError(status, error.to_string())
        })?;
    Ok(StatusCode::NO_CONTENT)
}
