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

/// How far back the rate on the bars looks: recent enough to show a slowdown, long enough
/// not to flicker with each page.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Rows written (new or changed) per second over the last [`RATE_WINDOW`], not since the
/// start: an average since the start keeps falling through every pause.
#[derive(Default)]
struct RecentRate(std::collections::VecDeque<(Instant, u64)>);

impl RecentRate {
    fn record(&mut self, at: Instant, total: u64) -> f64 {
        self.0.push_back((at, total));
        while self
            .0
            .front()
            .is_some_and(|(then, _)| at.duration_since(*then) > RATE_WINDOW)
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

/// One bar's text, fitted to a terminal `columns` wide: the walk and watermark only where
/// there is room (100 columns and more).
fn bar_text(f: &Figures, per_sec: f64, columns: u16) -> String {
    if columns >= 100 {
        format!(
            "new {}  changed {}  {:.0}/s  requests {}  walk {}  watermark {}",
            f.inserted, f.updated, per_sec, f.requests, f.walk, f.watermark
        )
    } else {
        format!(
            "new {} chg {} {:.0}/s req {}",
            f.inserted, f.updated, per_sec, f.requests
        )
    }
}

async fn draw_bars(sources: Vec<Arc<Source>>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let name_width = sources
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(20);
    let style =
        ProgressStyle::with_template(&format!("{{spinner}} {{prefix:<{name_width}!}} {{msg}}"))
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
    crate::telemetry::route_logs_around(Some(multi.clone()));
    let terminal = console::Term::stderr();
    let mut rates: Vec<RecentRate> = sources.iter().map(|_| RecentRate::default()).collect();
    let mut texts = vec![String::new(); sources.len()];
    let started = Instant::now();
    let mut stopped = false;
    loop {
        let columns = terminal.size().1;
        let now = Instant::now();
        for (((bar, source), rate), text) in
            bars.iter().zip(&sources).zip(&mut rates).zip(&mut texts)
        {
            let f = Figures::of(source, started.elapsed());
            let per_sec = rate.record(now, f.inserted.saturating_add(f.updated));
            // Cut to the columns left after the spinner and the name, one spare: a line
            // that fills the last column makes some terminals wrap it.
            let room = usize::from(columns).saturating_sub(name_width + 4);
            *text = bar_text(&f, per_sec, columns).chars().take(room).collect();
            bar.set_message(text.clone());
            bar.tick();
        }
        if stopped {
            break;
        }
        // One more pass once stopped, so that the bars end on the final figures.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => stopped = true,
        }
    }
    for (bar, text) in bars.iter().zip(texts) {
        bar.finish_with_message(text);
    }
    crate::telemetry::route_logs_around(None);
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
