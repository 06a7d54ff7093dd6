//! `convsync changes --after SEQ [--follow] [--source NAME] [--format jsonl|csv]`: the
//! change history as a feed, for a warehouse or a queue fed incrementally. Every committed
//! change is printed exactly once, in `seq` order; a consumer that stores the last `seq` it
//! processed and resumes with `--after` that value never misses or repeats one. Reads the
//! database only (no secret is read), beside the daemon.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use tokio_util::sync::CancellationToken;

use crate::store::{ConversationEvent, Store};

/// Events read per query: a bounded batch, however long the history.
const BATCH: u32 = 1000;

/// How often `--follow` looks for new events once it has printed everything.
pub const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// How the events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChangesFormat {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// What to read.
#[derive(Debug, Clone)]
pub struct ChangesRequest {
    /// Print events with `seq` above this.
    pub after: i64,
    /// Keep waiting for new events until stopped.
    pub follow: bool,
    /// Only this source's events.
    pub source: Option<String>,
    /// Output format.
    pub format: ChangesFormat,
    /// Stop after this many events.
    pub limit: Option<u64>,
}

/// Opens the configuration's database and prints its events to stdout.
pub async fn run(
    config_path: &Path,
    request: &ChangesRequest,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mirror = super::database::Mirror::open(config_path).await?;
    let stdout = std::io::stdout();
    let result = stream(&mirror.store, request, &mut stdout.lock(), shutdown).await;
    mirror.store.close().await;
    result
}

/// Writes the events `request` asks for to `out`, in `seq` order, flushing after each
/// batch; ends when they are all written (without `follow`), at `limit`, or at `shutdown`.
pub async fn stream(
    store: &Store,
    request: &ChangesRequest,
    out: &mut dyn Write,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut after = request.after;
    let mut left = request.limit.unwrap_or(u64::MAX);
    let mut header_due = true;
    while left > 0 {
        let want = u32::try_from(left.min(u64::from(BATCH))).unwrap_or(BATCH);
        let events = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            events = store.events_after(after, request.source.as_deref(), want) => {
                events.context("reading conversation_events")?
            }
        };
        if let Some(last) = events.last() {
            after = last.seq;
            left = left.saturating_sub(events.len() as u64);
            write_events(&events, request.format, header_due, out)?;
            header_due = false;
            continue;
        }
        if !request.follow {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
    Ok(())
}

/// Prints one batch: JSON lines, or CSV rows (after the header, when `header_due`).
fn write_events(
    events: &[ConversationEvent],
    format: ChangesFormat,
    header_due: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        ChangesFormat::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(header_due)
                .from_writer(&mut *out);
            for event in events {
                writer.serialize(event).context("writing CSV")?;
            }
            writer.flush().context("writing CSV")?;
        }
        ChangesFormat::Jsonl => {
            for event in events {
                serde_json::to_writer(&mut *out, event)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}
