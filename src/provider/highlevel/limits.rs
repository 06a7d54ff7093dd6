//! HighLevel's rate-limit headers, turned into pauses of the location's request budget.
//!
//! HighLevel limits each app per location to a burst window (100 requests per 10 s) and a
//! daily quota (200,000), and reports both on every response. The engine already spaces
//! requests by the configured quota; these headers add what it cannot know: other
//! integrations of the same app spending the same budget, and the daily quota.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Days, Utc};
use reqwest::header::{DATE, HeaderMap};

use crate::http::Pause;

/// Requests left in the current burst window.
const BURST_REMAINING: &str = "x-ratelimit-remaining";
/// Length of the burst window in milliseconds.
const BURST_INTERVAL_MS: &str = "x-ratelimit-interval-milliseconds";
/// Requests left today.
const DAILY_REMAINING: &str = "x-ratelimit-daily-remaining";

/// The burst window when the response does not state it.
const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(10);
/// Shortest pause for an exhausted daily quota, so a reset estimated a moment away does
/// not turn into a burst of refused requests.
const MIN_DAILY_PAUSE: Duration = Duration::from_secs(60);

/// The pause the headers of a successful response ask for, if any.
///
/// An exhausted daily quota pauses the location until the next midnight UTC
/// (**ASSUMPTION**: HighLevel does not document when the day resets), measured on the
/// server's `Date` header when present so that local clock skew does not matter. An
/// exhausted burst window pauses for the window's length.
/// Where the location's current burst window began, as far as its responses tell.
///
/// An exhausted window pauses the location only until that window ends, not for a whole
/// interval from the response that exhausted it: requests spaced at the configured quota
/// exhaust each window just before it resets, and a full-interval pause then idled most
/// of the next window too (67 % utilisation in `benches/sync`).
#[derive(Debug, Default)]
pub(super) struct BurstWindow {
    state: Mutex<WindowState>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// When the first response counted in the current window arrived. The window began
    /// at or before it, so "this + interval" is at or after the window's reset.
    started: Option<Instant>,
    /// `X-RateLimit-Remaining` of the previous response: a larger value means a new window.
    last_remaining: Option<u64>,
}

impl BurstWindow {
    /// The pause the headers of a successful response call for.
    pub(super) fn pacing(&self, headers: &HeaderMap) -> Option<Pause> {
        self.pacing_at(headers, Instant::now())
    }

    fn pacing_at(&self, headers: &HeaderMap, now: Instant) -> Option<Pause> {
        if number(headers, DAILY_REMAINING) == Some(0) {
            let server_now = server_time(headers).unwrap_or_else(Utc::now);
            return Some(Pause {
                wait: until_next_utc_midnight(server_now).max(MIN_DAILY_PAUSE),
                reason: "highlevel daily quota exhausted",
            });
        }
        let remaining = number(headers, BURST_REMAINING)?;
        let interval = number(headers, BURST_INTERVAL_MS)
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_BURST_WINDOW, Duration::from_millis);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.last_remaining.is_none_or(|last| remaining > last) {
            state.started = Some(now);
        }
        state.last_remaining = Some(remaining);
        if remaining > 0 {
            return None;
        }
        // Never seen the window begin (first response already at 0): a whole interval. The
        // interval is the provider's number: a window end no clock can hold means a whole
        // interval too (the HTTP layer clamps it to `http.max_provider_wait`).
        let wait = match state
            .started
            .and_then(|started| started.checked_add(interval))
        {
            Some(end) if state.started != Some(now) => end.saturating_duration_since(now),
            _ => interval,
        };
        (!wait.is_zero()).then_some(Pause {
            wait,
            reason: "highlevel burst window exhausted",
        })
    }
}

/// Requests left in the tighter of the burst and daily windows, as far as the headers say.
pub(super) fn remaining_requests(headers: &HeaderMap) -> Option<u64> {
    [BURST_REMAINING, DAILY_REMAINING]
        .into_iter()
        .filter_map(|name| number(headers, name))
        .min()
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn server_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(DATE)?.to_str().ok()?;
    let at: SystemTime = httpdate::parse_http_date(text).ok()?;
    Some(DateTime::<Utc>::from(at))
}

fn until_next_utc_midnight(now: DateTime<Utc>) -> Duration {
    let next = now
        .date_naive()
        .checked_add_days(Days::new(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc());
    next.and_then(|n| (n - now).to_std().ok())
        .unwrap_or(Duration::from_secs(24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn pacing(headers: &HeaderMap) -> Option<Pause> {
        BurstWindow::default().pacing(headers)
    }

    /// The tighter of the burst and daily counts is what is left.
    #[test]
    fn remaining_requests_is_the_tighter_window() {
        let h = headers(&[
            ("X-RateLimit-Remaining", "57"),
            ("X-RateLimit-Daily-Remaining", "3"),
        ]);
        assert_eq!(remaining_requests(&h), Some(3));
        assert_eq!(remaining_requests(&HeaderMap::new()), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// Budget left in both windows: no pause.
    #[test]
    fn remaining_budget_means_no_pause() {
        let h = headers(&[
            ("X-RateLimit-Remaining", "57"),
            ("X-RateLimit-Interval-Milliseconds", "10000"),
            ("X-RateLimit-Daily-Remaining", "199000"),
        ]);
        assert_eq!(pacing(&h), None);
        assert_eq!(pacing(&HeaderMap::new()), None);
    }

    /// An exhausted burst window pauses for the window the headers state.
    #[test]
    fn exhausted_burst_window_pauses_for_its_interval() {
        let h = headers(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Interval-Milliseconds", "2500"),
        ]);
        assert_eq!(pacing(&h).unwrap().wait, Duration::from_millis(2500));
        let h = headers(&[("X-RateLimit-Remaining", "0")]);
        assert_eq!(pacing(&h).unwrap().wait, DEFAULT_BURST_WINDOW);
    }

    /// An exhausted daily quota pauses until midnight UTC by the server's clock.
    #[test]
    fn exhausted_daily_quota_pauses_until_server_midnight() {
        let h = headers(&[
            ("X-RateLimit-Daily-Remaining", "0"),
            ("X-RateLimit-Remaining", "0"),
            ("Date", "Mon, 02 Mar 2026 21:00:00 GMT"),
        ]);
        let pause = pacing(&h).unwrap();
        assert_eq!(pause.wait, Duration::from_secs(3 * 3600));
        assert!(pause.reason.contains("daily"));
        let h = headers(&[
            ("X-RateLimit-Daily-Remaining", "0"),
            ("Date", "Mon, 02 Mar 2026 23:59:59 GMT"),
        ]);
        assert_eq!(pacing(&h).unwrap().wait, MIN_DAILY_PAUSE);
    }

    /// Unreadable header values are ignored, never a panic.
    #[test]
    fn exhausted_window_pauses_only_until_the_window_that_began_with_it_ends() {
        let window = BurstWindow::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let burst = |remaining: &str| {
            headers(&[
                ("X-RateLimit-Remaining", remaining),
                ("X-RateLimit-Interval-Milliseconds", "10000"),
            ])
        };
        assert_eq!(window.pacing_at(&burst("99"), at(0)), None);
        assert_eq!(window.pacing_at(&burst("1"), at(9_800)), None);
        let pause = window.pacing_at(&burst("0"), at(9_900)).unwrap();
        assert_eq!(pause.wait, Duration::from_millis(100));
        // The next window begins with a larger remaining count.
        assert_eq!(window.pacing_at(&burst("99"), at(10_050)), None);
        let pause = window.pacing_at(&burst("0"), at(12_050)).unwrap();
        assert_eq!(pause.wait, Duration::from_millis(8_000));
    }

    /// A window length of u64::MAX milliseconds pauses (for the HTTP layer to clamp)
    /// instead of panicking.
    #[test]
    fn huge_window_length_does_not_panic() {
        let window = BurstWindow::default();
        let start = Instant::now();
        let burst = |remaining: &str| {
            headers(&[
                ("X-RateLimit-Remaining", remaining),
                ("X-RateLimit-Interval-Milliseconds", "18446744073709551615"),
            ])
        };
        assert_eq!(window.pacing_at(&burst("5"), start), None);
        let later = start + Duration::from_millis(10);
        let pause = window.pacing_at(&burst("0"), later).unwrap();
        assert!(
            pause.wait >= Duration::from_millis(u64::MAX / 2),
            "{pause:?}"
        );
    }

    #[test]
    fn garbage_headers_are_ignored() {
        let h = headers(&[
            ("X-RateLimit-Remaining", "none"),
            ("X-RateLimit-Daily-Remaining", "-1"),
        ]);
        assert_eq!(pacing(&h), None);
    }
}
