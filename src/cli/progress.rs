//! Live progress of `sync --once`: a line per source redrawn on a terminal, periodic log
//! lines otherwise (so CI logs and journald stay readable).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::sync::{Engine, Source};

/// A running progress display; stop it with [`ProgressDisplay::finish`].
pub struct ProgressDisplay {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ProgressDisplay {
    /// Starts showing progress for every source of `engine`.
    pub fn start(engine: &Engine) -> Self {
        let sources: Vec<Arc<Source>> = engine.sources().to_vec();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = if std::io::stderr().is_terminal() {
            tokio::spawn(draw_bars(sources, token))
        } else {
            tokio::spawn(log_lines(sources, token))
        };
        ProgressDisplay { stop, task }
    }

    /// Stops the display, leaving the final figures on screen.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One source's progress so far: what the bars show and the log lines carry as fields.
struct Figures {
    pages: u64,
    rows: u64,
    inserted: u64,
    updated: u64,
    rows_per_sec: f64,
    requests: u64,
    walk: String,
    watermark: String,
}

impl Figures {
    fn of(source: &Source, elapsed: Duration) -> Self {
        let p = &source.progress;
        let inserted = p.inserted.load(Ordering::Relaxed);
        let updated = p.updated.load(Ordering::Relaxed);
        let rows = inserted
            .saturating_add(updated)
            .saturating_add(p.unchanged.load(Ordering::Relaxed));
        let state = p.state();
        Figures {
            pages: p.pages.load(Ordering::Relaxed),
            rows,
            inserted,
            updated,
            rows_per_sec: (rows as f64 / elapsed.as_secs_f64().max(0.001)).round(),
            requests: source.client.tally().requests.load(Ordering::Relaxed),
            walk: state.current_walk.unwrap_or_else(|| "-".into()),
            watermark: state
                .watermark
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
        }
    }

    /// A structured event, so that log shippers read the figures as fields.
    fn log(&self, source: &Source) {
        tracing::info!(
            source = %source.name,
            pages = self.pages,
            rows = self.rows,
            inserted = self.inserted,
            updated = self.updated,
            rows_per_sec = self.rows_per_sec,
            requests = self.requests,
            walk = %self.walk,
            watermark = %self.watermark,
            "progress"
        );
    }
}

fn summary(source: &Source, elapsed: Duration) -> String {
    let f = Figures::of(source, elapsed);
    format!(
        "pages {:>6}  rows {:>8} (+{} new, {} changed)  {:>7.0} rows/s  requests {:>6}  walk {:<9} watermark {}",
        f.pages, f.rows, f.inserted, f.updated, f.rows_per_sec, f.requests, f.walk, f.watermark,
    )
}

async fn draw_bars(sources: Vec<Arc<Source>>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {prefix:<20} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bars: Vec<ProgressBar> = sources
        .iter()
        .map(|s| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(s.name.clone());
            bar
        })
        .collect();
    let started = Instant::now();
    loop {
        for (bar, source) in bars.iter().zip(&sources) {
            bar.set_message(summary(source, started.elapsed()));
            bar.tick();
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => break,
        }
    }
    for (bar, source) in bars.iter().zip(&sources) {
        bar.finish_with_message(summary(source, started.elapsed()));
    }
}

/// Every 10 s, and once more when stopped (as the bars leave their final figures on
/// screen), one `progress` event per source.
async fn log_lines(sources: Vec<Arc<Source>>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => false,
            _ = stop.cancelled() => true,
        };
        for source in &sources {
            Figures::of(source, started.elapsed()).log(source);
        }
        if stopped {
            break;
        }
    }
}
