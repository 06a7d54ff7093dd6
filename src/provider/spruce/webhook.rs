//! Spruce's webhooks (docs/webhooks.md, "What each provider sends", Spruce): the
//! `X-Spruce-Signature` check and the event envelope read into the mirror's vocabulary.
//!
//! The signature is `base64(HMAC-SHA256(secret, raw body))`; the key is the UTF-8 bytes of
//! the endpoint's signing secret exactly as Spruce returned it (an ASSUMPTION: the spec
//! gives a plain string and says nothing about decoding it). The envelope is
//! `{"object": "event", "id", "type", "eventTime", "data": {"object": <the resource>}}`;
//! `eventTime` is both the sending and the change time (Spruce: "order by eventTime").

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::conversation::map_conversation;
use super::items::ItemDirection;
use crate::provider::webhook::signature::hmac_sha256_matches;
use crate::provider::webhook::{
    WebhookChange, WebhookEvent, WebhookRejection, WebhookRequest, Webhooks,
};
use crate::provider::{ActivityPatch, Direction};
use crate::record::DetailRequest;
use crate::secret::Secret;
use crate::time::Timestamp;

/// The header Spruce signs with.
pub(super) const SIGNATURE_HEADER: &str = "x-spruce-signature";

/// The longest signature header read: a base64 SHA-256 tag is 44 characters.
const MAX_SIGNATURE_CHARS: usize = 128;

/// One Spruce endpoint's webhooks: its signing secret.
pub struct SpruceWebhooks {
    secret: Secret,
    /// `items`: the source tracks reply state (`track_reply_state`).
    follow_up_on_activity: Option<&'static str>,
}

impl std::fmt::Debug for SpruceWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpruceWebhooks").finish_non_exhaustive()
    }
}

impl SpruceWebhooks {
    /// Webhooks signed with `secret` (the endpoint's `webhookSigningSecret.value`).
    pub fn new(secret: Secret) -> Self {
        SpruceWebhooks {
            secret,
            follow_up_on_activity: None,
        }
    }

    /// The same, queueing the items follow-up when an event moves a conversation's
    /// activity (the source's `track_reply_state`), as the listing does.
    pub fn tracking_reply_state(mut self, track: bool) -> Self {
        self.follow_up_on_activity = track.then_some("items");
        self
    }
}

/// The envelope.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "eventTime")]
    event_time: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `data`: `{"object": <resource>}`.
#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow)]
    object: &'a RawValue,
}

/// The fields of a resource the events need.
#[derive(Deserialize)]
struct Resource {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "conversationId", default)]
    conversation_id: Option<String>,
    #[serde(default)]
    direction: Option<String>,
    #[serde(rename = "isInternalNote", default)]
    is_internal_note: Option<bool>,
    #[serde(rename = "createdAt", default)]
    created_at: Option<String>,
}

#[async_trait::async_trait]
impl Webhooks for SpruceWebhooks {
    /// Spruce retries every 2 minutes, at most 10 attempts, and each retry keeps the
    /// original `eventTime`: the last one comes about 20 minutes after it.
    fn retry_horizon(&self) -> std::time::Duration {
        std::time::Duration::from_secs(20 * 60)
    }

    fn follow_up_on_activity(&self) -> Option<&'static str> {
        self.follow_up_on_activity
    }

    async fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookRejection> {
        let missing = WebhookRejection::MissingSignature {
            header: SIGNATURE_HEADER,
        };
        let bad = WebhookRejection::BadSignature {
            header: SIGNATURE_HEADER,
        };
        let header = request.headers.get(SIGNATURE_HEADER).ok_or(missing)?;
        let text = header.to_str().map_err(|_| bad.clone())?.trim();
        if text.is_empty() || text.len() > MAX_SIGNATURE_CHARS {
            return Err(bad);
        }
        let tag = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| bad.clone())?;
        if hmac_sha256_matches(self.secret.expose().as_bytes(), &[request.body], &tag) {
            Ok(())
        } else {
            Err(bad)
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<WebhookEvent>, WebhookRejection> {
        let malformed = |what: String| WebhookRejection::Malformed(what);
        let envelope: Envelope<'_> = serde_json::from_slice(request.body)
            .map_err(|e| malformed(format!("Spruce event envelope: {e}")))?;
        let event_time = Timestamp::parse_rfc3339(&envelope.event_time)
            .map_err(|e| malformed(format!("Spruce eventTime: {e}")))?;
        // `data` is an object when delivered; the delivery log types it as a string of JSON.
        let data_text: String;
        let data_json = match serde_json::from_str::<String>(envelope.data.get()) {
            Ok(text) => {
                data_text = text;
                data_text.as_str()
            }
            Err(_) => envelope.data.get(),
        };
        let data: Data<'_> = serde_json::from_str(data_json)
            .map_err(|e| malformed(format!("Spruce event data: {e}")))?;
        let event_id = match envelope.id.filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => body_hash(request.body),
        };
        let change = change_of(&envelope.kind, data.object, event_time)?;
        Ok(vec![WebhookEvent {
            event_id,
            sent_at: Some(event_time),
            changed_at: Some(event_time),
            account: None,
            kind: envelope.kind,
            change,
        }])
    }
}

/// What an event of type `kind` about `resource` means for the mirror.
fn change_of(
    kind: &str,
    resource: &RawValue,
    event_time: Timestamp,
) -> Result<WebhookChange, WebhookRejection> {
    let malformed = |what: String| WebhookRejection::Malformed(what);
    let fields = || -> Result<Resource, WebhookRejection> {
        serde_json::from_str(resource.get())
            .map_err(|e| malformed(format!("Spruce {kind} resource: {e}")))
    };
    let items_of = |conversation_id: String| {
        WebhookChange::Refetch(DetailRequest {
            conversation_id,
            kind: "items".to_owned(),
            since: None,
            position: None,
        })
    };
    match kind {
        "conversation.created" | "conversation.updated" => {
            let (record, _notes) = map_conversation(resource)
                .map_err(|e| malformed(format!("Spruce {kind} conversation: {e}")))?;
            Ok(WebhookChange::Conversation(Box::new(record)))
        }
        "conversation.deleted" => {
            let id = fields()?
                .id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| malformed(format!("Spruce {kind} without a conversation id")))?;
            Ok(WebhookChange::Deleted {
                conversation_id: id,
            })
        }
        "conversationItem.created"
        | "conversationItem.updated"
        | "conversationItem.restored"
        | "conversationItem.deleted" => {
            let item = fields()?;
            let conversation_id = item
                .conversation_id
                .filter(|id| !id.is_empty())
                .ok_or_else(|| malformed(format!("Spruce {kind} without a conversationId")))?;
            if kind == "conversationItem.deleted" || item.is_internal_note == Some(true) {
                // A soft delete may change which message is the newest; a note says nothing
                // about who spoke, but reading the items costs one request: only a deletion
                // asks for it.
                return Ok(if kind == "conversationItem.deleted" {
                    items_of(conversation_id)
                } else {
                    WebhookChange::Unrelated
                });
            }
            let speaker = item
                .direction
                .as_deref()
                .map(ItemDirection::from_wire)
                .and_then(|d| d.speaker());
            let at = item
                .created_at
                .as_deref()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
                .unwrap_or(event_time);
            match speaker {
                Some(direction) => Ok(WebhookChange::Activity {
                    conversation_id,
                    patch: ActivityPatch {
                        last_activity_at: Some(at),
                        last_inbound_at: (direction == Direction::Inbound).then_some(at),
                        last_outbound_at: (direction == Direction::Outbound).then_some(at),
                        last_message_direction: Some(direction),
                        awaiting_reply: Some(direction == Direction::Inbound),
                    },
                }),
                None => Ok(items_of(conversation_id)),
            }
        }
        _ => Ok(WebhookChange::Unrelated),
    }
}

/// The event id of an envelope without one: a hash of the body (a retry sends the same
/// bytes).
fn body_hash(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use reqwest::header::{HeaderMap, HeaderValue};

    use super::*;
    use crate::provider::webhook::signature::hmac_sha256_tag;

    const SECRET: &str = "test-spruce-secret";

    /// hookwire's documented example (docs/webhooks.md, Spruce).
    const ITEM_EVENT: &str = r#"{"object":"event","id":"wev_01HWDG5ADNBGJ3XXXXXFP8P1GH","type":"conversationItem.created","eventTime":"2026-12-07T10:00:00Z","data":{"object":{"object":"conversationItem","id":"ci_01","conversationId":"entity_01","direction":"inbound","isInternalNote":false,"createdAt":"2026-12-07T10:00:00Z","modifiedAt":"2026-12-07T10:00:00Z"}}}"#;

    fn hooks() -> SpruceWebhooks {
        SpruceWebhooks::new(Secret::new(SECRET.to_owned()))
    }

    fn signed(body: &[u8], key: &str) -> HeaderMap {
        let tag = hmac_sha256_tag(key.as_bytes(), &[body]);
        let mut headers = HeaderMap::new();
        headers.insert(
            "X-Spruce-Signature",
            HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(tag)).unwrap(),
        );
        headers
    }

    fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            subpath: "",
            headers,
            body,
        }
    }

    /// The right key passes; another key, another body, or no header do not.
    #[test]
    fn only_the_endpoint_secret_signs() {
        let body = ITEM_EVENT.as_bytes();
        let good = signed(body, SECRET);
        assert_eq!(
            block_on(hooks().authenticate(&request(&good, body))),
            Ok(())
        );
        let forged = signed(body, "another-secret");
        assert_eq!(
            block_on(hooks().authenticate(&request(&forged, body)))
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let tampered = ITEM_EVENT.replace("inbound", "outbound");
        assert_eq!(
            block_on(hooks().authenticate(&request(&good, tampered.as_bytes())))
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
        let none = HeaderMap::new();
        assert_eq!(
            block_on(hooks().authenticate(&request(&none, body)))
                .unwrap_err()
                .reason(),
            "missing_signature"
        );
        let mut garbage = HeaderMap::new();
        garbage.insert(
            "x-spruce-signature",
            HeaderValue::from_static("not base64!"),
        );
        assert_eq!(
            block_on(hooks().authenticate(&request(&garbage, body)))
                .unwrap_err()
                .reason(),
            "bad_signature"
        );
    }

    /// An inbound item is new activity that awaits a reply, at the item's time.
    #[test]
    fn an_inbound_item_is_activity() {
        let headers = HeaderMap::new();
        let events = hooks()
            .parse(&request(&headers, ITEM_EVENT.as_bytes()))
            .unwrap();
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.event_id, "wev_01HWDG5ADNBGJ3XXXXXFP8P1GH");
        let at = Timestamp::parse_rfc3339("2026-12-07T10:00:00Z").unwrap();
        assert_eq!(event.sent_at, Some(at));
        assert_eq!(event.changed_at, Some(at));
        match &event.change {
            WebhookChange::Activity {
                conversation_id,
                patch,
            } => {
                assert_eq!(conversation_id, "entity_01");
                assert_eq!(patch.last_activity_at, Some(at));
                assert_eq!(patch.last_inbound_at, Some(at));
                assert_eq!(patch.last_outbound_at, None);
                assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
                assert_eq!(patch.awaiting_reply, Some(true));
            }
            other => panic!("expected activity, got {other:?}"),
        }
    }

    /// Conversations map like a listing row; deletions, item deletions, other resources
    /// and broken envelopes each get their meaning.
    #[test]
    fn each_event_type_has_its_meaning() {
        let headers = HeaderMap::new();
        let parse = |body: String| hooks().parse(&request(&headers, body.as_bytes()));
        let envelope = |kind: &str, object: &str| {
            format!(
                r#"{{"object":"event","id":"wev_1","type":"{kind}","eventTime":"2026-12-07T10:00:00Z","data":{{"object":{object}}}}}"#
            )
        };
        let conversation = r#"{"object":"conversation","id":"entity_c1","title":"Ann","createdAt":"2026-12-01T10:00:00Z","lastMessageAt":"2026-12-07T09:59:00Z","archived":false}"#;
        let events = parse(envelope("conversation.updated", conversation)).unwrap();
        match &events[0].change {
            WebhookChange::Conversation(record) => {
                assert_eq!(record.id, "entity_c1");
                assert_eq!(
                    record.last_activity_at,
                    Some(Timestamp::parse_rfc3339("2026-12-07T09:59:00Z").unwrap())
                );
            }
            other => panic!("{other:?}"),
        }
        let events = parse(envelope("conversation.deleted", conversation)).unwrap();
        assert!(
            matches!(&events[0].change, WebhookChange::Deleted { conversation_id } if conversation_id == "entity_c1")
        );
        let item = r#"{"object":"conversationItem","id":"ci_1","conversationId":"entity_c1","direction":"none"}"#;
        for kind in ["conversationItem.deleted", "conversationItem.created"] {
            let events = parse(envelope(kind, item)).unwrap();
            assert!(
                matches!(&events[0].change, WebhookChange::Refetch(d) if d.conversation_id == "entity_c1" && d.kind == "items"),
                "{kind}"
            );
        }
        let events = parse(envelope("contact.updated", r#"{"object":"contact"}"#)).unwrap();
        assert!(matches!(events[0].change, WebhookChange::Unrelated));
        // The delivery log's string `data` holding the same JSON reads the same.
        let as_string = format!(
            r#"{{"object":"event","id":"wev_2","type":"conversation.deleted","eventTime":"2026-12-07T10:00:00Z","data":{}}}"#,
            serde_json::to_string(&format!(r#"{{"object":{conversation}}}"#)).unwrap()
        );
        assert!(matches!(
            parse(as_string).unwrap()[0].change,
            WebhookChange::Deleted { .. }
        ));
        for broken in [
            "not json".to_owned(),
            r#"{"object":"event","type":"conversation.updated","data":{"object":{}}}"#.to_owned(),
            envelope("conversationItem.created", r#"{"id":"ci_1"}"#),
        ] {
            assert_eq!(parse(broken).unwrap_err().reason(), "malformed");
        }
        // No id: the body's hash, the same for a retry of the same bytes.
        let no_id = r#"{"object":"event","type":"contact.created","eventTime":"2026-12-07T10:00:00Z","data":{"object":{}}}"#;
        let first = parse(no_id.to_owned()).unwrap();
        assert!(first[0].event_id.starts_with("sha256:"));
        assert_eq!(
            first[0].event_id,
            parse(no_id.to_owned()).unwrap()[0].event_id
        );
    }
}
