//! SQLite's statements for webhook events (`store::webhooks`): the delivery record (the
//! dedupe key) and the event's change, in one `BEGIN IMMEDIATE` transaction.

use async_trait::async_trait;

use super::SqliteStore;
use super::follow_ups::SqliteDetails;
use super::queue::queue_follow_up;
use crate::record::DetailRequest;
use crate::store::webhooks::{EventStatements, RowVersion, write_event};
use crate::store::{EventOutcome, EventWrite, StoreError, WebhookWrites};
use crate::time::Timestamp;

#[async_trait]
impl WebhookWrites for SqliteStore {
    async fn apply_event(&self, write: &EventWrite<'_>) -> Result<EventOutcome, StoreError> {
        let result = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut statements = SqliteDetails {
                tx: &mut tx,
                now: Timestamp::now().to_mirror_text(),
            };
            let outcome = write_event(&mut statements, write).await?;
            if outcome == EventOutcome::Duplicate {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(outcome)
        }
        .await;
        self.last_write.note(write.source, &result);
        result
    }

    async fn newest_delivery(&self, source: &str) -> Result<Option<Timestamp>, StoreError> {
        let newest = sqlx::query_scalar!(
            r#"SELECT MAX(sent_at) AS "newest?: String" FROM webhook_deliveries WHERE source = ?"#,
            source
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(parsed(newest))
    }
}

/// A stored instant, read back.
fn parsed(text: Option<String>) -> Option<Timestamp> {
    text.and_then(|t| Timestamp::parse_rfc3339(&t).ok())
}

impl EventStatements for SqliteDetails<'_> {
    async fn claim(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sent_at = write.sent_at.map(Timestamp::to_mirror_text);
        let changed_at = write.changed_at.map(Timestamp::to_mirror_text);
        let done = sqlx::query!(
            "INSERT INTO webhook_deliveries (source, event_id, kind, conversation_id, sent_at,
                 changed_at, received_at, outcome)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'applied')
             ON CONFLICT (source, event_id) DO NOTHING",
            write.source,
            write.event_id,
            write.kind,
            conversation_id,
            sent_at,
            changed_at,
            self.now
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn settle(
        &mut self,
        write: &EventWrite<'_>,
        outcome: EventOutcome,
    ) -> Result<(), StoreError> {
        let outcome = outcome.as_str();
        sqlx::query!(
            "UPDATE webhook_deliveries SET outcome = ? WHERE source = ? AND event_id = ?",
            outcome,
            write.source,
            write.event_id
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn newest_event(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let newest = sqlx::query_scalar!(
            r#"SELECT MAX(changed_at) AS "newest?: String" FROM webhook_deliveries
             WHERE source = ? AND conversation_id = ? AND event_id <> ?
               AND outcome IN ('applied', 'unchanged')"#,
            write.source,
            conversation_id,
            write.event_id
        )
        .fetch_one(&mut **self.tx)
        .await?;
        Ok(parsed(newest))
    }

    async fn row_version(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<Option<RowVersion>, StoreError> {
        let row = sqlx::query!(
            "SELECT last_activity_at, state_changed_at, last_message_direction,
                    last_inbound_at, last_outbound_at, awaiting_reply
             FROM conversations WHERE source = ? AND conversation_id = ?",
            source,
            conversation_id
        )
        .fetch_optional(&mut **self.tx)
        .await?;
        Ok(row.map(|row| RowVersion {
            reply_never_read: row.last_message_direction.is_none()
                && row.last_inbound_at.is_none()
                && row.last_outbound_at.is_none()
                && row.awaiting_reply.is_none(),
            last_activity_at: parsed(row.last_activity_at),
            state_changed_at: parsed(row.state_changed_at),
        }))
    }

    async fn raise_state_version(
        &mut self,
        source: &str,
        conversation_id: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let at = at.to_mirror_text();
        sqlx::query!(
            "UPDATE conversations SET state_changed_at = ?
             WHERE source = ? AND conversation_id = ?
               AND (state_changed_at IS NULL OR state_changed_at < ?)",
            at,
            source,
            conversation_id,
            at
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn set_unread(
        &mut self,
        source: &str,
        conversation_id: &str,
        unread_count: i64,
    ) -> Result<bool, StoreError> {
        let run_id = crate::store::WEBHOOK_RUN_ID;
        let done = sqlx::query!(
            "UPDATE conversations SET unread_count = ?, last_changed_at = ?, run_id = ?
             WHERE source = ? AND conversation_id = ? AND unread_count IS NOT ?",
            unread_count,
            self.now,
            run_id,
            source,
            conversation_id,
            unread_count
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn queue(&mut self, source: &str, detail: &DetailRequest) -> Result<(), StoreError> {
        queue_follow_up(self.tx, source, detail, &self.now).await
    }
}
