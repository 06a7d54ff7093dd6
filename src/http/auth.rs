//! Access tokens: fetched on demand, cached, refreshed before they expire and once more
//! when the provider answers 401.
//!
//! Three schemes cover the four providers: a static bearer token (Spruce, HighLevel private
//! integration tokens), OAuth2 client credentials (Entra for D365, Sinch), and OAuth2 with
//! rotating refresh tokens (HighLevel apps), whose new refresh token is committed to the
//! database before the access token that came with it is used.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::secret::Secret;
use crate::store::Store;

/// Refresh this long before a token's stated expiry, so no request carries a token that
/// dies in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

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
        /// The error body (token endpoints do not echo secrets).
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
    /// The rotating refresh token could not be stored; the new token is not used.
    #[error("could not persist the rotated refresh token: {0}")]
    Persist(String),
}

impl AuthError {
    /// Network trouble and 5xx from the token endpoint are worth retrying.
    pub fn is_retryable(&self) -> bool {
        match self {
            AuthError::Unreachable { .. } => true,
            AuthError::Rejected { status, .. } => *status == 429 || *status >= 500,
            AuthError::Malformed { .. } | AuthError::TooLarge { .. } | AuthError::Persist(_) => {
                false
            }
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
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
}

/// An authenticator with its token cache. Shared (behind an `Arc`) by sources that use the
/// same credential, so they share one token.
pub struct Authenticator {
    scheme: AuthScheme,
    cache: Mutex<Option<CachedToken>>,
    store: Option<Store>,
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
        };
        f.debug_struct("Authenticator")
            .field("scheme", &kind)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `scheme`. `store` is needed only for rotating refresh tokens.
    pub fn new(scheme: AuthScheme, store: Option<Store>) -> Self {
        Authenticator {
            scheme,
            cache: Mutex::new(None),
            store,
            max_response_bytes: crate::http::HttpSettings::default().max_response_bytes,
        }
    }

    /// Caps the token endpoint's answers at `limit` bytes (`http.max_response_bytes`).
    pub fn with_max_response_bytes(mut self, limit: u64) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The `Authorization` header value for the next request, fetching a token if needed.
    pub async fn authorization(
        &self,
        client: &reqwest::Client,
    ) -> Result<Option<Secret>, AuthError> {
        match &self.scheme {
            AuthScheme::None => Ok(None),
            AuthScheme::Bearer(token) => Ok(Some(bearer(token.expose()))),
            AuthScheme::ClientCredentials(_) | AuthScheme::RotatingRefresh(_) => {
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
            AuthScheme::None | AuthScheme::Bearer(_) => {
                unreachable!("static schemes never fetch tokens")
            }
        }
    }

    async fn rotate(
        &self,
        client: &reqwest::Client,
        rr: &RotatingRefresh,
    ) -> Result<CachedToken, AuthError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| AuthError::Persist("no database for refresh tokens".into()))?;
        let stored = store
            .load_refresh_token(&rr.vault_key)
            .await
            .map_err(|e| AuthError::Persist(e.to_string()))?;
        let current = stored.unwrap_or_else(|| rr.initial_refresh_token.clone());
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", rr.client_id.clone()),
            ("client_secret", rr.client_secret.expose().to_owned()),
            ("refresh_token", current.expose().to_owned()),
        ];
        for (k, v) in &rr.extra_form {
            form.push((k.as_str(), v.clone()));
        }
        let response = post_form(
            client.post(rr.token_url.clone()),
            &form,
            &rr.token_url,
            self.max_response_bytes,
        )
        .await?;
        if let Some(new_refresh) = &response.refresh_token {
            // Commit the rotated refresh token before its access token is ever used: the
            // old one is already spent at the provider.
            store
                .save_refresh_token(&rr.vault_key, &Secret::new(new_refresh.clone()))
                .await
                .map_err(|e| AuthError::Persist(e.to_string()))?;
        }
        Ok(cache_entry(&response))
    }
}

fn bearer(token: &str) -> Secret {
    Secret::new(format!("Bearer {token}"))
}

fn cache_entry(response: &TokenResponse) -> CachedToken {
    let lifetime = response.lifetime();
    // Refresh at the margin before expiry, or halfway through very short lifetimes.
    let early = REFRESH_MARGIN.min(lifetime / 2);
    let now = Instant::now();
    CachedToken {
        value: Secret::new(response.access_token.clone()),
        refresh_at: now
            .checked_add(lifetime.saturating_sub(early))
            .unwrap_or(now),
    }
}

async fn post_form(
    request: reqwest::RequestBuilder,
    form: &[(&str, String)],
    url: &Url,
    max_response_bytes: u64,
) -> Result<TokenResponse, AuthError> {
    let shown_url = url.as_str().to_owned();
    let response = request
        .form(form)
        .send()
        .await
        .map_err(|e| AuthError::Unreachable {
            url: shown_url.clone(),
            message: e.without_url().to_string(),
        })?;
    let status = response.status();
    let body = super::body::read_capped(response, max_response_bytes)
        .await
        .map_err(|e| match e {
            super::body::BodyError::TooLarge { limit } => AuthError::TooLarge {
                url: shown_url.clone(),
                limit,
            },
            super::body::BodyError::Read(message) => AuthError::Unreachable {
                url: shown_url.clone(),
                message,
            },
        })?;
    if !status.is_success() {
        return Err(AuthError::Rejected {
            url: shown_url,
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).chars().take(1000).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| AuthError::Malformed {
        url: shown_url,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(expires_in: serde_json::Value) -> TokenResponse {
        TokenResponse {
            access_token: "t".into(),
            expires_in: Some(expires_in),
            refresh_token: None,
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
}
