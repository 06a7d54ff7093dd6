//! The change feed on SQLite: one writer at a time holds the write lock, so `seq`
//! (AUTOINCREMENT) is allocated in commit order and a reader sees only committed rows.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{BackfillEvents, ChangeFeed, ConversationEvent, StoreError};

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn events_after(
        &self,
        after: i64,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ConversationEvent>, StoreError> {
        let events = sqlx::query_as(
            "SELECT seq, source, conversation_id, kind, old_value, new_value, direction,
                    provider_at, observed_at, run_id
             FROM conversation_events
             WHERE seq > ?1 AND (?2 IS NULL OR source = ?2)
             ORDER BY seq LIMIT ?3",
        )
        .bind(after)
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(events)
    }

    async fn set_backfill_events(&self, mode: BackfillEvents) -> Result<(), StoreError> {
        // Read first: an UPDATE takes the write lock even when it changes nothing, and
        // every start would then wait for whoever holds it.
        let stored: String = sqlx::query_scalar("SELECT backfill FROM event_settings WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        if stored != mode.as_str() {
            sqlx::query("UPDATE event_settings SET backfill = ? WHERE id = 1")
                .bind(mode.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
