//! Sinch Conversation API callbacks: the HMAC check and what each trigger means for the
//! mirror (docs/webhooks.md, "Sinch").
//!
//! A webhook with a secret signs `raw body . nonce . timestamp` with HMAC-SHA256 and sends
//! the base64 tag in `x-sinch-webhook-signature`, the parts in `-nonce` and `-timestamp`.
//! The signed timestamp is the event's send time (the replay window); the payload's own
//! times order it. Only the triggers that move a conversation are read: inbound and
//! submitted messages (activity), start and stop (the whole conversation object, read like a
//! listing row) and delete; everything else is acknowledged as unrelated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::wire;
use crate::provider::webhook::fields::{
    self, EpochUnit, MAX_NAME_BYTES, body_hash_id, malformed, message_activity,
};
use crate::provider::webhook::signature::hmac_sha256_matches;
use crate::provider::webhook::{
    WebhookChange, WebhookEvent, WebhookRejection, WebhookRequest, Webhooks,
};
use crate::record::Direction;
use crate::secret::Secret;
use crate::time::Timestamp;

/// The base64 HMAC-SHA256 tag.
pub const SIGNATURE_HEADER: &str = "x-sinch-webhook-signature";
/// The nonce signed after the body.
pub const NONCE_HEADER: &str = "x-sinch-webhook-signature-nonce";
/// The time the signature was computed, signed after the nonce.
pub const TIMESTAMP_HEADER: &str = "x-sinch-webhook-signature-timestamp";
/// The algorithm; Sinch documents only `HmacSHA256`.
pub const ALGORITHM_HEADER: &str = "x-sinch-webhook-signature-algorithm";
/// The only algorithm Sinch documents.
const ALGORITHM: &str = "HmacSHA256";

/// The notification fields whose triggers the mirror reads, with their trigger names.
const READ: [(&str, &str); 5] = [
    ("message", "MESSAGE_INBOUND"),
    ("message_submit_notification", "MESSAGE_SUBMIT"),
    ("conversation_start_notification", "CONVERSATION_START"),
    ("conversation_stop_notification", "CONVERSATION_STOP"),
    ("conversation_delete_notification", "CONVERSATION_DELETE"),
];

/// The webhooks of a Sinch source: its webhook secret.
#[derive(Debug)]
pub struct SinchWebhooks {
    secret: Secret,
}

impl SinchWebhooks {
    /// Checks callbacks against `secret`, the webhook's secret as configured at Sinch.
    pub fn new(secret: Secret) -> Self {
        SinchWebhooks { secret }
    }
}

#[async_trait::async_trait]
impl Webhooks for SinchWebhooks {
    async fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<(), WebhookRejection> {
        let signature = fields::required_header(request, SIGNATURE_HEADER)?;
        let nonce = fields::required_header(request, NONCE_HEADER)?;
        let timestamp = fields::required_header(request, TIMESTAMP_HEADER)?;
        if let Some(algorithm) = fields::header(request, ALGORITHM_HEADER)?
            && !algorithm.eq_ignore_ascii_case(ALGORITHM)
        {
            return Err(WebhookRejection::BadSignature {
                header: ALGORITHM_HEADER,
            });
        }
        let tag = STANDARD
            .decode(signature)
            .map_err(|_| WebhookRejection::BadSignature {
                header: SIGNATURE_HEADER,
            })?;
        let signed: [&[u8]; 5] = [
            request.body,
            b".",
            nonce.as_bytes(),
            b".",
            timestamp.as_bytes(),
        ];
        if hmac_sha256_matches(self.secret.expose().as_bytes(), &signed, &tag) {
            Ok(())
        } else {
            Err(WebhookRejection::BadSignature {
                header: SIGNATURE_HEADER,
            })
        }
    }

    fn parse(&self, request: &WebhookRequest<'_>) -> Result<Vec<WebhookEvent>, WebhookRejection> {
        let sent_at = match fields::header(request, TIMESTAMP_HEADER)? {
            Some(value) => Some(fields::time_text_or_epoch(
                value,
                TIMESTAMP_HEADER,
                EpochUnit::Seconds,
            )?),
            None => None,
        };
        Ok(vec![callback(request.body, sent_at)?])
    }
}

/// Reads one callback body (signed at `sent_at`).
fn callback(body: &[u8], sent_at: Option<Timestamp>) -> Result<WebhookEvent, WebhookRejection> {
    let object = fields::object(body)?;
    let account = fields::required_id(&object, "app_id")?;
    let event_time = fields::time(&object, "event_time")?;
    let accepted_time = fields::time(&object, "accepted_time")?;
    let trigger = fields::text(&object, "trigger", MAX_NAME_BYTES)?;
    let present: Vec<(&str, &str)> = READ
        .iter()
        .copied()
        .filter(|(field, _)| !matches!(object.get(*field), None | Some(Value::Null)))
        .collect();
    let found = match present.as_slice() {
        [] => None,
        [one] => Some(*one),
        _ => return Err(malformed("the callback carries more than one notification")),
    };
    if let Some(trigger) = &trigger {
        let expected = READ.iter().find(|(_, name)| name == trigger);
        if expected.is_some() && expected.copied() != found {
            return Err(malformed(format!(
                "the callback names trigger {trigger} but lacks its notification"
            )));
        }
    }
    let mut event = WebhookEvent {
        event_id: body_hash_id(body),
        sent_at,
        changed_at: event_time.or(accepted_time),
        account: Some(account),
        kind: trigger.unwrap_or_else(|| "UNKNOWN".to_owned()),
        change: WebhookChange::Unrelated,
    };
    let Some((field, name)) = found else {
        return Ok(event);
    };
    event.kind = name.to_owned();
    let notification = fields::child(&object, field)?
        .ok_or_else(|| malformed(format!("{field} is not an object")))?;
    match name {
        "MESSAGE_INBOUND" => {
            let direction = match fields::text(notification, "direction", MAX_NAME_BYTES)?
                .as_deref()
            {
                None | Some("TO_APP") => Direction::Inbound,
                Some("TO_CONTACT") => Direction::Outbound,
                Some(_) => return Err(malformed("message.direction is not TO_APP or TO_CONTACT")),
            };
            let at = fields::time(notification, "accept_time")?.or(event.changed_at);
            message(&mut event, notification, "id", direction, at)?;
        }
        "MESSAGE_SUBMIT" => {
            let submitted = fields::child(notification, "submitted_message")?.ok_or_else(|| {
                malformed("message_submit_notification.submitted_message is missing")
            })?;
            let at = event.changed_at;
            message(&mut event, submitted, "message_id", Direction::Outbound, at)?;
        }
        "CONVERSATION_START" | "CONVERSATION_STOP" => {
            let conversation = fields::child(notification, "conversation")?
                .ok_or_else(|| malformed(format!("{field}.conversation is missing")))?;
            fields::required_id(conversation, "id")?;
            let raw = raw_conversation(body, field)?;
            let listed = wire::conversation(raw, Some(name == "CONVERSATION_START"))
                .map_err(|r| malformed(format!("{field}.conversation: {}", r.reason)))?;
            event.changed_at = event.changed_at.or(listed.activity);
            event.change = WebhookChange::Conversation(Box::new(listed.record));
        }
        _ => {
            // CONVERSATION_DELETE
            let conversation_id = fields::required_id(notification, "conversation_id")?;
            event.change = WebhookChange::Deleted { conversation_id };
        }
    }
    Ok(event)
}

/// The conversation object of a start or stop notification exactly as sent, so that the
/// record's `raw` equals what the listings return for the same state.
fn raw_conversation<'a>(body: &'a [u8], field: &str) -> Result<&'a RawValue, WebhookRejection> {
    #[derive(Deserialize)]
    struct Notifications<'a> {
        #[serde(borrow, default)]
        conversation_start_notification: Option<Lifecycle<'a>>,
        #[serde(borrow, default)]
        conversation_stop_notification: Option<Lifecycle<'a>>,
    }
    #[derive(Deserialize)]
    struct Lifecycle<'a> {
        #[serde(borrow, default)]
        conversation: Option<&'a RawValue>,
    }
    let read: Notifications<'a> =
        serde_json::from_slice(body).map_err(|_| malformed(format!("{field} cannot be read")))?;
    let lifecycle = if field == "conversation_start_notification" {
        read.conversation_start_notification
    } else {
        read.conversation_stop_notification
    };
    lifecycle
        .and_then(|l| l.conversation)
        .ok_or_else(|| malformed(format!("{field}.conversation is missing")))
}

/// Fills `event` from a message object: its id (under `id_field`) names the event, and in a
/// conversation it is activity at `at` (DISPATCH-mode apps send messages outside any
/// conversation: unrelated to the mirror).
fn message(
    event: &mut WebhookEvent,
    message: &Map<String, Value>,
    id_field: &str,
    direction: Direction,
    at: Option<Timestamp>,
) -> Result<(), WebhookRejection> {
    if let Some(id) = fields::id(message, id_field)? {
        event.event_id = format!("{}/{id}", event.kind);
    }
    let Some(conversation_id) = fields::id(message, "conversation_id")? else {
        return Ok(());
    };
    let at = at.ok_or_else(|| malformed("the message carries no time"))?;
    event.changed_at = Some(at);
    event.change = message_activity(conversation_id, direction, at);
    Ok(())
}

#[cfg(test)]
mod tests;
