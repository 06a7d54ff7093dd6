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

fn summary(source: &Source, elapsed: Duration) -> String {
    let p = &source.progress;
    let rows = p.inserted.load(Ordering::Relaxed)
        + p.updated.load(Ordering::Relaxed)
        + p.unchanged.load(Ordering::Relaxed);
    let rate = rows as f64 / elapsed.as_secs_f64().max(0.001);
    let state = p.state();
    format!(
        "pages {:>6}  rows {:>8} (+{} new, {} changed)  {:>7.0} rows/s  requests {:>6}  walk {:<9} watermark {}",
        p.pages.load(Ordering::Relaxed),
        rows,
        p.inserted.load(Ordering::Relaxed),
        p.updated.load(Ordering::Relaxed),
        rate,
        source.client.tally().requests.load(Ordering::Relaxed),
        state.current_walk.as_deref().unwrap_or("-"),
        state
            .watermark
            .map(|w| w.to_string())
            .unwrap_or_else(|| "-".into()),
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

async fn log_lines(sources: Vec<Arc<Source>>, stop: CancellationToken) {
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => break,
        }
        for source in &sources {
            tracing::info!(source = %source.name, "progress: {}", summary(source, started.elapsed()));
        }
    }
}
