//! Access tokens: fetched on demand, cached, refreshed before they expire and once more
//! when the provider answers 401.
//!
//! Four schemes cover the four providers: a static bearer token (Spruce, HighLevel private
//! integration tokens), OAuth2 client credentials (Entra for D365, Sinch), OAuth2 with
//! rotating refresh tokens (HighLevel apps), whose new refresh token is committed to the
//! database before the access token that came with it is used, and a token minted with
//! another credential's token ([`MintedToken`]: a HighLevel location's token, minted with
//! the agency's).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

mod vault;
pub use vault::{
    HeldVaultLock, RefreshRefusal, StoredRefreshToken, TokenUse, TokenVault, VaultError, VaultLock,
};

use crate::retry::Transient;
use crate::secret::Secret;
use crate::secret::redact::provider_text;
use crate::time::Timestamp;

/// Refresh this long before a token's stated expiry, so no request carries a token that
/// dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// Warn this long before a refresh token expires unused: time for an operator to start a
/// stopped daemon or re-authorise.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// The longest a token is cached, whatever `expires_in` claims: a day is longer than any
/// of the four providers grants, and a refresh a day costs nothing.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `expires_in` when the answer does not say (the common OAuth2 default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How the client credentials reach the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialPlacement {
    /// `client_id` and `client_secret` form fields (Entra).
    FormFields,
    /// HTTP Basic `client_id:client_secret` (Sinch).
    BasicHeader,
}

/// The token endpoint refused or failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Could not reach the token endpoint.
    #[error("token endpoint {url} unreachable: {message}")]
    Unreachable {
        /// The token URL (no secrets in it).
        url: String,
        /// Transport error text.
        message: String,
    },
    /// The endpoint answered with an error status.
    #[error("token endpoint {url} answered {status}: {body}")]
    Rejected {
        /// The token URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The error body, redacted and cut (some token endpoints echo the posted form).
        body: String,
    },
    /// The endpoint answered 200 with something that is not a token.
    #[error("token endpoint {url} returned an unreadable token response: {message}")]
    Malformed {
        /// The token URL.
        url: String,
        /// Parse error.
        message: String,
    },
    /// The endpoint's answer was larger than `http.max_response_bytes`. Not retried.
    #[error(
        "token endpoint {url} answered with more than {limit} bytes; the answer was not used (raise http.max_response_bytes if it is really that large)"
    )]
    TooLarge {
        /// The token URL.
        url: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// Another process sharing the token vault (a replica on the same PostgreSQL) is
    /// refreshing this credential and held its lock for longer than the vault waits. Tried
    /// again; nothing was sent.
    #[error(
        "another convsync sharing this database is refreshing the same credential and held its lock too long; nothing was sent, trying again: {0}"
    )]
    RefreshLocked(String),
    /// The rotating refresh token could not be stored; the new token is not used.
    #[error("could not persist the rotated refresh token: {0}")]
    Persist(String),
    /// A refresh was sent but its answer was lost (timeout, dropped connection, truncated
    /// or unreadable body): the provider may have spent the refresh token. The next attempt
    /// re-reads the vault before it sends anything.
    #[error(
        "token endpoint {url}: the refresh was sent but its answer was lost ({message}); the refresh token may have been spent, the next attempt re-reads the vault first"
    )]
    AnswerLost {
        /// The token URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The token endpoint refused the refresh token, now or in an earlier run: this source
    /// cannot authenticate until an operator gives it a new one.
    #[error("{}", refusal_text(source_name, url, detail, *after_lost_answer_at))]
    RefreshRefused {
        /// The source's name, for the recovery command.
        source_name: String,
        /// The token URL.
        url: String,
        /// What the endpoint said, or when it said it.
        detail: String,
        /// When the refresh whose answer was lost had been sent, if one was.
        after_lost_answer_at: Option<Timestamp>,
    },
}

fn refusal_text(
    source: &str,
    url: &str,
    detail: &str,
    after_lost_answer_at: Option<Timestamp>,
) -> String {
    let what = match after_lost_answer_at {
        Some(at) => format!(
            "token endpoint {url} refused the stored refresh token ({detail}) after the answer to \
             the refresh sent at {} was lost: the provider most likely rotated the token then, \
             and the new one never arrived",
            at.to_rfc3339_seconds()
        ),
        None => format!(
            "token endpoint {url} refused the stored refresh token ({detail}): it was revoked, \
             expired (a year unused) or spent by another client"
        ),
    };
    format!(
        "{what}. This source cannot sync until it has a new refresh token: re-authorise the app \
         for this location, then run `convsync credentials set-refresh-token --source {source} \
         --file <path>` (or pipe the token to it on stdin) and restart convsync; other sources \
         keep running"
    )
}

impl Transient for AuthError {
    /// Network trouble and 5xx from the token endpoint are worth retrying.
    fn is_transient(&self) -> bool {
        match self {
            AuthError::Unreachable { .. } => true,
            AuthError::Rejected { status, .. } => *status == 429 || *status >= 500,
            AuthError::AnswerLost { .. } | AuthError::RefreshLocked(_) => true,
            AuthError::Malformed { .. }
            | AuthError::TooLarge { .. }
            | AuthError::Persist(_)
            | AuthError::RefreshRefused { .. } => false,
        }
    }
}

impl AuthError {
    /// The credential itself was refused: only an operator can fix it.
    pub fn is_credential_rejected(&self) -> bool {
        match self {
            AuthError::Rejected { status, .. } => matches!(status, 400 | 401 | 403),
            AuthError::RefreshRefused { .. } => true,
            _ => false,
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

impl TokenResponse {
    /// How long the token may be cached: `expires_in` (a number, or a string of digits as
    /// some servers send it) capped at [`MAX_TOKEN_LIFETIME`]; unreadable, negative or
    /// fractional values mean the default hour.
    fn lifetime(&self) -> Duration {
        let secs = match &self.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        secs.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs)
            .min(MAX_TOKEN_LIFETIME)
    }
}

#[derive(Clone)]
struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

/// OAuth2 client-credentials settings.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// The token endpoint.
    pub token_url: Url,
    /// The client (key) id.
    pub client_id: String,
    /// The client (key) secret.
    pub client_secret: Secret,
    /// `scope` form field, when the provider needs one (Entra).
    pub scope: Option<String>,
    /// Form fields or Basic header.
    pub placement: CredentialPlacement,
}

/// OAuth2 refresh-token settings for providers that rotate refresh tokens.
#[derive(Debug, Clone)]
pub struct RotatingRefresh {
    /// The token endpoint.
    pub token_url: Url,
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: Secret,
    /// The refresh token from the config, used only until the database holds a newer one.
    pub initial_refresh_token: Secret,
    /// Extra form fields (HighLevel's `user_type=Location`).
    pub extra_form: Vec<(String, String)>,
    /// Key under which the current refresh token is stored.
    pub vault_key: String,
    /// The source's name, for the recovery command an error names (set by `config`).
    pub source: String,
    /// Rotate at least this often even when the access token would last longer, so that an
    /// idle installation's refresh token never reaches its expiry.
    pub rotate_every: Duration,
    /// A refresh token unused for this long is dead (HighLevel: a year).
    pub expires_unused_after: Duration,
}

impl RotatingRefresh {
    /// When a refresh token issued at `issued_at` dies if it is not used.
    pub fn expires_at(&self, issued_at: Timestamp) -> Timestamp {
        issued_at.saturating_add(self.expires_unused_after)
    }

    /// Whether a refresh token issued at `issued_at` is close enough to its expiry at
    /// `now` that an operator should be told.
    pub fn expiry_is_near(&self, issued_at: Timestamp, now: Timestamp) -> bool {
        now.saturating_add(EXPIRY_WARNING) >= self.expires_at(issued_at)
    }

    /// How long an access token that lives `lifetime` may be used before the next refresh,
    /// given that the refresh token was issued at `issued_at`: never past the rotation
    /// deadline (a month after issue).
    fn use_for(&self, lifetime: Duration, issued_at: Timestamp, now: Timestamp) -> Duration {
        let rotate_by = issued_at.saturating_add(self.rotate_every);
        let until_rotation = if rotate_by > now {
            now.elapsed_until(rotate_by)
        } else {
            Duration::ZERO
        };
        lifetime.min(until_rotation)
    }
}

/// How requests of a source are authenticated.
#[derive(Debug, Clone)]
pub enum AuthScheme {
    /// No authentication (tests).
    None,
    /// A static bearer token.
    Bearer(Secret),
    /// OAuth2 client credentials.
    ClientCredentials(ClientCredentials),
    /// OAuth2 refresh token with rotation.
    RotatingRefresh(RotatingRefresh),
    /// A token minted on demand with another credential's token.
    Minted(MintedToken),
}

/// A token minted by posting a form to `mint_url` with the issuer's token as bearer
/// (HighLevel's `POST /oauth/locationToken` with the agency token). The issuer is shared
/// with every token it mints, so the agency's rotating refresh token is spent once for all.
#[derive(Debug, Clone)]
pub struct MintedToken {
    /// The credential whose token authorises the mint.
    pub issuer: Arc<Authenticator>,
    /// The endpoint that mints.
    pub mint_url: Url,
    /// The form posted (ids only: no secret belongs here).
    pub form: Vec<(String, String)>,
    /// Extra headers (HighLevel's `Version`).
    pub headers: Vec<(&'static str, String)>,
}

impl AuthScheme {
    /// Tells the scheme which source it authenticates, for the recovery command its errors
    /// name.
    pub fn name_source(&mut self, source: &str) {
        if let AuthScheme::RotatingRefresh(rr) = self {
            rr.source = source.to_owned();
        }
    }
}

/// An authenticator with its token cache. Shared (behind an `Arc`) by sources that use the
/// same credential, so they share one token.
pub struct Authenticator {
    scheme: AuthScheme,
    cache: Mutex<Option<CachedToken>>,
    vault: Option<Arc<dyn TokenVault>>,
    /// When the rotating refresh token last seen dies if unused, for `/metrics`.
    refresh_token_expires_at: std::sync::Mutex<Option<Timestamp>>,
    /// Token answers larger than this are refused unread (`http.max_response_bytes`).
    max_response_bytes: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.scheme {
            AuthScheme::None => "none",
            AuthScheme::Bearer(_) => "bearer",
            AuthScheme::ClientCredentials(_) => "client_credentials",
            AuthScheme::RotatingRefresh(_) => "refresh_token",
            AuthScheme::Minted(_) => "minted",
        };
        f.debug_struct("Authenticator")
            .field("scheme", &kind)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `scheme`. `vault` is needed only for rotating refresh tokens.
    pub fn new(scheme: AuthScheme, vault: Option<Arc<dyn TokenVault>>) -> Self {
        Authenticator {
            scheme,
            cache: Mutex::new(None),
            vault,
            refresh_token_expires_at: std::sync::Mutex::new(None),
            max_response_bytes: crate::http::HttpSettings::default().max_response_bytes,
        }
    }

    /// Caps the token endpoint's answers at `limit` bytes (`http.max_response_bytes`).
    pub fn with_max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// When the rotating refresh token dies if it is not used, once a refresh was tried.
    pub fn refresh_token_expires_at(&self) -> Option<Timestamp> {
        *self
            .refresh_token_expires_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn note_refresh_token_issued(&self, rr: &RotatingRefresh, issued_at: Timestamp) {
        *self
            .refresh_token_expires_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(rr.expires_at(issued_at));
    }

    /// The `Authorization` header value for the next request, fetching a token if needed.
    pub async fn authorization(
        &self,
        client: &reqwest::Client,
    ) -> Result<Option<Secret>, AuthError> {
        match &self.scheme {
            AuthScheme::None => Ok(None),
            AuthScheme::Bearer(token) => Ok(Some(bearer(token.expose()))),
            AuthScheme::ClientCredentials(_)
            | AuthScheme::RotatingRefresh(_)
            | AuthScheme::Minted(_) => {
                let mut cache = self.cache.lock().await;
                if let Some(token) = cache.as_ref()
                    && Instant::now() < token.refresh_at
                {
                    return Ok(Some(bearer(token.value.expose())));
                }
                let fresh = self.fetch(client).await?;
                let header = bearer(fresh.value.expose());
                *cache = Some(fresh);
                Ok(Some(header))
            }
        }
    }

    /// Forgets the cached token after a 401, so the next call fetches a new one. Returns
    /// whether a refresh is possible at all (a static token cannot be refreshed).
    pub async fn invalidate(&self) -> bool {
        match self.scheme {
            AuthScheme::None | AuthScheme::Bearer(_) => false,
            _ => {
                *self.cache.lock().await = None;
                true
            }
        }
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<CachedToken, AuthError> {
        match &self.scheme {
            AuthScheme::ClientCredentials(cc) => {
                let mut form = vec![("grant_type", "client_credentials".to_owned())];
                let mut request = client.post(cc.token_url.clone());
                match cc.placement {
                    CredentialPlacement::FormFields => {
                        form.push(("client_id", cc.client_id.clone()));
                        form.push(("client_secret", cc.client_secret.expose().to_owned()));
                    }
                    CredentialPlacement::BasicHeader => {
                        // Remembered for redaction: its base64 is what an echoed `Basic`
                        // header shows.
                        let _pair = Secret::configured(format!(
                            "{}:{}",
                            cc.client_id,
                            cc.client_secret.expose()
                        ));
                        request =
                            request.basic_auth(&cc.client_id, Some(cc.client_secret.expose()));
                    }
                }
                if let Some(scope) = &cc.scope {
                    form.push(("scope", scope.clone()));
                }
                let response =
                    post_form(request, &form, &cc.token_url, self.max_response_bytes).await?;
                Ok(cache_entry(&response))
            }
            AuthScheme::RotatingRefresh(rr) => self.rotate(client, rr).await,
            AuthScheme::Minted(minted) => self.mint(client, minted).await,
            AuthScheme::None | AuthScheme::Bearer(_) => {
                unreachable!("static schemes never fetch tokens")
            }
        }
    }

    /// Mints a token with the issuer's; when the mint endpoint refuses the issuer's token
    /// (401: expired early, revoked), the issuer's is renewed once and the mint tried again.
    async fn mint(
        &self,
        client: &reqwest::Client,
        minted: &MintedToken,
    ) -> Result<CachedToken, AuthError> {
        let form: Vec<(&str, String)> = minted
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let mut renewed = false;
        loop {
            // Boxed: the issuer is an Authenticator too (never a minted one, but the
            // compiler cannot know that).
            let issuer = Box::pin(minted.issuer.authorization(client))
                .await?
                .ok_or_else(|| AuthError::Malformed {
                    url: minted.mint_url.as_str().to_owned(),
                    message: "the issuing credential yields no token".to_owned(),
                })?;
            let mut request = client
                .post(minted.mint_url.clone())
                .header(reqwest::header::AUTHORIZATION, issuer.expose());
            for (name, value) in &minted.headers {
                request = request.header(*name, value);
            }
            match post_form(request, &form, &minted.mint_url, self.max_response_bytes).await {
                Err(refused @ AuthError::Rejected { status: 401, .. }) if !renewed => {
                    // At most one renewal: the loop runs twice at most.
                    if !minted.issuer.invalidate().await {
                        return Err(refused);
                    }
                    renewed = true;
                }
                answer => return answer.map(|response| cache_entry(&response)),
            }
        }
    }

    /// One refresh with the rotating refresh token, under the vault key's lock (so that
    /// processes sharing the vault take turns, each spending the token the previous one
    /// stored), written ahead in the vault so that no answer — given, refused or lost — is
    /// ever forgotten:
    ///
    /// 1. the vault is read first, every time: a token refused before (in any run) is not
    ///    sent again, and a token set by `convsync credentials set-refresh-token` is used;
    /// 2. `sent_at` is committed before the request leaves;
    /// 3. a new refresh token is committed before anything else in the answer is read;
    /// 4. a refusal is committed, and named as following a lost answer when it did.
    async fn rotate(
        &self,
        client: &reqwest::Client,
        rr: &RotatingRefresh,
    ) -> Result<CachedToken, AuthError> {
        let vault = self
            .vault
            .as_deref()
            .ok_or_else(|| AuthError::Persist("no database for refresh tokens".into()))?;
        let lock = vault.lock(&rr.vault_key).await.map_err(|e| {
            if e.is_busy() {
                AuthError::RefreshLocked(e.to_string())
            } else {
                AuthError::Persist(e.to_string())
            }
        })?;
        let rotated = self.rotate_locked(client, rr, vault).await;
        lock.release().await;
        rotated
    }

    /// [`Authenticator::rotate`] once the vault key is locked.
    async fn rotate_locked(
        &self,
        client: &reqwest::Client,
        rr: &RotatingRefresh,
        vault: &dyn TokenVault,
    ) -> Result<CachedToken, AuthError> {
        let persist = |e: VaultError| AuthError::Persist(e.to_string());
        let url = rr.token_url.as_str().to_owned();
        let stored = vault.load(&rr.vault_key).await.map_err(persist)?;
        let (current, issued_at, lost_answer_at) = match stored {
            Some(stored) => {
                if let Some(refusal) = stored.refused {
                    return Err(AuthError::RefreshRefused {
                        source_name: rr.source.clone(),
                        url,
                        detail: format!(
                            "refused at {}; not sent again",
                            refusal.at.to_rfc3339_seconds()
                        ),
                        after_lost_answer_at: refusal.after_lost_answer.then_some(refusal.at),
                    });
                }
                (stored.token, stored.issued_at, stored.sent_at)
            }
            None => (rr.initial_refresh_token.clone(), Timestamp::now(), None),
        };
        self.note_refresh_token_issued(rr, issued_at);
        if rr.expiry_is_near(issued_at, Timestamp::now()) {
            tracing::warn!(
                issued_at = %issued_at.to_rfc3339_seconds(),
                expires_at = %rr.expires_at(issued_at).to_rfc3339_seconds(),
                "the refresh token is close to expiring unused; refreshing it now"
            );
        }
        vault
            .mark(&rr.vault_key, &current, TokenUse::Sent)
            .await
            .map_err(persist)?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", rr.client_id.clone()),
            ("client_secret", rr.client_secret.expose().to_owned()),
            ("refresh_token", current.expose().to_owned()),
        ];
        for (k, v) in &rr.extra_form {
            form.push((k.as_str(), v.clone()));
        }
        let answer = send_form(
            client.post(rr.token_url.clone()),
            &form,
            self.max_response_bytes,
        )
        .await;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(Unanswered::NotSent(message)) => {
                vault
                    .mark(&rr.vault_key, &current, TokenUse::Unspent)
                    .await
                    .map_err(persist)?;
                return Err(AuthError::Unreachable { url, message });
            }
            Err(Unanswered::Lost(message)) => return Err(AuthError::AnswerLost { url, message }),
            // The refresh may have been spent: `sent_at` stays, so a later refusal is
            // reported as following an answer convsync could not use.
            Err(Unanswered::TooLarge { limit }) => return Err(AuthError::TooLarge { url, limit }),
        };
        if matches!(status.as_u16(), 400 | 401 | 403) && !names_invalid_grant(&body) {
            // The app's credentials or the request were refused, not the refresh token: it
            // was not spent, and stays usable once the configuration is fixed.
            vault
                .mark(&rr.vault_key, &current, TokenUse::Unspent)
                .await
                .map_err(persist)?;
            return Err(AuthError::Rejected {
                url,
                status: status.as_u16(),
                body: provider_text(&String::from_utf8_lossy(&body)),
            });
        }
        if matches!(status.as_u16(), 400 | 401 | 403) {
            vault
                .mark(
                    &rr.vault_key,
                    &current,
                    TokenUse::Refused {
                        after_lost_answer: lost_answer_at.is_some(),
                    },
                )
                .await
                .map_err(persist)?;
            return Err(AuthError::RefreshRefused {
                source_name: rr.source.clone(),
                url,
                detail: format!(
                    "{status}: {}",
                    provider_text(&String::from_utf8_lossy(&body))
                ),
                after_lost_answer_at: lost_answer_at,
            });
        }
        if !status.is_success() {
            // An error answer: most likely nothing was spent, but that cannot be known, so
            // `sent_at` stays and a later refusal is reported as following it.
            return Err(AuthError::Rejected {
                url,
                status: status.as_u16(),
                body: provider_text(&String::from_utf8_lossy(&body)),
            });
        }
        // The new refresh token first: the old one is spent, and if the rest of the answer
        // is unreadable the new one must still not be lost.
        let issued_at = match new_refresh_token(&body) {
            Some(new_refresh) => {
                vault
                    .save(&rr.vault_key, &Secret::new(new_refresh))
                    .await
                    .map_err(persist)?;
                Timestamp::now()
            }
            None if serde_json::from_slice::<TokenResponse>(&body).is_ok() => {
                // A complete answer without a new refresh token: this provider does not
                // rotate, and the token is still good.
                vault
                    .mark(&rr.vault_key, &current, TokenUse::Unspent)
                    .await
                    .map_err(persist)?;
                issued_at
            }
            None => {
                return Err(AuthError::AnswerLost {
                    url,
                    message: "the answer holds no readable token".into(),
                });
            }
        };
        self.note_refresh_token_issued(rr, issued_at);
        let response = parse_token(&body, &url)?;
        let mut entry = cache_entry(&response);
        let use_for = rr.use_for(response.lifetime(), issued_at, Timestamp::now());
        entry.refresh_at = entry.refresh_at.min(later(use_for));
        Ok(entry)
    }
}

/// Whether a refusal is about the refresh token itself (OAuth's `invalid_grant`; HighLevel
/// says "Invalid grant: refresh token is invalid"), rather than the app's credentials.
fn names_invalid_grant(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("invalid_grant") || text.contains("invalid grant")
}

/// The `refresh_token` of a token answer, read on its own so that it survives the rest of
/// the answer being malformed.
fn new_refresh_token(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct OnlyRefresh {
        refresh_token: Option<String>,
    }
    serde_json::from_slice::<OnlyRefresh>(body)
        .ok()?
        .refresh_token
        .filter(|t| !t.trim().is_empty())
}

fn bearer(token: &str) -> Secret {
    Secret::new(format!("Bearer {token}"))
}

fn cache_entry(response: &TokenResponse) -> CachedToken {
    let lifetime = response.lifetime();
    // Refresh at the margin before expiry, or halfway through very short lifetimes.
    let early = REFRESH_MARGIN.min(lifetime / 2);
    CachedToken {
        value: Secret::new(response.access_token.clone()),
        refresh_at: later(lifetime.saturating_sub(early)),
    }
}

/// `now + wait`, or now when no clock can hold it.
fn later(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait).unwrap_or(now)
}

/// Why a token request produced no usable answer.
enum Unanswered {
    /// The request never left (no connection): nothing can have been spent.
    NotSent(String),
    /// The request was sent and the answer was lost or cut short.
    Lost(String),
    /// The answer was larger than `http.max_response_bytes` and was not read.
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
}

async fn send_form(
    request: reqwest::RequestBuilder,
    form: &[(&str, String)],
    max_response_bytes: u64,
) -> Result<(reqwest::StatusCode, bytes::Bytes), Unanswered> {
    let text = |e: reqwest::Error| provider_text(&crate::error_text::error_chain(&e.without_url()));
    let response = request.form(form).send().await.map_err(|e| {
        if e.is_connect() {
            Unanswered::NotSent(text(e))
        } else {
            Unanswered::Lost(text(e))
        }
    })?;
    let status = response.status();
    let body = super::body::read_capped(response, max_response_bytes)
        .await
        .map_err(|e| match e {
            super::body::BodyError::TooLarge { limit } => Unanswered::TooLarge { limit },
            super::body::BodyError::Read(message) => Unanswered::Lost(provider_text(&message)),
        })?;
    Ok((status, body))
}

async fn post_form(
    request: reqwest::RequestBuilder,
    form: &[(&str, String)],
    url: &Url,
    max_response_bytes: u64,
) -> Result<TokenResponse, AuthError> {
    let shown_url = url.as_str().to_owned();
    let (status, body) =
        send_form(request, form, max_response_bytes)
            .await
            .map_err(|e| match e {
                Unanswered::NotSent(message) | Unanswered::Lost(message) => {
                    AuthError::Unreachable {
                        url: shown_url.clone(),
                        message,
                    }
                }
                Unanswered::TooLarge { limit } => AuthError::TooLarge {
                    url: shown_url.clone(),
                    limit,
                },
            })?;
    if !status.is_success() {
        return Err(AuthError::Rejected {
            url: shown_url,
            status: status.as_u16(),
            body: provider_text(&String::from_utf8_lossy(&body)),
        });
    }
    parse_token(&body, &shown_url)
}

fn parse_token(body: &[u8], url: &str) -> Result<TokenResponse, AuthError> {
    serde_json::from_slice(body).map_err(|e| AuthError::Malformed {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn answer(expires_in: serde_json::Value) -> TokenResponse {
        TokenResponse {
            access_token: "t".into(),
            expires_in: Some(expires_in),
        }
    }

    /// A lifetime no clock can hold is capped at a day instead of panicking.
    #[test]
    fn huge_expires_in_is_capped_at_a_day() {
        for huge in [
            serde_json::json!(u64::MAX),
            serde_json::json!("18446744073709551615"),
            serde_json::json!(1e300),
        ] {
            let lifetime = answer(huge.clone()).lifetime();
            assert!(lifetime <= MAX_TOKEN_LIFETIME, "{huge}: {lifetime:?}");
            let entry = cache_entry(&answer(huge));
            assert!(entry.refresh_at <= Instant::now() + MAX_TOKEN_LIFETIME);
        }
        assert_eq!(
            answer(serde_json::json!(3599)).lifetime(),
            Duration::from_secs(3599)
        );
    }

    /// Negative, fractional and unreadable lifetimes mean the default hour.
    #[test]
    fn unreadable_expires_in_means_an_hour() {
        for odd in [
            serde_json::json!(-5),
            serde_json::json!("-5"),
            serde_json::json!("nan"),
            serde_json::json!("99999999999999999999"),
            serde_json::json!(null),
            serde_json::json!([1]),
        ] {
            assert_eq!(
                answer(odd.clone()).lifetime(),
                DEFAULT_TOKEN_LIFETIME,
                "{odd}"
            );
        }
    }

    fn highlevel_like() -> RotatingRefresh {
        RotatingRefresh {
            token_url: "http://127.0.0.1:1/oauth/token".parse().unwrap(),
            client_id: "app".into(),
            client_secret: Secret::new("app-secret-value".into()),
            initial_refresh_token: Secret::new("initial-refresh".into()),
            extra_form: Vec::new(),
            vault_key: "k".into(),
            source: "hl/loc".into(),
            rotate_every: 30 * DAY,
            expires_unused_after: 365 * DAY,
        }
    }

    /// An idle location whose access token would live for months still refreshes once its
    /// refresh token is a month old; a day-long access token is unaffected.
    #[test]
    fn a_long_lived_access_token_is_used_only_until_the_monthly_rotation() {
        let rr = highlevel_like();
        let now = Timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let issued_now = now;
        assert_eq!(rr.use_for(DAY, issued_now, now), DAY);
        assert_eq!(rr.use_for(90 * DAY, issued_now, now), 30 * DAY);
        let issued_29_days_ago = now.saturating_sub(29 * DAY);
        assert_eq!(rr.use_for(90 * DAY, issued_29_days_ago, now), DAY);
        let issued_40_days_ago = now.saturating_sub(40 * DAY);
        assert_eq!(
            rr.use_for(90 * DAY, issued_40_days_ago, now),
            Duration::ZERO
        );
    }

    /// The warning starts 30 days before a token's year ends.
    #[test]
    fn expiry_warning_starts_thirty_days_before_the_year_ends() {
        let rr = highlevel_like();
        let issued = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert!(!rr.expiry_is_near(issued, issued.saturating_add(334 * DAY)));
        assert!(rr.expiry_is_near(issued, issued.saturating_add(335 * DAY)));
        assert_eq!(
            rr.expires_at(issued),
            Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap()
        );
    }

    /// A refresh token survives a malformed rest of the answer.
    #[test]
    fn the_new_refresh_token_is_read_on_its_own() {
        assert_eq!(
            new_refresh_token(br#"{"refresh_token":"rt-2","access_token":7}"#).as_deref(),
            Some("rt-2")
        );
        assert_eq!(new_refresh_token(br#"{"access_token":"a"}"#), None);
        assert_eq!(new_refresh_token(br#"{"refresh_tok"#), None);
    }

    /// Only a refusal of the grant condemns the refresh token.
    #[test]
    fn invalid_grant_is_told_apart_from_invalid_client() {
        assert!(names_invalid_grant(br#"{"error":"invalid_grant"}"#));
        assert!(names_invalid_grant(
            br#"{"message":"Invalid grant: refresh token is invalid"}"#
        ));
        assert!(!names_invalid_grant(
            br#"{"message":"Invalid client: client credentials are invalid"}"#
        ));
    }
}
