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
    if let Err(e) = result {
        eprintln!("convsync: logging already initialised: {e}");
    }
    if let Some(why) = unusable {
        tracing::warn!(
            "RUST_LOG is not a filter convsync can use ({why}); logging at info instead. \
             Set it to a level (error, warn, info, debug, trace) or directives such as \
             info,convsync=debug"
        );
    }
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
