//! Verifications on SQLite: the mirror's states read in one statement, a finished
//! verification recorded in one insert (waiting out the daemon's write lock through the
//! pool's busy timeout).

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::verifications::{StoredVerification, instant, stored};
use crate::store::{MirroredState, StoreError, VerificationRecord, Verifications};
use crate::time::Timestamp;

#[async_trait]
impl Verifications for SqliteStore {
    async fn mirrored_states(&self, source: &str) -> Result<Vec<MirroredState>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT conversation_id, last_activity_at, active AS "active: bool",
                      closed_at IS NOT NULL AS "closed!: bool",
                      deleted_at IS NOT NULL AS "deleted!: bool"
               FROM conversations WHERE source = ?1"#,
            source
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| MirroredState {
                conversation_id: row.conversation_id,
                last_activity_at: instant(row.last_activity_at.as_deref()),
                active: row.active,
                closed: row.closed,
                deleted: row.deleted,
            })
            .collect())
    }

    async fn record_verification(&self, record: &VerificationRecord) -> Result<(), StoreError> {
        let started_at = record.started_at.to_mirror_text();
        let finished_at = record.finished_at.to_mirror_text();
        let verified_through = record.verified_through.map(Timestamp::to_mirror_text);
        let (checked, requests) = (stored(record.checked), stored(record.requests));
        let drift = &record.drift;
        let (missing, stale, extra, deleted_listed) = (
            stored(drift.missing),
            stored(drift.stale),
            stored(drift.extra),
            stored(drift.deleted_listed),
        );
        let mode = record.mode.as_str();
        sqlx::query!(
            "INSERT INTO verifications (source, started_at, finished_at, mode, walk, checked,
                 missing, stale, extra, deleted_listed, verified_through, requests)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            record.source,
            started_at,
            finished_at,
            mode,
            record.walk,
            checked,
            missing,
            stale,
            extra,
            deleted_listed,
            verified_through,
            requests
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_verifications(&self) -> Result<Vec<VerificationRecord>, StoreError> {
        let rows = sqlx::query_as!(
            StoredVerification,
            "SELECT source, started_at, finished_at, mode, walk, checked, missing, stale,
                    extra, deleted_listed, verified_through, requests
             FROM verifications
             WHERE id IN (SELECT MAX(id) FROM verifications GROUP BY source)
             ORDER BY source"
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(VerificationRecord::from).collect())
    }
}
