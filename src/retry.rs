//! The one retry vocabulary of every layer: a [`Backoff`] schedule stated as data, the
//! [`Transient`] classification each error type gives its own variants, and a wait that
//! shutdown ends at once ([`sleep_unless_cancelled`]).
//!
//! backon runs the loops. Each mechanism only states its schedule, in one place, and what
//! it tries again: the HTTP client's retries (`http::RetryPolicy`, with `Retry-After`), the
//! store's wait for another process's write lock (`store/busy.rs`), the walk's refetch of a
//! malformed page (`sync/cycle.rs`), and the daemon's wait after a failed cycle
//! (`sync/policy.rs`, which counts the failures across cycles and asks [`Backoff::delay`]).

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Whether a failure is worth another attempt. Each error type says it of its own
/// variants; what is not transient is final, and tried again by nobody.
pub trait Transient {
    /// The same operation, tried again a little later, may succeed.
    fn is_transient(&self) -> bool;
}

/// When to try again: the first retry after `first`, each later wait `factor` times the
/// one before, never more than `max_delay`; given up after `max_retries` retries or once
/// `time_limit` has passed since the first attempt, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// How much longer each wait is than the one before.
    pub factor: f32,
    /// The longest wait.
    pub max_delay: Duration,
    /// Retries after the first attempt; `None` counts none (a time limit or shutdown ends
    /// the retries).
    pub max_retries: Option<usize>,
    /// No retry starts once this long has passed since the first attempt, the attempts'
    /// own time included (a backon total delay would count only the waits).
    pub time_limit: Option<Duration>,
    /// Each wait lengthened by a random share of itself (up to double), so that clients
    /// that failed together do not retry in lockstep.
    pub jitter: bool,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max_delay`; no jitter, no limit yet.
    pub const fn doubling(first: Duration, max_delay: Duration) -> Backoff {
        Backoff {
            first,
            factor: 2.0,
            max_delay,
            max_retries: None,
            time_limit: None,
            jitter: false,
        }
    }

    /// The same schedule, given up after `retries` retries.
    pub const fn with_max_retries(self, retries: usize) -> Backoff {
        Backoff {
            max_retries: Some(retries),
            ..self
        }
    }

    /// The same schedule, given up once `limit` has passed since the first attempt.
    pub const fn with_time_limit(self, limit: Duration) -> Backoff {
        Backoff {
            time_limit: Some(limit),
            ..self
        }
    }

    /// The same schedule with jittered waits.
    pub const fn with_jitter(self) -> Backoff {
        Backoff {
            jitter: true,
            ..self
        }
    }

    /// backon's builder for this schedule's waits and retry count. The time limit is not
    /// in it: [`Backoff::retry`] checks it.
    pub fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::new()
            .with_factor(self.factor)
            .with_min_delay(self.first)
            .with_max_delay(self.max_delay);
        let builder = match self.max_retries {
            Some(retries) => builder.with_max_times(retries),
            None => builder.without_max_times(),
        };
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }

    /// The wait before retry number `retry` (counted from 1; the first attempt, 0, waits
    /// nothing), jitter and the retry count aside: for a loop that counts its failures
    /// across calls, such as the daemon's cycles.
    pub fn delay(&self, retry: u32) -> Duration {
        let unlimited = Backoff {
            max_retries: None,
            jitter: false,
            ..*self
        };
        let mut waits = unlimited.builder().build();
        let mut wait = Duration::ZERO;
        for _ in 0..retry {
            wait = waits.next().unwrap_or(self.max_delay);
            // From here on every wait is the longest one: no need to count further.
            if wait >= self.max_delay {
                break;
            }
        }
        wait
    }

    /// Runs `attempt` until it succeeds, fails for good (`is_transient` says no), the
    /// schedule gives up or `cancel` fires: shutdown ends a wait at once, and no retry
    /// starts after it. `notify` hears each failure that will be tried again, with the
    /// wait before the retry (the place for the log line).
    pub async fn retry<T, E, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut is_transient: impl FnMut(&E) -> bool,
        attempt: F,
        notify: impl FnMut(&E, Duration),
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let within_time = move || {
            self.time_limit
                .is_none_or(|limit| started.elapsed() < limit)
        };
        let sleeper = cancel.clone();
        attempt
            .retry(self.builder())
            .sleep(move |wait| {
                let cancel = sleeper.clone();
                async move {
                    sleep_unless_cancelled(wait, &cancel).await;
                }
            })
            .when(|error| is_transient(error) && !cancel.is_cancelled() && within_time())
            .notify(notify)
            .await
    }
}

/// Sleeps for `wait` unless `cancel` fires first (then returns at once); whether the whole
/// wait passed. A cancellation already requested wins over a wait already over.
pub async fn sleep_unless_cancelled(wait: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn waits(backoff: &Backoff, n: usize) -> Vec<Duration> {
        backoff.builder().build().take(n).collect()
    }

    /// A doubling schedule waits first, 2 × first, … up to its longest wait, and stops
    /// after its retry count.
    #[test]
    fn a_doubling_schedule_doubles_up_to_its_longest_wait() {
        let unlimited = Backoff::doubling(250 * MS, 10_000 * MS);
        assert_eq!(
            waits(&unlimited, 8),
            [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000].map(|ms| ms * MS)
        );
        let twice = Backoff::doubling(400 * MS, 800 * MS).with_max_retries(2);
        assert_eq!(waits(&twice, 5), [400 * MS, 800 * MS]);
    }

    /// A jittered wait lies between the schedule's wait and twice it.
    #[test]
    fn jitter_lengthens_each_wait_by_at_most_itself() {
        let backoff = Backoff::doubling(500 * MS, 60_000 * MS)
            .with_max_retries(6)
            .with_jitter();
        let jittered = waits(&backoff, 10);
        assert_eq!(jittered.len(), 6);
        for (wait, base) in jittered.iter().zip([500, 1000, 2000, 4000, 8000, 16_000]) {
            assert!(
                *wait >= base * MS && *wait <= 2 * base * MS,
                "{wait:?} for {base} ms"
            );
        }
    }

    /// `delay(n)` is the schedule's n-th wait, without jitter or retry count, and the
    /// longest wait however many failures came before.
    #[test]
    fn delay_is_the_nth_wait_of_the_schedule() {
        let backoff = Backoff::doubling(10_000 * MS, 60_000 * MS)
            .with_max_retries(2)
            .with_jitter();
        let delays: Vec<u64> = (0..6).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 60, 60]);
        assert_eq!(backoff.delay(u32::MAX), 60_000 * MS);
    }

    /// Only failures the classification calls transient are tried again, and at most the
    /// schedule's retry count.
    #[tokio::test(start_paused = true)]
    async fn only_transient_failures_are_retried_up_to_the_count() {
        let backoff = Backoff::doubling(MS, 10 * MS).with_max_retries(3);
        let cancel = CancellationToken::new();
        let is_transient = |e: &&str| *e == "busy";
        let attempts = Cell::new(0);
        let attempt = || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), &str>("busy") }
        };
        let notified = Cell::new(Vec::new());
        let result = backoff
            .retry(&cancel, is_transient, attempt, |_, wait| {
                let mut seen = notified.take();
                seen.push(wait);
                notified.set(seen);
            })
            .await;
        assert_eq!(result, Err("busy"));
        assert_eq!(attempts.get(), 4);
        assert_eq!(notified.take(), [MS, 2 * MS, 4 * MS]);

        attempts.set(0);
        let attempt = || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), &str>("full") }
        };
        let result = backoff
            .retry(&cancel, is_transient, attempt, |_, _| {})
            .await;
        assert_eq!(result, Err("full"));
        assert_eq!(attempts.get(), 1, "a final failure is not tried again");
    }

    /// A success after transient failures is the result, after the schedule's waits.
    #[tokio::test(start_paused = true)]
    async fn a_later_success_ends_the_retries() {
        let backoff = Backoff::doubling(250 * MS, 10_000 * MS);
        let cancel = CancellationToken::new();
        let attempts = Cell::new(0);
        let attempt = || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move { if n < 4 { Err("busy") } else { Ok(n) } }
        };
        let started = Instant::now();
        let result = backoff.retry(&cancel, |_| true, attempt, |_, _| {}).await;
        assert_eq!(result, Ok(4));
        assert_eq!(started.elapsed(), (250 + 500 + 1000) * MS);
    }

    /// No retry starts once the time limit has passed since the first attempt, the
    /// attempts' own time included.
    #[tokio::test(start_paused = true)]
    async fn the_time_limit_counts_the_attempts_too() {
        let backoff = Backoff::doubling(MS, MS).with_time_limit(1000 * MS);
        let cancel = CancellationToken::new();
        let attempts = Cell::new(0);
        let attempt = || {
            attempts.set(attempts.get() + 1);
            async {
                tokio::time::sleep(300 * MS).await;
                Err::<(), _>("busy")
            }
        };
        let started = Instant::now();
        let result = backoff.retry(&cancel, |_| true, attempt, |_, _| {}).await;
        assert_eq!(result, Err("busy"));
        // Attempts end at 300, 601, 902 and 1203 ms: the fourth ends past the limit.
        assert_eq!(attempts.get(), 4);
        assert_eq!(started.elapsed(), (4 * 300 + 3) * MS);
    }

    /// Shutdown ends a wait at once; the attempt that follows is the last one.
    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_a_wait_at_once() {
        let backoff = Backoff::doubling(Duration::from_secs(3600), Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(5 * MS).await;
            stop.cancel();
        });
        let attempts = Cell::new(0);
        let attempt = || {
            attempts.set(attempts.get() + 1);
            async { Err::<(), _>("busy") }
        };
        let started = Instant::now();
        let result = backoff.retry(&cancel, |_| true, attempt, |_, _| {}).await;
        assert_eq!(result, Err("busy"));
        assert_eq!(started.elapsed(), 5 * MS);
        assert_eq!(attempts.get(), 2);
    }

    /// A cancelled wait returns at once and says so; an uncancelled one sleeps it all.
    #[tokio::test(start_paused = true)]
    async fn sleep_unless_cancelled_says_whether_the_wait_passed() {
        let cancel = CancellationToken::new();
        let started = Instant::now();
        assert!(sleep_unless_cancelled(2000 * MS, &cancel).await);
        assert_eq!(started.elapsed(), 2000 * MS);
        cancel.cancel();
        let started = Instant::now();
        assert!(!sleep_unless_cancelled(Duration::ZERO, &cancel).await);
        assert!(!sleep_unless_cancelled(2000 * MS, &cancel).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
