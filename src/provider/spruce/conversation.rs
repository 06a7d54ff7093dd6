//! `GET /v1/conversations` pages and the `conversation` object, mapped onto the mirror's
//! columns.
//!
//! Every field is read leniently: a conversation is rejected only when it has no id. A
//! field of an unexpected type or an unreadable timestamp (a number included) leaves its
//! column NULL instead of failing the page, because one odd record must not stop a source;
//! unreadable timestamps are counted in a page note.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::provider::{ConversationRecord, ProviderError, RejectedRecord};
use crate::time::Timestamp;

/// One `ListConversations` response: `conversations`, `hasMore` and `totalCount` are
/// required; `paginationToken` accompanies `hasMore`. `totalCount` is approximate (cached
/// up to 60 s): it only feeds the progress display, read as any JSON so that an odd value
/// is ignored rather than failing the page.
#[derive(Deserialize)]
struct WireListPage<'a> {
    #[serde(borrow)]
    conversations: Vec<&'a RawValue>,
    #[serde(rename = "hasMore")]
    has_more: bool,
    #[serde(rename = "paginationToken", default)]
    pagination_token: Option<String>,
    #[serde(rename = "totalCount", default)]
    total_count: Option<Value>,
}

/// A parsed list page, before the walk decides what its watermark is.
#[derive(Debug, Default)]
pub(super) struct ListPage {
    /// The conversations, mapped.
    pub records: Vec<ConversationRecord>,
    /// Items without an id.
    pub rejected: Vec<RejectedRecord>,
    /// Token for the next page; `None` when `hasMore` is false.
    pub next_token: Option<String>,
    /// Oddities worth an operator's attention.
    pub notes: Vec<String>,
    /// `totalCount`, when it reads as a non-negative integer.
    pub total_count: Option<u64>,
}

/// Reads one list page. `detail_on_activity` is the follow-up to queue for conversations
/// whose `lastMessageAt` moved (or `None` when reply state is not tracked).
pub(super) fn parse_list_page(
    body: &[u8],
    detail_on_activity: Option<&'static str>,
) -> Result<ListPage, ProviderError> {
    let wire: WireListPage<'_> = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("conversations page: {e}")))?;
    let next_token = match (wire.has_more, wire.pagination_token) {
        (false, _) => None,
        (true, Some(token)) if !token.is_empty() => Some(token),
        (true, _) => {
            return Err(ProviderError::Malformed(
                "conversations page says hasMore=true but carries no paginationToken".into(),
            ));
        }
    };
    let mut page = ListPage {
        next_token,
        total_count: crate::provider::lenient_count(wire.total_count.as_ref()),
        ..ListPage::default()
    };
    let mut unreadable = Vec::new();
    for raw in wire.conversations {
        match map_conversation(raw) {
            Ok((mut record, problems)) => {
                record.detail_on_activity = detail_on_activity;
                unreadable.extend(problems);
                page.records.push(record);
            }
            Err(reason) => page.rejected.push(RejectedRecord {
                reason,
                raw: raw.get().to_owned(),
            }),
        }
    }
    if !unreadable.is_empty() {
        // One note per page with the count and a few examples: a provider that changed a
        // field's format would otherwise write one note per conversation into the run.
        let examples: Vec<&str> = unreadable
            .iter()
            .take(UNREADABLE_EXAMPLES)
            .map(String::as_str)
            .collect();
        page.notes.push(format!(
            "{} unreadable timestamp(s) left empty on a conversations page, e.g. {}",
            unreadable.len(),
            examples.join("; ")
        ));
    }
    Ok(page)
}

/// Examples of unreadable timestamps a page's note quotes.
const UNREADABLE_EXAMPLES: usize = 3;

/// The fields of a `conversation` the mirror uses; the whole object is kept in `raw`.
#[derive(Deserialize)]
struct WireConversation {
    #[serde(default, deserialize_with = "lenient")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    title: Option<String>,
    /// Open enum (`email`, `phone`, `secure`, `fax`, `team`, `note`, `other`, and values
    /// added later): stored verbatim.
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    archived: Option<bool>,
    /// Kept as any JSON value, so that a number where text is documented is noted
    /// rather than silently read as absent.
    #[serde(rename = "createdAt", default, deserialize_with = "lenient")]
    created_at: Option<Value>,
    /// Absent or `null` for conversations without messages (both are accepted).
    #[serde(rename = "lastMessageAt", default, deserialize_with = "lenient")]
    last_message_at: Option<Value>,
    #[serde(rename = "assignedToMemberId", default, deserialize_with = "lenient")]
    assigned_to_member_id: Option<String>,
    #[serde(rename = "associatedContactIds", default, deserialize_with = "lenient")]
    associated_contact_ids: Option<Vec<Value>>,
    #[serde(rename = "externalParticipants", default, deserialize_with = "lenient")]
    external_participants: Option<Vec<Value>>,
}

/// One of `externalParticipants`.
#[derive(Deserialize)]
struct WireParticipant {
    #[serde(default, deserialize_with = "lenient")]
    contact: Option<String>,
    #[serde(rename = "displayName", default, deserialize_with = "lenient")]
    display_name: Option<String>,
    /// Missing for secure conversations.
    #[serde(default, deserialize_with = "lenient")]
    endpoint: Option<WireEndpoint>,
}

/// An `endpoint`: only its channel and raw value matter here.
#[derive(Deserialize)]
struct WireEndpoint {
    #[serde(default, deserialize_with = "lenient")]
    channel: Option<String>,
    /// E.164 text for phone and fax; the spec's example shows a bare number, so a number
    /// is accepted too.
    #[serde(rename = "rawValue", default)]
    raw_value: Option<Value>,
}

/// An endpoint's `channel`: an open enum (`email`, `phone`, `fax`, `secure`, and channels
/// added later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EndpointChannel {
    /// A phone number (SMS and calls).
    Phone,
    /// A fax number.
    Fax,
    /// An e-mail address.
    Email,
    /// A Spruce secure-messaging link.
    Secure,
    /// A channel this version does not know.
    Other(String),
}

impl EndpointChannel {
    /// Reads a wire value, case-insensitively, keeping unknown values.
    pub(super) fn from_wire(value: &str) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "phone" => EndpointChannel::Phone,
            "fax" => EndpointChannel::Fax,
            "email" => EndpointChannel::Email,
            "secure" => EndpointChannel::Secure,
            _ => EndpointChannel::Other(value.to_owned()),
        }
    }
}

/// Deserializes a field to `Some` when it has the expected type and `None` otherwise
/// (absent, `null`, or a type the API does not document), so that one odd field never
/// rejects a whole record.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// Maps one conversation; `Err` carries why it cannot be a record (no id).
pub(super) fn map_conversation(
    raw: &RawValue,
) -> Result<(ConversationRecord, Vec<String>), String> {
    let wire: WireConversation = serde_json::from_str(raw.get())
        .map_err(|e| format!("conversation is not a JSON object: {e}"))?;
    let id = wire
        .id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| "conversation has no id".to_owned())?;
    let mut notes = Vec::new();
    let mut timestamp = |field: &str, value: Option<Value>| -> Option<Timestamp> {
        let problem = match value? {
            Value::Null => return None,
            Value::String(text) => match Timestamp::parse_rfc3339(&text) {
                Ok(t) => return Some(t),
                Err(e) => e.to_string(),
            },
            // Epoch seconds or milliseconds? The API documents text, so guessing could
            // store a wrong date: the column stays empty and the note says why.
            other => format!("{other} is not the RFC 3339 text the API documents"),
        };
        notes.push(format!("conversation {id}: {field}: {problem}"));
        None
    };
    let created_at = timestamp("createdAt", wire.created_at);
    let last_activity_at = timestamp("lastMessageAt", wire.last_message_at);

    let participant = wire
        .external_participants
        .unwrap_or_default()
        .into_iter()
        .find_map(|p| serde_json::from_value::<WireParticipant>(p).ok());
    let (mut contact_id, contact_name, endpoint) = match participant {
        Some(p) => (p.contact, p.display_name, p.endpoint),
        None => (None, None, None),
    };
    if contact_id.is_none() {
        contact_id = wire
            .associated_contact_ids
            .unwrap_or_default()
            .into_iter()
            .find_map(|v| v.as_str().map(str::to_owned));
    }
    let (contact_phone, contact_email) = match endpoint {
        Some(e) => {
            let channel = e.channel.as_deref().map(EndpointChannel::from_wire);
            match (channel, e.raw_value.as_ref().and_then(endpoint_text)) {
                (Some(EndpointChannel::Phone), Some(number)) => (Some(e164(&number)), None),
                (Some(EndpointChannel::Email), Some(address)) => (None, Some(address)),
                _ => (None, None),
            }
        }
        None => (None, None),
    };

    let mut record = ConversationRecord::new(id, raw.to_owned());
    record.created_at = created_at;
    record.last_activity_at = last_activity_at;
    record.active = wire.archived.map(|archived| !archived);
    record.status = wire
        .archived
        .map(|archived| if archived { "archived" } else { "open" }.to_owned());
    record.channel = wire.kind;
    record.contact_id = contact_id;
    record.contact_name = contact_name;
    record.contact_phone = contact_phone;
    record.contact_email = contact_email;
    record.title = wire.title;
    record.assignee = wire.assigned_to_member_id;
    Ok((record, notes))
}

/// An endpoint's `rawValue` as text (a string, or a number as in the spec's example).
fn endpoint_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Phone numbers are E.164; a bare digit string (the spec's numeric example) gets its `+`.
fn e164(number: &str) -> String {
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{number}")
    } else {
        number.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composed example of the provider reference (`shared/providers/spruce.md` §4),
    /// built from the official schema's field examples.
    const REFERENCE_PAGE: &str = r#"{
      "conversations": [
        {
          "id": "t_2B7QK3M1A0000",
          "object": "conversation",
          "title": "Jane Roe",
          "subtitle": "Refill question",
          "type": "phone",
          "archived": false,
          "isReadOnly": false,
          "createdAt": "2026-02-10T14:03:11Z",
          "lastMessageAt": "2026-03-01T08:44:52Z",
          "assignedToMemberId": "entity_2A1XYZ0000000",
          "associatedContactIds": ["entity_2C9ABC0000000"],
          "internalMemberIds": ["entity_2A0ORG0000000"],
          "externalParticipants": [
            { "contact": "entity_2C9ABC0000000", "displayName": "Jane Roe",
              "endpoint": { "id": "15555550123", "channel": "phone", "displayValue": "(555) 555-0123",
                            "rawValue": "+15555550123", "isInternal": false, "object": "endpoint" } }
          ],
          "tags": [ { "id": "tag_2D4TAG0000000", "value": "pharmacy", "object": "conversation_tag" } ],
          "apiURL": "https://api.sprucehealth.com/v1/conversations/t_2B7QK3M1A0000",
          "appURL": "https://app.sprucehealth.com/org/entity_2A0ORG0000000/thread/t_2B7QK3M1A0000"
        }
      ],
      "hasMore": true,
      "paginationToken": "opaque-token",
      "totalCount": 750
    }"#;

    /// The official OpenAPI `conversation` schema's own field examples, assembled into
    /// one object (an email conversation, `endpoint.rawValue` as the spec's number).
    const SPEC_EXAMPLE_CONVERSATION: &str = r#"{
      "apiURL": "https://api.sprucehealth.com/conversations/t_0E5QDJJC03000",
      "appURL": "https://app.sprucehealth.com/org/entity_0D4QABCC06000/thread/t_0E5QDJJC03000",
      "archived": false,
      "assignedToMemberId": "entity_0D4QABCC06000",
      "associatedContactIds": ["entity_0D4QABCC06000"],
      "createdAt": "2020-04-01T00:00:00Z",
      "externalParticipants": [
        { "contact": "entity_0D4QABCC06000", "displayName": "John Doe",
          "endpoint": { "id": "15555555555", "channel": "phone", "displayValue": "(555) 555-5555",
                        "rawValue": 15555555555, "isInternal": false, "label": "Home",
                        "object": "endpoint" } }
      ],
      "id": "t_0E5QDGJC03000",
      "internalMemberIds": ["entity_0D4QABCC06000"],
      "isReadOnly": false,
      "lastMessageAt": "2020-04-01T00:00:00Z",
      "object": "conversation",
      "subtitle": "Billing",
      "tags": [],
      "title": "John Doe",
      "type": "email"
    }"#;

    fn page_of(conversations: &[&str], has_more: bool) -> String {
        format!(
            r#"{{"conversations":[{}],"hasMore":{has_more},{}"totalCount":1}}"#,
            conversations.join(","),
            if has_more {
                r#""paginationToken":"tok","#
            } else {
                ""
            }
        )
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    /// The reference example maps onto every column the listing can fill.
    #[test]
    fn reference_example_maps_onto_the_mirror_columns() {
        let page = parse_list_page(REFERENCE_PAGE.as_bytes(), Some("items")).unwrap();
        assert_eq!(page.next_token.as_deref(), Some("opaque-token"));
        assert!(page.rejected.is_empty() && page.notes.is_empty());
        let r = &page.records[0];
        assert_eq!(r.id, "t_2B7QK3M1A0000");
        assert_eq!(r.created_at, Some(ts("2026-02-10T14:03:11Z")));
        assert_eq!(r.last_activity_at, Some(ts("2026-03-01T08:44:52Z")));
        assert_eq!(r.active, Some(true));
        assert_eq!(r.status.as_deref(), Some("open"));
        assert_eq!(r.channel.as_deref(), Some("phone"));
        assert_eq!(r.contact_id.as_deref(), Some("entity_2C9ABC0000000"));
        assert_eq!(r.contact_name.as_deref(), Some("Jane Roe"));
        assert_eq!(r.contact_phone.as_deref(), Some("+15555550123"));
        assert_eq!(r.contact_email, None);
        assert_eq!(r.title.as_deref(), Some("Jane Roe"));
        assert_eq!(r.assignee.as_deref(), Some("entity_2A1XYZ0000000"));
        assert_eq!(r.unread_count, None);
        assert_eq!(r.last_message_direction, None);
        assert_eq!(r.detail_on_activity, Some("items"));
    }

    /// `raw` is the conversation's JSON byte for byte, not a re-serialisation.
    #[test]
    fn raw_is_the_exact_json_of_the_item() {
        let page = parse_list_page(
            page_of(&[SPEC_EXAMPLE_CONVERSATION], false).as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(page.records[0].raw.get(), SPEC_EXAMPLE_CONVERSATION);
        assert_eq!(page.records[0].detail_on_activity, None);
    }

    /// The spec's numeric `rawValue` example becomes an E.164 phone number.
    #[test]
    fn spec_field_examples_parse_including_a_numeric_raw_value() {
        let phone = SPEC_EXAMPLE_CONVERSATION.replace(r#""type": "email""#, r#""type": "phone""#);
        let page = parse_list_page(page_of(&[&phone], false).as_bytes(), None).unwrap();
        let r = &page.records[0];
        assert_eq!(r.contact_phone.as_deref(), Some("+15555555555"));
        assert_eq!(r.channel.as_deref(), Some("phone"));
        assert_eq!(page.next_token, None);
    }

    /// An email participant fills `contact_email`, not `contact_phone`.
    #[test]
    fn email_endpoints_fill_the_email_column() {
        let email = r#"{"id":"t_1","archived":true,"createdAt":"2026-01-01T00:00:00Z","type":"email",
            "externalParticipants":[{"displayName":"p@example.com",
              "endpoint":{"id":"p@example.com","channel":"EMAIL","displayValue":"p@example.com",
                          "rawValue":"p@example.com","isInternal":false,"object":"endpoint"}}],
            "associatedContactIds":["entity_9"]}"#;
        let page = parse_list_page(page_of(&[email], false).as_bytes(), None).unwrap();
        let r = &page.records[0];
        assert_eq!(r.contact_email.as_deref(), Some("p@example.com"));
        assert_eq!(r.contact_phone, None);
        // No `contact` on the participant: the associated contact stands in.
        assert_eq!(r.contact_id.as_deref(), Some("entity_9"));
        assert_eq!(r.active, Some(false));
        assert_eq!(r.status.as_deref(), Some("archived"));
    }

    /// Conversations without messages: `lastMessageAt` absent or `null` both mean "none".
    #[test]
    fn missing_or_null_last_message_at_means_no_activity() {
        let absent = r#"{"id":"t_a","createdAt":"2026-01-01T00:00:00Z","archived":false}"#;
        let null = r#"{"id":"t_n","createdAt":"2026-01-01T00:00:00Z","archived":false,"lastMessageAt":null}"#;
        let page = parse_list_page(page_of(&[absent, null], false).as_bytes(), None).unwrap();
        assert!(page.records.iter().all(|r| r.last_activity_at.is_none()));
        assert!(page.records.iter().all(|r| r.created_at.is_some()));
        assert!(page.notes.is_empty());
    }

    /// Unknown `type` and `channel` values are kept, not errors.
    #[test]
    fn unknown_enum_values_are_accepted() {
        let odd = r#"{"id":"t_x","type":"carrier_pigeon","archived":false,"createdAt":"2026-01-01T00:00:00Z",
            "externalParticipants":[{"displayName":"X","endpoint":{"channel":"whatsapp","rawValue":"+1555"}}]}"#;
        let page = parse_list_page(page_of(&[odd], false).as_bytes(), None).unwrap();
        let r = &page.records[0];
        assert_eq!(r.channel.as_deref(), Some("carrier_pigeon"));
        assert_eq!(r.contact_phone, None);
        assert_eq!(r.contact_name.as_deref(), Some("X"));
        assert_eq!(
            EndpointChannel::from_wire("whatsapp"),
            EndpointChannel::Other("whatsapp".into())
        );
        assert_eq!(EndpointChannel::from_wire("Fax"), EndpointChannel::Fax);
        assert_eq!(
            EndpointChannel::from_wire("secure"),
            EndpointChannel::Secure
        );
    }

    /// Items without an id, or that are not objects, are rejected; the rest of the page
    /// is kept.
    #[test]
    fn items_without_an_id_are_rejected_not_fatal() {
        let good = r#"{"id":"t_ok","archived":false,"createdAt":"2026-01-01T00:00:00Z"}"#;
        let page = parse_list_page(
            page_of(&[r#"{"title":"no id"}"#, r#"{"id":""}"#, "42", good], false).as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.rejected.len(), 3);
        assert_eq!(page.rejected[2].raw, "42");
    }

    /// Fields of an unexpected type or unreadable timestamps leave NULLs and a note.
    #[test]
    fn odd_fields_degrade_to_null_with_a_note() {
        let odd = r#"{"id":"t_o","archived":"no","createdAt":"yesterday","lastMessageAt":12,
            "title":["x"],"externalParticipants":{"not":"a list"}}"#;
        let page = parse_list_page(page_of(&[odd], false).as_bytes(), None).unwrap();
        let r = &page.records[0];
        assert_eq!(
            (r.active, r.created_at, r.last_activity_at, r.title.as_ref()),
            (None, None, None, None)
        );
        assert_eq!(page.notes.len(), 1, "{:?}", page.notes);
        assert!(page.notes[0].contains("createdAt"));
    }

    /// A number where RFC 3339 text is documented is not silently dropped: it is counted
    /// and quoted in the page's note (the column stays empty), as is unreadable text.
    #[test]
    fn numeric_and_unreadable_timestamps_are_counted_in_a_note() {
        let numeric =
            r#"{"id":"t_num","createdAt":"2026-01-01T00:00:00Z","lastMessageAt":1772443200123}"#;
        let text = r#"{"id":"t_txt","createdAt":"yesterday"}"#;
        let fine = r#"{"id":"t_ok","createdAt":"2026-01-01T00:00:00Z"}"#;
        let page =
            parse_list_page(page_of(&[numeric, text, fine], false).as_bytes(), None).unwrap();
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.records[0].last_activity_at, None);
        assert_eq!(page.notes.len(), 1, "{:?}", page.notes);
        let note = &page.notes[0];
        assert!(note.starts_with("2 unreadable timestamp(s)"), "{note}");
        assert!(
            note.contains("conversation t_num: lastMessageAt: 1772443200123"),
            "{note}"
        );
        assert!(note.contains("conversation t_txt: createdAt"), "{note}");
    }

    /// Timestamps with offsets and fractions are normalised to UTC instants.
    #[test]
    fn offsets_and_fractions_are_normalised() {
        let c = r#"{"id":"t_1","createdAt":"2020-03-31T17:00:00-07:00","lastMessageAt":"2020-04-01T00:00:00.123Z"}"#;
        let page = parse_list_page(page_of(&[c], false).as_bytes(), None).unwrap();
        assert_eq!(page.records[0].created_at, Some(ts("2020-04-01T00:00:00Z")));
        assert_eq!(
            page.records[0].last_activity_at,
            Some(ts("2020-04-01T00:00:00.123Z"))
        );
    }

    /// A page that is not the documented shape is malformed (the engine retries it).
    #[test]
    fn malformed_pages_are_errors() {
        for body in [
            "",
            "{",
            r#"{"conversations":[]}"#,
            r#"{"hasMore":false}"#,
            r#"{"conversations":{},"hasMore":false}"#,
            r#"{"conversations":[],"hasMore":true}"#,
            r#"{"conversations":[],"hasMore":true,"paginationToken":""}"#,
        ] {
            assert!(
                matches!(
                    parse_list_page(body.as_bytes(), None),
                    Err(ProviderError::Malformed(_))
                ),
                "{body}"
            );
        }
    }

    /// `totalCount` is informational: a last page with a "wrong" count still ends the walk.
    #[test]
    fn total_count_is_never_a_loop_bound() {
        let body =
            r#"{"conversations":[],"hasMore":false,"totalCount":750,"paginationToken":"stale"}"#;
        let page = parse_list_page(body.as_bytes(), None).unwrap();
        assert_eq!(page.next_token, None);
    }
}
