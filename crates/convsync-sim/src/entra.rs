//! Microsoft Entra ID as far as D365's 2025-09 webhook needs it: the access tokens the
//! channel's registered app presents in `Authorization: Bearer`, and the tenant's published
//! signing keys (`GET /{tenant}/discovery/v2.0/keys` on the D365 listener).
//!
//! The tokens are RS256 JWTs signed with the daemon's committed TEST-ONLY key pairs
//! (`src/provider/d365/testdata/`): key 1 is published, key 2 only once the set is
//! "rotated" ([`TEST_JWKS_ROTATED`]), and a forged token is signed with key 2 under key
//! 1's id. Times are the wall clock's, not the simulated clock's: the daemon checks `exp`
//! and `nbf` against its own.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};

/// The key set that publishes key 1 only.
pub const TEST_JWKS: &str =
    include_str!("../../../src/provider/d365/testdata/entra-test-only-jwks-1.json");

/// The key set after a rotation: keys 1 and 2.
pub const TEST_JWKS_ROTATED: &str =
    include_str!("../../../src/provider/d365/testdata/entra-test-only-jwks-1-2.json");

/// Private halves (PKCS#8 PEM), TEST-ONLY: they sign nothing but simulated tokens.
const TEST_KEYS: [&str; 2] = [
    include_str!("../../../src/provider/d365/testdata/entra-test-only-key-1.pem"),
    include_str!("../../../src/provider/d365/testdata/entra-test-only-key-2.pem"),
];

/// The key ids of the two TEST-ONLY keys in the published sets.
pub const TEST_KEY_IDS: [&str; 2] = ["test-only-key-1", "test-only-key-2"];

/// The tenant's v2 issuer, as Entra writes it into `iss`.
pub fn issuer_v2(tenant_id: &str) -> String {
    format!("https://login.microsoftonline.com/{tenant_id}/v2.0")
}

/// One access token to mint: every field is what goes into the token, so that tests can
/// make each check fail on its own.
#[derive(Debug, Clone)]
pub struct EntraToken {
    /// `alg` of the header (`RS256`; anything else is written as given and signed as
    /// RS256, or left unsigned for `none`, or HMAC-signed for `HS256`).
    pub alg: String,
    /// `kid` of the header (`None`: left out).
    pub kid: Option<String>,
    /// Which test key signs (0 or 1).
    pub signing_key: usize,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// `tid`.
    pub tenant_id: String,
    /// `azp` (the calling app).
    pub client_id: String,
    /// `nbf` and `iat`, seconds relative to now.
    pub not_before: i64,
    /// `exp`, seconds relative to now.
    pub expires_in: i64,
}

impl EntraToken {
    /// A valid v2 token of `tenant_id` for `audience`, from the app `client_id`, signed
    /// with key 1, valid from a minute ago for an hour.
    pub fn valid(tenant_id: &str, audience: &str, client_id: &str) -> EntraToken {
        EntraToken {
            alg: "RS256".to_owned(),
            kid: Some(TEST_KEY_IDS[0].to_owned()),
            signing_key: 0,
            issuer: issuer_v2(tenant_id),
            audience: audience.to_owned(),
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.to_owned(),
            not_before: -60,
            expires_in: 3600,
        }
    }

    /// The same token signed with key 2 under key 1's id: a forgery.
    pub fn forged(mut self) -> EntraToken {
        self.signing_key = 1;
        self
    }

    /// The compact JWT (`header.claims.signature`).
    pub fn mint(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut header = serde_json::json!({ "typ": "JWT", "alg": self.alg });
        if let Some(kid) = &self.kid {
            header["kid"] = serde_json::json!(kid);
        }
        let claims = serde_json::json!({
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now.saturating_add(self.not_before),
            "nbf": now.saturating_add(self.not_before),
            "exp": now.saturating_add(self.expires_in),
            "azp": self.client_id,
            "azpacr": "1",
            "tid": self.tenant_id,
            "sub": "00000000-0000-0000-0000-000000000000",
            "ver": "2.0",
        });
        let signed = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = match self.alg.as_str() {
            "none" => Vec::new(),
            "HS256" => hs256(self.audience.as_bytes(), signed.as_bytes()),
            _ => rs256(self.signing_key, signed.as_bytes()),
        };
        format!("{signed}.{}", base64url(&signature))
    }
}

/// RSASSA-PKCS1-v1_5 SHA-256 with test key `index` (empty if the key does not load).
fn rs256(index: usize, message: &[u8]) -> Vec<u8> {
    let Some(pair) = TEST_KEYS
        .get(index)
        .and_then(|pem| super::webhooks::signing::pem_der(pem))
        .and_then(|der| RsaKeyPair::from_pkcs8(&der).ok())
    else {
        return Vec::new();
    };
    let mut signature = vec![0; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    if pair
        .sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature)
        .is_err()
    {
        return Vec::new();
    }
    signature
}

/// HMAC-SHA256: what an attacker who knows only public values might sign with.
fn hs256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Base64url without padding (RFC 7515).
fn base64url(bytes: &[u8]) -> String {
    super::ids::base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_three_parts_and_the_test_keys_load() {
        for key in 0..2 {
            let token = EntraToken {
                signing_key: key,
                ..EntraToken::valid("t", "a", "c")
            }
            .mint();
            let parts: Vec<&str> = token.split('.').collect();
            assert_eq!(parts.len(), 3);
            // A 2048-bit RSA signature is 256 bytes: 342 base64url characters.
            assert_eq!(parts[2].len(), 342, "key {key}");
        }
    }
}
