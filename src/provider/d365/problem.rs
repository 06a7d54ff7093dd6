//! Error bodies: RFC 7807 problem details (`type`, `title`, `status`, `detail`) read
//! leniently, plus the documented numeric codes 30001–30016 wherever the body carries them
//! (the docs do not say which field does, so every `*code*` field and the text are searched).

use reqwest::StatusCode;
use serde_json::Value;

/// The longest error text shown, so that an HTML error page does not flood the logs.
const MAX_SHOWN: usize = 600;

/// The documented error codes and what they mean (Microsoft's error-handling page).
const CODES: &[(u32, &str)] = &[
    (30001, "the organization id is not valid"),
    (30002, "the channel id is not valid"),
    (30003, "the requested operation is invalid or not supported"),
    (30004, "the channel configuration does not exist"),
    (30005, "the conversation id is not valid"),
    (30006, "the timestamp is not valid"),
    (
        30007,
        "the conversation page size must be null or between 1 and 250",
    ),
    (
        30008,
        "the message page size must be null or between 1 and 100",
    ),
    (
        30009,
        "the continuation token is invalid; use the same token as before",
    ),
    (
        30010,
        "the conversation context is too large (at most 100 entries)",
    ),
    (
        30011,
        "the message text is too long (at most 6,000 characters)",
    ),
    (30012, "the request body is missing or malformed"),
    (30013, "the conversation does not exist"),
    (
        30014,
        "the channel configuration is not linked to a workstream",
    ),
    (
        30015,
        "the response could not be serialized (contact Microsoft support)",
    ),
    (30016, "the message activity has no text or attachments"),
];

/// The continuation token was refused (expired, or reused with other parameters).
pub(super) const BAD_CONTINUATION_TOKEN: u32 = 30009;

/// What an error body says, as far as it can be read.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Problem {
    /// RFC 7807 `title`.
    pub title: Option<String>,
    /// RFC 7807 `detail`.
    pub detail: Option<String>,
    /// RFC 7807 `type`, unless it is the meaningless `about:blank`.
    pub kind: Option<String>,
    /// A documented 300xx code found in the body.
    pub code: Option<u32>,
    /// A trace id the service put in the body (ASP.NET `traceId`).
    pub trace_id: Option<String>,
    /// The body as text when it is not JSON.
    pub text: Option<String>,
}

impl Problem {
    /// Reads any body; never fails.
    pub(super) fn parse(body: &[u8]) -> Problem {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            return Problem {
                code: code_in_text(&text),
                text: (!text.is_empty()).then(|| shorten(&text)),
                ..Problem::default()
            };
        };
        let field = |name: &str| -> Option<String> {
            let object = value.as_object()?;
            let found = object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)?;
            match found {
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let title = field("title");
        let detail = field("detail").or_else(|| field("message"));
        let code = code_in_value(&value, 0)
            .or_else(|| detail.as_deref().and_then(code_in_text))
            .or_else(|| title.as_deref().and_then(code_in_text));
        let is_problem = title.is_some() || detail.is_some() || code.is_some();
        Problem {
            title,
            detail,
            kind: field("type").filter(|t| t != "about:blank"),
            code,
            trace_id: field("traceId"),
            text: (!is_problem).then(|| shorten(&value.to_string())),
        }
    }

    /// One line for logs and `sync_runs.error`.
    pub(super) fn describe(&self, status: StatusCode) -> String {
        let mut parts = Vec::new();
        if let Some(title) = &self.title {
            parts.push(title.clone());
        }
        if let Some(detail) = &self.detail {
            parts.push(detail.clone());
        }
        if let Some(code) = self.code {
            let meaning = CODES
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, m)| *m)
                .unwrap_or("undocumented code");
            parts.push(format!("error {code}: {meaning}"));
        }
        if let Some(text) = &self.text {
            parts.push(text.clone());
        }
        if parts.is_empty() {
            parts.push(
                status
                    .canonical_reason()
                    .unwrap_or("no error description")
                    .to_owned(),
            );
        }
        let mut line = parts.join(": ");
        if let Some(kind) = &self.kind {
            line.push_str(&format!(" (type {kind})"));
        }
        if let Some(trace) = &self.trace_id {
            line.push_str(&format!(" [traceId: {trace}]"));
        }
        shorten(&line)
    }
}

/// Documented codes live in the 30001–30099 range; anything else is some other number.
fn is_d365_code(n: u64) -> bool {
    (30001..=30099).contains(&n)
}

/// A 300xx code in any field whose name contains `code` (`errorCode`, `code`,
/// `error.code`, `extensions.errorCode`, ...), searched a few levels deep.
fn code_in_value(value: &Value, depth: usize) -> Option<u32> {
    if depth > 3 {
        return None;
    }
    let object = value.as_object()?;
    for (key, v) in object {
        if key.to_ascii_lowercase().contains("code") {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            if let Some(n) = n.filter(|n| is_d365_code(*n)) {
                return u32::try_from(n).ok();
            }
        }
    }
    object.values().find_map(|v| code_in_value(v, depth + 1))
}

/// A standalone five-digit number `300xx` in a message text.
fn code_in_text(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 5
                && let Some(n) = text[start..i]
                    .parse::<u64>()
                    .ok()
                    .filter(|n| is_d365_code(*n))
            {
                return u32::try_from(n).ok();
            }
        } else {
            i += 1;
        }
    }
    None
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_SHOWN {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(MAX_SHOWN).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented RFC 7807 sample reads into title and detail.
    #[test]
    fn reads_the_documented_sample() {
        let body = br#"{"type":"https://en.wikipedia.org/wiki/Square_root","title":"Bad Input","status":400,"detail":"Negative or complex numbers are not allowed."}"#;
        let p = Problem::parse(body);
        assert_eq!(p.title.as_deref(), Some("Bad Input"));
        assert_eq!(
            p.detail.as_deref(),
            Some("Negative or complex numbers are not allowed.")
        );
        assert_eq!(p.code, None);
        let line = p.describe(StatusCode::BAD_REQUEST);
        assert!(line.starts_with("Bad Input: Negative or complex"), "{line}");
        assert!(line.contains("Square_root"), "{line}");
    }

    /// The 300xx code is found whatever field carries it, and is explained.
    #[test]
    fn finds_the_error_code_anywhere() {
        for body in [
            &br#"{"title":"Bad Request","errorCode":30009}"#[..],
            br#"{"Title":"Bad Request","ErrorCode":"30009"}"#,
            br#"{"title":"x","extensions":{"code":30009}}"#,
            br#"{"error":{"code":"30009","message":"token"}}"#,
            br#"{"title":"Bad Request","detail":"Error 30009: invalid continuation token"}"#,
            b"30009 - The provided continuation token is invalid",
        ] {
            let p = Problem::parse(body);
            assert_eq!(
                p.code,
                Some(BAD_CONTINUATION_TOKEN),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                p.describe(StatusCode::BAD_REQUEST)
                    .contains("use the same token")
            );
        }
    }

    /// Numbers that are not D365 codes (status, trace ids) are not taken for one.
    #[test]
    fn ignores_other_numbers() {
        let p = Problem::parse(br#"{"status":400,"code":400,"detail":"id 123456 at 12345"}"#);
        assert_eq!(p.code, None);
    }

    /// Bodies that are not JSON, or JSON of another shape, are still shown, shortened.
    #[test]
    fn shows_anything_else_as_text() {
        let html = format!("<html>{}</html>", "x".repeat(5000));
        let line = Problem::parse(html.as_bytes()).describe(StatusCode::BAD_GATEWAY);
        assert!(
            line.starts_with("<html>") && line.chars().count() <= MAX_SHOWN + 1,
            "{line}"
        );
        let other = Problem::parse(br#"{"error":"invalid_token"}"#);
        assert!(
            other
                .describe(StatusCode::UNAUTHORIZED)
                .contains("invalid_token")
        );
        assert_eq!(
            Problem::parse(b"").describe(StatusCode::SERVICE_UNAVAILABLE),
            "Service Unavailable"
        );
    }

    /// The trace id the service includes is kept for support requests.
    #[test]
    fn keeps_the_trace_id() {
        let p = Problem::parse(br#"{"title":"Not Found","status":404,"traceId":"00-abc-01-00"}"#);
        assert!(
            p.describe(StatusCode::NOT_FOUND)
                .ends_with("[traceId: 00-abc-01-00]")
        );
    }
}
