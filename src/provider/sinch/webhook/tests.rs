//! Sinch callbacks: the documented examples (developers.sinch.com/docs/conversation/callbacks
//! and `sinch/skills` trigger references), signed as Sinch signs them, are read into the
//! mirror's changes; anything forged, altered or incomplete is refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::executor::block_on;
use reqwest::header::{HeaderMap, HeaderValue};

use super::*;
use crate::provider::webhook::fields::assert_message_activity;
use crate::provider::webhook::signature::hmac_sha256_tag;

const SECRET: &str = "test-sinch-secret";
const NONCE: &str = "01FJA8B4A7BM43YGWSG9GBV067";
const TIMESTAMP: &str = "1765101600";

/// The documented inbound message example (callbacks page), times moved to 2025-12-07.
const INBOUND: &str = r#"{"app_id":"01EB37HMH1M6SV18ABNS3G135H","accepted_time":"2025-12-07T10:00:00.993024Z","event_time":"2025-12-07T10:00:00.814Z","project_id":"c36f3d3d-1523-4edd-ae42-11995557ff61","message":{"id":"01EQ8235TD19N21XQTH12B145D","direction":"TO_APP","contact_message":{"text_message":{"text":"Hi!"}},"channel_identity":{"channel":"MESSENGER","identity":"2742085512340733","app_id":"01EB37HMH1M6SV18ABNS3G135H"},"conversation_id":"01EQ8172WMDB8008EFT4M30481","contact_id":"01EQ4174TGGY5B1VPTPGHW19R0","metadata":"","accept_time":"2025-12-07T10:00:00.915829Z"}}"#;

/// The documented conversation start example: no `accepted_time`, no `last_received`.
const START: &str = r#"{"app_id":"01EB37HMH1M6SV18ASNS3G135H","project_id":"c36f3d3d-1523-4edd-ae42-11995557ff61","conversation_start_notification":{"conversation":{"id":"01EQ4174WMDB8008EFT4M30481","app_id":"01EB37HMH1M6SF18ASNS3G135H","contact_id":"01BQ8174TGGY5B1VPTPGHW19R0","active_channel":"MESSENGER","active":true,"metadata":""}}}"#;

/// The documented conversation stop example.
const STOP: &str = r#"{"app_id":"01EB37HMH1M6SV17ASNS3G135H","project_id":"c36f3d3d-1523-4edd-ae42-11995557ff61","conversation_stop_notification":{"conversation":{"id":"01EPYATZ64TMNZ1FV02JKD12JF","app_id":"01EB37HMH1M6SV17ASNS3G135H","contact_id":"01EKA07N79THJ20WAN6AS30TMW","last_received":"2020-11-17T15:09:12Z","active_channel":"MESSENGER","active":false,"metadata":""}}}"#;

/// The `sinch/skills` CONVERSATION_DELETE example.
const DELETE: &str = r#"{"app_id":"01H1234567","accepted_time":"2024-06-15T18:00:00.789Z","project_id":"PROJECT123","conversation_delete_notification":{"conversation_id":"01H5555555"}}"#;

/// The `sinch/skills` MESSAGE_SUBMIT example.
const SUBMIT: &str = r#"{"app_id":"01H1234567","accepted_time":"2024-06-15T14:24:30.456Z","event_time":"2024-06-15T14:24:30.123Z","project_id":"PROJECT123","message_submit_notification":{"submitted_message":{"message_id":"01H9876543","conversation_id":"01H5555555","channel":"WHATSAPP","channel_identity":{"channel":"WHATSAPP","identity":"46732001122","app_id":"01H1234567"},"contact_id":"01H3333333","metadata":"order_confirmation_12345"}}}"#;

/// The documented contact create example: authentic, about nothing the mirror keeps.
const CONTACT_CREATE: &str = r#"{"app_id":"01EB37KMH1M6SV18ASNS3G135H","accepted_time":"2020-11-17T15:36:28.155494Z","project_id":"c36f3a3d-1513-4edd-ae42-11995557ff61","contact_create_notification":{"contact":{"id":"01EQBDK8771J6A1FV8MQPE1XAR","display_name":"Unknown"}}}"#;

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn webhooks() -> SinchWebhooks {
    SinchWebhooks::new(Secret::new(SECRET.into()))
}

/// The signature Sinch sends: base64 (padded) of HMAC-SHA256(secret, body.nonce.timestamp).
fn sign(secret: &str, body: &[u8], nonce: &str, timestamp: &str) -> String {
    STANDARD.encode(hmac_sha256_tag(
        secret.as_bytes(),
        &[body, b".", nonce.as_bytes(), b".", timestamp.as_bytes()],
    ))
}

fn headers(signature: &str, nonce: &str, timestamp: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
    h.insert(NONCE_HEADER, HeaderValue::from_str(nonce).unwrap());
    h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(timestamp).unwrap());
    h.insert(ALGORITHM_HEADER, HeaderValue::from_static("HmacSHA256"));
    h
}

fn signed(body: &str) -> HeaderMap {
    headers(
        &sign(SECRET, body.as_bytes(), NONCE, TIMESTAMP),
        NONCE,
        TIMESTAMP,
    )
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
    let h = signed(body);
    let r = request(&h, body.as_bytes());
    block_on(webhooks().authenticate(&r)).unwrap();
    let mut events = webhooks().parse(&r).unwrap();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn malformed_reason(body: &str) -> String {
    let h = signed(body);
    let r = request(&h, body.as_bytes());
    block_on(webhooks().authenticate(&r)).unwrap();
    match webhooks().parse(&r) {
        Err(WebhookRejection::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn the_documented_inbound_message_becomes_inbound_activity() {
    let event = accept(INBOUND);
    assert_eq!(event.kind, "MESSAGE_INBOUND");
    assert_eq!(event.event_id, "MESSAGE_INBOUND/01EQ8235TD19N21XQTH12B145D");
    assert_eq!(event.account.as_deref(), Some("01EB37HMH1M6SV18ABNS3G135H"));
    assert_eq!(event.sent_at, Some(ts("2025-12-07T10:00:00Z")));
    let at = ts("2025-12-07T10:00:00.915829Z");
    assert_eq!(event.changed_at, Some(at));
    assert_message_activity(
        &event.change,
        "01EQ8172WMDB8008EFT4M30481",
        Direction::Inbound,
        at,
    );
}

#[test]
fn a_submitted_message_is_outbound_activity_at_its_event_time() {
    let event = accept(SUBMIT);
    assert_eq!(event.kind, "MESSAGE_SUBMIT");
    assert_eq!(event.event_id, "MESSAGE_SUBMIT/01H9876543");
    let at = ts("2024-06-15T14:24:30.123Z");
    assert_eq!(event.changed_at, Some(at));
    assert_message_activity(&event.change, "01H5555555", Direction::Outbound, at);
}

#[test]
fn start_and_stop_carry_the_conversation_as_the_listings_do() {
    let start = accept(START);
    assert_eq!(start.kind, "CONVERSATION_START");
    // No id in the payload: the body hash, stable across a re-signed retry.
    assert_eq!(start.event_id, body_hash_id(START.as_bytes()));
    assert_eq!(start.changed_at, None);
    let WebhookChange::Conversation(record) = start.change else {
        panic!("expected the conversation");
    };
    assert_eq!(record.id, "01EQ4174WMDB8008EFT4M30481");
    assert_eq!(record.active, Some(true));
    assert_eq!(record.channel.as_deref(), Some("MESSENGER"));
    // The object exactly as sent, byte for byte.
    let object_start = START.find(r#"{"id":"01EQ4174"#).unwrap();
    assert_eq!(record.raw.get(), &START[object_start..START.len() - 2]);

    let stop = accept(STOP);
    assert_eq!(stop.kind, "CONVERSATION_STOP");
    assert_eq!(stop.changed_at, Some(ts("2020-11-17T15:09:12Z")));
    let WebhookChange::Conversation(record) = stop.change else {
        panic!("expected the conversation");
    };
    assert_eq!(record.id, "01EPYATZ64TMNZ1FV02JKD12JF");
    assert_eq!(record.active, Some(false));
    assert_eq!(record.last_activity_at, Some(ts("2020-11-17T15:09:12Z")));
}

#[test]
fn delete_is_a_tombstone_and_other_triggers_are_unrelated() {
    let delete = accept(DELETE);
    assert_eq!(delete.kind, "CONVERSATION_DELETE");
    assert_eq!(delete.changed_at, Some(ts("2024-06-15T18:00:00.789Z")));
    assert!(
        matches!(&delete.change, WebhookChange::Deleted { conversation_id } if conversation_id == "01H5555555")
    );
    let contact = accept(CONTACT_CREATE);
    assert!(matches!(contact.change, WebhookChange::Unrelated));
    assert_eq!(
        contact.account.as_deref(),
        Some("01EB37KMH1M6SV18ASNS3G135H")
    );
    // A message outside any conversation (DISPATCH mode) is unrelated too.
    let dispatch = INBOUND.replace(r#""conversation_id":"01EQ8172WMDB8008EFT4M30481","#, "");
    assert!(matches!(accept(&dispatch).change, WebhookChange::Unrelated));
    // A named trigger the mirror does not read.
    let delivery = r#"{"app_id":"A","trigger":"MESSAGE_DELIVERY","message_delivery_report":{"message_id":"M","status":"DELIVERED"}}"#;
    let event = accept(delivery);
    assert_eq!(event.kind, "MESSAGE_DELIVERY");
    assert!(matches!(event.change, WebhookChange::Unrelated));
}

#[test]
fn forged_altered_and_incomplete_requests_are_refused() {
    let body = INBOUND.as_bytes();
    let check = |h: &HeaderMap, body: &[u8], expected: WebhookRejection| {
        assert_eq!(
            block_on(webhooks().authenticate(&request(h, body))),
            Err(expected)
        );
    };
    let bad = WebhookRejection::BadSignature {
        header: SIGNATURE_HEADER,
    };
    // One flipped byte of the body.
    let mut flipped = body.to_vec();
    flipped[40] ^= 0x01;
    check(&signed(INBOUND), &flipped, bad.clone());
    // Signed with another secret.
    let h = headers(
        &sign("other-secret", body, NONCE, TIMESTAMP),
        NONCE,
        TIMESTAMP,
    );
    check(&h, body, bad.clone());
    // The signature of this body, sent with another timestamp or nonce (a replay with a
    // fresh timestamp cannot be re-signed without the secret).
    let signature = sign(SECRET, body, NONCE, TIMESTAMP);
    check(&headers(&signature, NONCE, "1765101601"), body, bad.clone());
    check(
        &headers(&signature, "another-nonce", TIMESTAMP),
        body,
        bad.clone(),
    );
    // Not base64.
    check(&headers("not base64!", NONCE, TIMESTAMP), body, bad.clone());
    // Another algorithm.
    let mut h = signed(INBOUND);
    h.insert(ALGORITHM_HEADER, HeaderValue::from_static("HmacSHA1"));
    check(
        &h,
        body,
        WebhookRejection::BadSignature {
            header: ALGORITHM_HEADER,
        },
    );
    // Each of the three signed headers missing.
    for header in [SIGNATURE_HEADER, NONCE_HEADER, TIMESTAMP_HEADER] {
        let mut h = signed(INBOUND);
        h.remove(header);
        check(&h, body, WebhookRejection::MissingSignature { header });
    }
    // No algorithm header is fine: Sinch documents only one.
    let mut h = signed(INBOUND);
    h.remove(ALGORITHM_HEADER);
    assert_eq!(
        block_on(webhooks().authenticate(&request(&h, body))),
        Ok(())
    );
}

#[test]
fn a_refusal_never_quotes_the_secret_or_the_body() {
    let mut flipped = INBOUND.as_bytes().to_vec();
    flipped[40] ^= 0x01;
    let h = signed(INBOUND);
    let err = block_on(webhooks().authenticate(&request(&h, &flipped))).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains(SECRET) && !text.contains("Hi!"), "{text}");
    assert!(!format!("{:?}", webhooks()).contains(SECRET));
    let reason =
        malformed_reason(r#"{"app_id":"A","message":{"direction":"SIDEWAYS-secret-ish"}}"#);
    assert!(!reason.contains("SIDEWAYS"), "{reason}");
}

#[test]
fn authentic_but_undocumented_bodies_are_malformed() {
    for (body, words) in [
        ("[1]", "not a JSON object"),
        (r#"{"message":{}}"#, "app_id is missing"),
        (
            r#"{"app_id":"A","trigger":"MESSAGE_INBOUND","event":{}}"#,
            "lacks its notification",
        ),
        (
            r#"{"app_id":"A","message":{"id":"M"},"conversation_delete_notification":{"conversation_id":"C"}}"#,
            "more than one notification",
        ),
        (
            r#"{"app_id":"A","message":{"id":"M","direction":"SIDEWAYS","conversation_id":"C","accept_time":"2025-01-01T00:00:00Z"}}"#,
            "direction",
        ),
        (
            r#"{"app_id":"A","message":{"id":"M","conversation_id":"C"}}"#,
            "no time",
        ),
        (
            r#"{"app_id":"A","event_time":"soon","message":{}}"#,
            "event_time",
        ),
        (
            r#"{"app_id":"A","conversation_delete_notification":{}}"#,
            "conversation_id is missing",
        ),
        (
            r#"{"app_id":"A","conversation_stop_notification":{}}"#,
            "conversation is missing",
        ),
        (r#"{"app_id":"A","message":"text"}"#, "not an object"),
    ] {
        let reason = malformed_reason(body);
        assert!(reason.contains(words), "{body}: {reason}");
    }
    let long_id = format!(
        r#"{{"app_id":"A","conversation_delete_notification":{{"conversation_id":"{}"}}}}"#,
        "x".repeat(257)
    );
    assert!(malformed_reason(&long_id).contains("longer than 256"));
}

#[test]
fn the_signed_timestamp_is_the_send_time_in_either_format() {
    for (stamp, expected) in [
        ("1765101600", "2025-12-07T10:00:00Z"),
        ("2025-12-07T10:00:00Z", "2025-12-07T10:00:00Z"),
    ] {
        let h = headers(&sign(SECRET, DELETE.as_bytes(), NONCE, stamp), NONCE, stamp);
        let r = request(&h, DELETE.as_bytes());
        block_on(webhooks().authenticate(&r)).unwrap();
        let events = webhooks().parse(&r).unwrap();
        assert_eq!(events[0].sent_at, Some(ts(expected)));
    }
    let stamp = "next tuesday";
    let h = headers(&sign(SECRET, DELETE.as_bytes(), NONCE, stamp), NONCE, stamp);
    let r = request(&h, DELETE.as_bytes());
    block_on(webhooks().authenticate(&r)).unwrap();
    assert!(matches!(
        webhooks().parse(&r),
        Err(WebhookRejection::Malformed(_))
    ));
}
