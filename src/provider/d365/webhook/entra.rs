//! The bearer token of D365's 2025-09 webhook: an access token that Microsoft Entra ID issued
//! to the channel's registered app, checked the way any OIDC resource server checks one
//! (docs/webhooks.md, "Dynamics 365").
//!
//! A token is accepted only when all of these hold: it is a JWT signed with RS256 (`none`,
//! HMAC and every other algorithm are refused before any key is looked up) by a key of the
//! tenant's published set, named by its `kid`; its `iss` is the tenant's v2 or v1 issuer
//! (or the configured one); its `aud` is one of the configured audiences; `exp` (required)
//! and `nbf` hold within [`LEEWAY`]; its `tid` is the tenant; and, when an allow list is
//! configured, its caller (`azp` in v2 tokens, `appid` in v1) is on it. The token itself is
//! never logged, stored or quoted in a refusal.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use crate::http::jwks::{JwksError, SigningKeys};

/// Clock skew tolerated on `exp` and `nbf` between Entra and this host.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// Longer than any Entra access token (they are 1–3 KB); a longer header is refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token must be to be accepted.
#[derive(Debug, Clone)]
pub struct EntraRules {
    /// The directory (tenant) id, a lower-case GUID: the `tid` claim.
    pub tenant_id: String,
    /// Accepted `aud` values (the app's client id for v2 tokens, its application id URI
    /// or client id for v1).
    pub audiences: Vec<String>,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// Accepted callers (`azp` or `appid`, lower-case); empty: any caller of the tenant.
    pub allowed_client_ids: Vec<String>,
}

impl EntraRules {
    /// The tenant's two issuer forms: Entra's v2 endpoint and the v1 `sts.windows.net` one
    /// (which one a token carries depends on the app's `accessTokenAcceptedVersion`).
    pub fn default_issuers(tenant_id: &str) -> Vec<String> {
        vec![
            format!("https://login.microsoftonline.com/{tenant_id}/v2.0"),
            format!("https://sts.windows.net/{tenant_id}/"),
        ]
    }
}

/// Why a bearer token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The token's signing keys cannot be had now: the request should come again later.
    KeysUnavailable,
    /// The token is not acceptable; the text says which check failed (never its content).
    Invalid(&'static str),
}

/// The claims checked beyond those `jsonwebtoken` checks.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    appid: Option<String>,
}

/// Checks Entra access tokens against the rules and the tenant's signing keys.
#[derive(Debug)]
pub struct EntraTokenCheck {
    rules: EntraRules,
    keys: Arc<SigningKeys>,
    validation: Validation,
}

impl EntraTokenCheck {
    /// Checks tokens by `rules`, with signatures by `keys`.
    pub fn new(rules: EntraRules, keys: Arc<SigningKeys>) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&rules.audiences);
        validation.set_issuer(&rules.issuers);
        EntraTokenCheck {
            rules,
            keys,
            validation,
        }
    }

    /// The signing keys (tests read their fetch count).
    pub fn keys(&self) -> &Arc<SigningKeys> {
        &self.keys
    }

    /// Accepts `token` only when every rule holds.
    pub async fn check(&self, token: &str) -> Result<(), TokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::Invalid(
                "the token is longer than any Entra token",
            ));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| TokenRefusal::Invalid("the token is not a JWT with a known algorithm"))?;
        // Before any key is looked up: a token that could not be RS256 costs no fetch.
        if header.alg != Algorithm::RS256 {
            return Err(TokenRefusal::Invalid("the token is not signed with RS256"));
        }
        let kid = header.kid.ok_or(TokenRefusal::Invalid(
            "the token names no signing key (kid)",
        ))?;
        let key = self.keys.key(&kid).await.map_err(|e| match e {
            JwksError::Unavailable => TokenRefusal::KeysUnavailable,
            JwksError::UnknownKey => {
                TokenRefusal::Invalid("the token's key id is not among the tenant's signing keys")
            }
        })?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| TokenRefusal::Invalid(problem(e.kind())))?
            .claims;
        if !claims
            .tid
            .is_some_and(|tid| tid.eq_ignore_ascii_case(&self.rules.tenant_id))
        {
            return Err(TokenRefusal::Invalid("the token's tid is not the tenant"));
        }
        if !self.rules.allowed_client_ids.is_empty() {
            let caller = claims.azp.or(claims.appid).unwrap_or_default();
            if !self
                .rules
                .allowed_client_ids
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(&caller))
            {
                return Err(TokenRefusal::Invalid(
                    "the token's caller (azp/appid) is not in allowed_client_ids",
                ));
            }
        }
        Ok(())
    }
}

/// Which check a `jsonwebtoken` error stands for, in words fit for a log line.
fn problem(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token's aud is not one of the configured audiences",
        ErrorKind::InvalidIssuer => "the token's iss is not the tenant's issuer",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks exp, aud or iss",
        ErrorKind::InvalidAlgorithm => "the token is not signed with RS256",
        _ => "the token is malformed",
    }
}

#[cfg(test)]
mod tests;
