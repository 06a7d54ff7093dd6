//! Small helpers shared by the provider front-ends: query/form parsing, credentials,
//! timestamp formats, JSON responses.
//!
//! Query strings are parsed by hand instead of with axum's `Query` extractor so that a
//! malformed parameter produces the *provider's* error body, never axum's plain-text
//! rejection.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde::Serialize;

use super::clock::us_to_datetime;
use super::ids::hash_all;

/// Decoded query-string or form parameters, in order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parse `a=1&b=2` (percent-decoding; `+` means space, as browsers and reqwest send).
    pub(crate) fn parse(raw: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Parse a form body.
    pub(crate) fn parse_form(body: &[u8]) -> Params {
        Params(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// First value of `name` (exact name).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// First value of `name`, matching the name case-insensitively (ASP.NET style).
    pub(crate) fn get_ci(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, also splitting comma-separated lists.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name || k == &format!("{name}[]"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// User and password of an `Authorization: Basic …` header.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = super::ids::base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Fingerprint of the parameters a page token is bound to.
pub(crate) fn fingerprint(parts: &[&str]) -> u64 {
    let hashes: Vec<u64> = parts
        .iter()
        .map(|p| hash_all(&p.bytes().map(u64::from).collect::<Vec<_>>()))
        .collect();
    hash_all(&hashes)
}

/// Parse an RFC 3339 / ISO 8601 timestamp that carries a zone (`Z` or `±hh:mm`).
pub(crate) fn parse_instant_us(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.timestamp_micros())
}

/// `2026-03-02T09:15:03.123Z` (millisecond precision, `Z`).
pub(crate) fn rfc3339_ms(us: i64) -> String {
    us_to_datetime(us).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `2026-03-02T09:15:03.1234560Z` (seven fractional digits, as .NET prints ticks).
pub(crate) fn dotnet_ticks(us: i64) -> String {
    let dt = us_to_datetime(us);
    format!(
        "{}.{:07}Z",
        dt.format("%Y-%m-%dT%H:%M:%S"),
        us.rem_euclid(1_000_000) * 10
    )
}

/// Microseconds → epoch milliseconds.
pub(crate) fn epoch_ms(us: i64) -> i64 {
    us.div_euclid(1000)
}

/// A JSON response with a status.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}

/// Add a header to a response when the value is a valid header value.
pub(crate) fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = axum::http::HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
