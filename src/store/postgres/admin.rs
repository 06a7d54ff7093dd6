//! Operator tools on the whole database: which sources it holds rows for, renaming and
//! forgetting a source, the migrations, and retention (in `retention.rs`). What rewrites
//! sources holds the whole mirror's lock (`locks.rs`), so no page lands meanwhile.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::PgStore;
use super::locks::lock_mirror;
use super::schema::{MIGRATOR, check_schema};
use crate::store::{
    Administration, PurgeCounts, RenameOutcome, RetentionPolicy, StoreError, StoredSource,
};
use crate::time::Timestamp;

/// Every table with a `source` column: what a rename moves and a forget deletes. Fixed
/// names, never input, so formatting them into statements is safe.
const SOURCE_TABLES: &[&str] = &[
    "conversations",
    "cursors",
    "sync_runs",
    "follow_ups",
    "rejected_records",
    "conversation_events",
    "backfilled_sources",
];

#[async_trait]
impl Administration for PgStore {
    async fn stored_sources(&self) -> Result<Vec<StoredSource>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT source, sum(c)::bigint, sum(w)::bigint, sum(r)::bigint FROM (
                 SELECT source, count(*) AS c, 0 AS w, 0 AS r FROM conversations GROUP BY source
                 UNION ALL SELECT source, 0, count(*), 0 FROM cursors GROUP BY source
                 UNION ALL SELECT source, 0, 0, count(*) FROM sync_runs GROUP BY source
                 UNION ALL SELECT source, 0, 0, 0 FROM follow_ups GROUP BY source
                 UNION ALL SELECT source, 0, 0, 0 FROM rejected_records GROUP BY source
             ) AS held GROUP BY source",
        )
        .fetch_all(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let by_name: BTreeMap<String, StoredSource> = rows
            .into_iter()
            .map(|(name, rows, walks, runs)| {
                let source = StoredSource {
                    name: name.clone(),
                    rows: count(rows),
                    walks: count(walks),
                    runs: count(runs),
                };
                (name, source)
            })
            .collect();
        Ok(by_name.into_values().collect())
    }

    async fn source_accounts(&self, source: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT account COLLATE \"C\" FROM conversations WHERE source = $1
             ORDER BY 1",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn rename_source(&self, old: &str, new: &str) -> Result<RenameOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_mirror(&mut tx).await?;
        let held = |name: &str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT count(*) FROM conversations WHERE source = $1)
                      + (SELECT count(*) FROM cursors WHERE source = $1)
                      + (SELECT count(*) FROM sync_runs WHERE source = $1)",
            )
            .bind(name.to_owned())
        };
        if held(new).fetch_one(&mut *tx).await? > 0 {
            return Ok(RenameOutcome::TargetInUse);
        }
        if held(old).fetch_one(&mut *tx).await? == 0 {
            return Ok(RenameOutcome::NothingToRename);
        }
        let mut rows = 0;
        for table in SOURCE_TABLES {
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET source = $1 WHERE source = $2"
            )))
            .bind(new)
            .bind(old)
            .execute(&mut *tx)
            .await?;
            if *table == "conversations" {
                rows = done.rows_affected();
            }
        }
        tx.commit().await?;
        Ok(RenameOutcome::Renamed { rows })
    }

    async fn forget_source(&self, source: &str) -> Result<StoredSource, StoreError> {
        let before = self
            .stored_sources()
            .await?
            .into_iter()
            .find(|s| s.name == source)
            .unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        lock_mirror(&mut tx).await?;
        for table in SOURCE_TABLES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE source = $1"
            )))
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(before)
    }

    async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await?;
        if !has_table {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn migrate(&self, shown_name: &str) -> Result<(), StoreError> {
        let shown_name = super::without_password(shown_name);
        check_schema(&mut *self.pool.acquire().await?, &shown_name).await?;
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn purge(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        apply: bool,
    ) -> Result<BTreeMap<String, PurgeCounts>, StoreError> {
        self.purge_ended(policy, now, apply).await
    }
}
