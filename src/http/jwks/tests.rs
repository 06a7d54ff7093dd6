//! The key cache against a key-set endpoint on loopback: how many fetches each situation
//! costs (counted at the endpoint), and which keys come out.

use std::time::Duration;

use super::test_server::KeySetServer;
use super::*;

const SET_1: &str = include_str!("../../provider/d365/testdata/entra-test-only-jwks-1.json");
const SET_1_2: &str = include_str!("../../provider/d365/testdata/entra-test-only-jwks-1-2.json");
const KEY_1: &str = "test-only-key-1";
const KEY_2: &str = "test-only-key-2";

/// No unknown-key gap: every unknown id may refetch (to count that it does so once).
fn eager() -> JwksPolicy {
    JwksPolicy {
        unknown_key_gap: Duration::ZERO,
        ..JwksPolicy::default()
    }
}

/// A known key is fetched once and then served from the cache.
#[tokio::test]
async fn known_keys_are_fetched_once() {
    let server = KeySetServer::start(SET_1).await;
    let keys = server.keys(JwksPolicy::default());
    for _ in 0..5 {
        keys.key(KEY_1).await.unwrap();
    }
    assert_eq!(server.requests(), 1);
    assert_eq!(keys.fetches(), 1);
}

/// Tokens naming keys that do not exist cost no fetch within the unknown-key gap: a
/// forger cannot make convsync hammer the identity provider.
#[tokio::test]
async fn unknown_key_ids_do_not_refetch_within_the_gap() {
    let server = KeySetServer::start(SET_1).await;
    let keys = server.keys(JwksPolicy::default());
    keys.key(KEY_1).await.unwrap();
    for i in 0..20 {
        let kid = format!("forged-{i}");
        assert_eq!(keys.key(&kid).await.unwrap_err(), JwksError::UnknownKey);
    }
    assert_eq!(server.requests(), 1);
}

/// After the gap, an unknown id refetches the set exactly once: a rotated-in key is found,
/// a key that still does not exist is refused after that one fetch.
#[tokio::test]
async fn an_unknown_key_id_refetches_once() {
    let server = KeySetServer::start(SET_1).await;
    let keys = server.keys(eager());
    keys.key(KEY_1).await.unwrap();
    assert_eq!(
        keys.key(KEY_2).await.unwrap_err(),
        JwksError::UnknownKey,
        "not published yet"
    );
    assert_eq!(server.requests(), 2);
    server.answer(200, SET_1_2);
    keys.key(KEY_2).await.unwrap();
    assert_eq!(server.requests(), 3);
    keys.key(KEY_2).await.unwrap();
    keys.key(KEY_1).await.unwrap();
    assert_eq!(server.requests(), 3, "both held now");
    assert_eq!(
        keys.key("nowhere").await.unwrap_err(),
        JwksError::UnknownKey
    );
    assert_eq!(server.requests(), 4);
}

/// An endpoint that fails leaves no keys: the token cannot be checked (`Unavailable`, not
/// `UnknownKey`), and the next attempt waits for the failure gap.
#[tokio::test]
async fn a_failing_endpoint_makes_keys_unavailable_and_is_not_retried_at_once() {
    let server = KeySetServer::start(SET_1).await;
    server.answer(500, "down");
    let keys = server.keys(JwksPolicy::default());
    for _ in 0..5 {
        assert_eq!(keys.key(KEY_1).await.unwrap_err(), JwksError::Unavailable);
    }
    assert_eq!(server.requests(), 1);
    assert_eq!(keys.fetches(), 1);
}

/// When a due refresh fails, the keys held stay in use.
#[tokio::test]
async fn held_keys_outlive_a_failed_refresh() {
    let server = KeySetServer::start(SET_1).await;
    let keys = server.keys(JwksPolicy {
        refresh_every: Duration::ZERO,
        ..JwksPolicy::default()
    });
    keys.key(KEY_1).await.unwrap();
    server.answer(503, "");
    keys.key(KEY_1).await.unwrap();
    keys.key(KEY_1).await.unwrap();
    assert_eq!(
        server.requests(),
        2,
        "one refresh attempt, then the failure gap"
    );
}

/// A set larger than the cap, or one that is not a key set, yields no keys.
#[tokio::test]
async fn oversized_or_garbled_sets_are_refused() {
    for (document, max_bytes) in [
        (SET_1, 100),
        ("<html>sign in</html>", 1024),
        (r#"{"keys":[]}"#, 1024),
    ] {
        let server = KeySetServer::start(document).await;
        let keys = server.keys(JwksPolicy {
            max_bytes,
            ..JwksPolicy::default()
        });
        assert_eq!(keys.key(KEY_1).await.unwrap_err(), JwksError::Unavailable);
    }
}

/// Only RSA signing keys with an id are kept; encryption, EC and anonymous keys are
/// skipped, and a set is capped at `max_keys`.
#[test]
fn only_rsa_signing_keys_with_an_id_are_kept() {
    let set: serde_json::Value = serde_json::from_str(SET_1_2).unwrap();
    let rsa = set["keys"][0].clone();
    let with = |changes: serde_json::Value| {
        let mut key = rsa.clone();
        for (name, value) in changes.as_object().unwrap() {
            key[name] = value.clone();
        }
        key
    };
    let document = serde_json::json!({ "keys": [
        with(serde_json::json!({"kid": "enc", "use": "enc"})),
        with(serde_json::json!({"kid": "ec", "kty": "EC"})),
        with(serde_json::json!({"kid": "ps", "alg": "PS256"})),
        with(serde_json::json!({"kid": null})),
        with(serde_json::json!({"kid": "x".repeat(MAX_KID_BYTES + 1)})),
        "not an object",
        with(serde_json::json!({"kid": "good", "alg": "RS256"})),
        set["keys"][1].clone(),
    ]});
    let keys = parse_key_set(document.to_string().as_bytes(), 64).unwrap();
    let mut ids: Vec<&str> = keys.keys().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["good", KEY_2]);
    assert_eq!(parse_key_set(SET_1_2.as_bytes(), 1).unwrap().len(), 1);
}
