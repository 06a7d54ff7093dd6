//! The D365 channel webhook: the documented sample activities (`api-conversation-webhook.md`,
//! 2025-04 and 2025-09) posted with the right token are read into the mirror's changes; a
//! missing or wrong token, a wrong path or an undocumented body is refused.

use futures::executor::block_on;
use reqwest::header::{HeaderMap, HeaderValue};

use super::*;
use crate::provider::webhook::fields::assert_message_activity;
use crate::time::Timestamp;

const TOKEN: &str = "test-d365-token";
const CONVERSATION: &str = "0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11";
const PATH: &str = "/v3/conversations/0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11/activities";

/// The documented "Agent message" sample.
const AGENT_MESSAGE: &str = r#"{"type":"message","channelId":"<custom channel Id GUID>","from":{"id":"{sender_id}","name":"{sender_name}"},"conversation":{"id":"0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11"},"textFormat":"markdown","text":"hello"}"#;

/// The documented "Conversation closed" sample.
const CONVERSATION_CLOSED: &str = r#"{"type":"message","channelId":"<custom channel Id GUID>","from":{"id":"{sender_id}"},"conversation":{"id":"0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11"},"text":"EventName: **_ConversationClosed_**","name":"ConversationClosed"}"#;

/// The documented "Agent accepted" sample.
const AGENT_ACCEPTED: &str = r#"{"type":"message","channelId":"<custom channel Id GUID>","conversation":{"id":"0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11"},"text":"EventName: **_AgentAccepted_**","name":"AgentAccepted"}"#;

/// The documented "Agent typing" sample.
const AGENT_TYPING: &str = r#"{"type":"typing","channelId":"MessagingApi","conversation":{"id":"0b5d2a4e-7c1f-4c43-9f55-0d2a5e1c9a11"},"recipient":{"id":"{recipient_id}"}}"#;

fn webhooks() -> D365Webhooks {
    D365Webhooks::new(Secret::new(TOKEN.into()))
}

fn token_header(name: &'static str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

fn request<'a>(subpath: &'a str, headers: &'a HeaderMap, body: &'a str) -> WebhookRequest<'a> {
    WebhookRequest {
        subpath,
        headers,
        body: body.as_bytes(),
    }
}

/// Authenticates with `x-ms-token`, then parses the one event `body` carries.
fn accept(body: &str) -> WebhookEvent {
    let h = token_header(TOKEN_HEADER, TOKEN);
    let r = request(PATH, &h, body);
    block_on(webhooks().authenticate(&r)).unwrap();
    let mut events = webhooks().parse(&r).unwrap();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn malformed_reason(subpath: &str, body: &str) -> String {
    let h = token_header(TOKEN_HEADER, TOKEN);
    match webhooks().parse(&request(subpath, &h, body)) {
        Err(WebhookRejection::Malformed(reason)) => reason,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn both_documented_token_headers_are_accepted() {
    for h in [
        token_header(TOKEN_HEADER, TOKEN),
        token_header(AUTHORIZATION_HEADER, &format!("Bearer {TOKEN}")),
        token_header(AUTHORIZATION_HEADER, &format!("bearer {TOKEN}")),
    ] {
        assert_eq!(
            block_on(webhooks().authenticate(&request(PATH, &h, AGENT_MESSAGE))),
            Ok(())
        );
    }
}

#[test]
fn missing_and_wrong_tokens_are_refused() {
    let check = |h: HeaderMap, expected: WebhookRejection| {
        assert_eq!(
            block_on(webhooks().authenticate(&request(PATH, &h, AGENT_MESSAGE))),
            Err(expected)
        );
    };
    check(
        HeaderMap::new(),
        WebhookRejection::MissingSignature {
            header: TOKEN_HEADER,
        },
    );
    let bad_token = WebhookRejection::BadSignature {
        header: TOKEN_HEADER,
    };
    check(
        token_header(TOKEN_HEADER, "test-d365-tokem"),
        bad_token.clone(),
    );
    check(
        token_header(TOKEN_HEADER, "test-d365-token-and-more"),
        bad_token.clone(),
    );
    check(
        token_header(TOKEN_HEADER, "test-d365-toke"),
        bad_token.clone(),
    );
    check(token_header(TOKEN_HEADER, ""), bad_token);
    let bad_bearer = WebhookRejection::BadSignature {
        header: AUTHORIZATION_HEADER,
    };
    check(
        token_header(AUTHORIZATION_HEADER, "Bearer another-token"),
        bad_bearer.clone(),
    );
    check(
        token_header(AUTHORIZATION_HEADER, &format!("Basic {TOKEN}")),
        bad_bearer.clone(),
    );
    check(token_header(AUTHORIZATION_HEADER, TOKEN), bad_bearer);
    // A wrong x-ms-token is not rescued by a right bearer token.
    let mut both = token_header(TOKEN_HEADER, "wrong");
    both.insert(
        AUTHORIZATION_HEADER,
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
    );
    check(
        both,
        WebhookRejection::BadSignature {
            header: TOKEN_HEADER,
        },
    );
    assert!(!format!("{:?}", webhooks()).contains(TOKEN));
}

#[test]
fn an_agent_message_is_outbound_activity_or_a_refetch() {
    // As documented: no `timestamp`, so the messages are read to learn when.
    let event = accept(AGENT_MESSAGE);
    assert_eq!(event.kind, "message");
    assert_eq!(event.event_id, body_hash_id(AGENT_MESSAGE.as_bytes()));
    assert_eq!(
        (event.sent_at, event.changed_at, event.account),
        (None, None, None)
    );
    let WebhookChange::Refetch(request) = event.change else {
        panic!("expected a refetch, got {:?}", event.change);
    };
    assert_eq!(request.conversation_id, CONVERSATION);
    assert_eq!(request.kind, "messages");
    assert!(D365FollowUp::parse(&request.kind).is_ok());

    // With Bot Framework's `id` and `timestamp`: activity at that time.
    let stamped = AGENT_MESSAGE.replace(
        r#""type":"message","#,
        r#""type":"message","id":"1733565600123","timestamp":"2025-12-07T10:00:00.1234567Z","#,
    );
    let event = accept(&stamped);
    let at = Timestamp::parse_rfc3339("2025-12-07T10:00:00.1234567Z").unwrap();
    assert_eq!(event.event_id, format!("{CONVERSATION}/1733565600123"));
    assert_eq!((event.sent_at, event.changed_at), (Some(at), Some(at)));
    assert_message_activity(&event.change, CONVERSATION, Direction::Outbound, at);
}

#[test]
fn closing_events_of_either_doc_generation_close_the_conversation() {
    let event = accept(CONVERSATION_CLOSED);
    assert_eq!(event.kind, "ConversationClosed");
    assert!(
        matches!(&event.change, WebhookChange::Closed { conversation_id } if conversation_id == CONVERSATION)
    );
    for name in CLOSING {
        for kind in ["message", "event"] {
            let body = CONVERSATION_CLOSED
                .replace(
                    r#""name":"ConversationClosed""#,
                    &format!(r#""name":"{name}""#),
                )
                .replace(r#""type":"message""#, &format!(r#""type":"{kind}""#));
            assert!(
                matches!(accept(&body).change, WebhookChange::Closed { .. }),
                "{name} as {kind}"
            );
        }
    }
}

#[test]
fn other_events_and_typing_are_unrelated() {
    let accepted = accept(AGENT_ACCEPTED);
    assert_eq!(accepted.kind, "AgentAccepted");
    assert!(matches!(accepted.change, WebhookChange::Unrelated));
    let typing = accept(AGENT_TYPING);
    assert_eq!(typing.kind, "typing");
    assert!(matches!(typing.change, WebhookChange::Unrelated));
    for name in [
        "AgentDisconnected",
        "TransferToQueueInitiated",
        "OutOfOperatingHoursDueToHoliday",
    ] {
        let body = AGENT_ACCEPTED.replace("AgentAccepted\"", &format!("{name}\""));
        assert!(
            matches!(accept(&body).change, WebhookChange::Unrelated),
            "{name}"
        );
    }
}

#[test]
fn wrong_paths_and_undocumented_bodies_are_malformed() {
    for path in [
        "",
        "/",
        "/v3/conversations//activities",
        "/v3/conversations/abc/activities/extra",
        "/v3/conversations/a%2Fb/activities",
        "/v2/conversations/abc/activities",
    ] {
        let reason = malformed_reason(path, AGENT_MESSAGE);
        assert!(reason.contains("the path is not"), "{path}: {reason}");
    }
    let long = format!("/v3/conversations/{}/activities", "a".repeat(257));
    assert!(malformed_reason(&long, AGENT_MESSAGE).contains("the path is not"));
    // Without the leading slash the same path reads.
    let h = token_header(TOKEN_HEADER, TOKEN);
    assert!(
        webhooks()
            .parse(&request(&PATH[1..], &h, AGENT_MESSAGE))
            .is_ok()
    );

    let other = AGENT_MESSAGE.replace(CONVERSATION, "another-conversation");
    assert!(malformed_reason(PATH, &other).contains("differs from the conversation in the path"));
    for (body, words) in [
        ("null", "not a JSON object"),
        (r#"{"text":"hello"}"#, "type is missing"),
        (r#"{"type":"message","timestamp":"now"}"#, "timestamp"),
        (r#"{"type":"message","name":7}"#, "name is not a string"),
        (
            r#"{"type":"message","conversation":"x"}"#,
            "conversation is not an object",
        ),
    ] {
        let reason = malformed_reason(PATH, body);
        assert!(reason.contains(words), "{body}: {reason}");
    }
}
