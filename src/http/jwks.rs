//! An identity provider's published signing keys (a JSON Web Key Set, RFC 7517), fetched
//! over HTTP and cached by key id, for checking the tokens it issues.
//!
//! Whoever presents a token chooses its key id, so a forger can name keys that do not exist
//! as often as it likes. The cache therefore bounds what an unknown id may cost: it
//! refetches the set for one at most once per [`JwksPolicy::unknown_key_gap`], and after a
//! failed fetch not before [`JwksPolicy::failed_fetch_gap`]. Keys are also refreshed once
//! they are older than [`JwksPolicy::refresh_every`] (the provider rolls its keys), on the
//! first use after that; when that refresh fails the keys held keep being used, since a
//! key that was valid an hour ago is still the best knowledge there is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use url::Url;

use crate::error_text::error_chain;

/// How often the set may be fetched, and how large it may be.
#[derive(Debug, Clone)]
pub struct JwksPolicy {
    /// Keys older than this are fetched again on their next use.
    pub refresh_every: Duration,
    /// The shortest time between two fetches caused by a key id the set does not hold.
    pub unknown_key_gap: Duration,
    /// The shortest time between a failed fetch and the next attempt.
    pub failed_fetch_gap: Duration,
    /// The largest key-set document read (Microsoft's is a few kilobytes).
    pub max_bytes: u64,
    /// The most keys kept from one document.
    pub max_keys: usize,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        JwksPolicy {
            refresh_every: Duration::from_secs(3600),
            unknown_key_gap: Duration::from_secs(300),
            failed_fetch_gap: Duration::from_secs(30),
            max_bytes: 256 * 1024,
            max_keys: 64,
        }
    }
}

/// Why no key can be given for a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The set could not be fetched and no keys are held: nothing can be checked now.
    #[error("the signing keys cannot be fetched")]
    Unavailable,
    /// The set holds no key with that id (after at most one refetch).
    #[error("no published signing key has the token's key id")]
    UnknownKey,
}

/// The key set of one URL, cached.
pub struct SigningKeys {
    url: Url,
    client: reqwest::Client,
    policy: JwksPolicy,
    /// Held across a fetch, so that concurrent requests wait for one fetch instead of each
    /// starting their own.
    state: tokio::sync::Mutex<Held>,
    /// Fetch attempts so far (tests pin how many a burst of tokens causes).
    fetches: AtomicU64,
    /// Who the keys are for (the source), for logs.
    owner: String,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("url", &self.url.as_str())
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Held {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// When the keys held were fetched (`None`: never).
    fetched_at: Option<Instant>,
    /// When the last fetch failed, if the last attempt failed.
    failed_at: Option<Instant>,
}

/// The part of a JWK that an RS256 check needs (other members, `x5c` included, are ignored).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    usage: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// The longest key id kept: Microsoft's are 27–40 characters.
const MAX_KID_BYTES: usize = 256;

impl SigningKeys {
    /// The keys published at `url`, fetched with `client` (the daemon's client: TLS always
    /// verified, no redirects), for `owner`'s tokens.
    pub fn new(url: Url, client: reqwest::Client, policy: JwksPolicy, owner: String) -> Self {
        SigningKeys {
            url,
            client,
            policy,
            state: tokio::sync::Mutex::new(Held::default()),
            fetches: AtomicU64::new(0),
            owner,
        }
    }

    /// The URL the keys come from.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Fetch attempts so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The RSA key with id `kid`, fetching or refreshing the set as the policy allows.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, JwksError> {
        let mut held = self.state.lock().await;
        let now = Instant::now();
        let since = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at));
        let may_retry = since(held.failed_at).is_none_or(|d| d >= self.policy.failed_fetch_gap);
        let known = held.keys.contains_key(kid);
        let fetch = may_retry
            && match since(held.fetched_at) {
                None => true,
                Some(age) if age >= self.policy.refresh_every => true,
                Some(age) => !known && age >= self.policy.unknown_key_gap,
            };
        if fetch {
            self.refetch(&mut held, now).await;
        }
        if let Some(key) = held.keys.get(kid) {
            return Ok(key.clone());
        }
        if held.fetched_at.is_none() {
            Err(JwksError::Unavailable)
        } else {
            Err(JwksError::UnknownKey)
        }
    }

    async fn refetch(&self, held: &mut Held, now: Instant) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.download().await {
            Ok(keys) => {
                tracing::info!(source = %self.owner, url = %self.url, keys = keys.len(), "signing keys fetched");
                held.keys = keys;
                held.fetched_at = Some(now);
                held.failed_at = None;
            }
            Err(problem) => {
                tracing::warn!(source = %self.owner, url = %self.url, error = %problem, held = held.keys.len(), "signing keys not fetched; the keys held (if any) stay in use");
                held.failed_at = Some(now);
            }
        }
    }

    /// One GET of the set, read up to the cap, its usable keys by id.
    async fn download(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        let body = super::body::read_capped(response, self.policy.max_bytes)
            .await
            .map_err(|e| e.to_string())?;
        parse_key_set(&body, self.policy.max_keys)
    }
}

/// The RS256-usable keys of a JWKS document: RSA keys for signing (`use` absent or `sig`,
/// `alg` absent or `RS256`) with an id. Others are skipped, not errors: a set may carry key
/// types this check never uses.
fn parse_key_set(
    body: &[u8],
    max_keys: usize,
) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        if keys.len() >= max_keys {
            break;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let usable = jwk.kty == "RSA"
            && jwk.usage.as_deref().is_none_or(|u| u == "sig")
            && jwk.alg.as_deref().is_none_or(|a| a == "RS256");
        let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
            continue;
        };
        if !usable || kid.is_empty() || kid.len() > MAX_KID_BYTES {
            continue;
        }
        if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
            keys.insert(kid, Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err("the set holds no RSA signing key".to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;
