//! Logging setup: structured `tracing` events to stderr, human-readable or JSON lines,
//! filtered by `RUST_LOG` (default `info`; a value that does not parse is reported, not
//! silently replaced).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FmtSpan};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Pretty,
    /// One JSON object per line, with span fields (source, run id), for log shippers.
    Json,
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let (filter, unusable) = filter_from_env();
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !journal)
        .with_writer(|| AroundBars)
        .with_span_events(FmtSpan::NONE);
    let pretty = || format::format().with_target(false);
    let json = || {
        format::format()
            .json()
            .with_current_span(true)
            .with_span_list(true)
    };
    let result = match (format, journal) {
        (LogFormat::Pretty, false) => builder.event_format(pretty()).try_init(),
        (LogFormat::Pretty, true) => builder.event_format(JournalPriority(pretty())).try_init(),
        (LogFormat::Json, false) => builder.json().event_format(json()).try_init(),
        (LogFormat::Json, true) => builder
            .json()
            .event_format(JournalPriority(json()))
            .try_init(),
    };
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

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug), which journald
/// reads off stderr streams (`SyslogLevelPrefix=`, on by default; the unit in
/// deploy/systemd keeps stderr on the journal) and strips: `journalctl -p warning` then
/// shows warnings and errors only. Chosen over tracing-journald because it needs no
/// socket access in the sandboxed unit and keeps the lines, JSON or not, as they are.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The progress bars on the terminal while `sync --once` draws them: log lines are then
/// printed above the bars (they are cleared, the line written, the bars redrawn), so that
/// one mechanism owns the terminal and no log line lands inside a bar.
static BARS: std::sync::Mutex<Option<indicatif::MultiProgress>> = std::sync::Mutex::new(None);

/// Routes log lines around `bars` until called again with `None`.
pub fn route_logs_around(bars: Option<indicatif::MultiProgress>) {
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// Stderr, written around the progress bars when there are any. The formatter writes each
/// event with one `write_all`, so each line is printed whole.
struct AroundBars;

impl std::io::Write for AroundBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bars {
            Some(bars) => bars
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
