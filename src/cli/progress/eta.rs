//! Rates and ETAs for the progress display: a rate over a sliding window (an average since
//! the start keeps falling through every pause) and a time left from a provider's total,
//! which is a claim, not a fact: Spruce caches `totalCount` for a minute, Sinch reports
//! `0` on later pages, and any provider can send garbage.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back a rate looks: recent enough to show a slowdown, long enough not to
/// flicker with each page.
pub(super) const RATE_WINDOW: Duration = Duration::from_secs(10);

/// A provider total above this is not believed (no source holds a billion conversations;
/// a larger figure is a broken or hostile answer).
pub(super) const MAX_BELIEVED_TOTAL: u64 = 1_000_000_000;

/// The longest ETA shown as such; anything longer reads "more than this".
pub(super) const MAX_ETA: Duration = Duration::from_secs(99 * 3600);

/// A counter's growth per second over the last [`RATE_WINDOW`].
#[derive(Default)]
pub(super) struct RecentRate(VecDeque<(Instant, u64)>);

impl RecentRate {
    /// Records the counter's value `total` at `at` and returns the rate over the samples
    /// still inside the window (0 until two samples span some time).
    pub(super) fn record(&mut self, at: Instant, total: u64) -> f64 {
        self.0.push_back((at, total));
        while self
            .0
            .front()
            .is_some_and(|(then, _)| at.saturating_duration_since(*then) > RATE_WINDOW)
        {
            self.0.pop_front();
        }
        match self.0.front() {
            Some((then, first)) if at > *then => {
                total.saturating_sub(*first) as f64 / at.duration_since(*then).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The provider's total for a walk that has read `read` records, if it is believable: not
/// above [`MAX_BELIEVED_TOTAL`], and not below what was already read (a stale or wrong
/// count then says nothing about what is left).
pub(super) fn believable_total(read: u64, claimed: Option<u64>) -> Option<u64> {
    claimed.filter(|total| *total <= MAX_BELIEVED_TOTAL && *total >= read)
}

/// Time left to read `total` records at `per_sec` with `read` done, capped at [`MAX_ETA`];
/// `None` while nothing moves (no rate yet, or a stall).
pub(super) fn eta(read: u64, total: u64, per_sec: f64) -> Option<Duration> {
    let left = total.checked_sub(read)?;
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return None;
    }
    let seconds = (left as f64 / per_sec).min(MAX_ETA.as_secs_f64());
    Some(Duration::from_secs_f64(seconds.ceil()))
}

/// An ETA as an operator reads it: `42s`, `12m05s`, `3h07m`, or `>99h` at the cap.
pub(super) fn format_eta(eta: Duration) -> String {
    let s = eta.as_secs();
    if eta >= MAX_ETA {
        format!(">{}h", MAX_ETA.as_secs() / 3600)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_covers_only_the_last_window() {
        let start = Instant::now();
        let mut rate = RecentRate::default();
        assert_eq!(rate.record(start, 0), 0.0, "one sample is no rate");
        // 1,000 records in the first second, then a crawl of 10 per second.
        assert_eq!(rate.record(start + Duration::from_secs(1), 1000), 1000.0);
        let mut total = 1000;
        let mut last = 0.0;
        for second in 2..=30 {
            total += 10;
            last = rate.record(start + Duration::from_secs(second), total);
        }
        assert_eq!(last, 10.0, "the early burst has left the window");
    }

    #[test]
    fn the_eta_is_what_is_left_at_the_recent_rate() {
        assert_eq!(eta(250, 750, 50.0), Some(Duration::from_secs(10)));
        // Rounded up: 1 left at 3/s is a second, not zero.
        assert_eq!(eta(749, 750, 3.0), Some(Duration::from_secs(1)));
        assert_eq!(eta(750, 750, 50.0), Some(Duration::ZERO));
    }

    #[test]
    fn no_eta_without_movement_or_past_the_total() {
        assert_eq!(eta(10, 750, 0.0), None);
        assert_eq!(eta(10, 750, f64::NAN), None);
        assert_eq!(eta(10, 750, f64::INFINITY), None);
        assert_eq!(eta(751, 750, 5.0), None);
    }

    #[test]
    fn an_eta_is_capped() {
        assert_eq!(eta(0, MAX_BELIEVED_TOTAL, 0.001), Some(MAX_ETA));
        assert_eq!(format_eta(MAX_ETA), ">99h");
    }

    #[test]
    fn a_total_is_believed_only_between_what_was_read_and_the_cap() {
        assert_eq!(believable_total(100, Some(750)), Some(750));
        assert_eq!(believable_total(750, Some(750)), Some(750));
        assert_eq!(
            believable_total(800, Some(750)),
            None,
            "fewer than already read: a stale or wrong count"
        );
        assert_eq!(believable_total(0, Some(u64::MAX)), None);
        assert_eq!(
            believable_total(0, Some(MAX_BELIEVED_TOTAL)),
            Some(MAX_BELIEVED_TOTAL)
        );
        assert_eq!(believable_total(0, None), None);
    }

    #[test]
    fn etas_read_as_seconds_minutes_or_hours() {
        assert_eq!(format_eta(Duration::from_secs(42)), "42s");
        assert_eq!(format_eta(Duration::from_secs(725)), "12m05s");
        assert_eq!(
            format_eta(Duration::from_secs(3 * 3600 + 7 * 60 + 59)),
            "3h07m"
        );
    }
}
