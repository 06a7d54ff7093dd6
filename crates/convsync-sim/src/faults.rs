//! Fault injection: the ways a real provider misbehaves, as per-provider knobs.
//!
//! A [`Faults`] value is plain configuration (serde, settable at start from flags and at
//! run time through the control API). [`FaultState`] adds the seeded random generator
//! and the rate-limit window that turn the configuration into per-request decisions.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::clock::ms_to_us;

/// How a 429 announces when to retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RetryAfter {
    /// No `Retry-After` header (what Spruce, Sinch and HighLevel document).
    #[default]
    None,
    /// `Retry-After: <seconds>` (what D365 documents).
    Seconds,
    /// `Retry-After: <HTTP-date>`.
    HttpDate,
}

/// An artificial request quota answered with 429 once exceeded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimitFault {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// Window length in milliseconds (fixed windows on the simulated clock).
    pub window_ms: u64,
    /// Whether and how the 429 carries `Retry-After`.
    #[serde(default)]
    pub retry_after: RetryAfter,
}

/// Added response latency, uniformly drawn from `[min_ms, max_ms]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyFault {
    /// Lower bound in milliseconds.
    pub min_ms: u64,
    /// Upper bound in milliseconds (equal to `min_ms` for a fixed delay).
    pub max_ms: u64,
}

/// Misbehaviour knobs for one provider. Every field defaults to "behave normally", so a
/// partial JSON object only changes what it names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Artificial quota answered with 429 (in addition to the provider's own documented
    /// rate limiting, which Spruce and HighLevel always apply).
    pub rate_limit: Option<RateLimitFault>,
    /// Fraction of requests answered with a 500/503 in the provider's error shape.
    pub error_5xx_ratio: f64,
    /// Added latency; may exceed the client's timeout on purpose.
    pub latency: Option<LatencyFault>,
    /// Fraction of requests whose connection is closed without any response.
    pub reset_ratio: f64,
    /// Fraction of successful JSON responses cut in half (status 200, broken body).
    pub malformed_ratio: f64,
    /// Page tokens older than this are refused with the provider's "bad token" error.
    pub page_token_ttl_ms: Option<u64>,
    /// Lifetime of access tokens issued from now on (overrides `--token-ttl`).
    pub access_token_ttl_ms: Option<u64>,
    /// A change becomes visible in listings this long after it happens.
    pub consistency_delay_ms: u64,
    /// Fraction of generated messages whose conversation shows a last-activity time
    /// ahead of the simulated clock.
    pub future_timestamp_ratio: f64,
    /// How far ahead such timestamps are, in milliseconds.
    pub future_skew_ms: u64,
    /// Whether the request faults above also hit the token endpoints (default: only the
    /// data endpoints; the real token hosts are separate services).
    pub include_token_endpoints: bool,
}

impl Faults {
    /// The consistency delay in microseconds.
    pub(crate) fn delay_us(&self) -> i64 {
        ms_to_us(self.consistency_delay_ms)
    }
}

/// What the fault layer decided for one request.
#[derive(Debug, Default)]
pub(crate) struct FaultDecision {
    pub(crate) latency: Option<Duration>,
    pub(crate) reset: bool,
    /// `Some(seconds until the window resets, header style)` when rate limited.
    pub(crate) rate_limited: Option<(u64, RetryAfter)>,
    /// 500 or 503 when the 5xx fault fires.
    pub(crate) server_error: Option<axum::http::StatusCode>,
    pub(crate) malformed: bool,
}

/// Faults plus the mutable state needed to apply them.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub(crate) faults: Faults,
    rng: StdRng,
    window_start_us: i64,
    window_count: u32,
}

impl FaultState {
    pub(crate) fn new(faults: Faults, seed: u64) -> Self {
        FaultState {
            faults,
            rng: StdRng::seed_from_u64(seed),
            window_start_us: i64::MIN,
            window_count: 0,
        }
    }

    /// Replace the configuration (the rate window restarts).
    pub(crate) fn set(&mut self, faults: Faults) {
        self.faults = faults;
        self.window_start_us = i64::MIN;
        self.window_count = 0;
    }

    fn roll(&mut self, ratio: f64) -> bool {
        ratio > 0.0 && self.rng.random::<f64>() < ratio
    }

    /// Decide the fate of one request arriving at `now_us`.
    pub(crate) fn decide(&mut self, now_us: i64) -> FaultDecision {
        let mut decision = FaultDecision::default();
        if let Some(latency) = self.faults.latency.clone() {
            let ms = if latency.max_ms > latency.min_ms {
                self.rng.random_range(latency.min_ms..=latency.max_ms)
            } else {
                latency.min_ms
            };
            decision.latency = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if self.roll(self.faults.reset_ratio) {
            decision.reset = true;
            return decision;
        }
        if let Some(limit) = self.faults.rate_limit.clone() {
            let window = ms_to_us(limit.window_ms.max(1));
            if now_us >= self.window_start_us.saturating_add(window) {
                self.window_start_us = now_us - (now_us.rem_euclid(window));
                self.window_count = 0;
            }
            self.window_count += 1;
            if self.window_count > limit.max_requests {
                let remaining_us = self.window_start_us + window - now_us;
                let secs = (remaining_us.max(0) as u64).div_ceil(1_000_000).max(1);
                decision.rate_limited = Some((secs, limit.retry_after));
                return decision;
            }
        }
        if self.roll(self.faults.error_5xx_ratio) {
            decision.server_error = Some(if self.rng.random_bool(0.5) {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            });
            return decision;
        }
        decision.malformed = self.roll(self.faults.malformed_ratio);
        decision
    }

    /// Whether the next generated message should carry a future timestamp.
    pub(crate) fn future_skew_us(&mut self) -> i64 {
        if self.roll(self.faults.future_timestamp_ratio) {
            ms_to_us(self.faults.future_skew_ms.max(1))
        } else {
            0
        }
    }
}
