//! The `follow_ups` table: the queue pages fill (through `queue.rs` and `prepared.rs`),
//! read in priority order, and the answers, each applied in one transaction with its
//! dequeue.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite, Transaction};

use super::SqliteStore;
use super::rows::upsert_records;
use super::runs::note_commit;
use crate::record::{Absence, ActivityPatch, ConversationRecord, DetailRequest};
use crate::store::follow_ups::{DetailStatements, runs_of, sources_of, write_detail};
use crate::store::upsert::Owner;
use crate::store::{DetailWrite, FollowUpQueue, PageCounts, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl FollowUpQueue for SqliteStore {
    async fn pending_follow_ups(
        &self,
        source: &str,
        limit: u32,
    ) -> Result<Vec<DetailRequest>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT f.conversation_id AS "conversation_id!", f.kind AS "kind!", f.since,
                      f.position
             FROM follow_ups f
             LEFT JOIN conversations c
               ON c.source = f.source AND c.conversation_id = f.conversation_id
             WHERE f.source = ?
             ORDER BY f.attempts, c.last_activity_at IS NULL, c.last_activity_at DESC,
                      f.queued_at
             LIMIT ?"#,
            source,
            limit
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DetailRequest {
                    conversation_id: row.conversation_id,
                    kind: row.kind,
                    since: row
                        .since
                        .map(|s| Timestamp::parse_rfc3339(&s))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    position: row
                        .position
                        .map(|p| serde_json::from_str(&p))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    async fn count_follow_ups(&self, source: &str) -> Result<u64, StoreError> {
        let n = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM follow_ups WHERE source = ?"#,
            source
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn follow_up_backlog(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows =
            sqlx::query!(r#"SELECT source, COUNT(*) AS "n!: i64" FROM follow_ups GROUP BY source"#)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.source, row.n.max(0) as u64))
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
        let result = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let mut details = SqliteDetails {
                tx: &mut tx,
                now: Timestamp::now().to_mirror_text(),
            };
            for write in writes {
                counts += write_detail(&mut details, write).await?;
            }
            note_commit(&mut tx, &runs_of(writes)).await?;
            tx.commit().await?;
            Ok(counts)
        }
        .await;
        for source in sources_of(writes) {
            self.last_write.note(source, &result);
        }
        result
    }
}

impl SqliteStore {
    /// Counts a failed attempt at `detail`, forgetting its page position if asked.
    async fn count_failed_attempt(
        &self,
        source: &str,
        detail: &DetailRequest,
        forget_position: bool,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE follow_ups SET attempts = attempts + 1,
                position = CASE WHEN ? THEN NULL ELSE position END
             WHERE source = ? AND conversation_id = ? AND kind = ?",
            forget_position,
            source,
            detail.conversation_id,
            detail.kind
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The follow-up answers' statements, inside the write transaction.
pub(super) struct SqliteDetails<'t> {
    pub(super) tx: &'t mut Transaction<'static, Sqlite>,
    pub(super) now: String,
}

impl DetailStatements for SqliteDetails<'_> {
    async fn upsert_record(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
    ) -> Result<PageCounts, StoreError> {
        let rows = [(record, record.content_hash())];
        Ok(upsert_records(self.tx, owner, &self.now, &rows)
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
        apply_patch(self.tx, source, conversation_id, patch, run_id, &self.now).await
    }

    async fn mark_gone(
        &mut self,
        source: &str,
        conversation_id: &str,
        absence: Absence,
        run_id: i64,
    ) -> Result<u64, StoreError> {
        let set = match absence {
            Absence::Closed => "active = 0, closed_at = COALESCE(closed_at, ?)",
            Absence::Deleted => "deleted_at = COALESCE(deleted_at, ?)",
        };
        let done = sqlx::query(AssertSqlSafe(format!(
            "UPDATE conversations SET {set}, last_changed_at = ?, run_id = ?
             WHERE source = ? AND conversation_id = ? AND deleted_at IS NULL
               AND (closed_at IS NULL OR ? = 'deleted')"
        )))
        .bind(&self.now)
        .bind(&self.now)
        .bind(run_id)
        .bind(source)
        .bind(conversation_id)
        .bind(match absence {
            Absence::Closed => "closed",
            Absence::Deleted => "deleted",
        })
        .execute(&mut **self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    async fn store_position(
        &mut self,
        source: &str,
        detail: &DetailRequest,
        position: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let position = position.to_string();
        sqlx::query!(
            "UPDATE follow_ups SET position = ? WHERE source = ? AND conversation_id = ? AND kind = ?",
            position,
            source,
            detail.conversation_id,
            detail.kind
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }

    async fn dequeue(&mut self, source: &str, detail: &DetailRequest) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM follow_ups WHERE source = ? AND conversation_id = ? AND kind = ?",
            source,
            detail.conversation_id,
            detail.kind
        )
        .execute(&mut **self.tx)
        .await?;
        Ok(())
    }
}

/// Writes who spoke last as a conversation's messages tell it: message times only move
/// forward (an older message list never rewinds them), and the row counts as changed only
/// when a value moved. Says whether it did.
async fn apply_patch(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    conversation_id: &str,
    patch: &ActivityPatch,
    run_id: i64,
    now: &str,
) -> Result<bool, StoreError> {
    let text = |t: Option<Timestamp>| t.map(|t| t.to_mirror_text());
    let fields: [(&str, Option<String>); 5] = [
        ("last_activity_at", text(patch.last_activity_at)),
        ("last_inbound_at", text(patch.last_inbound_at)),
        ("last_outbound_at", text(patch.last_outbound_at)),
        (
            "last_message_direction",
            patch.last_message_direction.map(|d| d.as_str().to_owned()),
        ),
        (
            "awaiting_reply",
            patch
                .awaiting_reply
                .map(|b| if b { "1" } else { "0" }.to_owned()),
        ),
    ];
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE conversations SET ");
    let mut changed_if: Vec<(&str, String)> = Vec::new();
    for (column, value) in fields.iter() {
        if let Some(value) = value {
            // Timestamps only move forward: an older message list never rewinds them.
            if column.ends_with("_at") {
                q.push(format!(
                    "{column} = CASE WHEN {column} IS NULL OR {column} < "
                ));
                q.push_bind(value.clone());
                q.push(" THEN ");
                q.push_bind(value.clone());
                q.push(format!(" ELSE {column} END, "));
            } else if *column == "awaiting_reply" {
                q.push(format!("{column} = "));
                q.push_bind(value.parse::<i64>().unwrap_or(0));
                q.push(", ");
            } else {
                q.push(format!("{column} = "));
                q.push_bind(value.clone());
                q.push(", ");
            }
            changed_if.push((column, value.clone()));
        }
    }
    q.push("last_changed_at = ");
    q.push_bind(now.to_owned());
    q.push(", run_id = ");
    q.push_bind(run_id);
    q.push(" WHERE source = ");
    q.push_bind(source.to_owned());
    q.push(" AND conversation_id = ");
    q.push_bind(conversation_id.to_owned());
    q.push(" AND (");
    for (i, (column, value)) in changed_if.iter().enumerate() {
        if i > 0 {
            q.push(" OR ");
        }
        if column.ends_with("_at") {
            q.push(format!("{column} IS NULL OR {column} < "));
            q.push_bind(value.clone());
        } else if *column == "awaiting_reply" {
            q.push(format!("{column} IS NOT "));
            q.push_bind(value.parse::<i64>().unwrap_or(0));
        } else {
            q.push(format!("{column} IS NOT "));
            q.push_bind(value.clone());
        }
    }
    q.push(")");
    let done = q.build().execute(&mut **tx).await?;
    Ok(done.rows_affected() > 0)
}
