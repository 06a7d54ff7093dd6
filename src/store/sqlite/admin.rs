//! Operator tools on the whole database: which sources it holds rows for, renaming and
//! forgetting a source, the migrations, and retention (in `retention.rs`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;

use super::SqliteStore;
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
];

#[async_trait]
impl Administration for SqliteStore {
    async fn stored_sources(&self) -> Result<Vec<StoredSource>, StoreError> {
        let mut by_name: BTreeMap<String, StoredSource> = BTreeMap::new();
        for table in SOURCE_TABLES {
            let counts: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT source, COUNT(*) FROM {table} GROUP BY source"
            )))
            .fetch_all(&self.pool)
            .await?;
            for (name, count) in counts {
                let entry = by_name.entry(name.clone()).or_insert_with(|| StoredSource {
                    name,
                    ..StoredSource::default()
                });
                let count = u64::try_from(count).unwrap_or(0);
                match *table {
                    "conversations" => entry.rows = count,
                    "cursors" => entry.walks = count,
                    "sync_runs" => entry.runs = count,
                    _ => {}
                }
            }
        }
        Ok(by_name.into_values().collect())
    }

    async fn source_accounts(&self, source: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT account FROM conversations WHERE source = ? ORDER BY account",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn rename_source(&self, old: &str, new: &str) -> Result<RenameOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let held = |name: &str| {
            sqlx::query_scalar::<_, i64>(
                "SELECT (SELECT COUNT(*) FROM conversations WHERE source = ?1)
                      + (SELECT COUNT(*) FROM cursors WHERE source = ?1)
                      + (SELECT COUNT(*) FROM sync_runs WHERE source = ?1)",
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
            let done = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET source = ? WHERE source = ?"
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for table in SOURCE_TABLES {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE source = ?"
            )))
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(before)
    }

    async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let has_table: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await?;
        if has_table == 0 {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn migrate(&self, shown_name: &str) -> Result<(), StoreError> {
        check_schema(&mut *self.pool.acquire().await?, shown_name).await?;
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
