//! The supervision loop: on every tick it checks that each source's task is still being
//! polled (its [`TaskPulse`] advanced) and only then pings the systemd watchdog.
//!
//! The loop runs as a task on the same runtime as the sources, so a runtime whose
//! workers are all blocked cannot tick at all, and a single source stuck in a blocking
//! call stops beating: either way `WATCHDOG=1` stops and systemd restarts the service
//! after `WatchdogSec=`. The same verdict feeds `/healthz`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::systemd::Notifier;
use crate::sync::progress::{TaskPulse, TaskState};
use crate::sync::{Source, SourceRegistry};

/// Ticks without a beat after which a running source counts as not serviced. Two, so a
/// tick that lands just before a beat is never mistaken for a stall.
const STALE_TICKS: u32 = 2;

/// Longest time between ticks: keeps `/healthz` fresh without a systemd watchdog.
const MAX_TICK: Duration = Duration::from_secs(1);

/// The supervisor's latest verdict, shared with `/healthz`.
#[derive(Debug, Default)]
pub struct Liveness {
    inner: Mutex<Verdict>,
}

/// What the last tick found.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// When the supervisor last ticked; `None` before its first tick.
    pub last_tick: Option<Instant>,
    /// The time between ticks.
    pub tick: Duration,
    /// Sources whose task is not being serviced, with the reason.
    pub unserviced: Vec<(String, String)>,
}

impl Liveness {
    /// A copy of the latest verdict.
    pub fn verdict(&self) -> Verdict {
        self.inner.lock().expect("liveness lock poisoned").clone()
    }

    fn record(&self, verdict: Verdict) {
        *self.inner.lock().expect("liveness lock poisoned") = verdict;
    }
}

/// The time between supervision ticks for a watchdog timeout: half of it (as
/// `sd_watchdog_enabled(3)` recommends) capped at `MAX_TICK`, and never shorter than
/// two pulse periods so that a healthy source beats at least once per tick.
pub fn tick_for(watchdog: Option<Duration>) -> Duration {
    let floor = crate::sync::progress::TaskPulse::PERIOD * 2;
    watchdog
        .map_or(MAX_TICK, |w| (w / 2).min(MAX_TICK))
        .max(floor)
}

/// Per-source memory between ticks.
struct Watch {
    source: Arc<Source>,
    /// The source's own task.
    task: PulseWatch,
    /// The task fetching the pages of the walk in progress, beside the source's task.
    fetcher: PulseWatch,
}

impl Watch {
    fn new(source: Arc<Source>) -> Watch {
        Watch {
            task: PulseWatch::new(&source.progress.pulse),
            fetcher: PulseWatch::new(&source.progress.fetch_pulse),
            source,
        }
    }

    /// Why this source is not being serviced, or `None` when it is fine.
    fn check(&mut self, tick: Duration) -> Option<String> {
        let progress = &self.source.progress;
        let task = self.task.check(&progress.pulse, tick);
        let fetcher = self.fetcher.check(&progress.fetch_pulse, tick);
        task.map(|why| format!("its task {why}"))
            .or_else(|| fetcher.map(|why| format!("its page-fetching task {why}")))
    }
}

/// One task's beats as of the previous tick.
struct PulseWatch {
    last_beats: u64,
    ticks_without_beat: u32,
}

impl PulseWatch {
    fn new(pulse: &TaskPulse) -> PulseWatch {
        PulseWatch {
            last_beats: pulse.beats(),
            ticks_without_beat: 0,
        }
    }

    /// What is wrong with the task behind `pulse`, or `None` when it is fine.
    fn check(&mut self, pulse: &TaskPulse, tick: Duration) -> Option<String> {
        let beats = pulse.beats();
        let progressed = beats != self.last_beats;
        self.last_beats = beats;
        match pulse.task_state() {
            TaskState::NotStarted | TaskState::Finished => {
                self.ticks_without_beat = 0;
                None
            }
            TaskState::Abandoned => Some("ended without returning (panicked)".to_owned()),
            TaskState::Running if progressed => {
                self.ticks_without_beat = 0;
                None
            }
            TaskState::Running => {
                self.ticks_without_beat += 1;
                (self.ticks_without_beat >= STALE_TICKS).then(|| {
                    format!(
                        "has not been polled for {:.1} s (blocked in a synchronous call?)",
                        (tick * self.ticks_without_beat).as_secs_f64()
                    )
                })
            }
        }
    }
}

/// Runs the supervision loop until `done` is cancelled: pings the watchdog on every tick
/// where all sources are serviced, reports `STOPPING=1` once `shutdown` fires (then keeps
/// supervising while the sources finish their pages), and records each verdict in
/// `liveness`.
pub async fn supervise(
    sources: SourceRegistry,
    notifier: Arc<Notifier>,
    liveness: Arc<Liveness>,
    shutdown: CancellationToken,
    done: CancellationToken,
) {
    let tick = tick_for(notifier.watchdog_timeout());
    let mut watches: Vec<Watch> = Vec::new();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping_sent = false;
    let mut withholding = false;
    loop {
        tokio::select! {
            // Shutdown first: STOPPING=1 must not be lost to a `done` that follows closely.
            biased;
            _ = shutdown.cancelled(), if !stopping_sent => {
                stopping_sent = true;
                notifier.stopping();
                continue;
            }
            _ = done.cancelled() => break,
            _ = ticker.tick() => {}
        }
        follow(&mut watches, &sources);
        let unserviced: Vec<(String, String)> = watches
            .iter_mut()
            .filter_map(|w| w.check(tick).map(|why| (w.source.name.clone(), why)))
            .collect();
        if unserviced.is_empty() {
            notifier.watchdog();
            if withholding {
                withholding = false;
                tracing::info!("every source is serviced again; watchdog pings resumed");
                notifier.status("watchdog: every source serviced again");
            }
        } else if !withholding {
            withholding = true;
            let summary = unserviced
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect::<Vec<_>>()
                .join("; ");
            tracing::error!(%summary, "withholding watchdog pings: a source is not being serviced; systemd will restart the service if this persists");
            notifier.status(&format!("watchdog withheld: {summary}"));
        }
        liveness.record(Verdict {
            last_tick: Some(Instant::now()),
            tick,
            unserviced,
        });
    }
}

/// Watches the sources running now: a retired one no more (its task ended on purpose), an
/// added one from its first tick.
fn follow(watches: &mut Vec<Watch>, sources: &SourceRegistry) {
    let running = sources.snapshot();
    watches.retain(|w| running.iter().any(|s| Arc::ptr_eq(s, &w.source)));
    for source in running {
        if !watches.iter().any(|w| Arc::ptr_eq(&w.source, &source)) {
            watches.push(Watch::new(source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_half_the_watchdog_within_bounds() {
        assert_eq!(tick_for(None), MAX_TICK);
        assert_eq!(tick_for(Some(Duration::from_secs(60))), MAX_TICK);
        assert_eq!(
            tick_for(Some(Duration::from_millis(1600))),
            Duration::from_millis(800)
        );
        assert_eq!(
            tick_for(Some(Duration::from_millis(10))),
            Duration::from_millis(500)
        );
    }
}
