//! The change feed on PostgreSQL. `seq` values come from a sequence, allocated before
//! commit: with several writers a reader could see 11 committed while 10 is still open and
//! then, resuming after 11, miss 10 forever. So the feed answers only up to a safe
//! horizon: the sequence's last value `L`, once every transaction that was open when `L`
//! was read has ended. Every value up to `L` was allocated by a transaction that already
//! held an xid (the triggers run after the row is written), which is then either committed
//! (its events are read) or gone (its values are gaps, never filled later). Writers never
//! wait for each other or for readers.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::PgStore;
use crate::store::{BackfillEvents, ChangeFeed, ConversationEvent, StoreError};

/// How often the reader checks whether the transactions open at its horizon have ended.
const HORIZON_POLL: Duration = Duration::from_millis(10);

/// How long the reader waits for them: a page transaction commits within seconds (a
/// backfill every few thousand rows), so a longer wait means a stuck session.
const HORIZON_WAIT: Duration = Duration::from_secs(60);

#[async_trait]
impl ChangeFeed for PgStore {
    async fn events_after(
        &self,
        after: i64,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConversationEvent>, StoreError> {
        let horizon = self.safe_horizon().await?;
        if horizon <= after {
            return Ok(Vec::new());
        }
        let events = sqlx::query_as(
            "SELECT seq, source, conversation_id, kind, old_value, new_value, direction,
                    convsync_event_time(provider_at) AS provider_at,
                    convsync_event_time(observed_at) AS observed_at, run_id
             FROM conversation_events
             WHERE seq > $1 AND seq <= $2 AND ($3::text IS NULL OR source = $3)
             ORDER BY seq LIMIT $4",
        )
        .bind(after)
        .bind(horizon)
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    async fn set_backfill_events(&self, mode: BackfillEvents) -> Result<(), StoreError> {
        // Read first, as on SQLite: a start that changes nothing takes no lock.
        let stored: String = sqlx::query_scalar("SELECT backfill FROM event_settings WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        if stored != mode.as_str() {
            sqlx::query("UPDATE event_settings SET backfill = $1 WHERE id = 1")
                .bind(mode.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

impl PgStore {
    /// The highest `seq` below which every event is committed or will never exist.
    async fn safe_horizon(&self) -> Result<i64, StoreError> {
        // The sequence first, the snapshot after: a transaction that allocated a value up
        // to `last` had its xid before this snapshot was taken, so it is below `xmax`.
        let last: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM conversation_events_seq",
        )
        .fetch_one(&self.pool)
        .await?;
        let xmax: String =
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
                .fetch_one(&self.pool)
                .await?;
        let started = Instant::now();
        loop {
            let ended: bool = sqlx::query_scalar(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8",
            )
            .bind(&xmax)
            .fetch_one(&self.pool)
            .await?;
            if ended {
                return Ok(last);
            }
            if started.elapsed() > HORIZON_WAIT {
                return Err(StoreError::Busy(format!(
                    "a transaction open for over {}s holds the change feed back \
                     (see pg_stat_activity)",
                    HORIZON_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(HORIZON_POLL).await;
        }
    }
}
