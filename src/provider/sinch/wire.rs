//! Reading Sinch's JSON: list pages, conversations, recent-conversation items and error
//! bodies.
//!
//! Sinch serves its API through a protobuf JSON gateway, which shapes what "absent" means:
//! fields holding their default value (`false`, empty strings, empty lists) may be left out
//! entirely, so a missing `active` reads as `false` unless the listing implies otherwise, and
//! a page without `conversations` is an empty page. Keys are documented in snake_case; the
//! lowerCamelCase spelling a protobuf gateway can also emit is accepted for every key read
//! here. Values are read leniently (a boolean or a number may arrive as a string) because a
//! single odd field must not cost the mirror a whole page.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::provider::{ConversationRecord, Direction, ProviderError, RejectedRecord};
use crate::time::Timestamp;

/// The envelope shared by `/conversations` and `/conversations:recent` pages.
#[derive(Debug)]
pub(super) struct Envelope<'a> {
    /// The items exactly as received.
    pub(super) items: Vec<&'a RawValue>,
    /// Where the next page starts; `None` on the last page (absent or empty token).
    pub(super) next_page_token: Option<String>,
    /// `total_size` when it is a positive integer (a number, or a string as protobuf
    /// gateways may write integers). Progress display only: see [`read_envelope`].
    pub(super) total_size: Option<u64>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow, default)]
    conversations: Option<Vec<&'a RawValue>>,
    #[serde(default, alias = "nextPageToken")]
    next_page_token: Option<Value>,
    #[serde(default, alias = "totalSize")]
    total_size: Option<Value>,
}

/// Reads a page envelope. `total_size` bounds nothing (Sinch's own fixtures show it as `0`
/// on later pages): it is kept, when positive, only for the progress display.
pub(super) fn read_envelope(body: &[u8]) -> Result<Envelope<'_>, ProviderError> {
    // serde would also accept a JSON array for a struct; a page is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProviderError::Malformed(format!(
            "conversation page is not a JSON object: {}",
            shorten(String::from_utf8_lossy(body).trim(), 200)
        )));
    }
    let raw: RawEnvelope<'_> = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("conversation page: {e}")))?;
    let next_page_token = match raw.next_page_token {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token).filter(|t| !t.trim().is_empty()),
        Some(other) => {
            return Err(ProviderError::Malformed(format!(
                "next_page_token is not a string: {other}"
            )));
        }
    };
    let total_size = crate::provider::lenient_count(raw.total_size.as_ref()).filter(|n| *n > 0);
    Ok(Envelope {
        items: raw.conversations.unwrap_or_default(),
        next_page_token,
        total_size,
    })
}

/// One conversation read from a listing, mapped onto the mirror's columns.
#[derive(Debug)]
pub(super) struct Listed {
    /// The mirror record (its `raw` is the conversation object exactly as received).
    pub(super) record: ConversationRecord,
    /// Time of the newest message: the later of `last_received` and, on the recent
    /// listing, the embedded last message's `accept_time`. `None` for a conversation
    /// without messages.
    pub(super) activity: Option<Timestamp>,
    /// `last_received` was present but could not be read as a time.
    pub(super) unreadable_time: bool,
}

/// Reads one conversation object. `implied_active` is what the listing itself says about
/// the conversation (`only_active=true` lists active ones, `only_active=false` inactive
/// ones); it is used only when the object omits `active`.
pub(super) fn conversation(
    raw: &RawValue,
    implied_active: Option<bool>,
) -> Result<Listed, RejectedRecord> {
    let reject = |reason: &str| RejectedRecord {
        reason: reason.to_owned(),
        raw: raw.get().to_owned(),
    };
    let object: Map<String, Value> =
        serde_json::from_str(raw.get()).map_err(|_| reject("conversation is not a JSON object"))?;
    let id = field(&object, "id")
        .and_then(text)
        .ok_or_else(|| reject("conversation has no id"))?;
    let (last_received, unreadable_time) = match field(&object, "last_received") {
        None => (None, false),
        Some(value) => match instant(value) {
            Some(t) => (t.unless_epoch(), false),
            None => (None, true),
        },
    };
    let mut record = ConversationRecord::new(id, raw.to_owned());
    record.last_activity_at = last_received;
    // A protobuf gateway leaves `active: false` out; the listing may know better.
    record.active = Some(
        field(&object, "active")
            .and_then(flag)
            .or(implied_active)
            .unwrap_or(false),
    );
    record.channel = field(&object, "active_channel")
        .and_then(text)
        .filter(|c| c != "CHANNEL_UNSPECIFIED");
    record.contact_id = field(&object, "contact_id").and_then(text);
    Ok(Listed {
        record,
        activity: last_received,
        unreadable_time,
    })
}

#[derive(Deserialize)]
struct RawRecentItem<'a> {
    #[serde(borrow, default)]
    conversation: Option<&'a RawValue>,
    #[serde(default, alias = "lastMessage")]
    last_message: Option<Value>,
}

/// Reads one `conversations:recent` item, `{ "conversation": {...}, "last_message": {...} }`.
///
/// The record's `raw` is the embedded conversation alone, byte for byte, so that the same
/// conversation read from the plain list hashes the same and is not rewritten. The last
/// message contributes who spoke last and, when it is newer than `last_received`, the
/// activity time.
pub(super) fn recent_item(raw: &RawValue) -> Result<Listed, RejectedRecord> {
    let reject = |reason: &str| RejectedRecord {
        reason: reason.to_owned(),
        raw: raw.get().to_owned(),
    };
    let item: RawRecentItem<'_> = serde_json::from_str(raw.get())
        .map_err(|_| reject("recent-conversations item is not a JSON object"))?;
    let embedded = item
        .conversation
        .filter(|c| c.get() != "null")
        .ok_or_else(|| reject("recent-conversations item has no conversation"))?;
    // Conversations in this listing may be active or not: nothing is implied.
    let mut listed = conversation(embedded, None)?;
    if let Some(Value::Object(message)) = &item.last_message {
        let accepted = field(message, "accept_time")
            .and_then(instant)
            .and_then(Timestamp::unless_epoch);
        if let Some(direction) = field(message, "direction")
            .and_then(text)
            .and_then(|d| direction(&d))
        {
            // The newest message's direction and time tell who is waiting for a reply.
            listed
                .record
                .set_last_message(direction, accepted.or(listed.activity));
        }
        listed.activity = listed.activity.max(accepted);
    }
    Ok(listed)
}

/// `TO_APP` is the contact writing to the app; `TO_CONTACT` the app writing to the
/// contact; anything else (`UNDEFINED_DIRECTION`) tells nothing.
fn direction(value: &str) -> Option<Direction> {
    match value.to_ascii_uppercase().as_str() {
        "TO_APP" => Some(Direction::Inbound),
        "TO_CONTACT" => Some(Direction::Outbound),
        _ => None,
    }
}

/// A one-line description of a Sinch error body.
///
/// Sinch answers in the Google-RPC shape `{code, message, status, details}` (sometimes
/// wrapped as `{"error": {...}}`, sometimes with a plain `error` string); anything else is
/// shown as text.
pub(super) fn describe_error(body: &[u8]) -> String {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(body) else {
        return shorten(String::from_utf8_lossy(body).trim(), 2000);
    };
    let object = match top.get("error") {
        Some(Value::Object(inner)) => inner,
        _ => &top,
    };
    let mut parts = Vec::new();
    let status = object.get("status").and_then(text);
    let code = object.get("code").and_then(text);
    match (status, code) {
        (Some(s), Some(c)) => parts.push(format!("{s} ({c})")),
        (Some(s), None) => parts.push(s),
        (None, Some(c)) => parts.push(format!("code {c}")),
        (None, None) => {}
    }
    for key in ["message", "error"] {
        if let Some(text) = object.get(key).and_then(text) {
            parts.push(text);
        }
    }
    if let Some(Value::Array(details)) = object.get("details")
        && !details.is_empty()
    {
        let json = Value::Array(details.clone()).to_string();
        parts.push(format!("details: {}", shorten(&json, 500)));
    }
    if parts.is_empty() {
        return shorten(String::from_utf8_lossy(body).trim(), 2000);
    }
    parts.join(": ")
}

/// Whether an error body talks about a token. A list request's only token is its page
/// token (access tokens are refused with 401, not here), and Sinch's wording for an expired
/// or unknown one is not documented, so any mention counts.
pub(super) fn mentions_token(body: &[u8]) -> bool {
    String::from_utf8_lossy(body)
        .to_ascii_lowercase()
        .contains("token")
}

/// A non-null field by its documented snake_case key or its lowerCamelCase spelling.
fn field<'a>(object: &'a Map<String, Value>, snake: &str) -> Option<&'a Value> {
    let found = object.get(snake).or_else(|| {
        let camel = lower_camel(snake);
        (camel != snake).then(|| object.get(&camel)).flatten()
    });
    found.filter(|v| !v.is_null())
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A non-empty string, or a number written as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean, also when sent as `"true"` / `"false"`.
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// An RFC 3339 time, or epoch milliseconds as a number.
fn instant(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(s) => Timestamp::parse_rfc3339(s).ok(),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Timestamp::from_epoch_millis(ms).ok()),
        _ => None,
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official Java SDK fixture `ConversationsListResponse-page-0.json`, verbatim.
    const SDK_FIXTURE_PAGE_0: &str = r#"{
  "conversations": [
    {
      "active": true,
      "active_channel": "WHATSAPP",
      "app_id": "conversation app Id",
      "contact_id": "contact ID",
      "id": "a conversation id",
      "last_received": "2020-11-17T15:00:00Z",
      "metadata": "metadata value",
      "metadata_json": {
        "metadata_json_key": "metadata json value"
      },
      "correlation_id": "correlation id value"
    }
  ],
  "next_page_token": "ChowMUo1NUVOVERUSFlGQVlKMFE1WFpaSktSVhIaMDFITkIzMzY0UFdCQkcyR1paV1ZWVDNERDI=",
  "total_size": 2
}"#;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    /// The SDK fixture maps onto the mirror columns and keeps the item's JSON byte for byte.
    #[test]
    fn sdk_fixture_page_maps_every_documented_field() {
        let page = read_envelope(SDK_FIXTURE_PAGE_0.as_bytes()).unwrap();
        assert_eq!(
            page.next_page_token.as_deref(),
            Some("ChowMUo1NUVOVERUSFlGQVlKMFE1WFpaSktSVhIaMDFITkIzMzY0UFdCQkcyR1paV1ZWVDNERDI=")
        );
        assert_eq!(page.items.len(), 1);
        let listed = conversation(page.items[0], Some(true)).unwrap();
        let r = &listed.record;
        assert_eq!(r.id, "a conversation id");
        assert_eq!(r.active, Some(true));
        assert_eq!(r.channel.as_deref(), Some("WHATSAPP"));
        assert_eq!(r.contact_id.as_deref(), Some("contact ID"));
        assert_eq!(r.last_activity_at, Some(ts("2020-11-17T15:00:00Z")));
        assert_eq!(listed.activity, r.last_activity_at);
        assert_eq!(r.created_at, None, "Sinch reports no creation time");
        assert_eq!(r.title, None);
        assert_eq!(r.raw.get(), page.items[0].get());
        assert!(r.raw.get().contains("metadata_json_key"));
    }

    /// The older spec's rule: 1970-01-01T00:00:00Z means "no messages" and becomes NULL.
    #[test]
    fn epoch_last_received_means_no_activity() {
        let item = raw(
            r#"{"id":"01HNB3364PWBBG2GZZWVVT3DD2","app_id":"APP","contact_id":"C","active":true,
                "active_channel":"SMS","last_received":"1970-01-01T00:00:00Z","metadata":""}"#,
        );
        let listed = conversation(&item, Some(true)).unwrap();
        assert_eq!(listed.record.last_activity_at, None);
        assert_eq!(listed.activity, None);
        assert!(!listed.unreadable_time);
    }

    /// Omitted defaults (proto3 JSON) read as the listing implies, else as `false`.
    #[test]
    fn omitted_active_follows_the_listing() {
        let item = raw(r#"{"id":"X1","last_received":"2026-03-02T10:11:12Z"}"#);
        assert_eq!(
            conversation(&item, Some(false)).unwrap().record.active,
            Some(false)
        );
        assert_eq!(
            conversation(&item, Some(true)).unwrap().record.active,
            Some(true)
        );
        assert_eq!(
            conversation(&item, None).unwrap().record.active,
            Some(false)
        );
        let explicit = raw(r#"{"id":"X2","active":"true"}"#);
        assert_eq!(
            conversation(&explicit, Some(false)).unwrap().record.active,
            Some(true)
        );
    }

    /// lowerCamelCase keys, null fields and unknown channels are all read.
    #[test]
    fn camel_case_keys_and_nulls_are_tolerated() {
        let item = raw(
            r#"{"id":"X3","appId":"APP","contactId":"C9","active":null,"activeChannel":"TIKTOK",
                "lastReceived":"2026-03-02T10:11:12.345Z","metadataJson":null}"#,
        );
        let r = conversation(&item, Some(true)).unwrap().record;
        assert_eq!(r.contact_id.as_deref(), Some("C9"));
        assert_eq!(r.channel.as_deref(), Some("TIKTOK"));
        assert_eq!(r.active, Some(true));
        assert_eq!(r.last_activity_at, Some(ts("2026-03-02T10:11:12.345Z")));
        let unspecified = raw(r#"{"id":"X4","active_channel":"CHANNEL_UNSPECIFIED"}"#);
        assert_eq!(
            conversation(&unspecified, None).unwrap().record.channel,
            None
        );
    }

    /// An item without id is rejected with its JSON; an unreadable time keeps the record.
    #[test]
    fn items_without_id_are_rejected_and_odd_times_are_flagged() {
        let no_id = raw(r#"{"app_id":"APP","active":true}"#);
        let rejected = conversation(&no_id, Some(true)).unwrap_err();
        assert!(rejected.reason.contains("no id"));
        assert!(rejected.raw.contains("APP"));
        let not_object = raw(r#""just text""#);
        assert!(conversation(&not_object, None).is_err());
        let odd = raw(r#"{"id":"X5","last_received":"yesterday"}"#);
        let listed = conversation(&odd, None).unwrap();
        assert!(listed.unreadable_time);
        assert_eq!(listed.record.last_activity_at, None);
    }

    /// A page without `conversations` or token is an empty last page; bad JSON is malformed.
    #[test]
    fn envelope_edge_cases() {
        let empty = read_envelope(b"{}").unwrap();
        assert!(empty.items.is_empty());
        assert_eq!(empty.next_page_token, None);
        let blank_token = read_envelope(br#"{"conversations":[],"next_page_token":""}"#).unwrap();
        assert_eq!(blank_token.next_page_token, None);
        let camel = read_envelope(br#"{"conversations":null,"nextPageToken":"abc"}"#).unwrap();
        assert_eq!(camel.next_page_token.as_deref(), Some("abc"));
        for bad in [
            &b"{\"conversations\": [{\"id\""[..],
            b"[]",
            b"{\"conversations\":5}",
        ] {
            assert!(
                matches!(read_envelope(bad), Err(ProviderError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(read_envelope(br#"{"next_page_token":7}"#).is_err());
    }

    /// A recent item keeps the embedded conversation as raw and learns who spoke last.
    #[test]
    fn recent_item_reads_conversation_and_last_message() {
        let conv = r#"{"id":"R1","app_id":"APP","contact_id":"C1","active":true,"active_channel":"WHATSAPP","last_received":"2026-03-02T10:11:12Z"}"#;
        let item = raw(&format!(
            r#"{{"conversation":{conv},"last_message":{{"id":"M1","direction":"TO_APP","accept_time":"2026-03-02T10:11:12.500Z","conversation_id":"R1"}}}}"#
        ));
        let listed = recent_item(&item).unwrap();
        assert_eq!(listed.record.raw.get(), conv);
        assert_eq!(
            listed.record.last_message_direction,
            Some(Direction::Inbound)
        );
        assert_eq!(
            listed.record.last_activity_at,
            Some(ts("2026-03-02T10:11:12Z"))
        );
        assert_eq!(listed.activity, Some(ts("2026-03-02T10:11:12.500Z")));

        let outbound =
            raw(r#"{"conversation":{"id":"R2"},"lastMessage":{"direction":"TO_CONTACT"}}"#);
        let listed = recent_item(&outbound).unwrap();
        assert_eq!(
            listed.record.last_message_direction,
            Some(Direction::Outbound)
        );
        assert_eq!(listed.record.active, Some(false));
        assert_eq!(listed.activity, None);

        assert!(recent_item(&raw(r#"{"last_message":{}}"#)).is_err());
        assert!(recent_item(&raw(r#"{"conversation":null}"#)).is_err());
    }

    /// The spec's error examples are shown as status, code and message.
    #[test]
    fn error_bodies_are_described() {
        let unauthenticated = br#"{"code":401,"message":"Request had invalid credentials.","status":"UNAUTHENTICATED","details":[]}"#;
        assert_eq!(
            describe_error(unauthenticated),
            "UNAUTHENTICATED (401): Request had invalid credentials."
        );
        let wrapped = br#"{"error":{"code":400,"message":"Invalid page_token","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest"}]}}"#;
        let text = describe_error(wrapped);
        assert!(
            text.starts_with("INVALID_ARGUMENT (400): Invalid page_token: details: "),
            "{text}"
        );
        assert_eq!(describe_error(b"upstream timeout"), "upstream timeout");
        assert!(mentions_token(wrapped));
        assert!(mentions_token(br#"{"message":"Token expired"}"#));
        assert!(!mentions_token(unauthenticated));
    }
}
