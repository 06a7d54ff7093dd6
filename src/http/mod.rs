//! The HTTP layer shared by all providers: one reqwest client with timeouts, a request
//! budget per credential, retries with jittered exponential backoff that honour
//! `Retry-After` exactly (up to `http.max_provider_wait`), access tokens refreshed once on
//! 401, and response bodies read up to `http.max_response_bytes` and no further.
//!
//! Providers never see reqwest: they describe a [`RequestSpec`] and read an
//! [`HttpResponse`]; this module decides whether and when to send it again.

pub mod auth;
pub mod body;
pub mod jwks;
pub mod limiter;
pub mod policy;
pub mod request;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;

pub use auth::{
    AuthError, AuthScheme, Authenticator, HeldVaultLock, MintedToken, RefreshRefusal,
    StoredRefreshToken, TokenUse, TokenVault, VaultError, VaultLock,
};
pub use limiter::{Priority, RateLimitSnapshot, RateQuota, RequestBudget};
pub use policy::{Pause, ResponsePolicy};
pub use request::{HttpResponse, RequestSpec};
pub use retry::RetryPolicy;

use crate::error_text::error_chain;
use crate::retry::Transient;
use crate::secret::redact::{ERROR_TEXT_CAP, provider_text, redact};

/// Timeouts and retry settings for the shared client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Pauses longer than this end the cycle as rate-limited instead of waiting in line, so
    /// a day-long budget reset does not look like a hung cycle.
    pub max_inline_pause: Duration,
    /// The longest wait a provider may impose (`Retry-After`, rate-limit headers): a longer
    /// one is clamped to this with a warning, so that one odd header cannot silence a
    /// source for days.
    pub max_provider_wait: Duration,
    /// The largest response body read from a provider or token endpoint; a larger one
    /// fails its request instead of filling memory.
    pub max_response_bytes: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            max_inline_pause: Duration::from_secs(90),
            max_provider_wait: Duration::from_secs(3600),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Builds the process-wide reqwest client. TLS verification is always on.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .user_agent(concat!("convsync/", env!("CARGO_PKG_VERSION")))
        // The APIs convsync reads do not redirect; following one could downgrade to
        // plain http or leave the configured host, so a redirect is an error instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Why a request did not produce a usable response. Messages never contain credentials:
/// provider text in them has passed through [`crate::secret::redact`].
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection refused/reset, timeout, unreadable body.
    #[error("{endpoint}: transport error: {message}")]
    Transport {
        /// Endpoint label.
        endpoint: &'static str,
        /// The error and its causes.
        message: String,
    },
    /// 408 or 5xx.
    #[error("{endpoint}: server error {status}: {message}")]
    Server {
        /// Endpoint label.
        endpoint: &'static str,
        /// HTTP status.
        status: StatusCode,
        /// Provider's error text.
        message: String,
    },
    /// 429 (retried while the backoff allows).
    #[error(
        "{endpoint}: rate limited{}{}",
        retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default(),
        if detail.is_empty() { String::new() } else { format!(": {detail}") }
    )]
    RateLimited {
        /// Endpoint label.
        endpoint: &'static str,
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
        /// The provider's error text with its correlation headers (the id its support
        /// asks for), scrubbed and cut like every provider text.
        detail: String,
    },
    /// The request budget is paused for longer than is worth waiting in line (a daily
    /// budget ran out, a long `Retry-After`): the cycle ends and resumes after `wait`.
    #[error("{endpoint}: request budget paused for {wait:?} ({reason})")]
    Paused {
        /// Endpoint label.
        endpoint: &'static str,
        /// How long until the budget resets.
        wait: Duration,
        /// Which budget.
        reason: &'static str,
    },
    /// 401 after one token refresh.
    #[error("{endpoint}: credentials rejected (401): {message}")]
    Unauthorized {
        /// Endpoint label.
        endpoint: &'static str,
        /// Provider's error text.
        message: String,
    },
    /// 403.
    #[error("{endpoint}: access forbidden (403): {message}")]
    Forbidden {
        /// Endpoint label.
        endpoint: &'static str,
        /// Provider's error text.
        message: String,
    },
    /// Any other non-success status (400, 404, 422, ...): not retried.
    #[error("{endpoint}: request rejected ({status}): {message}")]
    Rejected {
        /// Endpoint label.
        endpoint: &'static str,
        /// HTTP status.
        status: StatusCode,
        /// Provider's error text.
        message: String,
        /// The raw body, for providers that recognise specific errors.
        body: bytes::Bytes,
    },
    /// The response body was larger than `http.max_response_bytes`. Not retried: the same
    /// request would bring the same answer.
    #[error(
        "{endpoint}: the response is larger than {limit} bytes and was not used; raise http.max_response_bytes if this provider's answers are really that large"
    )]
    TooLarge {
        /// Endpoint label.
        endpoint: &'static str,
        /// The status the oversized answer came with.
        status: StatusCode,
        /// The cap in bytes.
        limit: u64,
    },
    /// The token endpoint failed.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
}

impl Transient for HttpError {
    /// Network trouble, 5xx, 408 and 429 (after `Retry-After`), and a token endpoint's
    /// transient failures; a paused budget is waited out by the cycle, not here.
    fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { .. } | HttpError::Server { .. } => true,
            HttpError::RateLimited { .. } => true,
            HttpError::Auth(e) => e.is_transient(),
            HttpError::Paused { .. }
            | HttpError::Unauthorized { .. }
            | HttpError::Forbidden { .. }
            | HttpError::Rejected { .. }
            | HttpError::TooLarge { .. } => false,
        }
    }
}

impl HttpError {
    /// The credential itself was refused: retrying later will not help until an operator
    /// fixes it.
    pub fn is_credential_rejected(&self) -> bool {
        match self {
            HttpError::Unauthorized { .. } | HttpError::Forbidden { .. } => true,
            HttpError::Auth(e) => e.is_credential_rejected(),
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            HttpError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Request counters of one source, read by status output and metrics.
#[derive(Debug, Default)]
pub struct RequestTally {
    /// Requests sent (every attempt).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Milliseconds spent waiting on rate limits and pauses.
    pub rate_limit_wait_ms: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl RequestTally {
    fn count_status(&self, status: u16) {
        *self
            .by_status
            .lock()
            .expect("tally lock poisoned")
            .entry(status)
            .or_default() += 1;
    }

    /// Responses by HTTP status (0 = no response: connection error or timeout).
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().expect("tally lock poisoned").clone()
    }
}

/// What one source uses to talk to its provider.
#[derive(Clone)]
pub struct ApiClient {
    client: reqwest::Client,
    auth: Arc<Authenticator>,
    budget: Arc<RequestBudget>,
    settings: HttpSettings,
    tally: Arc<RequestTally>,
    priority: Priority,
}

impl ApiClient {
    /// A client for one source. `auth` and `budget` may be shared with other sources that
    /// use the same credential.
    pub fn new(
        client: reqwest::Client,
        auth: Arc<Authenticator>,
        budget: Arc<RequestBudget>,
        settings: HttpSettings,
        tally: Arc<RequestTally>,
    ) -> Self {
        ApiClient {
            client,
            auth,
            budget,
            settings,
            tally,
            priority: Priority::Foreground,
        }
    }

    /// The same credential and budget, at background priority ([`Priority`]), with
    /// counters of its own: for work such as a verification, which must not delay the
    /// mirror's reads and whose requests are counted apart.
    pub fn background(&self) -> ApiClient {
        ApiClient {
            tally: Arc::new(RequestTally::default()),
            priority: Priority::Background,
            ..self.clone()
        }
    }

    /// This source's request counters.
    pub fn tally(&self) -> &Arc<RequestTally> {
        &self.tally
    }

    /// When this source's rotating refresh token dies if unused (none for other schemes).
    pub fn refresh_token_expires_at(&self) -> Option<crate::time::Timestamp> {
        self.auth.refresh_token_expires_at()
    }

    /// Pauses longer than this end a cycle instead of being waited out in line.
    pub fn max_inline_pause(&self) -> Duration {
        self.settings.max_inline_pause
    }

    /// Sends `spec`, retrying transient failures, and returns the fully read response;
    /// `policy` reads error answers and rate-limit headers (the provider's).
    pub async fn send(
        &self,
        spec: &RequestSpec,
        policy: &dyn ResponsePolicy,
    ) -> Result<HttpResponse, HttpError> {
        let attempt = || self.attempt(spec, policy);
        let retries = std::sync::atomic::AtomicU32::new(0);
        let result = attempt
            .retry(self.settings.retry.backoff().builder())
            .when(HttpError::is_transient)
            // `Retry-After` replaces the jittered delay exactly: never shorter.
            .adjust(|err: &HttpError, delay| delay.map(|d| err.retry_after().unwrap_or(d)))
            .notify(|err: &HttpError, delay: Duration| {
                self.tally.retries.fetch_add(1, Ordering::Relaxed);
                retries.fetch_add(1, Ordering::Relaxed);
                // Each retry at debug: against a flaky provider a warning per retry
                // buried everything else (hundreds of lines in one sync).
                tracing::debug!(endpoint = spec.endpoint, error = %err, retry_in = ?delay, "request failed, retrying");
            })
            .await;
        let retries = retries.into_inner();
        if result.is_err() && retries > 0 {
            // One summary per request that gives up. The error itself is reported once,
            // by whoever handles it (the cycle's end, a follow-up's warning) — except a
            // 429, which ends the cycle as rate limited without any text: its detail (a
            // D365 correlation id, say) is told here.
            let rate_limited = match &result {
                Err(e @ HttpError::RateLimited { .. }) => Some(e.to_string()),
                _ => None,
            };
            tracing::warn!(
                endpoint = spec.endpoint,
                retries,
                rate_limited = rate_limited.as_deref(),
                "request gave up after retrying"
            );
        }
        result
    }

    async fn attempt(
        &self,
        spec: &RequestSpec,
        policy: &dyn ResponsePolicy,
    ) -> Result<HttpResponse, HttpError> {
        let mut refreshed = false;
        loop {
            let (mut permit, waited) = match self
                .budget
                .acquire_at(self.priority, self.settings.max_inline_pause)
                .await
            {
                Ok(acquired) => acquired,
                Err((wait, reason)) => {
                    tracing::info!(reason, wait = ?wait, "request budget paused; ending cycle until it resets");
                    return Err(HttpError::Paused {
                        endpoint: spec.endpoint,
                        wait,
                        reason,
                    });
                }
            };
            self.tally
                .rate_limit_wait_ms
                .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);

            let authorization = self.auth.authorization(&self.client).await?;
            let response = self.execute(spec, authorization.as_ref()).await;
            self.tally.requests.fetch_add(1, Ordering::Relaxed);
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    // An answer refused for its size still had a status; others had none.
                    self.tally.count_status(match &e {
                        HttpError::TooLarge { status, .. } => status.as_u16(),
                        _ => 0,
                    });
                    return Err(e);
                }
            };
            // The permit ends when this attempt does, after any pause the answer calls for.
            permit.report(policy.remaining_requests(&response.headers));
            self.tally.count_status(response.status.as_u16());
            let status = response.status;

            if status.is_success() || (status == StatusCode::NOT_FOUND && spec.allow_not_found) {
                if let Some(pause) = policy.pacing(&response.headers) {
                    let wait = self.provider_wait(spec, pause.wait, pause.reason);
                    tracing::debug!(reason = pause.reason, wait = ?wait, "pacing on rate-limit headers");
                    self.budget.pause_for(wait, pause.reason);
                }
                return Ok(response);
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed && self.auth.invalidate().await {
                tracing::info!(
                    endpoint = spec.endpoint,
                    "401: refreshing the access token once"
                );
                refreshed = true;
                continue;
            }
            return Err(self.classify(spec, policy, response));
        }
    }

    async fn execute(
        &self,
        spec: &RequestSpec,
        authorization: Option<&crate::secret::Secret>,
    ) -> Result<HttpResponse, HttpError> {
        let mut request = self.client.request(spec.method.clone(), spec.url.clone());
        for (name, value) in &spec.headers {
            request = request.header(*name, value);
        }
        if let Some(auth) = authorization {
            let mut value =
                reqwest::header::HeaderValue::from_str(auth.expose()).map_err(|_| {
                    HttpError::Transport {
                        endpoint: spec.endpoint,
                        message: "access token contains characters not allowed in a header".into(),
                    }
                })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let transport = |e: reqwest::Error| HttpError::Transport {
            endpoint: spec.endpoint,
            message: redact(&error_chain(&e), ERROR_TEXT_CAP),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = body::read_capped(response, self.settings.max_response_bytes)
            .await
            .map_err(|e| match e {
                body::BodyError::TooLarge { limit } => HttpError::TooLarge {
                    endpoint: spec.endpoint,
                    status,
                    limit,
                },
                body::BodyError::Read(message) => HttpError::Transport {
                    endpoint: spec.endpoint,
                    message,
                },
            })?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// A wait the provider asked for, clamped to `http.max_provider_wait` (with a warning
    /// when it asked for more): this is the wait the budget, the retries and the engine see.
    fn provider_wait(&self, spec: &RequestSpec, asked: Duration, reason: &'static str) -> Duration {
        let cap = self.settings.max_provider_wait;
        if asked <= cap {
            return asked;
        }
        tracing::warn!(
            endpoint = spec.endpoint,
            reason,
            asked = ?asked,
            waiting = ?cap,
            "the provider asked for a wait longer than http.max_provider_wait; waiting that long instead"
        );
        cap
    }

    fn classify(
        &self,
        spec: &RequestSpec,
        policy: &dyn ResponsePolicy,
        response: HttpResponse,
    ) -> HttpError {
        let status = response.status;
        let mut message = policy.describe_error(status, &response.body);
        for name in policy.correlation_headers() {
            if let Some(v) = response.header(name) {
                message.push_str(&format!(" [{name}: {v}]"));
            }
        }
        // The one place provider text enters convsync's errors: no secret it echoes and no
        // megabyte of it goes further.
        let message = provider_text(&message);
        let endpoint = spec.endpoint;
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                // The provider's rate-limit headers (a daily budget spent by another
                // integration, say) pause the whole budget, as on a success.
                if let Some(pause) = policy.pacing(&response.headers) {
                    let wait = self.provider_wait(spec, pause.wait, pause.reason);
                    self.budget.pause_for(wait, pause.reason);
                    if wait > self.settings.max_inline_pause {
                        return HttpError::Paused {
                            endpoint,
                            wait,
                            reason: pause.reason,
                        };
                    }
                }
                let retry_after = retry::parse_retry_after(&response.headers)
                    .map(|wait| self.provider_wait(spec, wait, "retry-after"));
                if let Some(wait) = retry_after {
                    // Everyone sharing this budget waits, not just this request.
                    self.budget.pause_for(wait, "retry-after");
                    if wait > self.settings.max_inline_pause {
                        return HttpError::Paused {
                            endpoint,
                            wait,
                            reason: "retry-after",
                        };
                    }
                }
                HttpError::RateLimited {
                    endpoint,
                    retry_after,
                    detail: message,
                }
            }
            StatusCode::UNAUTHORIZED => HttpError::Unauthorized { endpoint, message },
            StatusCode::FORBIDDEN => HttpError::Forbidden { endpoint, message },
            s if retry::is_transient_status(s) => HttpError::Server {
                endpoint,
                status,
                message,
            },
            _ => HttpError::Rejected {
                endpoint,
                status,
                message,
                body: response.body,
            },
        }
    }
}
