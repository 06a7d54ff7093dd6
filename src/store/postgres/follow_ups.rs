//! The `follow_ups` table: the queue pages fill (through `queue.rs` and `rows.rs`), read in
//! priority order, and the answers, each applied in one transaction with its dequeue,
//! under the locks of the sources they answer for.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::leases::hold_fence;
use super::locks::lock_sources;
use super::rows::upsert_records;
use super::runs::note_commit;
use super::text::storable;
use super::{PgStore, instant};
use crate::record::{Absence, ActivityPatch, ConversationRecord, DetailRequest};
use crate::store::follow_ups::{DetailStatements, runs_of, sources_of, write_detail};
use crate::store::upsert::Owner;
use crate::store::{DetailWrite, FollowUpQueue, PageCounts, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl FollowUpQueue for PgStore {
    async fn pending_follow_ups(
        &self,
        source: &str,
        limit: u32,
    ) -> Result<Vec<DetailRequest>, StoreError> {
        type Row = (String, String, Option<DateTime<Utc>>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT f.conversation_id, f.kind, f.since, f.position FROM follow_ups f
             LEFT JOIN conversations c
               ON c.source = f.source AND c.conversation_id = f.conversation_id
             WHERE f.source = $1
             ORDER BY f.attempts, c.last_activity_at IS NULL, c.last_activity_at DESC,
                      f.queued_at
             LIMIT $2",
        )
        .bind(source)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(conversation_id, kind, since, position)| {
                Ok(DetailRequest {
                    conversation_id,
                    kind,
                    since: since.map(Timestamp::from),
                    position: position
                        .map(|p| serde_json::from_str(&p))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn count_follow_ups(&self, source: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM follow_ups WHERE source = $1")
            .bind(source)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn follow_up_backlog(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT source, count(*) FROM follow_ups GROUP BY source")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(source, n)| (source, n.max(0) as u64))
            .collect())
    }

    async fn defer_follow_up(
        &self,
        source: &str,
        detail: &DetailRequest,
    ) -> Result<(), StoreError> {
        self.count_failed_attempt(source, detail, false).await
    }

    async fn restart_follow_up(
        &self,
        source: &str,
        detail: &DetailRequest,
    ) -> Result<(), StoreError> {
        self.count_failed_attempt(source, detail, true).await
    }

    async fn apply_details(&self, writes: &[DetailWrite<'_>]) -> Result<PageCounts, StoreError> {
        let mut counts = PageCounts::default();
        if writes.is_empty() {
            return Ok(counts);
        }
        let sources = sources_of(writes);
        let result = async {
            let mut tx = self.pool.begin().await?;
            lock_sources(&mut tx, &sources.iter().copied().collect::<Vec<_>>()).await?;
            let mut details = PgDetails {
                tx: &mut tx,
                now: instant(Timestamp::now()),
            };
            for write in writes {
                counts += write_detail(&mut details, write).await?;
            }
            hold_fence(&mut tx, self.fence.as_ref()).await?;
            note_commit(&mut tx, &runs_of(writes)).await?;
            tx.commit().await?;
            Ok(counts)
        }
        .await;
        for source in sources {
            self.last_write.note(source, &result);
        }
        result
    }
}

impl PgStore {
    /// Counts a failed attempt at `detail`, forgetting its page position if asked.
    async fn count_failed_attempt(
        &self,
        source: &str,
        detail: &DetailRequest,
        forget_position: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE follow_ups SET attempts = attempts + 1,
                position = CASE WHEN $1 THEN NULL ELSE position END
             WHERE source = $2 AND conversation_id = $3 AND kind = $4",
        )
        .bind(forget_position)
        .bind(source)
        .bind(storable(&detail.conversation_id))
        .bind(&detail.kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The follow-up answers' statements, inside the transaction that holds the sources'
/// locks.
pub(super) struct PgDetails<'t> {
    pub(super) tx: &'t mut PgConnection,
    pub(super) now: DateTime<Utc>,
}

impl DetailStatements for PgDetails<'_> {
    async fn upsert_record(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
    ) -> Result<PageCounts, StoreError> {
        let rows = [(record, record.content_hash())];
        Ok(upsert_records(self.tx, owner, self.now, &rows)
            .await?
            .counts)
    }

    async fn apply_patch(
        &mut self,
        source: &str,
        conversation_id: &str,
        patch: &ActivityPatch,
        run_id: i64,
    ) -> Result<bool, StoreError> {
        let conversation_id = storable(conversation_id);
        apply_patch(self.tx, source, &conversation_id, patch, run_id, self.now).await
    }

    async fn mark_gone(
        &mut self,
        source: &str,
        conversation_id: &str,
        absence: Absence,
        run_id: i64,
    ) -> Result<u64, StoreError> {
        let (set, also_closed) = match absence {
            Absence::Closed => ("active = false, closed_at = COALESCE(closed_at, $1)", false),
            Absence::Deleted => ("deleted_at = COALESCE(deleted_at, $1)", true),
        };
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE conversations SET {set}, last_changed_at = $1, run_id = $2
             WHERE source = $3 AND conversation_id = $4 AND deleted_at IS NULL
               AND (closed_at IS NULL OR $5)"
        )))
        .bind(self.now)
        .bind(run_id)
        .bind(source)
        .bind(storable(conversation_id))
        .bind(also_closed)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    async fn store_position(
        &mut self,
        source: &str,
        detail: &DetailRequest,
        position: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE follow_ups SET position = $1
             WHERE source = $2 AND conversation_id = $3 AND kind = $4",
        )
        .bind(position.to_string())
        .bind(source)
        .bind(storable(&detail.conversation_id))
        .bind(&detail.kind)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn dequeue(&mut self, source: &str, detail: &DetailRequest) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM follow_ups WHERE source = $1 AND conversation_id = $2 AND kind = $3",
        )
        .bind(source)
        .bind(storable(&detail.conversation_id))
        .bind(&detail.kind)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

/// Writes who spoke last as a conversation's messages tell it: message times only move
/// forward (an older message list never rewinds them), and the row counts as changed only
/// when a value moved. Says whether it did.
async fn apply_patch(
    tx: &mut PgConnection,
    source: &str,
    conversation_id: &str,
    patch: &ActivityPatch,
    run_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let times = [
        ("last_activity_at", patch.last_activity_at.map(instant)),
        ("last_inbound_at", patch.last_inbound_at.map(instant)),
        ("last_outbound_at", patch.last_outbound_at.map(instant)),
    ];
    let times: Vec<(&str, DateTime<Utc>)> = times
        .into_iter()
        .filter_map(|(column, value)| Some((column, value?)))
        .collect();
    let direction = patch.last_message_direction.map(|d| d.as_str());
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("UPDATE conversations SET ");
    for (column, value) in &times {
        q.push(format!("{column} = GREATEST({column}, "));
        q.push_bind(*value);
        q.push("), ");
    }
    if let Some(direction) = direction {
        q.push("last_message_direction = ");
        q.push_bind(direction);
        q.push(", ");
    }
    if let Some(awaiting) = patch.awaiting_reply {
        q.push("awaiting_reply = ");
        q.push_bind(awaiting);
        q.push(", ");
    }
    q.push("last_changed_at = ");
    q.push_bind(now);
    q.push(", run_id = ");
    q.push_bind(run_id);
    q.push(" WHERE source = ");
    q.push_bind(source.to_owned());
    q.push(" AND conversation_id = ");
    q.push_bind(conversation_id.to_owned());
    q.push(" AND (false");
    for (column, value) in &times {
        q.push(format!(" OR {column} IS NULL OR {column} < "));
        q.push_bind(*value);
    }
    if let Some(direction) = direction {
        q.push(" OR last_message_direction IS DISTINCT FROM ");
        q.push_bind(direction);
    }
    if let Some(awaiting) = patch.awaiting_reply {
        q.push(" OR awaiting_reply IS DISTINCT FROM ");
        q.push_bind(awaiting);
    }
    q.push(")");
    let done = q.build().execute(&mut *tx).await?;
    Ok(done.rows_affected() > 0)
}
