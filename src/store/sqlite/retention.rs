//! Retention of personal data: clearing and removing conversations that ended long ago,
//! and trimming the audit tables (`[retention]`, `convsync purge`, the daemon's schedule).
//!
//! A conversation has *ended* when it was deleted at the provider (`deleted_at`) or closed
//! (`active = 0` with `closed_at`). Retention only ever touches conversations that ended
//! before the cutoff **and** did not change after it (`last_changed_at`), so an open
//! conversation, or one the provider changed within the window, is never touched. Each
//! purge runs in one transaction; an applied one is recorded in `retention_purges`.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::AssertSqlSafe;

use super::SqliteStore;
use crate::store::{PurgeCounts, RetentionPolicy, StoreError};
use crate::time::Timestamp;

/// The rows of conversations that ended before the cutoff (`?1`) and have not
/// changed since.
const ENDED_BEFORE: &str = "((deleted_at IS NOT NULL AND deleted_at < ?1) \
     OR (active = 0 AND closed_at IS NOT NULL AND closed_at < ?1)) \
     AND last_changed_at < ?1";

impl SqliteStore {
    /// [`crate::store::Administration::purge`]: applies `policy` as of `now`, or with
    /// `apply = false` only counts what it would do.
    pub(super) async fn purge_ended(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        apply: bool,
    ) -> Result<BTreeMap<String, PurgeCounts>, StoreError> {
        let cutoff = |after: Option<Duration>| after.map(|a| now.saturating_sub(a).to_string());
        // Never true of a stored timestamp: "no deletion cutoff".
        let never = String::new();
        let mut counts: BTreeMap<String, PurgeCounts> = BTreeMap::new();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;

        // Deletion first: a row about to be removed is not counted as redacted too.
        if let Some(limit) = cutoff(policy.delete_closed_after) {
            let ended =
                format!("SELECT source, conversation_id FROM conversations WHERE {ENDED_BEFORE}");
            for (source, n) in count_by_source(&mut tx, &ended, &[&limit]).await? {
                counts.entry(source).or_default().deleted = n;
            }
            if apply {
                let follow_ups =
                    format!("DELETE FROM follow_ups WHERE (source, conversation_id) IN ({ended})");
                execute_bound(&mut tx, follow_ups, &[&limit]).await?;
                let conversations = format!("DELETE FROM conversations WHERE {ENDED_BEFORE}");
                execute_bound(&mut tx, conversations, &[&limit]).await?;
            }
        }
        if let Some(limit) = cutoff(policy.redact_closed_after) {
            // Not yet cleared, or rewritten by the provider since it was; and not counted
            // for deletion (?3; a dry run has not removed those rows).
            let pending = format!(
                "{ENDED_BEFORE} AND (redacted_at IS NULL OR redacted_at < last_changed_at) \
                 AND NOT ({})",
                ENDED_BEFORE.replace("?1", "?3")
            );
            let deletion = cutoff(policy.delete_closed_after).unwrap_or(never);
            let selection =
                format!("SELECT source, conversation_id FROM conversations WHERE {pending}");
            let binds = [limit.as_str(), "", deletion.as_str()];
            for (source, n) in count_by_source(&mut tx, &selection, &binds).await? {
                counts.entry(source).or_default().redacted = n;
            }
            if apply {
                let redact = format!(
                    "UPDATE conversations SET raw = '{{}}', title = NULL, contact_id = NULL, \
                     contact_name = NULL, contact_phone = NULL, contact_email = NULL, \
                     redacted_at = ?2 WHERE {pending}"
                );
                let redacted_at = now.to_string();
                execute_bound(&mut tx, redact, &[&limit, &redacted_at, &deletion]).await?;
            }
        }
        if let Some(limit) = cutoff(policy.rejected_records_after) {
            let old = "SELECT source, id FROM rejected_records WHERE rejected_at < ?1";
            for (source, n) in count_by_source(&mut tx, old, &[&limit]).await? {
                counts.entry(source).or_default().rejected_records = n;
            }
            if apply {
                sqlx::query!("DELETE FROM rejected_records WHERE rejected_at < ?1", limit)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(limit) = cutoff(policy.sync_runs_after) {
            let old = "SELECT source, id FROM sync_runs WHERE finished_at IS NOT NULL \
                 AND finished_at < ?1 \
                 AND id NOT IN (SELECT MAX(id) FROM sync_runs GROUP BY source) \
                 AND id NOT IN (SELECT MAX(id) FROM sync_runs \
                     WHERE outcome IN ('caught_up', 'more_to_do') GROUP BY source)";
            for (source, n) in count_by_source(&mut tx, old, &[&limit]).await? {
                counts.entry(source).or_default().sync_runs = n;
            }
            if apply {
                let trim = format!("DELETE FROM sync_runs WHERE id IN (SELECT id FROM ({old}))");
                execute_bound(&mut tx, trim, &[&limit]).await?;
            }
        }

        if let Some(limit) = cutoff(policy.events_after) {
            let old = "SELECT source, seq FROM conversation_events WHERE observed_at < ?1";
            for (source, n) in count_by_source(&mut tx, old, &[&limit]).await? {
                counts.entry(source).or_default().events = n;
            }
            if apply {
                let trim = "DELETE FROM conversation_events WHERE observed_at < ?1".to_owned();
                execute_bound(&mut tx, trim, &[&limit]).await?;
            }
        }
        // The webhook dedupe keys: older than every provider's retry horizon.
        if let Some(limit) = cutoff(policy.webhook_deliveries_after) {
            let old = "SELECT source, event_id FROM webhook_deliveries WHERE received_at < ?1";
            for (source, n) in count_by_source(&mut tx, old, &[&limit]).await? {
                counts.entry(source).or_default().webhook_deliveries = n;
            }
            if apply {
                let trim = "DELETE FROM webhook_deliveries WHERE received_at < ?1".to_owned();
                execute_bound(&mut tx, trim, &[&limit]).await?;
            }
        }

        counts.retain(|_, c| !c.is_empty());
        if !apply {
            tx.rollback().await?;
            return Ok(counts);
        }
        let purged_at = now.to_string();
        for (source, c) in &counts {
            sqlx::query!(
                "INSERT INTO retention_purges (purged_at, source, conversations_redacted, \
                 conversations_deleted, rejected_records_deleted, sync_runs_deleted) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                purged_at,
                source,
                c.redacted as i64,
                c.deleted as i64,
                c.rejected_records as i64,
                c.sync_runs as i64
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// Rows of `selection` (whose first column is the source; `binds` its `?1`, `?2`, ...)
/// per source.
async fn count_by_source(
    tx: &mut sqlx::SqliteConnection,
    selection: &str,
    binds: &[&str],
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = format!("SELECT source, COUNT(*) FROM ({selection}) GROUP BY source");
    let query = binds
        .iter()
        .fold(sqlx::query_as(AssertSqlSafe(sql)), |query, value| {
            query.bind(*value)
        });
    let rows: Vec<(String, i64)> = query.fetch_all(tx).await?;
    Ok(rows
        .into_iter()
        .map(|(source, n)| (source, n.max(0) as u64))
        .collect())
}

/// Runs one retention statement built from the shared cutoff fragments, binding `binds` in
/// order; the same binding as [`count_by_source`], so a dry run counts what an applied one
/// changes.
async fn execute_bound(
    tx: &mut sqlx::SqliteConnection,
    sql: String,
    binds: &[&str],
) -> Result<(), StoreError> {
    binds
        .iter()
        .fold(sqlx::query(AssertSqlSafe(sql)), |query, value| {
            query.bind(*value)
        })
        .execute(tx)
        .await?;
    Ok(())
}
