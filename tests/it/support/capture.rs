//! Log capture: every line a test's code logs, at trace level, kept for assertions.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The captured log text.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures this thread's logs at trace level until the guard is dropped (use a
/// `current_thread` runtime so every task logs here).
pub fn trace_capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer({
            let c = capture.clone();
            move || c.clone()
        })
        .with_ansi(false)
        .finish();
    // While a single dispatcher is registered, tracing-core asks only the current thread's
    // one about a callsite hit for the first time: a test on another thread would switch
    // off, for good, callsites this capture needs. A second, idle dispatcher that lives as
    // long as the test binary prevents that.
    static IDLE: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    IDLE.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}
