//! Waiting out another process's write lock: the one busy-wait policy of every write,
//! the engine's page writes and the start-up bookkeeping alike.
//!
//! SQLite's own busy timeout (`[database] busy_timeout`) waits inside one statement; a
//! write that still finds the database locked after it applied nothing. [`while_busy`]
//! tries such a write again after a doubling pause, so a backup or a report tool holding
//! the lock for minutes delays convsync instead of failing it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::retry::{Backoff, Transient};

/// A write that found the database locked beyond its busy timeout is tried again after
/// 250 ms, doubling up to 10 s between attempts, until the caller's time limit.
const BUSY_WAIT: Backoff = Backoff::doubling(Duration::from_millis(250), Duration::from_secs(10));

/// Runs `write` until it succeeds or fails for another reason than another process's
/// write lock (the only [`Transient`] store error), waiting out that lock as `BUSY_WAIT` says
/// until `limit` has passed since the first attempt or shutdown is requested. Other
/// errors, a full disk included, end the wait at once.
pub async fn while_busy<T, F, Fut>(
    limit: Duration,
    cancel: &CancellationToken,
    what: &str,
    write: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    BUSY_WAIT
        .with_time_limit(limit)
        .retry(cancel, StoreError::is_transient, write, |error, retry_in| {
            // Only `Busy` is transient; its text is SQLite's.
            if let StoreError::Busy(message) = error {
                tracing::warn!(%message, ?retry_in, "the database is locked by another process; {what} waits and tries again");
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use tokio::time::Instant;

    use super::*;

    /// Only another process's write lock is transient.
    #[test]
    fn only_a_busy_database_is_transient() {
        assert!(StoreError::Busy("database is locked".into()).is_transient());
        assert!(!StoreError::Full("database or disk is full".into()).is_transient());
        assert!(!StoreError::Corrupt("bad cursor".into()).is_transient());
    }

    /// A locked database is waited out 250 ms, 500 ms, 1 s … until the write succeeds.
    #[tokio::test(start_paused = true)]
    async fn a_busy_write_is_tried_again_after_doubling_waits() {
        let attempts = Cell::new(0);
        let started = Instant::now();
        let written = while_busy(
            Duration::from_secs(60),
            &CancellationToken::new(),
            "a test write",
            || {
                attempts.set(attempts.get() + 1);
                let n = attempts.get();
                async move {
                    if n <= 3 {
                        Err(StoreError::Busy("database is locked".into()))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(written.unwrap(), 4);
        assert_eq!(started.elapsed(), Duration::from_millis(250 + 500 + 1000));
    }

    /// A full disk ends the wait at once; so does the time limit, and shutdown.
    #[tokio::test(start_paused = true)]
    async fn other_errors_the_limit_and_shutdown_end_the_wait() {
        let running = CancellationToken::new();
        let full = while_busy(Duration::from_secs(60), &running, "x", || async {
            Err::<(), _>(StoreError::Full("disk full".into()))
        })
        .await;
        assert!(matches!(full, Err(StoreError::Full(_))));

        let busy = || async { Err::<(), _>(StoreError::Busy("locked".into())) };
        let started = Instant::now();
        let limited = while_busy(Duration::from_secs(20), &running, "x", busy).await;
        assert!(matches!(limited, Err(StoreError::Busy(_))));
        // 0.25 + 0.5 + 1 + 2 + 4 + 8 = 15.75 s, then 10 s more: past the 20 s limit.
        assert_eq!(started.elapsed(), Duration::from_millis(25_750));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        let stopped = while_busy(Duration::from_secs(20), &cancel, "x", busy).await;
        assert!(matches!(stopped, Err(StoreError::Busy(_))));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
