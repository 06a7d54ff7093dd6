//! Live progress of `sync --once` and `demo`: a line per source redrawn on a terminal,
//! periodic log lines otherwise (so CI logs and journald stay readable). With the webhook
//! receiver's metrics (`demo`), each line also carries the source's events beside its
//! polling figures.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::health::webhooks::WebhookMetrics;
use crate::health::webhooks::freshness::{self, SourceFreshness};
use crate::sync::{Engine, Source};

mod eta;

use eta::RecentRate;

/// A running progress display; stop it with [`ProgressDisplay::finish`].
pub struct ProgressDisplay {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ProgressDisplay {
    /// Starts showing progress for every source of `engine`, with its webhook events
    /// when `webhooks` (the receiver's metrics) is given.
    pub fn start(engine: &Engine, webhooks: Option<WebhookMetrics>) -> Self {
        let sources: Vec<Arc<Source>> = engine.sources().to_vec();
        let stop = CancellationToken::new();
        let token = stop.clone();
        // Bars only for a person at a terminal: under `--log-format json` the progress is
        // JSON `progress` events like every other line.
        let task = if std::io::stderr().is_terminal() && !crate::telemetry::json_logs() {
            tokio::spawn(draw_bars(sources, webhooks, token))
        } else {
            tokio::spawn(log_lines(sources, webhooks, token))
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
    /// Records the current walk has read.
    walk_read: u64,
    /// The provider's total for the current walk, where it is believable.
    walk_total: Option<u64>,
    /// Records read from listings since the start, the counter an ETA's rate follows.
    listed: u64,
    watermark: String,
    /// The source's webhook figures, when the receiver runs and the source takes events.
    events: Option<SourceFreshness>,
}

impl Figures {
    fn of(source: &Source, elapsed: Duration, events: Option<SourceFreshness>) -> Self {
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
            walk_read: state.walk_read,
            walk_total: state
                .current_walk
                .as_ref()
                .and(eta::believable_total(state.walk_read, state.walk_total)),
            listed: p.listed.load(Ordering::Relaxed),
            walk: state.current_walk.unwrap_or_else(|| "-".into()),
            watermark: state
                .watermark
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
            events,
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
            walk_read = self.walk_read,
            walk_total = self.walk_total,
            watermark = %self.watermark,
            events_accepted = self.events.as_ref().map(|e| e.accepted),
            events_refused = self.events.as_ref().map(SourceFreshness::rejected_total),
            event_to_commit_p50_ms = self
                .events
                .as_ref()
                .and_then(|e| e.event_to_commit_p50)
                .map(|d| d.as_millis() as u64),
            "progress"
        );
    }
}

/// One bar's text, fitted to a terminal `columns` wide: the walk and watermark only where
/// there is room (100 columns and more); the walk's `read/total` and its ETA (from the
/// recent rate of records read, `listed_per_sec`) only where the provider gave a
/// believable total.
fn bar_text(f: &Figures, per_sec: f64, listed_per_sec: f64, columns: u16) -> String {
    let toward_total = f.walk_total.map(|total| {
        let left = eta::eta(f.walk_read, total, listed_per_sec)
            .map(|d| format!(" ETA {}", eta::format_eta(d)))
            .unwrap_or_default();
        format!("{}/{total}{left}", f.walk_read)
    });
    if columns >= 100 {
        let walk = match &toward_total {
            Some(t) => format!("{} {t}", f.walk),
            None => f.walk.clone(),
        };
        let mut text = format!(
            "new {}  changed {}  {:.0}/s  requests {}",
            f.inserted, f.updated, per_sec, f.requests
        );
        // Events next to the polling figures, before what is cut first on narrower
        // terminals.
        if let Some(e) = &f.events {
            text.push_str(&format!(
                "  events {} (refused {}, p50 {})",
                e.accepted,
                e.rejected_total(),
                latency_text(e.event_to_commit_p50)
            ));
        }
        text.push_str(&format!("  walk {walk}  watermark {}", f.watermark));
        text
    } else {
        let mut text = format!(
            "new {} chg {} {:.0}/s req {}",
            f.inserted, f.updated, per_sec, f.requests
        );
        if let Some(e) = &f.events {
            text.push_str(&format!(" ev {}", e.accepted));
        }
        if let Some(t) = toward_total {
            text.push(' ');
            text.push_str(&t);
        }
        text
    }
}

/// A latency as a newcomer reads it: milliseconds below 10 s, else seconds; `–` when
/// nothing was measured.
pub fn latency_text(latency: Option<Duration>) -> String {
    match latency {
        None => "–".to_owned(),
        Some(d) if d < Duration::from_secs(10) => format!("{} ms", d.as_millis()),
        Some(d) => format!("{:.1} s", d.as_secs_f64()),
    }
}

/// Each source's webhook figures now, by source name (empty without a receiver, or when
/// they cannot be rendered).
fn events_by_source(
    webhooks: Option<&WebhookMetrics>,
    sources: &[Arc<Source>],
) -> HashMap<String, SourceFreshness> {
    let Some(metrics) = webhooks else {
        return HashMap::new();
    };
    match freshness::read(metrics, sources) {
        Ok(rows) => rows.into_iter().map(|r| (r.source.clone(), r)).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "progress: the webhook figures could not be read");
            HashMap::new()
        }
    }
}

async fn draw_bars(
    sources: Vec<Arc<Source>>,
    webhooks: Option<WebhookMetrics>,
    stop: CancellationToken,
) {
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
    let mut rates: Vec<(RecentRate, RecentRate)> = sources
        .iter()
        .map(|_| (RecentRate::default(), RecentRate::default()))
        .collect();
    let mut texts = vec![String::new(); sources.len()];
    let started = Instant::now();
    let mut stopped = false;
    loop {
        let columns = terminal.size().1;
        let now = Instant::now();
        let mut events = events_by_source(webhooks.as_ref(), &sources);
        for (((bar, source), rate), text) in
            bars.iter().zip(&sources).zip(&mut rates).zip(&mut texts)
        {
            let f = Figures::of(source, started.elapsed(), events.remove(&source.name));
            let per_sec = rate.0.record(now, f.inserted.saturating_add(f.updated));
            let listed_per_sec = rate.1.record(now, f.listed);
            // Cut to the columns left after the spinner and the name, one spare: a line
            // that fills the last column makes some terminals wrap it.
            let room = usize::from(columns).saturating_sub(name_width + 4);
            *text = bar_text(&f, per_sec, listed_per_sec, columns)
                .chars()
                .take(room)
                .collect();
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
async fn log_lines(
    sources: Vec<Arc<Source>>,
    webhooks: Option<WebhookMetrics>,
    stop: CancellationToken,
) {
    let started = Instant::now();
    loop {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => false,
            _ = stop.cancelled() => true,
        };
        let mut events = events_by_source(webhooks.as_ref(), &sources);
        for source in &sources {
            Figures::of(source, started.elapsed(), events.remove(&source.name)).log(source);
        }
        if stopped {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(walk_total: Option<u64>) -> Figures {
        Figures {
            pages: 1,
            rows: 20,
            inserted: 20,
            updated: 0,
            rows_per_sec: 0.0,
            requests: 1,
            walk: "delta".into(),
            walk_read: 20,
            walk_total,
            listed: 20,
            watermark: "-".into(),
            events: None,
        }
    }

    #[test]
    fn a_known_total_shows_read_of_total_and_the_eta_at_any_width() {
        let f = figures(Some(100));
        assert_eq!(
            bar_text(&f, 40.0, 40.0, 160),
            "new 20  changed 0  40/s  requests 1  walk delta 20/100 ETA 2s  watermark -"
        );
        assert_eq!(
            bar_text(&f, 40.0, 40.0, 80),
            "new 20 chg 0 40/s req 1 20/100 ETA 2s"
        );
        // No rate yet: the fraction without an ETA.
        assert_eq!(bar_text(&f, 0.0, 0.0, 80), "new 20 chg 0 0/s req 1 20/100");
    }

    #[test]
    fn events_show_beside_the_polling_figures() {
        let mut f = figures(None);
        f.events = Some(SourceFreshness {
            accepted: 12,
            rejected: [("stale".to_owned(), 1)].into(),
            event_to_commit_p50: Some(Duration::from_millis(35)),
            ..SourceFreshness::default()
        });
        assert_eq!(
            bar_text(&f, 40.0, 40.0, 160),
            "new 20  changed 0  40/s  requests 1  events 12 (refused 1, p50 35 ms)  walk delta  watermark -"
        );
        assert_eq!(
            bar_text(&f, 40.0, 40.0, 80),
            "new 20 chg 0 40/s req 1 ev 12"
        );
        assert_eq!(latency_text(None), "–");
        assert_eq!(latency_text(Some(Duration::from_secs(12))), "12.0 s");
    }

    #[test]
    fn an_unknown_total_shows_no_fraction_and_no_eta() {
        let f = figures(None);
        assert_eq!(bar_text(&f, 40.0, 40.0, 80), "new 20 chg 0 40/s req 1");
        assert!(!bar_text(&f, 40.0, 40.0, 160).contains("ETA"));
    }
}
