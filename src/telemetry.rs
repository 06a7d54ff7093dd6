//! Logging setup: structured `tracing` events to stderr, human-readable or JSON lines,
//! filtered by `RUST_LOG` (default `info`; a value that does not parse is reported, not
//! silently replaced).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
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
            panic = %crate::sync::panic_message(info.payload()),
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
