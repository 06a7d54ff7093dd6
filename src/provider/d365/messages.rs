//! `GET /api/v1.0/consumer/conversation/{id}/messages`: the optional follow-up that learns
//! a conversation's last activity and who spoke last, which the list endpoint does not say.
//!
//! Messages are Bot Framework activities. Only `type = "message"` activities count (typing
//! indicators and events are not conversation activity). The sender's side comes from
//! `from.role` (ASSUMPTION, not documented by Microsoft: Bot Framework's `user` is the
//! customer; `bot`, `agent`, `skill` and other roles are the organisation's side); without a
//! role the direction stays unknown. A 404 means the conversation is closed or wrapped up.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use super::json::{self, Object};
use crate::provider::{Absence, ActivityPatch, DetailPage, Direction, ProviderError};
use crate::time::Timestamp;

/// The largest page the messages endpoint accepts (error 30008 above it).
pub(super) const PAGE_SIZE: u32 = 100;

/// Where a multi-page messages follow-up stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct MessagesPosition {
    /// The `continuationToken` of the previous page (a DateTimeOffset, sent back verbatim).
    pub continuationtoken: String,
    /// The `StartTimeStamp` of the first page, repeated on every page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttimestamp: Option<String>,
    /// The newest message seen on earlier pages, so that an older page never overwrites
    /// the direction learned from a newer one (the order of messages is not documented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<Timestamp>,
}

impl MessagesPosition {
    /// Reads a saved position.
    pub(super) fn from_value(value: &Value) -> Result<Self, ProviderError> {
        serde_json::from_value(value.clone())
            .map_err(|e| ProviderError::BadCursor(format!("d365 messages position {value}: {e}")))
    }
}

/// The messages URL of one page.
pub(super) fn messages_url(
    base: &Url,
    conversation_id: &str,
    start: Option<&str>,
    token: Option<&str>,
) -> Result<Url, ProviderError> {
    let mut url = base
        .join("api/v1.0/consumer/")
        .map_err(|e| ProviderError::BadCursor(format!("cannot build the messages URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| ProviderError::BadCursor("base URL cannot hold a path".into()))?
        .pop_if_empty()
        .extend(["conversation", conversation_id, "messages"]);
    {
        let mut query = url.query_pairs_mut();
        if let Some(start) = start {
            query.append_pair("StartTimeStamp", start);
        }
        query.append_pair("PageSize", &PAGE_SIZE.to_string());
        if let Some(token) = token {
            query.append_pair("ContinuationToken", token);
        }
    }
    Ok(url)
}

/// A message that counts as activity.
struct Message {
    at: Timestamp,
    direction: Option<Direction>,
}

/// Reads one messages page (or a 404) into an activity patch and the next position.
pub(super) fn parse_messages(
    status: reqwest::StatusCode,
    body: &[u8],
    position: &MessagesPosition,
    start: Option<&str>,
) -> Result<DetailPage, ProviderError> {
    if status == reqwest::StatusCode::NOT_FOUND {
        // "The specified conversation ID wasn't found or is already closed" (30013).
        return Ok(DetailPage {
            gone: Some(Absence::Closed),
            ..DetailPage::default()
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ProviderError::Malformed("messages page is not UTF-8".into()))?;
    let page = Object::parse(text)
        .map_err(|e| ProviderError::Malformed(format!("messages page is not JSON: {e}")))?
        .ok_or_else(|| ProviderError::Malformed("messages page is not a JSON object".into()))?;
    let items = page
        .array("messages")
        .map_err(ProviderError::Malformed)?
        .ok_or_else(|| ProviderError::Malformed("messages page has no `messages` array".into()))?;

    let messages: Vec<Message> = items.into_iter().filter_map(read_message).collect();
    let patch = activity_patch(&messages, position.newest);
    let newest = position.newest.max(messages.iter().map(|m| m.at).max());
    let token = page.text("continuationtoken");
    // A token equal to the one just sent would repeat this page forever: stop here.
    let next = token.filter(|t| *t != position.continuationtoken).map(|t| {
        serde_json::json!(MessagesPosition {
            continuationtoken: t,
            starttimestamp: start.map(str::to_owned),
            newest,
        })
    });
    Ok(DetailPage {
        record: None,
        patch: patch.filter(|p| !p.is_empty()),
        gone: None,
        next,
    })
}

/// A message activity with a readable time; other activities and unreadable items yield
/// nothing (they cannot move the last activity).
fn read_message(item: &RawValue) -> Option<Message> {
    let object = Object::from_raw(item)?;
    if let Some(kind) = object.text("type")
        && !kind.eq_ignore_ascii_case("message")
    {
        return None;
    }
    let at = object
        .value("timestamp")
        .as_ref()
        .and_then(json::timestamp)
        .or_else(|| object.value("messageid").as_ref().and_then(json::timestamp))?;
    let direction = object
        .object("from")
        .and_then(|from| from.text("role"))
        .map(|role| direction_of_role(&role));
    Some(Message { at, direction })
}

/// Bot Framework `from.role`: `user` is the customer; every other role speaks for the
/// organisation (agent, bot, skill).
fn direction_of_role(role: &str) -> Direction {
    match role.to_ascii_lowercase().as_str() {
        "user" | "customer" | "consumer" | "enduser" => Direction::Inbound,
        _ => Direction::Outbound,
    }
}

/// The facts a page of messages proves. The direction and reply state come from the newest
/// message, and only when it is newer than anything seen on earlier pages of the same
/// follow-up; the later of two equal timestamps is the one listed last.
fn activity_patch(messages: &[Message], seen_newest: Option<Timestamp>) -> Option<ActivityPatch> {
    let newest_index = messages
        .iter()
        .enumerate()
        .max_by_key(|(i, m)| (m.at, *i))
        .map(|(i, _)| i)?;
    let newest = &messages[newest_index];
    let newest_of = |d: Direction| {
        messages
            .iter()
            .filter(|m| m.direction == Some(d))
            .map(|m| m.at)
            .max()
    };
    let mut patch = ActivityPatch {
        last_activity_at: Some(newest.at),
        last_inbound_at: newest_of(Direction::Inbound),
        last_outbound_at: newest_of(Direction::Outbound),
        ..ActivityPatch::default()
    };
    if seen_newest.is_none_or(|seen| newest.at >= seen) {
        patch.last_message_direction = newest.direction;
        patch.awaiting_reply = newest.direction.map(|d| d == Direction::Inbound);
    }
    Some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    /// The response sample of Microsoft's messages page, with roles added.
    const DOC_PAGE: &str = r#"{
  "messages": [
    { "type": "message", "attachments": [], "text": "Message 1", "messageId": "12313",
      "timestamp": "2025-04-15T12:37:00+00:00", "from": {"role": "user"}, "channelData": {} },
    { "type": "message", "attachments": [], "text": "Message 2", "messageId": "12314",
      "timestamp": "2025-04-15T12:38:00+00:00", "from": {"role": "agent"}, "channelData": {} }
  ],
  "continuationToken": "2025-04-15T12:38:00+00:00"
}"#;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    /// The newest message sets last activity and direction; the DateTimeOffset token
    /// continues the follow-up with the same `StartTimeStamp`.
    #[test]
    fn reads_the_documented_page() {
        let start = "2025-04-15T12:00:00.0000000Z";
        let page = parse_messages(
            StatusCode::OK,
            DOC_PAGE.as_bytes(),
            &MessagesPosition::default(),
            Some(start),
        )
        .unwrap();
        let patch = page.patch.unwrap();
        assert_eq!(patch.last_activity_at, Some(at("2025-04-15T12:38:00Z")));
        assert_eq!(patch.last_inbound_at, Some(at("2025-04-15T12:37:00Z")));
        assert_eq!(patch.last_outbound_at, Some(at("2025-04-15T12:38:00Z")));
        assert_eq!(patch.last_message_direction, Some(Direction::Outbound));
        assert_eq!(patch.awaiting_reply, Some(false));
        let next = MessagesPosition::from_value(page.next.as_ref().unwrap()).unwrap();
        assert_eq!(next.continuationtoken, "2025-04-15T12:38:00+00:00");
        assert_eq!(next.starttimestamp.as_deref(), Some(start));
        assert_eq!(next.newest, Some(at("2025-04-15T12:38:00Z")));
        assert!(page.gone.is_none());
    }

    /// A 404 marks the conversation closed.
    #[test]
    fn not_found_means_closed() {
        let body = br#"{"title":"Not Found","status":404,"errorCode":30013}"#;
        let page = parse_messages(
            StatusCode::NOT_FOUND,
            body,
            &MessagesPosition::default(),
            None,
        )
        .unwrap();
        assert_eq!(page.gone, Some(Absence::Closed));
        assert!(page.patch.is_none() && page.next.is_none());
    }

    /// An older page never overwrites the direction learned from a newer one.
    #[test]
    fn older_pages_do_not_overwrite_the_direction() {
        let position = MessagesPosition {
            continuationtoken: "x".into(),
            starttimestamp: None,
            newest: Some(at("2025-04-16T00:00:00Z")),
        };
        let page = parse_messages(StatusCode::OK, DOC_PAGE.as_bytes(), &position, None).unwrap();
        let patch = page.patch.unwrap();
        assert_eq!(patch.last_message_direction, None);
        assert_eq!(patch.awaiting_reply, None);
        assert_eq!(patch.last_activity_at, Some(at("2025-04-15T12:38:00Z")));
    }

    /// Typing and events do not count; unknown roles leave the direction unknown; epoch-ms
    /// `messageId` stands in for a missing timestamp; lower-case keys are accepted.
    #[test]
    fn only_messages_count_and_roles_may_be_missing() {
        let body = r#"{"messages":[
            {"type":"message","messageid":"1744720620000","from":{"role":"user"}},
            {"type":"typing","timestamp":"2025-04-15T13:00:00Z","from":{"role":"bot"}},
            {"type":"event","name":"AgentAccepted","timestamp":"2025-04-15T13:00:00Z"},
            {"type":"message","timestamp":"2025-04-15T12:50:00.1234567Z","from":{}},
            "garbage"
        ],"continuationtoken":null}"#;
        let page = parse_messages(
            StatusCode::OK,
            body.as_bytes(),
            &MessagesPosition::default(),
            None,
        )
        .unwrap();
        let patch = page.patch.unwrap();
        assert_eq!(
            patch.last_activity_at,
            Some(at("2025-04-15T12:50:00.1234567Z"))
        );
        assert_eq!(patch.last_inbound_at, Some(at("2025-04-15T12:37:00Z")));
        assert_eq!(patch.last_outbound_at, None);
        assert_eq!(patch.last_message_direction, None);
        assert!(page.next.is_none());
    }

    /// A customer message last means a reply is owed.
    #[test]
    fn inbound_last_means_awaiting_reply() {
        let body = r#"{"messages":[
            {"type":"message","timestamp":"2025-04-15T12:37:00Z","from":{"role":"bot"}},
            {"type":"message","timestamp":"2025-04-15T12:37:00Z","from":{"Role":"User"}}]}"#;
        let patch = parse_messages(
            StatusCode::OK,
            body.as_bytes(),
            &MessagesPosition::default(),
            None,
        )
        .unwrap()
        .patch
        .unwrap();
        assert_eq!(patch.last_message_direction, Some(Direction::Inbound));
        assert_eq!(patch.awaiting_reply, Some(true));
    }

    /// No messages: nothing to patch, and an empty page with a new token continues.
    #[test]
    fn empty_pages_patch_nothing() {
        let page = parse_messages(
            StatusCode::OK,
            br#"{"messages":[]}"#,
            &MessagesPosition::default(),
            None,
        )
        .unwrap();
        assert!(page.patch.is_none() && page.next.is_none());
        let page = parse_messages(
            StatusCode::OK,
            br#"{"messages":[],"continuationToken":"2025-04-15T12:38:00Z"}"#,
            &MessagesPosition::default(),
            None,
        )
        .unwrap();
        assert!(page.patch.is_none() && page.next.is_some());
    }

    /// The same token twice ends the follow-up instead of looping.
    #[test]
    fn a_repeated_token_ends_the_follow_up() {
        let position = MessagesPosition {
            continuationtoken: "2025-04-15T12:38:00+00:00".into(),
            ..MessagesPosition::default()
        };
        let page = parse_messages(StatusCode::OK, DOC_PAGE.as_bytes(), &position, None).unwrap();
        assert!(page.next.is_none());
    }

    /// Malformed bodies are errors.
    #[test]
    fn malformed_pages_are_errors() {
        for body in ["", "[]", "{}", r#"{"messages":3}"#] {
            assert!(matches!(
                parse_messages(
                    StatusCode::OK,
                    body.as_bytes(),
                    &MessagesPosition::default(),
                    None
                ),
                Err(ProviderError::Malformed(_))
            ));
        }
    }

    /// The conversation id is one path segment, escaped, and the query uses the documented
    /// names.
    #[test]
    fn messages_url_escapes_the_id() {
        let base = Url::parse("http://127.0.0.1:9000/").unwrap();
        let url = messages_url(
            &base,
            "a/b c",
            Some("2025-04-15T12:37:00.0000000Z"),
            Some("2025-04-15T12:38:00+00:00"),
        )
        .unwrap();
        assert_eq!(
            url.path(),
            "/api/v1.0/consumer/conversation/a%2Fb%20c/messages"
        );
        assert_eq!(
            url.query(),
            Some(
                "StartTimeStamp=2025-04-15T12%3A37%3A00.0000000Z&PageSize=100&ContinuationToken=2025-04-15T12%3A38%3A00%2B00%3A00"
            )
        );
    }
}
