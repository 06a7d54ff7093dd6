//! Readiness: is the mirror being kept current? The database must accept writes and every
//! enabled source must have completed a cycle within `[health] ready_after_intervals`
//! poll intervals. The verdict is a JSON body that names each source's state and why.

use std::time::Duration;

use serde::Serialize;

use crate::store::{RunOutcome, WriteFailure};
use crate::sync::progress::ProgressState;
use crate::time::Timestamp;

/// How long `/readyz` waits for the database's write lock before calling it unwritable.
pub const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// True when the database and every source are fine.
    pub ready: bool,
    /// The database write check.
    pub database: DatabaseCheck,
    /// One entry per enabled source, in config order.
    pub sources: Vec<SourceReadiness>,
}

/// Whether the mirror database accepts writes.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseCheck {
    /// True when a write transaction could be opened.
    pub writable: bool,
    /// Why not, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The database verdict: the write-lock probe (rolled back, so it never reaches the
/// disk) and what the latest write of mirror data actually met, which is where a full or
/// read-only disk shows.
pub fn database_check(probe: DatabaseCheck, last_write: Option<WriteFailure>) -> DatabaseCheck {
    match last_write {
        Some(failure) if probe.writable => DatabaseCheck {
            writable: false,
            reason: Some(format!(
                "the last write of {} at {} failed: {}",
                failure.writer,
                failure.at.to_rfc3339_seconds(),
                failure.error
            )),
        },
        _ => probe,
    }
}

/// A source's readiness state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// Completed a cycle within the allowed window.
    Ok,
    /// No cycle completed within the window (first cycle still running, rate limited, or
    /// cycles taking longer than the interval).
    Late,
    /// No cycle completed within the window and the last one failed (or stalled).
    Failed,
    /// Stopped for good (credentials rejected) until the configuration is fixed.
    Stopped,
    /// Another replica runs it: this one holds no lease on its scope. Fine for this
    /// replica's readiness.
    Elsewhere,
}

impl SourceState {
    /// Whether the source leaves this process ready.
    pub fn is_fine(self) -> bool {
        matches!(self, SourceState::Ok | SourceState::Elsewhere)
    }
}

/// One source's entry in the `/readyz` body.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReadiness {
    /// Source name.
    pub source: String,
    /// Provider kind.
    pub provider: String,
    /// The verdict.
    pub state: SourceState,
    /// Why the source is not `ok` (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a cycle last completed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
    /// The last cycle's error, even when the source is still within its window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What [`assess`] needs to know about a source besides its progress.
#[derive(Debug, Clone, Copy)]
pub struct ReadinessRule {
    /// The source's poll interval.
    pub poll_interval: Duration,
    /// How many poll intervals may pass between completed cycles.
    pub ready_after_intervals: f64,
    /// When the engine started, to say how long a first cycle has been running.
    pub started_at: Timestamp,
}

impl ReadinessRule {
    /// The longest time allowed since the last completed cycle.
    pub fn window(&self) -> Duration {
        self.poll_interval
            .mul_f64(self.ready_after_intervals.max(0.0))
    }
}

/// Judges one source from its live progress at `now`.
pub fn assess(
    state: &ProgressState,
    rule: ReadinessRule,
    now: Timestamp,
) -> (SourceState, Option<String>) {
    let window = rule.window();
    if state.held_elsewhere && !state.stopped {
        return (
            SourceState::Elsewhere,
            Some("another replica holds the lease on its rate-limit scope".to_owned()),
        );
    }
    if state.stopped {
        let cause = state.last_error.as_deref().unwrap_or("fatal error");
        return (
            SourceState::Stopped,
            Some(format!(
                "stopped until the configuration is fixed and convsync restarted: {cause}"
            )),
        );
    }
    if let Some(last) = state.last_success_at
        && last.elapsed_until(now) <= window
    {
        return (SourceState::Ok, None);
    }
    if matches!(
        state.last_outcome,
        Some(RunOutcome::Failed | RunOutcome::Stalled)
    ) {
        let cause = state.last_error.as_deref().unwrap_or("unknown error");
        return (
            SourceState::Failed,
            Some(format!("last cycle failed: {cause}")),
        );
    }
    let limit = format!(
        "{} × the {} poll interval",
        rule.ready_after_intervals,
        humantime::format_duration(rule.poll_interval)
    );
    let reason = match (state.last_success_at, state.last_outcome) {
        (_, Some(RunOutcome::RateLimited)) => format!(
            "rate limited by the provider{}; no cycle completed within {limit}",
            state
                .next_cycle_at
                .map(|t| format!(", next cycle at {t}"))
                .unwrap_or_default()
        ),
        (Some(last), _) => format!(
            "last completed cycle {} ago, more than {limit}",
            humantime::format_duration(whole_seconds(last.elapsed_until(now)))
        ),
        (None, _) => format!(
            "no cycle completed yet (running for {}{})",
            humantime::format_duration(whole_seconds(rule.started_at.elapsed_until(now))),
            state
                .current_walk
                .as_deref()
                .map(|w| format!(", now in walk {w}"))
                .unwrap_or_default()
        ),
    };
    (SourceState::Late, Some(reason))
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(started_at: Timestamp) -> ReadinessRule {
        ReadinessRule {
            poll_interval: Duration::from_secs(60),
            ready_after_intervals: 3.0,
            started_at,
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn a_cycle_within_the_window_is_ok_even_if_the_next_failed() {
        let state = ProgressState {
            last_success_at: Some(at("2026-01-01T00:00:00Z")),
            last_outcome: Some(RunOutcome::Failed),
            last_error: Some("HTTP 503".into()),
            ..ProgressState::default()
        };
        let (verdict, reason) = assess(
            &state,
            rule(at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:03:00Z"),
        );
        assert_eq!(verdict, SourceState::Ok);
        assert_eq!(reason, None);
    }

    #[test]
    fn past_the_window_a_failed_or_stalled_source_says_why() {
        for outcome in [RunOutcome::Failed, RunOutcome::Stalled] {
            let state = ProgressState {
                last_success_at: Some(at("2026-01-01T00:00:00Z")),
                last_outcome: Some(outcome),
                last_error: Some("HTTP 503".into()),
                ..ProgressState::default()
            };
            let (verdict, reason) = assess(
                &state,
                rule(at("2026-01-01T00:00:00Z")),
                at("2026-01-01T00:03:01Z"),
            );
            assert_eq!(verdict, SourceState::Failed, "{outcome:?}");
            assert!(reason.unwrap().contains("HTTP 503"));
        }
    }

    #[test]
    fn a_source_without_a_completed_cycle_is_late() {
        let state = ProgressState {
            current_walk: Some("delta".into()),
            ..ProgressState::default()
        };
        let (verdict, reason) = assess(
            &state,
            rule(at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:00:42Z"),
        );
        assert_eq!(verdict, SourceState::Late);
        let reason = reason.unwrap();
        assert!(
            reason.contains("no cycle completed yet")
                && reason.contains("42s")
                && reason.contains("delta"),
            "{reason}"
        );
    }

    #[test]
    fn an_old_success_is_late_with_its_age() {
        let state = ProgressState {
            last_success_at: Some(at("2026-01-01T00:00:00Z")),
            last_outcome: Some(RunOutcome::CaughtUp),
            ..ProgressState::default()
        };
        let (verdict, reason) = assess(
            &state,
            rule(at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:10:00Z"),
        );
        assert_eq!(verdict, SourceState::Late);
        assert!(reason.unwrap().contains("10m ago"));
    }

    #[test]
    fn rate_limited_sources_are_late_not_failed() {
        let state = ProgressState {
            last_outcome: Some(RunOutcome::RateLimited),
            next_cycle_at: Some(at("2026-01-01T01:00:00Z")),
            ..ProgressState::default()
        };
        let (verdict, reason) = assess(
            &state,
            rule(at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:10:00Z"),
        );
        assert_eq!(verdict, SourceState::Late);
        assert!(reason.unwrap().contains("rate limited"));
    }

    #[test]
    fn a_failed_last_write_makes_a_lockable_database_unwritable() {
        let probe = DatabaseCheck {
            writable: true,
            reason: None,
        };
        let failure = WriteFailure {
            writer: "clinic".into(),
            at: at("2026-01-01T00:00:00Z"),
            error: "database is full (disk or size limit): database or disk is full".into(),
        };

        let check = database_check(probe.clone(), Some(failure));

        assert!(!check.writable);
        let reason = check.reason.unwrap();
        assert!(
            reason.contains("clinic")
                && reason.contains("2026-01-01T00:00:00Z")
                && reason.contains("database is full"),
            "{reason}"
        );
        assert!(database_check(probe, None).writable);
    }

    #[test]
    fn stopped_sources_are_stopped_whatever_their_history() {
        let state = ProgressState {
            stopped: true,
            last_success_at: Some(at("2026-01-01T00:00:00Z")),
            last_error: Some("credentials rejected (401)".into()),
            ..ProgressState::default()
        };
        let (verdict, reason) = assess(
            &state,
            rule(at("2026-01-01T00:00:00Z")),
            at("2026-01-01T00:00:01Z"),
        );
        assert_eq!(verdict, SourceState::Stopped);
        assert!(reason.unwrap().contains("401"));
    }
}
