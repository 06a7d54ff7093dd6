//! Verifications on PostgreSQL: the same reads and the one insert as on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::store::verifications::{StoredVerification, stored};
use crate::store::{MirroredState, StoreError, VerificationRecord, Verifications};
use crate::time::Timestamp;

#[async_trait]
impl Verifications for PgStore {
    async fn mirrored_states(&self, source: &str) -> Result<Vec<MirroredState>, StoreError> {
        let rows: Vec<(String, Option<DateTime<Utc>>, Option<bool>, bool, bool)> = sqlx::query_as(
            "SELECT conversation_id, last_activity_at, active,
                        closed_at IS NOT NULL, deleted_at IS NOT NULL
                 FROM conversations WHERE source = $1",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(conversation_id, last_activity_at, active, closed, deleted)| MirroredState {
                    conversation_id,
                    last_activity_at: last_activity_at.map(Timestamp::from),
                    active,
                    closed,
                    deleted,
                },
            )
            .collect())
    }

    async fn record_verification(&self, record: &VerificationRecord) -> Result<(), StoreError> {
        let drift = &record.drift;
        sqlx::query(
            "INSERT INTO verifications (source, started_at, finished_at, mode, walk, checked,
                 missing, stale, extra, deleted_listed, verified_through, requests)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&record.source)
        .bind(record.started_at.as_datetime())
        .bind(record.finished_at.as_datetime())
        .bind(record.mode.as_str())
        .bind(&record.walk)
        .bind(stored(record.checked))
        .bind(stored(drift.missing))
        .bind(stored(drift.stale))
        .bind(stored(drift.extra))
        .bind(stored(drift.deleted_listed))
        .bind(record.verified_through.map(Timestamp::as_datetime))
        .bind(stored(record.requests))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_verifications(&self) -> Result<Vec<VerificationRecord>, StoreError> {
        let rows: Vec<StoredVerification> = sqlx::query_as(
            "SELECT DISTINCT ON (source) source,
                    convsync_event_time(started_at) AS started_at,
                    convsync_event_time(finished_at) AS finished_at, mode, walk, checked,
                    missing, stale, extra, deleted_listed,
                    convsync_event_time(verified_through) AS verified_through, requests
             FROM verifications ORDER BY source, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(VerificationRecord::from).collect())
    }
}
