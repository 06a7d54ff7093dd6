//! The log lines a test emits, captured as text so that the test can read what an
//! operator would see.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing::subscriber::DefaultGuard;

/// Captures, until dropped, every event at `level` or above emitted on the current thread
/// (run the test on a `current_thread` runtime so that spawned tasks log here too), in
/// the daemon's human-readable format without colours.
pub struct LogCapture {
    text: SharedBuffer,
    _guard: DefaultGuard,
    // While a single dispatcher is registered, tracing-core asks only the current thread's
    // one about a callsite hit for the first time: a test on another thread would switch
    // off, for good, callsites this test needs. A second, idle dispatcher prevents that.
    _idle: tracing::Dispatch,
}

impl LogCapture {
    /// Starts capturing.
    pub fn start(level: Level) -> Self {
        let text = SharedBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer({
                let text = text.clone();
                move || text.clone()
            })
            .with_ansi(false)
            .finish();
        let idle = tracing::Dispatch::new(tracing_subscriber::registry());
        let guard = tracing::subscriber::set_default(subscriber);
        LogCapture {
            text,
            _guard: guard,
            _idle: idle,
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.0.lock().unwrap()).into_owned()
    }
}

#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
