//! Retention of personal data: clearing and removing conversations that ended long ago,
//! and trimming the audit tables (`[retention]`, `convsync purge`, the daemon's schedule).
//! The rules are SQLite's (`store::sqlite::retention`): only conversations that ended
//! before the cutoff and did not change after it are touched, one transaction per purge,
//! an applied one recorded in `retention_purges`. The purge holds the whole mirror's lock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::locks::lock_mirror;
use super::{PgStore, instant};
use crate::store::{PurgeCounts, RetentionPolicy, StoreError};
use crate::time::Timestamp;

/// The conversations that ended before the cutoff `limit` (a placeholder) and have not
/// changed since.
fn ended_before(limit: &str) -> String {
    format!(
        "((deleted_at IS NOT NULL AND deleted_at < {limit}) \
          OR (active = false AND closed_at IS NOT NULL AND closed_at < {limit})) \
          AND last_changed_at < {limit}"
    )
}

impl PgStore {
    /// [`crate::store::Administration::purge`]: applies `policy` as of `now`, or with
    /// `apply = false` only counts what it would do.
    pub(super) async fn purge_ended(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        apply: bool,
    ) -> Result<BTreeMap<String, PurgeCounts>, StoreError> {
        let cutoff = |after: Option<Duration>| after.map(|a| instant(now.saturating_sub(a)));
        let mut counts: BTreeMap<String, PurgeCounts> = BTreeMap::new();
        let mut tx = self.pool.begin().await?;
        lock_mirror(&mut tx).await?;

        // Deletion first: a row about to be removed is not counted as redacted too.
        let deletion = cutoff(policy.delete_closed_after);
        if let Some(limit) = deletion {
            let ended = format!(
                "SELECT source, conversation_id FROM conversations WHERE {}",
                ended_before("$1")
            );
            for (source, n) in count_by_source(&mut tx, &ended, &[Some(limit)]).await? {
                counts.entry(source).or_default().deleted = n;
            }
            if apply {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM follow_ups WHERE (source, conversation_id) IN ({ended})"
                )))
                .bind(limit)
                .execute(&mut *tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM conversations WHERE {}",
                    ended_before("$1")
                )))
                .bind(limit)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(limit) = cutoff(policy.redact_closed_after) {
            // Not yet cleared, or rewritten by the provider since it was; and not counted
            // for deletion ($2; a dry run has not removed those rows; none without a
            // deletion cutoff).
            let pending = format!(
                "{} AND (redacted_at IS NULL OR redacted_at < last_changed_at) AND NOT ({})",
                ended_before("$1"),
                ended_before("COALESCE($2, '-infinity'::timestamptz)")
            );
            let selection =
                format!("SELECT source, conversation_id FROM conversations WHERE {pending}");
            let binds = [Some(limit), deletion];
            for (source, n) in count_by_source(&mut tx, &selection, &binds).await? {
                counts.entry(source).or_default().redacted = n;
            }
            if apply {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE conversations SET raw = '{{}}'::jsonb, title = NULL, contact_id = NULL, \
                     contact_name = NULL, contact_phone = NULL, contact_email = NULL, \
                     redacted_at = $3 WHERE {pending}"
                )))
                .bind(limit)
                .bind(deletion)
                .bind(instant(now))
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(limit) = cutoff(policy.rejected_records_after) {
            let old = "SELECT source, id FROM rejected_records WHERE rejected_at < $1";
            for (source, n) in count_by_source(&mut tx, old, &[Some(limit)]).await? {
                counts.entry(source).or_default().rejected_records = n;
            }
            if apply {
                sqlx::query("DELETE FROM rejected_records WHERE rejected_at < $1")
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let Some(limit) = cutoff(policy.sync_runs_after) {
            // Each source's newest run and newest successful run stay: `status` and
            // readiness read them.
            let old = "SELECT source, id FROM sync_runs WHERE finished_at IS NOT NULL \
                 AND finished_at < $1 \
                 AND id NOT IN (SELECT max(id) FROM sync_runs GROUP BY source) \
                 AND id NOT IN (SELECT max(id) FROM sync_runs \
                     WHERE outcome IN ('caught_up', 'more_to_do') GROUP BY source)";
            for (source, n) in count_by_source(&mut tx, old, &[Some(limit)]).await? {
                counts.entry(source).or_default().sync_runs = n;
            }
            if apply {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM sync_runs WHERE id IN (SELECT id FROM ({old}) AS old)"
                )))
                .bind(limit)
                .execute(&mut *tx)
                .await?;
            }
        }

        if let Some(limit) = cutoff(policy.events_after) {
            let old = "SELECT source, seq FROM conversation_events WHERE observed_at < $1";
            for (source, n) in count_by_source(&mut tx, old, &[Some(limit)]).await? {
                counts.entry(source).or_default().events = n;
            }
            if apply {
                sqlx::query("DELETE FROM conversation_events WHERE observed_at < $1")
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // The webhook dedupe keys: older than every provider's retry horizon.
        if let Some(limit) = cutoff(policy.webhook_deliveries_after) {
            let old = "SELECT source, event_id FROM webhook_deliveries WHERE received_at < $1";
            for (source, n) in count_by_source(&mut tx, old, &[Some(limit)]).await? {
                counts.entry(source).or_default().webhook_deliveries = n;
            }
            if apply {
                sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?;
            }
        }

        counts.retain(|_, c| !c.is_empty());
        if !apply {
            tx.rollback().await?;
            return Ok(counts);
        }
        for (source, c) in &counts {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            sqlx::query(
                "INSERT INTO retention_purges (purged_at, source, conversations_redacted, \
                 conversations_deleted, rejected_records_deleted, sync_runs_deleted) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(instant(now))
            .bind(source)
            .bind(count(c.redacted))
            .bind(count(c.deleted))
            .bind(count(c.rejected_records))
            .bind(count(c.sync_runs))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// Rows of `selection` (whose first column is the source; `binds` its `$1`, `$2`, ...)
/// per source.
async fn count_by_source(
    tx: &mut PgConnection,
    selection: &str,
    binds: &[Option<DateTime<Utc>>],
) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = format!("SELECT source, count(*) FROM ({selection}) AS selected GROUP BY source");
    let query = binds
        .iter()
        .fold(sqlx::query_as(sqlx::AssertSqlSafe(sql)), |query, value| {
            query.bind(*value)
        });
    let rows: Vec<(String, i64)> = query.fetch_all(tx).await?;
    Ok(rows
        .into_iter()
        .map(|(source, n)| (source, n.max(0) as u64))
        .collect())
}
