//! Waiting out another process's write lock: the one busy-wait policy of every write,
//! the engine's page writes and the start-up bookkeeping alike.
//!
//! SQLite's own busy timeout (`[database] busy_timeout`) waits inside one statement; a
//! write that still finds the database locked after it applied nothing. [`while_busy`]
//! tries such a write again after a doubling pause, so a backup or a report tool holding
//! the lock for minutes delays convsync instead of failing it.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::StoreError;

/// First wait after a write found the database locked beyond its busy timeout (doubling).
const FIRST_BUSY_DELAY: Duration = Duration::from_millis(250);

/// Longest wait between two attempts at a locked database.
const MAX_BUSY_DELAY: Duration = Duration::from_secs(10);

/// Runs `write` until it succeeds or fails for another reason than another process's
/// write lock, waiting out that lock as `BusyWait` says.
pub async fn while_busy<T, F, Fut>(
    limit: Duration,
    cancel: &CancellationToken,
    what: &str,
    mut write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut busy = BusyWait::new(limit);
    loop {
        match write().await {
            Err(e) if busy.wait(&e, cancel, what).await => {}
            other => return other,
        }
    }
}

/// Waiting out another process's write lock. A write that still finds the database busy
/// after its busy timeout applied nothing; it is tried again after a doubling pause until
/// it succeeds, `limit` has passed or shutdown is requested. Other errors, a full disk
/// included, end the wait at once.
struct BusyWait {
    started: Instant,
    limit: Duration,
    delay: Duration,
}

impl BusyWait {
    fn new(limit: Duration) -> Self {
        BusyWait {
            started: Instant::now(),
            limit,
            delay: FIRST_BUSY_DELAY,
        }
    }

    /// Whether to try `what` again after `error`, having waited if so.
    async fn wait(&mut self, error: &StoreError, cancel: &CancellationToken, what: &str) -> bool {
        let StoreError::Busy(message) = error else {
            return false;
        };
        if cancel.is_cancelled() || self.started.elapsed() >= self.limit {
            return false;
        }
        tracing::warn!(%message, retry_in = ?self.delay, "the database is locked by another process; {what} waits and tries again");
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            _ = cancel.cancelled() => {}
        }
        self.delay = (self.delay * 2).min(MAX_BUSY_DELAY);
        true
    }
}
