//! HighLevel error bodies, shown whole and explained.
//!
//! `common-schemas.json` defines `{ statusCode, message, error }`, where `message` is a
//! string for 400/401 but an array of strings for 422. Every message is kept: a 422 lists
//! each rejected parameter, and dropping any of them hides the one that matters.

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// Longest body text shown when the body is not HighLevel's JSON.
const MAX_TEXT: usize = 2000;

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, rename = "traceId")]
    trace_id: Option<Value>,
}

/// A one-line description of an error response for location `location`.
pub(super) fn describe(status: StatusCode, body: &[u8], location: &str) -> String {
    let mut text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => from_json(&parsed),
        Err(_) => String::new(),
    };
    if text.is_empty() {
        text = String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(MAX_TEXT)
            .collect();
    }
    if text.is_empty() {
        text = status.canonical_reason().unwrap_or("no message").to_owned();
    }
    if let Some(hint) = hint(status, location) {
        text.push_str(" — ");
        text.push_str(&hint);
    }
    text
}

fn from_json(body: &ErrorBody) -> String {
    let messages: Vec<String> = match &body.message {
        Some(Value::Array(items)) => items.iter().filter_map(as_text).collect(),
        Some(other) => as_text(other).into_iter().collect(),
        None => Vec::new(),
    };
    let mut text = match body.error.as_ref().and_then(as_text) {
        Some(error) if messages.is_empty() => error,
        Some(error) if !messages.contains(&error) => {
            format!("{error}: {}", messages.join("; "))
        }
        _ => messages.join("; "),
    };
    if let Some(trace) = body.trace_id.as_ref().and_then(as_text) {
        text.push_str(&format!(" [traceId: {trace}]"));
    }
    text
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Null | Value::String(_) => None,
        other => Some(other.to_string()),
    }
}

fn hint(status: StatusCode, location: &str) -> Option<String> {
    match status.as_u16() {
        401 => Some(format!(
            "HighLevel does not accept the token for location {location}: a Private \
             Integration Token may have been rotated or deleted, or belong to another \
             sub-account; an OAuth app may have been uninstalled from the location (re-install \
             it and set the new refresh_token in the config)"
        )),
        403 => Some(format!(
            "the token may not read conversations of location {location}: it needs the \
             conversations.readonly scope and access to this sub-account (an agency/company \
             token does not qualify)"
        )),
        422 => Some("HighLevel rejected the search parameters".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 422 shows every message of its array, not just the first.
    #[test]
    fn unprocessable_shows_the_whole_message_array() {
        let body = br#"{"statusCode":422,"message":["limit must not be greater than 100","startAfterDate must be a number"],"error":"Unprocessable Entity"}"#;
        let text = describe(StatusCode::UNPROCESSABLE_ENTITY, body, "loc1");
        assert!(
            text.starts_with("Unprocessable Entity: limit must not be greater than 100; startAfterDate must be a number"),
            "{text}"
        );
    }

    /// A 401 (spec example) names the location and explains what to check.
    #[test]
    fn unauthorized_is_explained() {
        let body = br#"{"statusCode":401,"message":"Invalid token: access token is invalid","error":"Unauthorized"}"#;
        let text = describe(StatusCode::UNAUTHORIZED, body, "ve9EPM428kjkvShlRW1KT");
        assert!(
            text.starts_with("Unauthorized: Invalid token: access token is invalid"),
            "{text}"
        );
        assert!(
            text.contains("ve9EPM428kjkvShlRW1KT") && text.contains("refresh_token"),
            "{text}"
        );
        let text = describe(StatusCode::FORBIDDEN, b"", "loc1");
        assert!(
            text.starts_with("Forbidden") && text.contains("conversations.readonly"),
            "{text}"
        );
    }

    /// The 400 spec example and a traceId are shown; bodies that are not JSON are shown
    /// as text.
    #[test]
    fn plain_and_non_json_bodies() {
        let body = br#"{"statusCode":400,"message":"Bad Request","traceId":"abc-123"}"#;
        assert_eq!(
            describe(StatusCode::BAD_REQUEST, body, "l"),
            "Bad Request [traceId: abc-123]"
        );
        assert_eq!(
            describe(StatusCode::BAD_GATEWAY, b"<html>upstream</html>", "l"),
            "<html>upstream</html>"
        );
    }
}
