//! Verifications on PostgreSQL: the same reads and the one insert as on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::PgStore;
use crate::store::verifications::{count, mode_from_str, stored};
use crate::store::{DriftCounts, MirroredState, StoreError, VerificationRecord, Verifications};
use crate::time::Timestamp;

/// One `verifications` row as PostgreSQL answers it.
#[derive(sqlx::FromRow)]
struct Row {
    source: String,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    mode: String,
    walk: String,
    checked: i64,
    missing: i64,
    stale: i64,
    extra: i64,
    deleted_listed: i64,
    verified_through: Option<DateTime<Utc>>,
    requests: i64,
}

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
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT DISTINCT ON (source) source, started_at, finished_at, mode, walk, checked,
                    missing, stale, extra, deleted_listed, verified_through, requests
             FROM verifications ORDER BY source, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| VerificationRecord {
                source: row.source,
                started_at: row.started_at.into(),
                finished_at: row.finished_at.into(),
                mode: mode_from_str(&row.mode),
                walk: row.walk,
                checked: count(row.checked),
                drift: DriftCounts {
                    missing: count(row.missing),
                    stale: count(row.stale),
                    extra: count(row.extra),
                    deleted_listed: count(row.deleted_listed),
                },
                verified_through: row.verified_through.map(Timestamp::from),
                requests: count(row.requests),
            })
            .collect())
    }
}
