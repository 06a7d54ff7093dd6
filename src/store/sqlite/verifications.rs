//! Verifications on SQLite: the mirror's states read in one statement, a finished
//! verification recorded in one insert (waiting out the daemon's write lock through the
//! pool's busy timeout).

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::verifications::{count, mode_from_str, stored};
use crate::store::{DriftCounts, MirroredState, StoreError, VerificationRecord, Verifications};
use crate::time::Timestamp;

/// A stored instant read back; text the mirror did not write reads as unknown.
fn instant(text: Option<String>) -> Option<Timestamp> {
    text.and_then(|t| Timestamp::parse_rfc3339(&t).ok())
}

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
                last_activity_at: instant(row.last_activity_at),
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
        let rows = sqlx::query!(
            r#"SELECT source, started_at, finished_at, mode, walk, checked, missing, stale,
                      extra, deleted_listed, verified_through, requests
               FROM verifications
               WHERE id IN (SELECT MAX(id) FROM verifications GROUP BY source)
               ORDER BY source"#
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| VerificationRecord {
                source: row.source,
                started_at: instant(Some(row.started_at)).unwrap_or(Timestamp::UNIX_EPOCH),
                finished_at: instant(Some(row.finished_at)).unwrap_or(Timestamp::UNIX_EPOCH),
                mode: mode_from_str(&row.mode),
                walk: row.walk,
                checked: count(row.checked),
                drift: DriftCounts {
                    missing: count(row.missing),
                    stale: count(row.stale),
                    extra: count(row.extra),
                    deleted_listed: count(row.deleted_listed),
                },
                verified_through: instant(row.verified_through),
                requests: count(row.requests),
            })
            .collect())
    }
}
