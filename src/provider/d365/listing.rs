//! `GET /api/v1.0/consumer/conversations`: the active conversations of the channel, each
//! only an id and a creation time, paged by an opaque `continuationtoken` that is bound to
//! the other query parameters.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::json::{self, Object};
use crate::provider::{ConversationRecord, FollowUpKind, Page, ProviderError, RejectedRecord};
use crate::time::Timestamp;

/// Where a walk stands between pages: the token to send and the `StartTimeStamp` text of
/// its first page, so that every later page repeats it byte for byte (a token used with
/// other parameters is refused with error 30009).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ListPosition {
    /// The `continuationtoken` of the previous page.
    pub continuationtoken: String,
    /// The `StartTimeStamp` the walk started with; `None` for a full listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttimestamp: Option<String>,
}

impl ListPosition {
    /// Reads a position saved by [`ListPosition::to_value`].
    pub(super) fn from_value(value: &Value) -> Result<Self, ProviderError> {
        serde_json::from_value(value.clone())
            .map_err(|e| ProviderError::BadCursor(format!("d365 list position {value}: {e}")))
    }

    /// The JSON the engine checkpoints.
    pub(super) fn to_value(&self) -> Value {
        serde_json::json!(self)
    }
}

/// The list URL for one page. `start` is the exact `StartTimeStamp` text (or none).
pub(super) fn list_url(
    base: &Url,
    start: Option<&str>,
    page_size: u32,
    token: Option<&str>,
) -> Result<Url, ProviderError> {
    let mut url = base
        .join("api/v1.0/consumer/conversations")
        .map_err(|e| ProviderError::BadCursor(format!("cannot build the list URL: {e}")))?;
    {
        // Form encoding turns `:` into `%3A` and a `+` offset into `%2B`, as the docs ask.
        let mut query = url.query_pairs_mut();
        if let Some(start) = start {
            query.append_pair("StartTimeStamp", start);
        }
        query.append_pair("PageSize", &page_size.to_string());
        if let Some(token) = token {
            query.append_pair("ContinuationToken", token);
        }
    }
    Ok(url)
}

/// Reads one list page into active conversations, the highest creation time, and where the
/// walk continues (`start` is the `StartTimeStamp` text this walk sends).
pub(super) fn parse_list(
    body: &[u8],
    start: Option<&str>,
    messages: bool,
) -> Result<Page, ProviderError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ProviderError::Malformed("conversation list is not UTF-8".into()))?;
    let page = Object::parse(text)
        .map_err(|e| ProviderError::Malformed(format!("conversation list is not JSON: {e}")))?
        .ok_or_else(|| ProviderError::Malformed("conversation list is not a JSON object".into()))?;
    // An absent list is not "nothing active": a sweep reading it so would close everything.
    let items = page
        .array("conversations")
        .map_err(ProviderError::Malformed)?
        .ok_or_else(|| {
            ProviderError::Malformed("conversation list has no `conversations` array".into())
        })?;

    let mut out = Page::default();
    let mut undated = 0usize;
    for item in items {
        match read_item(item) {
            Ok(mut record) => {
                if record.created_at.is_none() {
                    undated += 1;
                }
                out.high_water = out.high_water.max(record.created_at);
                if messages {
                    record.detail_on_activity = Some(super::D365FollowUp::Messages.as_str());
                }
                out.records.push(record);
            }
            Err(reason) => out.rejected.push(RejectedRecord {
                reason,
                raw: item.get().to_owned(),
            }),
        }
    }
    if undated > 0 {
        out.notes.push(format!(
            "{undated} conversation(s) listed without a readable creation `timestamp`; mirrored with created_at NULL"
        ));
    }
    // Absent, null or empty token: the walk is complete. An empty page that still carries a
    // token is not the end.
    out.next = page.text("continuationtoken").map(|token| {
        ListPosition {
            continuationtoken: token,
            starttimestamp: start.map(str::to_owned),
        }
        .to_value()
    });
    Ok(out)
}

/// The channel of every conversation a source lists: a source reads one custom messaging
/// channel (the `channel-id` header), which Dynamics 365 calls a "custom" channel.
const CUSTOM_CHANNEL: &str = "custom";

/// One list item: `conversationid` (required) and `timestamp` (creation time).
fn read_item(item: &serde_json::value::RawValue) -> Result<ConversationRecord, String> {
    let object = Object::from_raw(item).ok_or("list item is not a JSON object")?;
    let id = object
        .text("conversationid")
        .ok_or("list item has no `conversationid`")?;
    let created_at: Option<Timestamp> =
        object.value("timestamp").as_ref().and_then(json::timestamp);
    let mut record = ConversationRecord::new(id, item.to_owned());
    record.created_at = created_at;
    // The endpoint lists active conversations only; closures are learned by absence.
    record.active = Some(true);
    record.channel = Some(CUSTOM_CHANNEL.to_owned());
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example page from the provider reference.
    const DOC_PAGE: &str = r#"{
  "conversations": [
    { "conversationid": "0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44", "timestamp": "2026-03-02T09:15:03.1234567Z" },
    { "conversationid": "6f0e7d12-8a4b-4b3e-b0c9-2d5e9a7c3f10", "timestamp": "2026-03-02T09:17:41.0070000Z" }
  ],
  "continuationtoken": "3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b"
}"#;

    fn base() -> Url {
        Url::parse("https://m-org.us.omnichannelengagementhub.com/").unwrap()
    }

    /// Items become active records of the custom channel with their exact JSON, creation
    /// time to the tick, and no unread count (the API reports none: unknown, not 0).
    #[test]
    fn reads_the_documented_page() {
        let page = parse_list(DOC_PAGE.as_bytes(), None, false).unwrap();
        assert_eq!(page.records.len(), 2);
        let first = &page.records[0];
        assert_eq!(first.id, "0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44");
        assert_eq!(first.active, Some(true));
        assert_eq!(first.channel.as_deref(), Some("custom"));
        assert_eq!(first.unread_count, None);
        assert_eq!(first.last_activity_at, None);
        assert_eq!(first.status, None);
        assert_eq!(
            first.raw.get(),
            r#"{ "conversationid": "0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44", "timestamp": "2026-03-02T09:15:03.1234567Z" }"#
        );
        assert_eq!(
            first.created_at.unwrap().to_rfc3339_ticks(),
            "2026-03-02T09:15:03.1234567Z"
        );
        assert_eq!(
            page.high_water.unwrap().to_rfc3339_ticks(),
            "2026-03-02T09:17:41.0070000Z"
        );
        assert_eq!(
            page.next,
            Some(serde_json::json!({"continuationtoken": "3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b"}))
        );
        assert!(page.rejected.is_empty() && page.notes.is_empty());
        assert!(first.detail_on_activity.is_none());
    }

    /// An absent, null or empty token ends the walk.
    #[test]
    fn missing_null_or_empty_token_ends_the_walk() {
        for body in [
            r#"{"conversations":[]}"#,
            r#"{"conversations":[],"continuationtoken":null}"#,
            r#"{"conversations":[],"continuationtoken":""}"#,
        ] {
            assert!(
                parse_list(body.as_bytes(), None, false)
                    .unwrap()
                    .next
                    .is_none(),
                "{body}"
            );
        }
    }

    /// An empty page that carries a token continues, keeping the walk's `StartTimeStamp`.
    #[test]
    fn empty_page_with_token_continues() {
        let body = r#"{"conversations":[],"continuationToken":"abc"}"#;
        let page =
            parse_list(body.as_bytes(), Some("2026-03-02T09:10:03.1234566Z"), false).unwrap();
        assert!(page.records.is_empty());
        assert_eq!(page.high_water, None);
        let position = ListPosition::from_value(page.next.as_ref().unwrap()).unwrap();
        assert_eq!(position.continuationtoken, "abc");
        assert_eq!(
            position.starttimestamp.as_deref(),
            Some("2026-03-02T09:10:03.1234566Z")
        );
    }

    /// The high-water mark is the maximum, whatever order the page is in.
    #[test]
    fn high_water_is_the_maximum_in_any_order() {
        let body = r#"{"conversations":[
            {"conversationid":"b","timestamp":"2026-03-02T09:17:41.0070001Z"},
            {"conversationid":"a","timestamp":"2026-03-02T09:17:41.0070000Z"}]}"#;
        let page = parse_list(body.as_bytes(), None, false).unwrap();
        assert_eq!(
            page.high_water.unwrap().to_rfc3339_ticks(),
            "2026-03-02T09:17:41.0070001Z"
        );
    }

    /// Items without an id are rejected; items without a readable time are kept with a note.
    #[test]
    fn bad_items_are_rejected_or_noted_not_fatal() {
        let body = r#"{"CONVERSATIONS":[
            {"timestamp":"2026-03-02T09:17:41Z"},
            "just a string",
            {"conversationid":null},
            {"ConversationId":"c","timestamp":"soon"},
            {"conversationid":"d"}]}"#;
        let page = parse_list(body.as_bytes(), None, true).unwrap();
        assert_eq!(page.rejected.len(), 3);
        assert!(page.rejected[0].reason.contains("conversationid"));
        assert_eq!(page.rejected[1].raw, "\"just a string\"");
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.records[0].id, "c");
        assert_eq!(page.records[0].created_at, None);
        assert_eq!(page.records[0].detail_on_activity, Some("messages"));
        assert_eq!(page.high_water, None);
        assert_eq!(page.notes.len(), 1);
    }

    /// Bodies that are not a list page are malformed, so nothing is applied.
    #[test]
    fn malformed_pages_are_errors() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"value":[]}"#,
            r#"{"conversations":{}}"#,
            "\u{0}",
        ] {
            assert!(
                matches!(
                    parse_list(body.as_bytes(), None, false),
                    Err(ProviderError::Malformed(_))
                ),
                "{body:?}"
            );
        }
        assert!(matches!(
            parse_list(&[0xff, 0xfe], None, false),
            Err(ProviderError::Malformed(_))
        ));
        // `null` reads as an empty list (a serializer dropping empty arrays).
        assert!(
            parse_list(br#"{"conversations":null}"#, None, false)
                .unwrap()
                .records
                .is_empty()
        );
    }

    /// The query carries the documented names, a URL-encoded timestamp and the token.
    #[test]
    fn list_url_encodes_parameters() {
        let url = list_url(
            &base(),
            Some("2026-03-02T09:15:03.1234567+01:00"),
            250,
            Some("t/1"),
        )
        .unwrap();
        assert_eq!(url.path(), "/api/v1.0/consumer/conversations");
        assert_eq!(
            url.query(),
            Some(
                "StartTimeStamp=2026-03-02T09%3A15%3A03.1234567%2B01%3A00&PageSize=250&ContinuationToken=t%2F1"
            )
        );
        let full = list_url(&base(), None, 50, None).unwrap();
        assert_eq!(full.query(), Some("PageSize=50"));
    }

    /// A position from another version of the program is a cursor error, not a panic.
    #[test]
    fn unreadable_positions_are_cursor_errors() {
        assert!(matches!(
            ListPosition::from_value(&serde_json::json!({"token": 1})),
            Err(ProviderError::BadCursor(_))
        ));
    }
}
