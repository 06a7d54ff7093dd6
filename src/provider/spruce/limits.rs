//! Spruce's rate-limit headers and error bodies.
//!
//! Limits are per organization, with a 60-second window for every request and a 24-hour
//! window for some (`s-ratelimit-remaining` and `s-ratelimit-daily-remaining`; a missing
//! header means that window does not limit the request). The numbers are not published
//! and the status on exhaustion is not documented (429 is the ASSUMPTION; the HTTP layer
//! retries 429 and 503 either way), so convsync stops *before* exhaustion: when a response
//! says nothing is left, the whole budget pauses until the window has surely renewed.

use std::time::Duration;

use chrono::{Days, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::http::Pause;

/// Requests left in the current minute window.
pub(super) const MINUTE_REMAINING: &str = "s-ratelimit-remaining";
/// Requests left in the current 24-hour window (sent only when one applies).
pub(super) const DAILY_REMAINING: &str = "s-ratelimit-daily-remaining";
/// Spruce's id of the request, for support tickets.
pub(super) const REQUEST_ID: &str = "s-request-id";

/// The minute window's length. Its alignment is not documented, so a full window is the
/// only wait that is certain to reach a fresh one.
const MINUTE_WINDOW: Duration = Duration::from_secs(60);
/// How long an exhausted daily budget waits before probing again, at most: the 24-hour
/// window may be rolling (capacity returns gradually) or reset at midnight UTC.
const DAILY_PROBE: Duration = Duration::from_secs(3600);

/// The pause the rate-limit headers of a successful response ask for.
pub(super) fn pacing(headers: &HeaderMap) -> Option<Pause> {
    if remaining(headers, DAILY_REMAINING) == Some(0) {
        return Some(Pause {
            wait: until_daily_probe(),
            reason: "spruce daily request budget exhausted",
        });
    }
    if remaining(headers, MINUTE_REMAINING) == Some(0) {
        return Some(Pause {
            wait: MINUTE_WINDOW,
            reason: "spruce per-minute request budget exhausted",
        });
    }
    None
}

/// Requests left in the tighter of the two windows, as far as the headers say.
pub(super) fn remaining_requests(headers: &HeaderMap) -> Option<u64> {
    [MINUTE_REMAINING, DAILY_REMAINING]
        .into_iter()
        .filter_map(|name| remaining(headers, name))
        .min()
}

/// A `…-remaining` header as a count; absent or unreadable (`nan`, `inf`) means "not
/// limited".
fn remaining(headers: &HeaderMap, name: &str) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().or_else(|| {
        // Tolerate "0.0"-style numbers; negative values mean nothing is left; a count too
        // large for a u64 is plenty.
        let count = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
        Some(count.max(0.0) as u64)
    })
}

/// An hour, or less when midnight UTC (a plausible fixed-window reset) comes first.
fn until_daily_probe() -> Duration {
    let now = Utc::now();
    let midnight = now
        .date_naive()
        .checked_add_days(Days::new(1))
        .and_then(|d| d.and_hms_opt(0, 0, 1))
        .map(|t| t.and_utc());
    midnight
        .and_then(|m| (m - now).to_std().ok())
        .map_or(DAILY_PROBE, |to_midnight| to_midnight.min(DAILY_PROBE))
}

/// Spruce's error body: `{"statusCode": 400, "type": "BAD_PARAMETER", "message": "…"}`.
/// The `type` casing is inconsistent in Spruce's own docs, so it is compared ignoring case.
#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn wire_error(body: &[u8]) -> Option<WireError> {
    serde_json::from_slice::<WireError>(body)
        .ok()
        .filter(|e| e.kind.is_some() || e.message.is_some())
}

/// Whether a body is a Spruce error object (so that a 404 comes from Spruce, not from a
/// proxy or a wrong base URL).
pub(super) fn is_spruce_error(body: &[u8]) -> bool {
    wire_error(body).is_some()
}

/// One line for logs and the run record; a 403 says plainly that the token is refused.
pub(super) fn describe_error(status: StatusCode, body: &[u8]) -> String {
    let detail = match wire_error(body) {
        Some(e) => match (e.kind, e.message) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (Some(text), None) | (None, Some(text)) => text,
            (None, None) => String::new(),
        },
        None => String::from_utf8_lossy(body).chars().take(500).collect(),
    };
    if status == StatusCode::FORBIDDEN {
        return format!(
            "the Spruce API token is wrong or has been disabled (Spruce answers 403 for both); \
             create or re-enable a token under Settings → API Access and update the secret ({detail})"
        );
    }
    detail
}

/// Whether a 400 means the saved `paginationToken` is no longer accepted (expired or
/// unknown), so that the engine restarts the walk instead of failing every cycle.
pub(super) fn is_position_rejected(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::BAD_REQUEST {
        return false;
    }
    let Some(error) = wire_error(body) else {
        return false;
    };
    let text = format!(
        "{} {}",
        error.kind.unwrap_or_default(),
        error.message.unwrap_or_default()
    )
    .to_ascii_lowercase();
    [
        "paginationtoken",
        "pagination token",
        "page token",
        "cursor",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    /// The tighter window's count is what is left; no header, no count.
    #[test]
    fn remaining_requests_is_the_tighter_window() {
        let both = headers(&[(MINUTE_REMAINING, "40"), (DAILY_REMAINING, "7")]);
        assert_eq!(remaining_requests(&both), Some(7));
        let minute = headers(&[(MINUTE_REMAINING, "40")]);
        assert_eq!(remaining_requests(&minute), Some(40));
        assert_eq!(remaining_requests(&HeaderMap::new()), None);
    }

    /// Budget left: no pause; the last request of the minute pauses a full window.
    #[test]
    fn the_minute_budget_pauses_only_when_exhausted() {
        let ok = headers(&[("s-ratelimit-limit", "100"), (MINUTE_REMAINING, "94")]);
        assert_eq!(pacing(&ok), None);
        let out = headers(&[("s-ratelimit-limit", "100"), (MINUTE_REMAINING, "0")]);
        assert_eq!(pacing(&out).map(|p| p.wait), Some(MINUTE_WINDOW));
    }

    /// Absent headers mean the window does not limit this request.
    #[test]
    fn absent_or_garbled_headers_do_not_pause() {
        assert_eq!(pacing(&HeaderMap::new()), None);
        assert_eq!(pacing(&headers(&[(MINUTE_REMAINING, "lots")])), None);
        for garbage in ["nan", "NaN", "inf", "-inf"] {
            let h = headers(&[(MINUTE_REMAINING, garbage), (DAILY_REMAINING, garbage)]);
            assert_eq!(pacing(&h), None, "{garbage}");
            assert_eq!(remaining_requests(&h), None, "{garbage}");
        }
        let huge = headers(&[(DAILY_REMAINING, "1e300"), (MINUTE_REMAINING, "2.0")]);
        assert_eq!(pacing(&huge), None);
        assert_eq!(remaining_requests(&huge), Some(2));
    }

    /// An exhausted daily budget pauses longer than a minute, and at most an hour.
    #[test]
    fn the_daily_budget_wins_over_the_minute_budget() {
        let h = headers(&[(MINUTE_REMAINING, "0"), (DAILY_REMAINING, "0")]);
        let pause = pacing(&h).unwrap();
        assert!(pause.reason.contains("daily"));
        assert!(pause.wait <= DAILY_PROBE);
        let daily_left = headers(&[(DAILY_REMAINING, "10")]);
        assert_eq!(pacing(&daily_left), None);
    }

    /// A 403 tells the operator the token is refused, with Spruce's own words.
    #[test]
    fn forbidden_explains_the_token_problem() {
        let body = br#"{"statusCode":403,"type":"FORBIDDEN","message":"The API token is invalid"}"#;
        let text = describe_error(StatusCode::FORBIDDEN, body);
        assert!(
            text.contains("token is wrong or has been disabled"),
            "{text}"
        );
        assert!(
            text.contains("FORBIDDEN: The API token is invalid"),
            "{text}"
        );
    }

    /// Other errors show `type: message`; non-JSON bodies are shown as text.
    #[test]
    fn errors_are_described_from_the_spruce_body() {
        let body = br#"{"statusCode":400,"type":"BAD_PARAMETER","message":"Invalid Contact ID"}"#;
        assert_eq!(
            describe_error(StatusCode::BAD_REQUEST, body),
            "BAD_PARAMETER: Invalid Contact ID"
        );
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }

    /// A refused page token (either casing of the type) restarts the walk; other 400s fail.
    #[test]
    fn refused_page_tokens_are_recognised() {
        let expired = br#"{"statusCode":400,"type":"BAD_PARAMETER","message":"Invalid paginationToken: page token expired"}"#;
        assert!(is_position_rejected(StatusCode::BAD_REQUEST, expired));
        let lower =
            br#"{"statusCode":400,"type":"invalid_input","message":"invalid pagination token"}"#;
        assert!(is_position_rejected(StatusCode::BAD_REQUEST, lower));
        let other = br#"{"statusCode":400,"type":"BAD_PARAMETER","message":"pageSize must be between 1 and 200"}"#;
        assert!(!is_position_rejected(StatusCode::BAD_REQUEST, other));
        assert!(!is_position_rejected(
            StatusCode::INTERNAL_SERVER_ERROR,
            expired
        ));
        assert!(!is_position_rejected(StatusCode::BAD_REQUEST, b"not json"));
    }

    /// Only Spruce-shaped bodies count as Spruce errors.
    #[test]
    fn spruce_error_bodies_are_recognised() {
        assert!(is_spruce_error(
            br#"{"statusCode":404,"type":"NOT_FOUND","message":"Not found"}"#
        ));
        assert!(!is_spruce_error(b"<html>404</html>"));
        assert!(!is_spruce_error(b"{}"));
    }
}
