//! HighLevel webhooks: the documented event examples (`docs/webhook events/*.md`, with the
//! `timestamp` and `webhookId` every payload carries per `WebhookAuthentication.md`), signed
//! with the TEST-ONLY key pair in `testdata/`, are read into the mirror's changes; anything
//! forged or altered is refused, and HighLevel's published key is the default.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use futures::executor::block_on;
use reqwest::header::{HeaderMap, HeaderValue};
use rustls_pki_types::PrivatePkcs8KeyDer;

use super::*;
use crate::provider::webhook::fields::assert_message_activity;

/// TEST-ONLY key pair, committed on purpose: it signs nothing but test bodies.
const TEST_PRIVATE_KEY: &str = include_str!("../testdata/webhook-test-only-private-key.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../testdata/webhook-test-only-public-key.pem");

/// The documented InboundMessage example (SMS).
const INBOUND: &str = r#"{"type":"InboundMessage","locationId":"l1C08ntBrFjLS0elLIYU","attachments":[],"body":"This is a test message","contactId":"cI08i1Bls3iTB9bKgFJh","contentType":"text/plain","conversationId":"fcanlLgpbQgQhderivVs","dateAdded":"2021-04-21T11:31:45.750Z","direction":"inbound","messageType":"SMS","status":"delivered","conversationProviderId":"cI08i1Bls3iTB9bKgF01","timestamp":"2025-01-28T14:35:00Z","webhookId":"abc123xyz"}"#;

/// The documented OutboundMessage SMS example, `"direction": "inbound"` and all.
const OUTBOUND: &str = r#"{"type":"OutboundMessage","locationId":"l1C08ntBrFjLS0elLIYU","attachments":[],"body":"This is a test message","contactId":"cI08i1Bls3iTB9bKgFJh","contentType":"text/plain","conversationId":"fcanlLgpbQgQhderivVs","dateAdded":"2021-04-21T11:31:45.750Z","direction":"inbound","messageType":"SMS","source":"app","status":"delivered","conversationProviderId":"cI08i1Bls3iTB9bKgF01","timestamp":"2025-01-28T14:36:00Z","webhookId":"def456uvw"}"#;

/// The documented ConversationUnreadUpdate example.
const UNREAD: &str = r#"{"type":"ConversationUnreadUpdate","locationId":"ADVlSQnPsdq3hinusd6C3","id":"MzKIpg0rEIH2ZUGKf6BS","contactId":"zsYhPBOUsEHtrK508Wm9","deleted":false,"inbox":false,"starred":true,"unreadCount":0,"timestamp":"2025-01-28T14:37:00Z","webhookId":"ghi789rst"}"#;

/// The documented location-level AppInstall example (non-whitelabeled).
const INSTALL: &str = r#"{"type":"INSTALL","appId":"ve9EPM428h8vShlRW1KT","locationId":"otg8dTQqGLh3Q6iQI55w","companyId":"otg8dTQqGLh3Q6iQI55w","userId":"otg8dTQqGLh3Q6iQI55w","planId":"66a0419a0dffa47fb5f8b22f","trial":{"onTrial":true,"trialDuration":10,"trialStartDate":"2024-07-23T23:54:51.264Z"},"isWhitelabelCompany":false,"whitelabelDetails":{},"companyName":"Example Company"}"#;

/// The documented agency-level AppInstall example: no location.
const AGENCY_INSTALL: &str = r#"{"type":"INSTALL","appId":"ve9EPM428h8vShlRW1KT","companyId":"otg8dTQqGLh3Q6iQI55w","planId":"66a0419a0dffa47fb5f8b22f","trial":{"onTrial":true,"trialDuration":10,"trialStartDate":"2024-07-23T23:54:51.264Z"}}"#;

/// The documented location-level AppUninstall example.
const UNINSTALL: &str =
    r#"{"type":"UNINSTALL","appId":"ve9EPM428h8vShlRW1KT","locationId":"otg8dTQqGLh3Q6iQI55w"}"#;

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn webhooks() -> HighLevelWebhooks {
    HighLevelWebhooks::from_pem(TEST_PUBLIC_KEY.as_bytes()).unwrap()
}

/// What HighLevel sends in `x-wh-signature`: base64 RSA-SHA256 (PKCS#1 v1.5) of the body.
fn sign(body: &[u8]) -> String {
    let der = PrivatePkcs8KeyDer::from_pem_slice(TEST_PRIVATE_KEY.as_bytes()).unwrap();
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        body,
        &mut signature,
    )
    .unwrap();
    STANDARD.encode(signature)
}

fn signed(body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&sign(body)).unwrap(),
    );
    h
}

fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
    WebhookRequest {
        subpath: "",
        headers,
        body,
    }
}

/// Authenticates, then parses the one event a signed `body` carries.
fn accept(body: &str) -> WebhookEvent {
    let h = signed(body.as_bytes());
    let r = request(&h, body.as_bytes());
    block_on(webhooks().authenticate(&r)).unwrap();
    let mut events = webhooks().parse(&r).unwrap();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn malformed_reason(body: &str) -> String {
    match event(body.as_bytes()) {
        Err(WebhookRejection::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn the_published_key_is_embedded_and_parses() {
    assert!(PUBLISHED_PUBLIC_KEY_PEM.contains("MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo"));
    let published = HighLevelWebhooks::published().unwrap();
    // It does not accept what the test key signed: the key really takes part.
    let h = signed(INBOUND.as_bytes());
    assert_eq!(
        block_on(published.authenticate(&request(&h, INBOUND.as_bytes()))),
        Err(WebhookRejection::BadSignature {
            header: SIGNATURE_HEADER
        })
    );
}

#[test]
fn keys_that_cannot_verify_are_refused() {
    assert!(matches!(
        HighLevelWebhooks::from_pem(b"not a key"),
        Err(WebhookKeyError::NotPem)
    ));
    // A private key is not a public key.
    assert!(matches!(
        HighLevelWebhooks::from_pem(TEST_PRIVATE_KEY.as_bytes()),
        Err(WebhookKeyError::NotPem)
    ));
    let not_rsa = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    assert!(matches!(
        HighLevelWebhooks::from_pem(not_rsa.as_bytes()),
        Err(WebhookKeyError::NotRsa)
    ));
    assert!(matches!(
        HighLevelWebhooks::from_file(Path::new("/nonexistent/key.pem")),
        Err(WebhookKeyError::Read { .. })
    ));
}

#[test]
fn an_inbound_message_is_inbound_activity_at_date_added() {
    let event = accept(INBOUND);
    assert_eq!(event.kind, "InboundMessage");
    assert_eq!(event.event_id, "abc123xyz");
    assert_eq!(event.account.as_deref(), Some("l1C08ntBrFjLS0elLIYU"));
    assert_eq!(event.sent_at, Some(ts("2025-01-28T14:35:00Z")));
    let at = ts("2021-04-21T11:31:45.750Z");
    assert_eq!(event.changed_at, Some(at));
    assert_message_activity(
        &event.change,
        "fcanlLgpbQgQhderivVs",
        Direction::Inbound,
        at,
    );
}

#[test]
fn an_outbound_message_is_outbound_whatever_its_direction_field_says() {
    let event = accept(OUTBOUND);
    assert_eq!(event.event_id, "def456uvw");
    let at = ts("2021-04-21T11:31:45.750Z");
    assert_message_activity(
        &event.change,
        "fcanlLgpbQgQhderivVs",
        Direction::Outbound,
        at,
    );
}

#[test]
fn unread_updates_set_the_count_or_delete() {
    let event = accept(UNREAD);
    assert_eq!(event.changed_at, Some(ts("2025-01-28T14:37:00Z")));
    assert!(matches!(
        &event.change,
        WebhookChange::UnreadCount { conversation_id, unread_count: 0 } if conversation_id == "MzKIpg0rEIH2ZUGKf6BS"
    ));
    let seven = UNREAD.replace(r#""unreadCount":0"#, r#""unreadCount":7"#);
    assert!(matches!(
        accept(&seven).change,
        WebhookChange::UnreadCount {
            unread_count: 7,
            ..
        }
    ));
    let deleted = UNREAD.replace(r#""deleted":false"#, r#""deleted":true"#);
    assert!(matches!(
        &accept(&deleted).change,
        WebhookChange::Deleted { conversation_id } if conversation_id == "MzKIpg0rEIH2ZUGKf6BS"
    ));
}

#[test]
fn installs_add_and_remove_locations() {
    let install = accept(INSTALL);
    assert!(matches!(
        &install.change,
        WebhookChange::AccountInstalled { account, company }
            if account == "otg8dTQqGLh3Q6iQI55w" && company.as_deref() == Some("otg8dTQqGLh3Q6iQI55w")
    ));
    // No webhookId in the documented example: the body hash.
    assert_eq!(install.event_id, body_hash_id(INSTALL.as_bytes()));
    assert_eq!(install.sent_at, None);
    assert!(matches!(
        &accept(UNINSTALL).change,
        WebhookChange::AccountUninstalled { account, company: None }
            if account == "otg8dTQqGLh3Q6iQI55w"
    ));
    let agency = accept(AGENCY_INSTALL);
    assert!(matches!(agency.change, WebhookChange::Unrelated));
    assert_eq!(agency.account, None);
    let named = INSTALL.replace(r#""type":"INSTALL""#, r#""type":"AppInstall""#);
    assert!(matches!(
        accept(&named).change,
        WebhookChange::AccountInstalled { .. }
    ));
    // Other events are acknowledged, not written.
    let contact = r#"{"type":"ContactCreate","locationId":"L","id":"C","timestamp":1738074900000}"#;
    let event = accept(contact);
    assert!(matches!(event.change, WebhookChange::Unrelated));
    assert_eq!(event.sent_at, Some(ts("2025-01-28T14:35:00Z")));
}

#[test]
fn forged_and_altered_requests_are_refused() {
    let body = INBOUND.as_bytes();
    let bad = Err(WebhookRejection::BadSignature {
        header: SIGNATURE_HEADER,
    });
    let mut flipped = body.to_vec();
    flipped[30] ^= 0x01;
    let h = signed(body);
    assert_eq!(
        block_on(webhooks().authenticate(&request(&h, &flipped))),
        bad
    );
    // The signature of another body.
    let h = signed(OUTBOUND.as_bytes());
    assert_eq!(block_on(webhooks().authenticate(&request(&h, body))), bad);
    // A truncated signature, and one that is not base64.
    let mut truncated = HeaderMap::new();
    let full = sign(body);
    truncated.insert(
        SIGNATURE_HEADER,
        HeaderValue::from_str(&full[..full.len() - 4]).unwrap(),
    );
    assert_eq!(
        block_on(webhooks().authenticate(&request(&truncated, body))),
        bad
    );
    let mut garbage = HeaderMap::new();
    garbage.insert(SIGNATURE_HEADER, HeaderValue::from_static("%%%"));
    assert_eq!(
        block_on(webhooks().authenticate(&request(&garbage, body))),
        bad
    );
    assert_eq!(
        block_on(webhooks().authenticate(&request(&HeaderMap::new(), body))),
        Err(WebhookRejection::MissingSignature {
            header: SIGNATURE_HEADER
        })
    );
}

#[test]
fn authentic_but_undocumented_bodies_are_malformed() {
    for (body, words) in [
        ("[]", "not a JSON object"),
        (r#"{"locationId":"L"}"#, "type is missing"),
        (
            r#"{"type":"InboundMessage","dateAdded":"2021-04-21T11:31:45.750Z"}"#,
            "conversationId is missing",
        ),
        (
            r#"{"type":"InboundMessage","conversationId":"C"}"#,
            "dateAdded is missing",
        ),
        (
            r#"{"type":"InboundMessage","conversationId":"C","dateAdded":"April"}"#,
            "dateAdded",
        ),
        (
            r#"{"type":"ConversationUnreadUpdate","id":"C","unreadCount":-1}"#,
            "unreadCount",
        ),
        (
            r#"{"type":"ConversationUnreadUpdate","id":"C","unreadCount":1.5}"#,
            "unreadCount",
        ),
        (
            r#"{"type":"ConversationUnreadUpdate","id":"C","unreadCount":1000001}"#,
            "unreadCount",
        ),
        (
            r#"{"type":"ConversationUnreadUpdate","id":"C"}"#,
            "unreadCount is missing",
        ),
        (
            r#"{"type":"ConversationUnreadUpdate","id":"C","deleted":"yes","unreadCount":1}"#,
            "deleted",
        ),
        (
            r#"{"type":"ContactCreate","timestamp":"soon"}"#,
            "timestamp",
        ),
        (r#"{"type":"ContactCreate","timestamp":true}"#, "timestamp"),
        (
            r#"{"type":"ContactCreate","timestamp":99999999999999999999}"#,
            "timestamp",
        ),
    ] {
        let reason = malformed_reason(body);
        assert!(reason.contains(words), "{body}: {reason}");
    }
}
