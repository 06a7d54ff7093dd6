//! Who spoke last: `GET /v1/conversations/{id}/items` read newest first, turned into the
//! mirror's reply-state columns.
//!
//! One request per follow-up: the newest page (up to 200 items) since the conversation's
//! previous activity time. Spruce's own guidance: an item with `direction=inbound` is a
//! message from the patient. Internal notes (`isInternalNote`) and items whose direction
//! is `none` or a value this version does not know say nothing about who is owed a reply,
//! so they are skipped.
//!
//! Why a window is enough: the row already holds the reply state as of the previous
//! activity time `since` (an earlier follow-up wrote it). Items at or after `since` either
//! contain a newer inbound/outbound message, which decides the state, or only notes, which
//! leave it as it was. Whether `startFrom` is inclusive or strictly "after" (the docs say
//! "after", an ASSUMPTION) therefore does not matter: the item at exactly `since` is
//! already accounted for. Timestamps in the patch only move forward in the store.

use serde::Deserialize;
use serde_json::Value;

use crate::provider::{ActivityPatch, Direction, ProviderError};
use crate::time::Timestamp;

/// An item's `direction`: an open enum (`inbound`, `outbound`, `none`, and values added
/// later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ItemDirection {
    /// Received by the organization (a patient's message, an inbound call).
    Inbound,
    /// Sent to an external contact by a teammate.
    Outbound,
    /// Internal, or the direction cannot be determined.
    Undetermined,
    /// A value this version does not know.
    Other(String),
}

impl ItemDirection {
    /// Reads a wire value, case-insensitively, keeping unknown values.
    pub(super) fn from_wire(value: &str) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "inbound" => ItemDirection::Inbound,
            "outbound" => ItemDirection::Outbound,
            "none" => ItemDirection::Undetermined,
            _ => ItemDirection::Other(value.to_owned()),
        }
    }

    /// The mirror's direction, for the two values that say who spoke.
    pub(super) fn speaker(&self) -> Option<Direction> {
        match self {
            ItemDirection::Inbound => Some(Direction::Inbound),
            ItemDirection::Outbound => Some(Direction::Outbound),
            ItemDirection::Undetermined | ItemDirection::Other(_) => None,
        }
    }
}

/// One `ConversationItems` response (`conversationItems` and `hasMore` are required).
#[derive(Deserialize)]
struct WireItemsPage {
    #[serde(rename = "conversationItems")]
    conversation_items: Vec<Value>,
    #[serde(rename = "hasMore")]
    has_more: bool,
}

/// The fields of a `conversationItem` that decide reply state.
#[derive(Deserialize)]
struct WireItem {
    #[serde(rename = "createdAt", default)]
    created_at: Option<Value>,
    #[serde(default)]
    direction: Option<Value>,
    #[serde(rename = "isInternalNote", default)]
    is_internal_note: Option<Value>,
}

/// A message that says who spoke, and when.
#[derive(Debug, Clone, Copy)]
struct Spoken {
    at: Timestamp,
    direction: Direction,
}

/// Reads one items page (newest first) into reply-state facts.
///
/// `since` is the follow-up's lower bound: `None` means the page starts at the newest item
/// of the whole conversation, so an end of list without any message proves nobody is
/// waiting for a reply.
pub(super) fn parse_items_page(
    body: &[u8],
    since: Option<Timestamp>,
) -> Result<ActivityPatch, ProviderError> {
    let page: WireItemsPage = serde_json::from_slice(body)
        .map_err(|e| ProviderError::Malformed(format!("conversation items page: {e}")))?;
    let spoken: Vec<Spoken> = page
        .conversation_items
        .into_iter()
        .filter_map(spoken)
        .collect();

    let newest_of = |direction: Direction| {
        spoken
            .iter()
            .filter(|s| s.direction == direction)
            .map(|s| s.at)
            .max()
    };
    let last_inbound_at = newest_of(Direction::Inbound);
    let last_outbound_at = newest_of(Direction::Outbound);

    // The newest message: greatest time; on a tie the first listed (newest first).
    let newest = spoken
        .iter()
        .copied()
        .reduce(|best, s| if s.at > best.at { s } else { best });
    let (last_message_direction, awaiting_reply) = match newest {
        Some(newest) => {
            // A reply stamped at the same instant as the patient's message answers it.
            let answered = last_outbound_at.is_some_and(|out| out >= newest.at);
            (
                Some(newest.direction),
                Some(newest.direction == Direction::Inbound && !answered),
            )
        }
        // The whole conversation was read and holds no message: nobody is waiting.
        None if since.is_none() && !page.has_more => (None, Some(false)),
        // Only notes in the window (or in the newest page): the stored state stands.
        None => (None, None),
    };
    Ok(ActivityPatch {
        // The listing's `lastMessageAt` stays the authority for `last_activity_at`.
        last_activity_at: None,
        last_inbound_at,
        last_outbound_at,
        last_message_direction,
        awaiting_reply,
    })
}

/// The item as a message that says who spoke, or `None` for notes, undetermined
/// directions and items without a readable time.
fn spoken(item: Value) -> Option<Spoken> {
    let item: WireItem = serde_json::from_value(item).ok()?;
    if matches!(item.is_internal_note, Some(Value::Bool(true))) {
        return None;
    }
    let direction = ItemDirection::from_wire(item.direction.as_ref()?.as_str()?).speaker()?;
    let at = Timestamp::parse_rfc3339(item.created_at.as_ref()?.as_str()?).ok()?;
    Some(Spoken { at, direction })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item built from the official `conversationItem` schema's field examples.
    fn item(id: &str, at: &str, direction: &str, internal: bool) -> String {
        format!(
            r#"{{
              "apiURL": "https://api.sprucehealth.com/conversationItems/{id}",
              "appURL": "https://app.sprucehealth.com/org/entity_0D4QABCC06000/thread/t_0E5QDJJC03000/message/{id}",
              "attachments": [ {{ "title": "example.pdf", "type": "document" }} ],
              "author": {{ "displayName": "Dr. Smith", "id": "entity_0D4QABCC06000" }},
              "buttons": [],
              "canDelete": true,
              "conversationId": "t_0E5QDGJC03000",
              "createdAt": "{at}",
              "direction": "{direction}",
              "id": "{id}",
              "isInternalNote": {internal},
              "modifiedAt": "{at}",
              "object": "conversationItem",
              "pages": [],
              "requestId": "asyncRequest_0D4QABCC06000",
              "text": "Can you look at this @Dr. Smith?"
            }}"#
        )
    }

    fn page(items: &[String], has_more: bool) -> Vec<u8> {
        format!(
            r#"{{"conversationItems":[{}],"hasMore":{has_more},"totalCount":{}}}"#,
            items.join(","),
            items.len()
        )
        .into_bytes()
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    /// A patient message newer than the last reply means a reply is owed.
    #[test]
    fn inbound_after_outbound_awaits_a_reply() {
        let body = page(
            &[
                item("ti_3", "2020-04-01T00:03:00Z", "inbound", false),
                item("ti_2", "2020-04-01T00:02:00Z", "outbound", false),
                item("ti_1", "2020-04-01T00:01:00Z", "inbound", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
        assert_eq!(patch.awaiting_reply, Some(true));
        assert_eq!(patch.last_inbound_at, Some(ts("2020-04-01T00:03:00Z")));
        assert_eq!(patch.last_outbound_at, Some(ts("2020-04-01T00:02:00Z")));
        assert_eq!(patch.last_activity_at, None);
    }

    /// A teammate's reply after the patient's message clears the flag.
    #[test]
    fn outbound_after_inbound_clears_the_flag() {
        let body = page(
            &[
                item("ti_2", "2020-04-01T00:02:00Z", "outbound", false),
                item("ti_1", "2020-04-01T00:01:00Z", "inbound", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Outbound));
        assert_eq!(patch.awaiting_reply, Some(false));
    }

    /// An internal note after a patient message does not count as a reply.
    #[test]
    fn internal_notes_do_not_count() {
        let body = page(
            &[
                item("ti_3", "2020-04-01T00:03:00Z", "none", true),
                // A note flagged internal wins even if it carries a direction.
                item("ti_2", "2020-04-01T00:02:30Z", "outbound", true),
                item("ti_1", "2020-04-01T00:01:00Z", "inbound", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
        assert_eq!(patch.awaiting_reply, Some(true));
        assert_eq!(patch.last_outbound_at, None);
    }

    /// A window holding only notes leaves the stored state untouched.
    #[test]
    fn a_window_of_notes_changes_nothing() {
        let body = page(&[item("ti_9", "2020-04-01T00:09:00Z", "none", true)], false);
        let patch = parse_items_page(&body, Some(ts("2020-04-01T00:05:00Z"))).unwrap();
        assert!(patch.is_empty(), "{patch:?}");
    }

    /// A whole conversation without messages owes no reply.
    #[test]
    fn an_empty_conversation_awaits_nothing() {
        let patch = parse_items_page(&page(&[], false), None).unwrap();
        assert_eq!(patch.awaiting_reply, Some(false));
        assert_eq!(patch.last_message_direction, None);
        // ...but a truncated newest page of notes proves nothing.
        let notes: Vec<String> = (0..3)
            .map(|i| item(&format!("ti_{i}"), "2020-04-01T00:00:00Z", "none", true))
            .collect();
        assert!(
            parse_items_page(&page(&notes, true), None)
                .unwrap()
                .is_empty()
        );
    }

    /// Unknown and undetermined directions are skipped, never an error.
    #[test]
    fn unknown_directions_are_skipped() {
        let body = page(
            &[
                item("ti_3", "2020-04-01T00:03:00Z", "sideways", false),
                item("ti_2", "2020-04-01T00:02:00Z", "none", false),
                item("ti_1", "2020-04-01T00:01:00Z", "OUTBOUND", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Outbound));
        assert_eq!(
            ItemDirection::from_wire("sideways"),
            ItemDirection::Other("sideways".into())
        );
    }

    /// The order on the page does not matter: the newest time decides.
    #[test]
    fn the_newest_time_decides_whatever_the_order() {
        let body = page(
            &[
                item("ti_1", "2020-04-01T00:01:00Z", "outbound", false),
                item("ti_2", "2020-04-01T00:02:00.5+00:00", "inbound", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
        assert_eq!(patch.awaiting_reply, Some(true));
    }

    /// A reply stamped in the same millisecond as the patient's message answers it.
    #[test]
    fn a_reply_at_the_same_instant_answers() {
        let body = page(
            &[
                item("ti_2", "2020-04-01T00:02:00Z", "inbound", false),
                item("ti_1", "2020-04-01T00:02:00Z", "outbound", false),
            ],
            false,
        );
        let patch = parse_items_page(&body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
        assert_eq!(patch.awaiting_reply, Some(false));
    }

    /// Items without a readable time or of an odd shape are skipped.
    #[test]
    fn unreadable_items_are_skipped() {
        let body = br#"{"conversationItems":[
            {"direction":"inbound","createdAt":"soon","isInternalNote":false},
            {"direction":"inbound","isInternalNote":false},
            {"direction":7,"createdAt":"2020-04-01T00:00:00Z"},
            "text",
            {"direction":"outbound","createdAt":"2020-04-01T00:00:00Z"}
        ],"hasMore":false,"totalCount":5}"#;
        let patch = parse_items_page(body, None).unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Outbound));
        assert_eq!(patch.last_inbound_at, None);
    }

    /// A page that is not the documented shape is malformed.
    #[test]
    fn malformed_items_pages_are_errors() {
        for body in [
            "",
            "[]",
            r#"{"conversationItems":[]}"#,
            r#"{"hasMore":false}"#,
        ] {
            assert!(
                matches!(
                    parse_items_page(body.as_bytes(), None),
                    Err(ProviderError::Malformed(_))
                ),
                "{body}"
            );
        }
    }
}
