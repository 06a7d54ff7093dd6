//! PostgreSQL's statements for webhook events (`store::webhooks`): the delivery record
//! (the dedupe key) and the event's change, in one transaction holding the source's lock
//! (the same lock its pages take, so an event and a page of the same source never
//! interleave).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::follow_ups::PgDetails;
use super::locks::lock_sources;
use super::queue::queue_follow_up;
use super::text::storable;
use super::{PgStore, instant};
use crate::record::DetailRequest;
use crate::store::webhooks::{EventStatements, RowVersion, write_event};
use crate::store::{EventOutcome, EventWrite, StoreError, WEBHOOK_RUN_ID, WebhookWrites};
use crate::time::Timestamp;

#[async_trait]
impl WebhookWrites for PgStore {
    async fn apply_event(&self, write: &EventWrite<'_>) -> Result<EventOutcome, StoreError> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            lock_sources(&mut tx, &[write.source]).await?;
            let mut statements = PgDetails {
                tx: &mut tx,
                now: instant(Timestamp::now()),
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
        let newest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT MAX(sent_at) FROM webhook_deliveries WHERE source = $1")
                .bind(source)
                .fetch_one(&self.pool)
                .await?;
        Ok(parsed(newest))
    }
}

/// A row's `last_activity_at`, `state_changed_at`, and whether every reply column is NULL.
type StoredVersion = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, bool);

/// A stored instant, read back.
fn parsed(at: Option<DateTime<Utc>>) -> Option<Timestamp> {
    at.map(Timestamp::from)
}

impl EventStatements for PgDetails<'_> {
    async fn claim(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO webhook_deliveries (source, event_id, kind, conversation_id, sent_at,
                 changed_at, received_at, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'applied')
             ON CONFLICT (source, event_id) DO NOTHING",
        )
        .bind(write.source)
        .bind(storable(write.event_id))
        .bind(storable(write.kind))
        .bind(conversation_id.map(storable))
        .bind(write.sent_at.map(instant))
        .bind(write.changed_at.map(instant))
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn settle(
        &mut self,
        write: &EventWrite<'_>,
        outcome: EventOutcome,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_deliveries SET outcome = $1 WHERE source = $2 AND event_id = $3",
        )
        .bind(outcome.as_str())
        .bind(write.source)
        .bind(storable(write.event_id))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn newest_event(
        &mut self,
        write: &EventWrite<'_>,
        conversation_id: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let newest: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MAX(changed_at) FROM webhook_deliveries
             WHERE source = $1 AND conversation_id = $2 AND event_id <> $3
               AND outcome IN ('applied', 'unchanged')",
        )
        .bind(write.source)
        .bind(storable(conversation_id))
        .bind(storable(write.event_id))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(parsed(newest))
    }

    async fn row_version(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<Option<RowVersion>, StoreError> {
        let row: Option<StoredVersion> = sqlx::query_as(
            "SELECT last_activity_at, state_changed_at,
                    (last_message_direction IS NULL AND last_inbound_at IS NULL
                     AND last_outbound_at IS NULL AND awaiting_reply IS NULL)
             FROM conversations WHERE source = $1 AND conversation_id = $2",
        )
        .bind(source)
        .bind(storable(conversation_id))
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(
            |(last_activity_at, state_changed_at, reply_never_read)| RowVersion {
                last_activity_at: parsed(last_activity_at),
                state_changed_at: parsed(state_changed_at),
                reply_never_read,
            },
        ))
    }

    async fn raise_state_version(
        &mut self,
        source: &str,
        conversation_id: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET state_changed_at = $1
             WHERE source = $2 AND conversation_id = $3
               AND (state_changed_at IS NULL OR state_changed_at < $1)",
        )
        .bind(instant(at))
        .bind(source)
        .bind(storable(conversation_id))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn set_unread(
        &mut self,
        source: &str,
        conversation_id: &str,
        unread_count: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE conversations SET unread_count = $1, last_changed_at = $2, run_id = $3
             WHERE source = $4 AND conversation_id = $5
               AND unread_count IS DISTINCT FROM $1",
        )
        .bind(unread_count)
        .bind(self.now)
        .bind(WEBHOOK_RUN_ID)
        .bind(source)
        .bind(storable(conversation_id))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn queue(&mut self, source: &str, detail: &DetailRequest) -> Result<(), StoreError> {
        queue_follow_up(self.tx, source, detail, self.now).await
    }
}
