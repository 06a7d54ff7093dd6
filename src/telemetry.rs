//! Logging setup: structured `tracing` events to stderr, human-readable or JSON lines,
//! filtered by `RUST_LOG` (default `info`; a value that does not parse is reported, not
//! silently replaced).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod fit;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Pretty,
    /// One JSON object per line, for log shippers: the span fields (`source`, `provider`,
    /// `run_id`) at the top level, the event's under `fields`.
    Json,
}

/// Whether [`init`] chose JSON lines, for the output that must then stay JSON too.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether log lines are JSON (`--log-format json`).
pub fn json_logs() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let (filter, unusable) = filter_from_env();
    let journal = stderr_is_journal();
    let sink = LogSink { journal };
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
    let lines: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .event_format(format::format().with_target(false))
            .with_ansi(std::io::stderr().is_terminal() && !journal)
            .with_writer(sink)
            .boxed(),
        LogFormat::Json => json_lines(sink).boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(lines)
        .with(filter)
        .try_init();
    match result {
        Ok(()) => install_panic_hook(),
        Err(e) => eprintln!("convsync: logging already initialised: {e}"),
    }
    if let Some(why) = unusable {
        tracing::warn!(
            "RUST_LOG is not a filter convsync can use ({why}); logging at info instead. \
             Set it to a level (error, warn, info, debug, trace) or directives such as \
             info,convsync=debug"
        );
    }
}

/// JSON lines in tracing-subscriber's shape (`timestamp`, `level`, `fields`, `target`,
/// `span`, `spans`), plus every span field at the top level (json-subscriber), so that a
/// log shipper filters on `source` without digging into `spans`. The span fields
/// (`source`, `provider`, `run_id`, `pages`, `changed`) clash with none of those keys.
fn json_lines(sink: LogSink) -> json_subscriber::JsonLayer<tracing_subscriber::Registry, LogSink> {
    let mut json = json_subscriber::JsonLayer::new(sink);
    json.with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_event("fields")
        .with_target("target")
        .with_current_span("span")
        .with_span_list("spans")
        .with_top_level_flattened_span_list();
    json
}

/// Sends panics (bugs) through `tracing`: the standard hook prints plain text on stderr,
/// which breaks `--log-format json` and names no source, while an event logged on the
/// panicking task carries its span (source, run id) like every other line. Threads with
/// no subscriber (none in the daemon) keep the previous hook, so nothing is lost.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let listening =
            tracing::dispatcher::get_default(|d| !d.is::<tracing::subscriber::NoSubscriber>());
        if !listening {
            return previous(info);
        }
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        tracing::error!(
            panic = %crate::error_text::panic_message(info.payload()),
            location = info.location().map(|l| l.to_string()),
            backtrace,
            "panicked: this is a bug in convsync; please report it with this line"
        );
    }));
}

/// The filter `RUST_LOG` asks for, or `info` when it is unset or empty. A value that does
/// not parse falls back to `info` too, but with the reason returned, so that an operator
/// who asked for `debug` and mistyped it is told instead of quietly getting less.
fn filter_from_env() -> (EnvFilter, Option<String>) {
    let fallback = || EnvFilter::new("info");
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Err(std::env::VarError::NotPresent) => (fallback(), None),
        Err(std::env::VarError::NotUnicode(_)) => (fallback(), Some("not UTF-8".to_owned())),
        Ok(value) if value.trim().is_empty() => (fallback(), None),
        Ok(value) => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (fallback(), Some(format!("{value:?}: {e}"))),
        },
    }
}

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` names its
/// device and inode; a child whose stderr was redirected elsewhere inherits the variable
/// but not the stream, so both are compared).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    stderr_device_inode().is_some_and(|(d, i)| d.to_string() == device && i.to_string() == inode)
}

#[cfg(unix)]
fn stderr_device_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn stderr_device_inode() -> Option<(u64, u64)> {
    None
}

/// The progress bars on the terminal while `sync --once` draws them: log lines are then
/// printed above the bars (they are cleared, the line written, the bars redrawn), so that
/// one mechanism owns the terminal and no log line lands inside a bar.
static BARS: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

/// Routes log lines around `bars` until called again with `None`.
pub fn route_logs_around(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// Where log lines go: stderr, each line prefixed with its syslog priority under systemd,
/// and written around the progress bars while there are any.
///
/// The priority (`<3>` error … `<7>` debug) is read by journald off stderr streams
/// (`SyslogLevelPrefix=`, on by default; the unit in deploy/systemd keeps stderr on the
/// journal) and stripped: `journalctl -p warning` then shows warnings and errors only.
/// Chosen over tracing-journald because it needs no socket access in the sandboxed unit and
/// keeps the lines, JSON or not, as they are.
#[derive(Clone, Copy)]
struct LogSink {
    /// Stderr is the journal stream.
    journal: bool,
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine { priority: None }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogLine {
        let priority = self.journal.then(|| match *meta.level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        });
        LogLine { priority }
    }
}

/// One event's line. Both formatters write an event with one `write_all`, so each line is
/// printed whole, prefixed once.
struct LogLine {
    priority: Option<u8>,
}

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = match self.priority.take() {
            Some(priority) => [format!("<{priority}>").as_bytes(), buf].concat(),
            None => buf.to_vec(),
        };
        let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bars {
            // A line wider than the terminal would wrap wherever the terminal likes: it is
            // wrapped here instead, continuation rows indented. (JSON lines never meet
            // bars: those are drawn under the pretty format only.)
            Some(bars) => {
                let columns = usize::from(console::Term::stderr().size().1);
                let fitted = fit::to_width(&String::from_utf8_lossy(&line), columns);
                bars.suspend(|| std::io::stderr().write_all(fitted.as_bytes()))?;
            }
            None => std::io::stderr().write_all(&line)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
