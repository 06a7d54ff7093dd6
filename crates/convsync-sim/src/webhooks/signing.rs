//! The providers' authentication of a webhook request, from the sending side:
//!
//! * Spruce: `X-Spruce-Signature` = base64 HMAC-SHA256 of the raw body, keyed by the
//!   UTF-8 bytes of the endpoint's signing secret.
//! * Sinch: `x-sinch-webhook-signature` = base64 HMAC-SHA256 of
//!   `body.nonce.timestamp` with the webhook secret, plus the `-nonce`, `-timestamp`
//!   (epoch seconds) and `-algorithm` (`HmacSHA256`) headers.
//! * HighLevel: `x-wh-signature` = base64 RSASSA-PKCS1-v1_5 SHA-256 of the raw body. The
//!   simulator signs with the daemon's committed TEST-ONLY key pair
//!   (`src/provider/highlevel/testdata/`); a daemon pointed at the simulator sets
//!   `webhook_public_key` to that public half ([`HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM`]).
//! * D365: no signature; `x-ms-token: <token>` (the 2025-04 docs) authenticates the
//!   request, or, for a tenant run with `--d365-header-names plain` (the 2025-09 docs),
//!   `Authorization: Bearer <JWT>`: an access token of the tenant ([`crate::entra`]), for
//!   the audience of the channel's app (its client id), fresh for each request.
//!
//! A forged request carries a signature made with the wrong key (D365: a wrong token, or a
//! JWT signed with an unpublished key under a published key's id).

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::super::accounts::SimAccounts;
use super::super::entra::EntraToken;
use super::super::ids::{base64, base64_decode, crockford};
use super::super::platform::Platform;

/// Public half of the simulator's HighLevel signing key (SPKI PEM), for the daemon's
/// `webhook_public_key`. TEST-ONLY: the private half is committed beside it, in the
/// daemon's test data, so that the daemon's tests and the simulator share one pair.
pub const HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM: &str =
    include_str!("../../../../src/provider/highlevel/testdata/webhook-test-only-public-key.pem");

/// Private half (PKCS#8 PEM). Generating an RSA key at start is slow in debug builds,
/// so the simulator uses this fixed one.
const HIGHLEVEL_WEBHOOK_PRIVATE_KEY_PEM: &str =
    include_str!("../../../../src/provider/highlevel/testdata/webhook-test-only-private-key.pem");

/// The DER bytes of the first PEM block in `pem` (text around the block is ignored).
pub(crate) fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let text: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64_decode(text.trim())
}

fn hmac_base64(key: &[u8], parts: &[&[u8]]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    base64(&mac.finalize().into_bytes())
}

/// Signs requests for every account.
pub(crate) struct Signer {
    spruce: Vec<String>,
    sinch: Vec<String>,
    d365: Vec<String>,
    /// Each D365 account's (tenant id, client id), for its Entra tokens.
    d365_apps: Vec<(String, String)>,
    /// D365 sends `Authorization: Bearer` with an Entra token instead of `x-ms-token`.
    d365_bearer: bool,
    highlevel: Option<RsaKeyPair>,
}

impl Signer {
    pub(crate) fn new(accounts: &SimAccounts, d365_bearer: bool) -> Signer {
        let highlevel = pem_der(HIGHLEVEL_WEBHOOK_PRIVATE_KEY_PEM)
            .and_then(|der| RsaKeyPair::from_pkcs8(&der).ok());
        if highlevel.is_none() {
            tracing::error!(
                source = "highlevel",
                "the committed webhook signing key does not load"
            );
        }
        Signer {
            spruce: accounts
                .spruce
                .iter()
                .map(|a| a.webhook_signing_secret.clone())
                .collect(),
            sinch: accounts
                .sinch
                .iter()
                .map(|a| a.webhook_secret.clone())
                .collect(),
            d365: accounts
                .d365
                .iter()
                .map(|a| a.webhook_token.clone())
                .collect(),
            d365_apps: accounts
                .d365
                .iter()
                .map(|a| (a.tenant_id.clone(), a.client_id.clone()))
                .collect(),
            d365_bearer,
            highlevel,
        }
    }

    /// The authentication headers of one request. `forged` signs with a wrong key.
    pub(crate) fn sign(
        &self,
        provider: Platform,
        account: usize,
        body: &[u8],
        sent_at_us: i64,
        nonce: u64,
        forged: bool,
    ) -> Vec<(&'static str, String)> {
        let key = |keys: &[String]| {
            let mut key = keys.get(account).cloned().unwrap_or_default();
            if forged {
                key.push_str("-forged");
            }
            key
        };
        match provider {
            Platform::Spruce => vec![(
                "x-spruce-signature",
                hmac_base64(key(&self.spruce).as_bytes(), &[body]),
            )],
            Platform::Sinch => {
                let nonce = crockford(u128::from(nonce), 26);
                let timestamp = sent_at_us.div_euclid(1_000_000).to_string();
                let signature = hmac_base64(
                    key(&self.sinch).as_bytes(),
                    &[body, b".", nonce.as_bytes(), b".", timestamp.as_bytes()],
                );
                vec![
                    ("x-sinch-webhook-signature", signature),
                    ("x-sinch-webhook-signature-nonce", nonce),
                    ("x-sinch-webhook-signature-timestamp", timestamp),
                    (
                        "x-sinch-webhook-signature-algorithm",
                        "HmacSHA256".to_owned(),
                    ),
                ]
            }
            Platform::D365 if self.d365_bearer => {
                let Some((tenant, client)) = self.d365_apps.get(account) else {
                    return Vec::new();
                };
                let token = EntraToken::valid(tenant, client, client);
                let token = if forged { token.forged() } else { token };
                vec![("authorization", format!("Bearer {}", token.mint()))]
            }
            Platform::D365 => vec![("x-ms-token", key(&self.d365))],
            Platform::HighLevel => {
                let Some(key) = &self.highlevel else {
                    return Vec::new();
                };
                // A forgery signs other bytes than it sends.
                let signed: Vec<u8> = if forged {
                    [body, b" "].concat()
                } else {
                    body.to_vec()
                };
                let mut signature = vec![0; key.public_modulus_len()];
                let rng = aws_lc_rs::rand::SystemRandom::new();
                if key
                    .sign(&RSA_PKCS1_SHA256, &rng, &signed, &mut signature)
                    .is_err()
                {
                    return Vec::new();
                }
                vec![("x-wh-signature", base64(&signature))]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_key_pair_loads() {
        let der = pem_der(HIGHLEVEL_WEBHOOK_PRIVATE_KEY_PEM).expect("a PEM block");
        assert!(RsaKeyPair::from_pkcs8(&der).is_ok());
        assert!(pem_der(HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM).is_some_and(|der| !der.is_empty()));
    }
}
