//! Reading what every provider's webhook carries: header values, a JSON object's fields
//! with the caps docs/webhooks.md states, times, and the body-hash event id for providers
//! that give none. Every failure is a [`WebhookRejection`] that names the field, never
//! its value (a value could be anything the sender chose, a secret included).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{WebhookChange, WebhookRejection, WebhookRequest};
use crate::record::{ActivityPatch, Direction};
use crate::time::Timestamp;

/// Longest id (conversation, message, event, account) a webhook may carry, in bytes. D365
/// documents "max 256" for its strings; the same cap serves every provider.
pub const MAX_ID_BYTES: usize = 256;
/// Longest event or trigger name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Largest unread count accepted (HighLevel's `unreadCount`): far above any real inbox,
/// low enough that no column overflows.
pub const MAX_UNREAD_COUNT: i64 = 1_000_000;

/// The value of header `name`: `Ok(None)` when absent; a value that is not visible ASCII
/// is refused as a bad signature (no provider sends one, and it cannot be compared).
pub fn header<'a>(
    request: &WebhookRequest<'a>,
    name: &'static str,
) -> Result<Option<&'a str>, WebhookRejection> {
    match request.headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| WebhookRejection::BadSignature { header: name }),
    }
}

/// The value of header `name`, which must be present and non-empty.
pub fn required_header<'a>(
    request: &WebhookRequest<'a>,
    name: &'static str,
) -> Result<&'a str, WebhookRejection> {
    header(request, name)?
        .filter(|v| !v.is_empty())
        .ok_or(WebhookRejection::MissingSignature { header: name })
}

/// `sha256:` and the lowercase hex SHA-256 of the raw body: the event id of an event the
/// provider names no id for. A provider's retry resends the same bytes, so it dedupes.
pub fn body_hash_id(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut id = String::with_capacity(7 + 64);
    id.push_str("sha256:");
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, WebhookRejection> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed("the body is not a JSON object")),
        Err(e) => Err(malformed(format!(
            "the body is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// `Malformed` with a reason written by convsync (never a quoted value).
pub fn malformed(reason: impl Into<String>) -> WebhookRejection {
    WebhookRejection::Malformed(reason.into())
}

/// The object under `name`: `Ok(None)` when absent or null.
pub fn child<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, WebhookRejection> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(malformed(format!("{name} is not an object"))),
    }
}

/// A string field of at most `max_bytes`: `Ok(None)` when absent, null or empty.
pub fn text(
    object: &Map<String, Value>,
    name: &str,
    max_bytes: usize,
) -> Result<Option<String>, WebhookRejection> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() <= max_bytes => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(malformed(format!(
            "{name} is longer than {max_bytes} bytes"
        ))),
        Some(_) => Err(malformed(format!("{name} is not a string"))),
    }
}

/// An id field (at most [`MAX_ID_BYTES`]): `Ok(None)` when absent, null or empty.
pub fn id(object: &Map<String, Value>, name: &str) -> Result<Option<String>, WebhookRejection> {
    text(object, name, MAX_ID_BYTES)
}

/// An id field that must be present.
pub fn required_id(object: &Map<String, Value>, name: &str) -> Result<String, WebhookRejection> {
    id(object, name)?.ok_or_else(|| malformed(format!("{name} is missing")))
}

/// A boolean field: `Ok(None)` when absent or null.
pub fn flag(object: &Map<String, Value>, name: &str) -> Result<Option<bool>, WebhookRejection> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(malformed(format!("{name} is not a boolean"))),
    }
}

/// An integer field within `0..=max`: `Ok(None)` when absent or null. Fractions, negative
/// numbers and numbers above `max` are malformed.
pub fn count(
    object: &Map<String, Value>,
    name: &str,
    max: i64,
) -> Result<Option<i64>, WebhookRejection> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (0..=max).contains(n))
            .map(Some)
            .ok_or_else(|| malformed(format!("{name} is not an integer from 0 to {max}"))),
        Some(_) => Err(malformed(format!("{name} is not a number"))),
    }
}

/// An RFC 3339 time field: `Ok(None)` when absent, null or empty.
pub fn time(
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<Timestamp>, WebhookRejection> {
    match text(object, name, MAX_NAME_BYTES)? {
        None => Ok(None),
        Some(value) => Timestamp::parse_rfc3339(&value)
            .map(Some)
            .map_err(|_| malformed(format!("{name} is not an RFC 3339 time"))),
    }
}

/// A time given either as RFC 3339 text or as integer epoch `unit`s (seconds or
/// milliseconds), checked: an overflowing or out-of-range number is malformed.
pub fn time_text_or_epoch(
    value: &str,
    what: &str,
    unit: EpochUnit,
) -> Result<Timestamp, WebhookRejection> {
    let bad = || malformed(format!("{what} is not a time"));
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = value.parse().map_err(|_| bad())?;
        let millis = match unit {
            EpochUnit::Seconds => n.checked_mul(1000).ok_or_else(bad)?,
            EpochUnit::Millis => n,
        };
        return Timestamp::from_epoch_millis(millis).map_err(|_| bad());
    }
    Timestamp::parse_rfc3339(value).map_err(|_| bad())
}

/// A message in `conversation_id` at `at`, sent in `direction`: the activity it means for
/// the mirror (an inbound message leaves the contact waiting for a reply, an outbound one
/// answers).
pub fn message_activity(
    conversation_id: String,
    direction: Direction,
    at: Timestamp,
) -> WebhookChange {
    let inbound = direction == Direction::Inbound;
    WebhookChange::Activity {
        conversation_id,
        patch: ActivityPatch {
            last_activity_at: Some(at),
            last_inbound_at: inbound.then_some(at),
            last_outbound_at: (!inbound).then_some(at),
            last_message_direction: Some(direction),
            awaiting_reply: Some(inbound),
        },
    }
}

/// Asserts that `change` is the activity [`message_activity`] makes of a message in
/// `conversation_id` at `at`, sent in `direction` (for the providers' tests).
#[cfg(test)]
pub(crate) fn assert_message_activity(
    change: &WebhookChange,
    conversation_id: &str,
    direction: Direction,
    at: Timestamp,
) {
    let inbound = direction == Direction::Inbound;
    match change {
        WebhookChange::Activity {
            conversation_id: id,
            patch,
        } => {
            assert_eq!(id, conversation_id);
            assert_eq!(
                patch,
                &ActivityPatch {
                    last_activity_at: Some(at),
                    last_inbound_at: inbound.then_some(at),
                    last_outbound_at: (!inbound).then_some(at),
                    last_message_direction: Some(direction),
                    awaiting_reply: Some(inbound),
                }
            );
        }
        other => panic!("expected activity, got {other:?}"),
    }
}

/// The unit of an epoch number in [`time_text_or_epoch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    /// Seconds since the Unix epoch.
    Seconds,
    /// Milliseconds since the Unix epoch.
    Millis,
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn map(json: &str) -> Map<String, Value> {
        object(json.as_bytes()).unwrap()
    }

    #[test]
    fn body_hash_is_sha256_hex_of_the_exact_bytes() {
        // SHA-256 of the empty string.
        assert_eq!(
            body_hash_id(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(body_hash_id(b"{}"), body_hash_id(b"{ }"));
    }

    #[test]
    fn fields_are_typed_and_capped() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let m = map(&format!(
            r#"{{"id":"a","empty":"","n":3,"neg":-1,"frac":1.5,"big":2000000,"s":"7","long":"{long}","t":"2025-01-28T14:35:00Z","bad_t":"yesterday","b":true,"o":{{}}}}"#
        ));
        assert_eq!(id(&m, "id").unwrap().as_deref(), Some("a"));
        assert_eq!(id(&m, "empty").unwrap(), None);
        assert_eq!(id(&m, "absent").unwrap(), None);
        assert!(matches!(
            required_id(&m, "absent"),
            Err(WebhookRejection::Malformed(_))
        ));
        assert!(matches!(
            id(&m, "long"),
            Err(WebhookRejection::Malformed(_))
        ));
        assert!(matches!(id(&m, "n"), Err(WebhookRejection::Malformed(_))));
        assert_eq!(count(&m, "n", MAX_UNREAD_COUNT).unwrap(), Some(3));
        for bad in ["neg", "frac", "big", "s"] {
            assert!(
                matches!(
                    count(&m, bad, MAX_UNREAD_COUNT),
                    Err(WebhookRejection::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            time(&m, "t").unwrap(),
            Some(Timestamp::parse_rfc3339("2025-01-28T14:35:00Z").unwrap())
        );
        assert!(matches!(
            time(&m, "bad_t"),
            Err(WebhookRejection::Malformed(_))
        ));
        assert_eq!(flag(&m, "b").unwrap(), Some(true));
        assert!(matches!(flag(&m, "n"), Err(WebhookRejection::Malformed(_))));
        assert!(child(&m, "o").unwrap().is_some());
        assert!(matches!(
            child(&m, "n"),
            Err(WebhookRejection::Malformed(_))
        ));
    }

    #[test]
    fn bodies_that_are_not_objects_are_malformed() {
        for body in [&b"[]"[..], b"nope", b"", b"\"text\""] {
            assert!(matches!(object(body), Err(WebhookRejection::Malformed(_))));
        }
    }

    #[test]
    fn epoch_times_are_checked() {
        let t = time_text_or_epoch("1765101600", "ts", EpochUnit::Seconds).unwrap();
        assert_eq!(t, Timestamp::parse_rfc3339("2025-12-07T10:00:00Z").unwrap());
        assert_eq!(
            time_text_or_epoch("2025-12-07T10:00:00Z", "ts", EpochUnit::Seconds).unwrap(),
            t
        );
        for bad in [
            "99999999999999999999",
            "9223372036854775807",
            "-5",
            "",
            "1e9",
        ] {
            assert!(
                time_text_or_epoch(bad, "ts", EpochUnit::Seconds).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_are_read_as_visible_ascii() {
        let mut headers = HeaderMap::new();
        headers.insert("x-present", HeaderValue::from_static(" v "));
        headers.insert("x-empty", HeaderValue::from_static(""));
        headers.insert("x-binary", HeaderValue::from_bytes(b"\xff").unwrap());
        let request = WebhookRequest {
            subpath: "",
            headers: &headers,
            body: b"{}",
        };
        assert_eq!(header(&request, "x-present").unwrap(), Some("v"));
        assert_eq!(header(&request, "x-absent").unwrap(), None);
        assert_eq!(
            required_header(&request, "x-empty"),
            Err(WebhookRejection::MissingSignature { header: "x-empty" })
        );
        assert_eq!(
            header(&request, "x-binary"),
            Err(WebhookRejection::BadSignature { header: "x-binary" })
        );
    }
}
