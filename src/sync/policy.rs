//! What a source does after a cycle: one policy for both `run` (a daemon that keeps every
//! source current until shutdown) and `sync --once` (cycles until each source is caught
//! up, failed or given up on), so that "what next" is decided in one place.
//!
//! The policy is pure: it reads the cycle's outcome and two facts the loop observed, keeps
//! the counters that bound retries, and answers [`Next`]. The loop that drives it
//! (`sync::drive`) only runs cycles and sleeps.

use std::time::Duration;

use rand::Rng;

use super::{CycleOptions, CycleOutcome};
use crate::config::Schedule;
use crate::retry::Backoff;

/// Failed cycles are retried after 10 s, doubling up to the poll interval (`run` only);
/// the schedule's own longest wait (5 s × 2¹⁶, about 91 hours) only binds a poll interval
/// longer than that.
const FAILURE_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_secs(10), Duration::from_secs(5 << 16));

/// Cycles in a row that may end "more to do" without reading a row before `sync --once`
/// stops repeating them: such a source would otherwise keep the one-shot command alive.
pub const MAX_IDLE_CYCLES: u32 = 3;

/// A rate-limited cycle that asks for no wait still counts this much towards
/// `once_max_rate_limit_wait` (and is waited), so that a provider answering 429 with
/// `Retry-After: 0` neither escapes the bound nor gets hammered.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// What to do after a cycle.
#[derive(Debug)]
pub enum Next {
    /// Run the next cycle after this long (shutdown may end the wait).
    Wait(Duration),
    /// Run the next cycle straight away.
    Again,
    /// Stop; this outcome is the source's last word.
    Stop(CycleOutcome),
}

/// What the loop saw around a cycle, besides its outcome.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleFacts {
    /// A walk was in progress when the cycle began: it resumed from a saved position.
    pub resumed: bool,
    /// The cycle read at least one row (new, changed, unchanged, closed, deleted or
    /// rejected).
    pub read_rows: bool,
}

/// Which command the policy serves.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `run`: retry failures with a backoff, wait out any rate limit, stop only on
    /// shutdown or rejected credentials.
    Daemon,
    /// `sync --once`: stop once caught up or failed; wait out only short rate limits.
    Once {
        /// Sweep every walk now (`--force-sweep`); also asked again for the re-read after
        /// a resumed walk.
        force_sweep: bool,
        /// A rate limit longer than this (the HTTP layer's inline pause) ends the run.
        max_inline_pause: Duration,
    },
}

/// The scheduling policy of one source. See the module documentation.
#[derive(Debug)]
pub struct Policy {
    mode: Mode,
    /// Time between cycles of a caught-up source, ± `poll_jitter`.
    poll_interval: Duration,
    poll_jitter: f64,
    /// `sync --once` gives up once its rate-limit waits add up to more than this.
    once_max_rate_limit_wait: Duration,
    /// Options of the next cycle.
    force_sweep: bool,
    /// The last cycle ended with more to do.
    more_to_do: bool,
    consecutive_failures: u32,
    idle_cycles: u32,
    rate_limited_for: Duration,
    reread_after_resume: bool,
}

impl Policy {
    /// The policy for a source with `schedule` serving `mode`.
    pub fn new(mode: Mode, schedule: &Schedule) -> Policy {
        Policy {
            mode,
            poll_interval: schedule.poll_interval,
            poll_jitter: schedule.poll_jitter,
            once_max_rate_limit_wait: schedule.once_max_rate_limit_wait,
            force_sweep: matches!(
                mode,
                Mode::Once {
                    force_sweep: true,
                    ..
                }
            ),
            more_to_do: false,
            consecutive_failures: 0,
            idle_cycles: 0,
            rate_limited_for: Duration::ZERO,
            reread_after_resume: false,
        }
    }

    /// The options of the next cycle. `resuming`: a walk is in progress. More to do with
    /// every walk complete means only follow-ups wait: the cycle drains them without
    /// listing fresh deltas again.
    pub fn options(&self, resuming: bool) -> CycleOptions {
        CycleOptions {
            force_sweep: self.force_sweep,
            drain_follow_ups: self.more_to_do && !resuming,
        }
    }

    /// What to do after a cycle that ended with `outcome`.
    pub fn next(&mut self, outcome: CycleOutcome, facts: CycleFacts) -> Next {
        // A forced sweep starts once; later cycles only resume it.
        self.force_sweep = false;
        self.more_to_do = matches!(outcome, CycleOutcome::MoreToDo);
        match self.mode {
            Mode::Daemon => self.next_in_daemon(outcome),
            Mode::Once {
                force_sweep,
                max_inline_pause,
            } => self.next_once(outcome, facts, force_sweep, max_inline_pause),
        }
    }

    fn next_in_daemon(&mut self, outcome: CycleOutcome) -> Next {
        match outcome {
            CycleOutcome::Stopped => Next::Stop(outcome),
            CycleOutcome::Failed(ref e) if e.is_fatal() => Next::Stop(outcome),
            CycleOutcome::Failed(_) | CycleOutcome::Stalled { .. } => {
                self.consecutive_failures += 1;
                let backoff = FAILURE_BACKOFF.delay(self.consecutive_failures);
                Next::Wait(jittered(backoff.min(self.poll_interval), self.poll_jitter))
            }
            CycleOutcome::RateLimited { wait } => {
                self.consecutive_failures = 0;
                Next::Wait(wait)
            }
            CycleOutcome::MoreToDo => {
                self.consecutive_failures = 0;
                Next::Again
            }
            CycleOutcome::CaughtUp => {
                self.consecutive_failures = 0;
                Next::Wait(jittered(self.poll_interval, self.poll_jitter))
            }
        }
    }

    fn next_once(
        &mut self,
        outcome: CycleOutcome,
        facts: CycleFacts,
        force_sweep: bool,
        max_inline_pause: Duration,
    ) -> Next {
        match outcome {
            CycleOutcome::MoreToDo if !facts.read_rows => {
                self.idle_cycles += 1;
                if self.idle_cycles >= MAX_IDLE_CYCLES {
                    let reason = format!(
                        "{} cycles in a row ended with more to do without reading a single row; giving up for this run",
                        self.idle_cycles
                    );
                    tracing::error!("{reason}");
                    return Next::Stop(CycleOutcome::Stalled { reason });
                }
                Next::Again
            }
            CycleOutcome::MoreToDo => {
                self.idle_cycles = 0;
                Next::Again
            }
            // A walk resumed from a saved position read nothing above that position since
            // it began (before a crash or a page cap): one more cycle, with a forced sweep
            // starting afresh, reads what changed meanwhile.
            CycleOutcome::CaughtUp if facts.resumed && !self.reread_after_resume => {
                self.reread_after_resume = true;
                self.force_sweep = force_sweep;
                Next::Again
            }
            // A short pause is waited out, as long as the waits of this run stay within
            // the source's bound; a long one (a daily budget) ends the one-shot sync
            // instead of blocking for hours.
            CycleOutcome::RateLimited { wait } if wait <= max_inline_pause => {
                let wait = wait.max(MIN_RATE_LIMIT_WAIT);
                self.rate_limited_for = self.rate_limited_for.saturating_add(wait);
                let bound = self.once_max_rate_limit_wait;
                if self.rate_limited_for > bound {
                    tracing::error!(
                        bound = %humantime::format_duration(bound),
                        "still rate limited after waiting the configured bound (once_max_rate_limit_wait); giving up for this run"
                    );
                    return Next::Stop(outcome);
                }
                Next::Wait(wait)
            }
            _ => Next::Stop(outcome),
        }
    }
}

/// `base` ± `share`, so that sources do not poll in lockstep.
fn jittered(base: Duration, share: f64) -> Duration {
    if share <= 0.0 || base.is_zero() {
        return base;
    }
    let factor = rand::rng().random_range((1.0 - share)..=(1.0 + share));
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpError;
    use crate::sync::SyncError;

    const POLL: Duration = Duration::from_secs(60);

    fn schedule() -> Schedule {
        Schedule {
            poll_interval: POLL,
            poll_jitter: 0.0,
            lookback: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(86_400),
            verify_interval: None,
            max_pages_per_cycle: 100,
            stall_timeout: Duration::from_secs(300),
            max_clock_skew: Duration::from_secs(120),
            max_follow_ups_per_cycle: 100,
            max_raw_bytes: 1 << 20,
            max_empty_pages: 10,
            once_max_rate_limit_wait: Duration::from_secs(10),
            reply_state_horizon: Duration::from_secs(86_400),
        }
    }

    fn once(force_sweep: bool) -> Policy {
        let mode = Mode::Once {
            force_sweep,
            max_inline_pause: Duration::from_secs(30),
        };
        Policy::new(mode, &schedule())
    }

    fn failed() -> CycleOutcome {
        CycleOutcome::Failed(SyncError::Interrupted)
    }

    const READ: CycleFacts = CycleFacts {
        resumed: false,
        read_rows: true,
    };

    fn wait(next: Next) -> Duration {
        match next {
            Next::Wait(d) => d,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    /// The daemon polls a caught-up source every poll interval, runs again at once when
    /// more is to do, waits out rate limits, and backs off after failures: 10 s, 20 s,
    /// 40 s, then the poll interval, until a cycle succeeds.
    #[test]
    fn the_daemon_backs_off_after_failures_and_polls_when_caught_up() {
        let mut policy = Policy::new(Mode::Daemon, &schedule());
        assert_eq!(wait(policy.next(CycleOutcome::CaughtUp, READ)), POLL);
        assert!(matches!(
            policy.next(CycleOutcome::MoreToDo, READ),
            Next::Again
        ));
        let limited = CycleOutcome::RateLimited {
            wait: Duration::from_secs(7),
        };
        assert_eq!(wait(policy.next(limited, READ)), Duration::from_secs(7));
        let backoffs: Vec<u64> = (0..4)
            .map(|_| wait(policy.next(failed(), READ)).as_secs())
            .collect();
        assert_eq!(backoffs, [10, 20, 40, 60]);
        let stalled = CycleOutcome::Stalled {
            reason: "endless pages".into(),
        };
        assert_eq!(wait(policy.next(stalled, READ)), POLL);
        assert_eq!(wait(policy.next(CycleOutcome::CaughtUp, READ)), POLL);
        assert_eq!(wait(policy.next(failed(), READ)), Duration::from_secs(10));
    }

    /// However many cycles failed, the wait after a failure stays within the poll interval
    /// and the backoff's longest wait (5 s × 2¹⁶).
    #[test]
    fn the_failure_backoff_is_bounded_by_the_poll_interval_and_its_longest_wait() {
        let mut policy = Policy::new(Mode::Daemon, &schedule());
        let waits: Vec<Duration> = (0..40).map(|_| wait(policy.next(failed(), READ))).collect();
        assert_eq!(waits.last(), Some(&POLL));
        let weekly = Schedule {
            poll_interval: Duration::from_secs(7 * 86_400),
            ..schedule()
        };
        let mut policy = Policy::new(Mode::Daemon, &weekly);
        let waits: Vec<u64> = (0..40)
            .map(|_| wait(policy.next(failed(), READ)).as_secs())
            .collect();
        assert_eq!(waits[..3], [10, 20, 40]);
        assert_eq!(waits[15], 5 << 16);
        assert_eq!(waits[39], 5 << 16);
    }

    /// The daemon stops on shutdown and on rejected credentials, never on other failures.
    #[test]
    fn the_daemon_stops_only_on_shutdown_or_rejected_credentials() {
        let mut policy = Policy::new(Mode::Daemon, &schedule());
        assert!(matches!(
            policy.next(CycleOutcome::Stopped, READ),
            Next::Stop(CycleOutcome::Stopped)
        ));
        let rejected = HttpError::Unauthorized {
            endpoint: "conversations",
            message: "invalid token".into(),
        };
        let fatal = CycleOutcome::Failed(SyncError::Http(rejected));
        assert!(matches!(
            policy.next(fatal, READ),
            Next::Stop(CycleOutcome::Failed(_))
        ));
        assert!(matches!(policy.next(failed(), READ), Next::Wait(_)));
    }

    /// After more to do with every walk complete, the next cycle only drains follow-ups;
    /// with a walk in progress it resumes the walk.
    #[test]
    fn more_to_do_with_complete_walks_drains_follow_ups() {
        for mut policy in [Policy::new(Mode::Daemon, &schedule()), once(false)] {
            assert!(!policy.options(false).drain_follow_ups);
            policy.next(CycleOutcome::MoreToDo, READ);
            assert!(policy.options(false).drain_follow_ups);
            assert!(!policy.options(true).drain_follow_ups);
            policy.next(CycleOutcome::CaughtUp, READ);
            assert!(!policy.options(false).drain_follow_ups);
        }
    }

    /// `sync --once` stops when caught up or failed, and repeats cycles with more to do.
    #[test]
    fn once_runs_until_caught_up_or_failed() {
        let mut policy = once(false);
        assert!(matches!(
            policy.next(CycleOutcome::MoreToDo, READ),
            Next::Again
        ));
        assert!(matches!(
            policy.next(CycleOutcome::CaughtUp, READ),
            Next::Stop(CycleOutcome::CaughtUp)
        ));
        assert!(matches!(
            once(false).next(failed(), READ),
            Next::Stop(CycleOutcome::Failed(_))
        ));
    }

    /// `sync --once` gives up after MAX_IDLE_CYCLES cycles in a row that had more to do
    /// yet read nothing; a cycle that reads rows starts the count again.
    #[test]
    fn once_gives_up_on_idle_cycles() {
        let mut policy = once(false);
        let idle = CycleFacts::default();
        let repeated = MAX_IDLE_CYCLES as usize - 1;
        let mut cycles = vec![idle; repeated];
        cycles.push(READ);
        cycles.extend(vec![idle; repeated]);
        for facts in cycles {
            assert!(matches!(
                policy.next(CycleOutcome::MoreToDo, facts),
                Next::Again
            ));
        }
        assert!(matches!(
            policy.next(CycleOutcome::MoreToDo, idle),
            Next::Stop(CycleOutcome::Stalled { .. })
        ));
    }

    /// A caught-up cycle that resumed a walk runs once more (with the forced sweep asked
    /// for, starting afresh); the second time it stops.
    #[test]
    fn once_rereads_once_after_a_resumed_walk() {
        let mut policy = once(true);
        assert!(policy.options(false).force_sweep);
        let resumed = CycleFacts {
            resumed: true,
            read_rows: true,
        };
        assert!(matches!(
            policy.next(CycleOutcome::MoreToDo, resumed),
            Next::Again
        ));
        assert!(
            !policy.options(true).force_sweep,
            "a forced sweep starts once"
        );
        assert!(matches!(
            policy.next(CycleOutcome::CaughtUp, resumed),
            Next::Again
        ));
        assert!(policy.options(false).force_sweep);
        assert!(matches!(
            policy.next(CycleOutcome::CaughtUp, resumed),
            Next::Stop(CycleOutcome::CaughtUp)
        ));
    }

    /// `sync --once` waits out short rate limits (at least a second each) until they add
    /// up to `once_max_rate_limit_wait`, and stops at once on a long one.
    #[test]
    fn once_waits_out_short_rate_limits_within_the_bound() {
        let limited = |secs| CycleOutcome::RateLimited {
            wait: Duration::from_secs(secs),
        };
        let mut policy = once(false);
        assert_eq!(wait(policy.next(limited(0), READ)), Duration::from_secs(1));
        assert_eq!(wait(policy.next(limited(4), READ)), Duration::from_secs(4));
        assert_eq!(wait(policy.next(limited(5), READ)), Duration::from_secs(5));
        assert!(matches!(
            policy.next(limited(1), READ),
            Next::Stop(CycleOutcome::RateLimited { .. })
        ));
        assert!(matches!(
            once(false).next(limited(31), READ),
            Next::Stop(CycleOutcome::RateLimited { .. })
        ));
    }
}
