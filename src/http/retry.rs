//! Which failures are worth another try, and how long to wait before it.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::retry::Backoff;

/// How transient failures are retried: jittered exponential backoff between `min_delay`
/// and `max_delay`, at most `max_retries` times per request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// The first backoff delay.
    pub min_delay: Duration,
    /// The longest backoff delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The schedule of this policy: doubling, with full jitter (a `Retry-After` replaces
    /// a wait, `ApiClient::send`).
    pub fn backoff(&self) -> Backoff {
        Backoff::doubling(self.min_delay, self.max_delay)
            .with_max_retries(self.max_retries)
            .with_jitter()
    }
}

/// Statuses that a later attempt may turn into a success.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Reads `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the
/// past means "now".
///
/// The value comes from the provider, so nothing about it is trusted: a number too large
/// for a [`Duration`] (`99999999999999999999`, `1e300`) saturates at [`Duration::MAX`]
/// instead of panicking, for the caller to clamp to `http.max_provider_wait`; negative
/// numbers, `nan`, `inf` and other garbage are treated as absent (the backoff applies).
pub fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_delay_seconds(value).or_else(|| {
        let when = httpdate::parse_http_date(value).ok()?;
        Some(
            when.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    })
}

/// A provider-given count of seconds (digits, or a finite non-negative decimal), saturating
/// at [`Duration::MAX`]; `None` for anything else.
pub fn parse_delay_seconds(value: &str) -> Option<Duration> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still a (very long) number of seconds.
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let seconds = value.parse::<f64>().ok()?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after(&headers("2")),
            Some(Duration::from_secs(2))
        );
        let future = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&headers(&httpdate::fmt_http_date(future))).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&headers("soon")), None);
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    /// Numbers too large for a `Duration` saturate (the HTTP layer clamps them to
    /// `http.max_provider_wait`) instead of panicking.
    #[test]
    fn huge_retry_after_saturates_instead_of_panicking() {
        for huge in [
            "1e300",
            "18446744073709551615",
            "99999999999999999999",
            "184467440737095516150000000000",
            "1.9e19",
        ] {
            let wait = parse_retry_after(&headers(huge)).unwrap();
            assert!(wait >= Duration::from_secs(u64::MAX), "{huge}: {wait:?}");
        }
        assert_eq!(
            parse_retry_after(&headers("999999")),
            Some(Duration::from_secs(999_999))
        );
        assert_eq!(
            parse_retry_after(&headers("1.5")),
            Some(Duration::from_millis(1500))
        );
        let far = parse_retry_after(&headers("Fri, 31 Dec 9999 23:59:59 GMT")).unwrap();
        assert!(far > Duration::from_secs(7000 * 365 * 86_400), "{far:?}");
    }

    /// Negative, not-a-number and infinite values are treated as absent.
    #[test]
    fn garbage_retry_after_is_absent() {
        for garbage in [
            "-1", "-0.5", "-1e300", "nan", "NaN", "inf", "-inf", "infinity", "+inf", "1e", "",
            "0x10", "5 s",
        ] {
            assert_eq!(parse_retry_after(&headers(garbage)), None, "{garbage:?}");
        }
    }

    /// The default policy waits 0.5 s, 1 s, 2 s … (each up to double with jitter), six
    /// times at most.
    #[test]
    fn the_default_policy_doubles_from_half_a_second_six_times() {
        let backoff = RetryPolicy::default().backoff();
        assert_eq!(backoff.max_retries, Some(6));
        assert!(backoff.jitter);
        let waits: Vec<u64> = (1..=7)
            .map(|n| backoff.delay(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16_000, 32_000]);
    }

    #[test]
    fn only_transient_statuses_are_retryable() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 422] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
