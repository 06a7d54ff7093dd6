//! Request budgets shared by every source that uses the same credential.
//!
//! Two mechanisms combine: a governor quota (the documented limit, configured) paces
//! requests up front, and pauses learned from the provider's own rate-limit headers or from
//! `Retry-After` stop all users of the budget until the provider's window resets.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// A documented request quota: `requests` per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    /// Requests allowed per window.
    pub requests: NonZeroU32,
    /// The window.
    pub per: Duration,
    /// Requests that may go out back to back. A burst of 1 spreads requests evenly, which
    /// never exceeds a fixed-window limit; larger bursts trade that for latency.
    pub burst: NonZeroU32,
}

/// One shared budget.
pub struct RequestBudget {
    limiter: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<(Instant, &'static str)>>,
}

impl std::fmt::Debug for RequestBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBudget")
            .field("limited", &self.limiter.is_some())
            .finish()
    }
}

impl RequestBudget {
    /// A budget enforcing `quota`, or only header pauses when `None`.
    pub fn new(quota: Option<RateQuota>) -> Self {
        let limiter = quota.map(|q| {
            let period = q.per / q.requests.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .expect("period is positive")
                .allow_burst(q.burst);
            RateLimiter::direct(quota)
        });
        RequestBudget {
            limiter,
            paused_until: Mutex::new(None),
        }
    }

    /// How long the budget is paused from now, and why.
    pub fn pause_remaining(&self) -> Option<(Duration, &'static str)> {
        let guard = self.paused_until.lock().expect("budget lock poisoned");
        let (until, reason) = (*guard)?;
        let now = Instant::now();
        (until > now).then(|| (until - now, reason))
    }

    /// Stops every user of the budget for `wait` (extends, never shortens, a pause).
    pub fn pause_for(&self, wait: Duration, reason: &'static str) {
        let until = Instant::now() + wait;
        let mut guard = self.paused_until.lock().expect("budget lock poisoned");
        match *guard {
            Some((existing, _)) if existing >= until => {}
            _ => *guard = Some((until, reason)),
        }
    }

    /// Waits for the quota to allow one request. Returns how long it waited.
    pub async fn acquire(&self) -> Duration {
        let start = Instant::now();
        if let Some((wait, _)) = self.pause_remaining() {
            tokio::time::sleep(wait).await;
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pauses_only_ever_grow() {
        let b = RequestBudget::new(None);
        b.pause_for(Duration::from_secs(60), "daily");
        b.pause_for(Duration::from_secs(1), "minute");
        let (left, reason) = b.pause_remaining().unwrap();
        assert!(left > Duration::from_secs(50));
        assert_eq!(reason, "daily");
    }
}
