//! The simulator's notion of "now".
//!
//! Every time-dependent behaviour (timestamps of new activity, token and cursor expiry,
//! rate-limit windows, the eventual-consistency delay) reads this clock, never the system
//! clock directly. It runs in real time from a configurable start instant, can be pushed
//! forward through the control API, and can be frozen so that tests get exact, repeatable
//! timestamps without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Shared simulated clock; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SimClock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    /// Simulated time (µs since the Unix epoch) at `started`.
    anchor_us: i64,
    started: Instant,
    /// Manual advances (µs), added on top of the elapsed real time.
    offset_us: AtomicI64,
    frozen: bool,
}

impl SimClock {
    /// A clock reading `start` now, then advancing in real time unless `frozen`.
    pub(crate) fn new(start: DateTime<Utc>, frozen: bool) -> Self {
        SimClock {
            inner: Arc::new(ClockInner {
                anchor_us: start.timestamp_micros(),
                started: Instant::now(),
                offset_us: AtomicI64::new(0),
                frozen,
            }),
        }
    }

    /// Current simulated time in microseconds since the Unix epoch.
    pub(crate) fn now_us(&self) -> i64 {
        let elapsed = if self.inner.frozen {
            0
        } else {
            i64::try_from(self.inner.started.elapsed().as_micros()).unwrap_or(i64::MAX / 4)
        };
        self.inner.anchor_us + elapsed + self.inner.offset_us.load(Ordering::Relaxed)
    }

    /// Current simulated time.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        us_to_datetime(self.now_us())
    }

    /// Move the clock forward (tokens, cursors and rate windows age accordingly).
    pub(crate) fn advance(&self, by: Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX / 4);
        self.inner.offset_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Whether the clock only moves when advanced explicitly.
    pub(crate) fn is_frozen(&self) -> bool {
        self.inner.frozen
    }
}

/// Microseconds since the epoch → `DateTime<Utc>` (saturating at the representable range).
pub(crate) fn us_to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Milliseconds → microseconds, saturating.
pub(crate) fn ms_to_us(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}
