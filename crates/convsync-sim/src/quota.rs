//! The providers' own documented rate limits (fixed windows on the simulated clock),
//! distinct from the artificial rate-limit fault.

/// A burst window plus an optional daily window.
#[derive(Clone, Debug)]
pub(crate) struct Quota {
    limit: u32,
    window_us: i64,
    window_start_us: i64,
    used: u32,
    daily_limit: Option<u32>,
    day_start_us: i64,
    day_used: u32,
}

/// Outcome of counting one request against a quota.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QuotaStatus {
    pub(crate) allowed: bool,
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    pub(crate) window_ms: u64,
    pub(crate) daily_limit: Option<u32>,
    pub(crate) daily_remaining: Option<u32>,
}

const DAY_US: i64 = 86_400 * 1_000_000;

impl Quota {
    pub(crate) fn new(limit: u32, window_us: i64, daily_limit: Option<u32>) -> Self {
        Quota {
            limit,
            window_us: window_us.max(1),
            window_start_us: i64::MIN,
            used: 0,
            daily_limit,
            day_start_us: i64::MIN,
            day_used: 0,
        }
    }

    /// Count a request at `now_us`; refused requests do not consume quota.
    pub(crate) fn hit(&mut self, now_us: i64) -> QuotaStatus {
        if now_us >= self.window_start_us.saturating_add(self.window_us) {
            self.window_start_us = now_us - now_us.rem_euclid(self.window_us);
            self.used = 0;
        }
        if now_us >= self.day_start_us.saturating_add(DAY_US) {
            self.day_start_us = now_us - now_us.rem_euclid(DAY_US);
            self.day_used = 0;
        }
        let daily_ok = self.daily_limit.is_none_or(|d| self.day_used < d);
        let allowed = self.used < self.limit && daily_ok;
        if allowed {
            self.used += 1;
            self.day_used += 1;
        }
        QuotaStatus {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            window_ms: u64::try_from(self.window_us / 1000).unwrap_or(0),
            daily_limit: self.daily_limit,
            daily_remaining: self.daily_limit.map(|d| d.saturating_sub(self.day_used)),
        }
    }
}
