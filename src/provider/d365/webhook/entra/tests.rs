//! Entra bearer tokens through the D365 webhook's `authenticate`: tokens minted by the
//! simulator with the TEST-ONLY keys in `testdata/`, the tenant's key set served on
//! loopback. A valid token passes; each broken rule is refused on its own, with the
//! number of key-set fetches it cost pinned.

use std::sync::Arc;

use convsync_sim::entra::{EntraToken, TEST_JWKS, TEST_JWKS_ROTATED, TEST_KEY_IDS};
use reqwest::header::{HeaderMap, HeaderValue};

use super::super::{AUTHORIZATION_HEADER, D365Webhooks, TOKEN_HEADER};
use super::*;
use crate::http::jwks::JwksPolicy;
use crate::http::jwks::test_server::KeySetServer;
use crate::provider::webhook::{WebhookRejection, WebhookRequest, Webhooks};

const TENANT: &str = "7d3c1a52-9b4e-4f0a-8c61-2e5d9f7b3a18";
const AUDIENCE: &str = "api://convsync-webhook";
const CALLER: &str = "3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b";
const PATH: &str = "/v3/conversations/c1/activities";
const BODY: &str = r#"{"type":"typing","conversation":{"id":"c1"}}"#;

struct Harness {
    server: KeySetServer,
    webhooks: D365Webhooks,
    keys: Arc<SigningKeys>,
}

async fn harness(allowed_client_ids: Vec<String>, policy: JwksPolicy) -> Harness {
    let server = KeySetServer::start(TEST_JWKS).await;
    let keys = Arc::new(server.keys(policy));
    let rules = EntraRules {
        tenant_id: TENANT.to_owned(),
        audiences: vec![AUDIENCE.to_owned(), CALLER.to_owned()],
        issuers: EntraRules::default_issuers(TENANT),
        allowed_client_ids,
    };
    let webhooks = D365Webhooks::entra(EntraTokenCheck::new(rules, keys.clone()));
    Harness {
        server,
        webhooks,
        keys,
    }
}

fn valid() -> EntraToken {
    EntraToken::valid(TENANT, AUDIENCE, CALLER)
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION_HEADER,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

impl Harness {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<(), WebhookRejection> {
        let request = WebhookRequest {
            subpath: PATH,
            headers,
            body: BODY.as_bytes(),
        };
        self.webhooks.authenticate(&request).await
    }

    async fn present(&self, token: &EntraToken) -> Result<(), WebhookRejection> {
        self.authenticate(&bearer(&token.mint())).await
    }
}

fn invalid(problem: &'static str) -> Result<(), WebhookRejection> {
    Err(WebhookRejection::InvalidToken {
        header: AUTHORIZATION_HEADER,
        problem,
    })
}

/// A token of the tenant's app for the configured audience, signed by a published key, is
/// accepted in either issuer form and for either configured audience; one fetch serves all.
#[tokio::test]
async fn a_valid_token_is_accepted() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    assert_eq!(h.present(&valid()).await, Ok(()));
    let v1 = EntraToken {
        issuer: format!("https://sts.windows.net/{TENANT}/"),
        ..valid()
    };
    assert_eq!(h.present(&v1).await, Ok(()));
    let by_client_id = EntraToken {
        audience: CALLER.to_owned(),
        ..valid()
    };
    assert_eq!(h.present(&by_client_id).await, Ok(()));
    // Within the leeway on both ends.
    let skewed = EntraToken {
        not_before: 30,
        expires_in: -30,
        ..valid()
    };
    assert_eq!(h.present(&skewed).await, Ok(()));
    assert_eq!(h.server.requests(), 1);
    assert_eq!(h.keys.fetches(), 1);
}

/// Each broken claim is refused on its own, naming the check and never the token.
#[tokio::test]
async fn each_broken_claim_is_refused() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    let cases = [
        (
            EntraToken {
                audience: "api://someone-else".to_owned(),
                ..valid()
            },
            "the token's aud is not one of the configured audiences",
        ),
        (
            EntraToken {
                issuer: "https://login.microsoftonline.com/common/v2.0".to_owned(),
                ..valid()
            },
            "the token's iss is not the tenant's issuer",
        ),
        (
            // Another tenant's token that names this tenant's issuer is still refused.
            EntraToken {
                tenant_id: "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".to_owned(),
                ..valid()
            },
            "the token's tid is not the tenant",
        ),
        (
            EntraToken {
                not_before: -7200,
                expires_in: -120,
                ..valid()
            },
            "the token has expired",
        ),
        (
            EntraToken {
                not_before: 600,
                ..valid()
            },
            "the token is not valid yet (nbf)",
        ),
        (valid().forged(), "the token's signature does not verify"),
    ];
    for (token, problem) in cases {
        let minted = token.mint();
        let refusal = h.authenticate(&bearer(&minted)).await;
        assert_eq!(refusal, invalid(problem), "{token:?}");
        let text = format!("{:?} {}", refusal, refusal.clone().unwrap_err());
        assert!(!text.contains(&minted), "{text}");
    }
    assert_eq!(h.server.requests(), 1);
}

/// `none`, HMAC and keyless tokens and non-JWTs are refused before any key is looked up:
/// they cost no fetch.
#[tokio::test]
async fn unsigned_hmac_and_malformed_tokens_cost_no_fetch() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    let none = EntraToken {
        alg: "none".to_owned(),
        ..valid()
    };
    let hs256 = EntraToken {
        alg: "HS256".to_owned(),
        ..valid()
    };
    let keyless = EntraToken {
        kid: None,
        ..valid()
    };
    assert_eq!(
        h.present(&none).await,
        invalid("the token is not a JWT with a known algorithm")
    );
    assert_eq!(
        h.present(&hs256).await,
        invalid("the token is not signed with RS256")
    );
    assert_eq!(
        h.present(&keyless).await,
        invalid("the token names no signing key (kid)")
    );
    for garbage in ["", "abc", "a.b.c", "e30.e30.", &"x".repeat(20_000)] {
        assert!(
            matches!(
                h.authenticate(&bearer(garbage)).await,
                Err(WebhookRejection::InvalidToken { .. })
            ),
            "{garbage:.20}"
        );
    }
    assert_eq!(h.server.requests(), 0);
}

/// A token naming an unpublished key refetches the set once and is refused; a key rotated
/// in since is found by that one refetch.
#[tokio::test]
async fn an_unknown_key_refetches_once_then_is_refused() {
    let h = harness(
        Vec::new(),
        JwksPolicy {
            unknown_key_gap: std::time::Duration::ZERO,
            ..JwksPolicy::default()
        },
    )
    .await;
    assert_eq!(h.present(&valid()).await, Ok(()));
    let rotated = EntraToken {
        kid: Some(TEST_KEY_IDS[1].to_owned()),
        signing_key: 1,
        ..valid()
    };
    assert_eq!(
        h.present(&rotated).await,
        invalid("the token's key id is not among the tenant's signing keys")
    );
    assert_eq!(h.server.requests(), 2);
    h.server.answer(200, TEST_JWKS_ROTATED);
    assert_eq!(h.present(&rotated).await, Ok(()));
    assert_eq!(h.present(&valid()).await, Ok(()));
    assert_eq!(h.server.requests(), 3);
}

/// With the default gap, a burst of tokens with random key ids costs no fetch at all.
#[tokio::test]
async fn random_key_ids_cannot_make_convsync_hammer_entra() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    assert_eq!(h.present(&valid()).await, Ok(()));
    for i in 0..25 {
        let forged = EntraToken {
            kid: Some(format!("random-{i}")),
            ..valid()
        };
        assert!(h.present(&forged).await.is_err());
    }
    assert_eq!(h.server.requests(), 1);
}

/// Keys that cannot be fetched make the request retryable (the receiver answers 503), not
/// refused for good.
#[tokio::test]
async fn unavailable_keys_ask_for_a_retry() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    h.server.answer(500, "");
    let refusal = h.present(&valid()).await.unwrap_err();
    assert_eq!(
        refusal,
        WebhookRejection::KeysUnavailable {
            header: AUTHORIZATION_HEADER
        }
    );
    assert!(refusal.is_retryable());
    assert_eq!(refusal.reason(), "keys_unavailable");
}

/// With an allow list, only the listed callers (`azp`) pass.
#[tokio::test]
async fn the_allow_list_admits_only_its_callers() {
    let h = harness(vec![CALLER.to_owned()], JwksPolicy::default()).await;
    assert_eq!(h.present(&valid()).await, Ok(()));
    let other = EntraToken {
        client_id: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".to_owned(),
        ..valid()
    };
    assert_eq!(
        h.present(&other).await,
        invalid("the token's caller (azp/appid) is not in allowed_client_ids")
    );
}

/// In Entra mode only `Authorization: Bearer` counts: an `x-ms-token`, another scheme or
/// no header is refused.
#[tokio::test]
async fn only_a_bearer_header_is_accepted() {
    let h = harness(Vec::new(), JwksPolicy::default()).await;
    let mut x_ms = HeaderMap::new();
    x_ms.insert(
        TOKEN_HEADER,
        HeaderValue::from_str(&valid().mint()).unwrap(),
    );
    let missing = Err(WebhookRejection::MissingSignature {
        header: AUTHORIZATION_HEADER,
    });
    assert_eq!(h.authenticate(&x_ms).await, missing);
    assert_eq!(h.authenticate(&HeaderMap::new()).await, missing);
    let mut basic = HeaderMap::new();
    basic.insert(
        AUTHORIZATION_HEADER,
        HeaderValue::from_str(&format!("Basic {}", valid().mint())).unwrap(),
    );
    assert_eq!(
        h.authenticate(&basic).await,
        Err(WebhookRejection::BadSignature {
            header: AUTHORIZATION_HEADER
        })
    );
}
