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
    "conversation_events",
    "backfilled_sources",
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
        Ok(sqlx::query_scalar!(
            "SELECT DISTINCT account FROM conversations WHERE source = ? ORDER BY account",
            source
        )
        .fetch_all(&self.pool)
        .await?)
    }

    async fn rename_source(&self, old: &str, new: &str) -> Result<RenameOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if held(&mut tx, new).await? > 0 {
            return Ok(RenameOutcome::TargetInUse);
        }
        if held(&mut tx, old).await? == 0 {
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
        // sqlx takes no lock around SQLite migrations: two processes starting together (a
        // daemon and `convsync migrate`, say) can both find a migration pending, and the
        // second one's statements then fail on what the first just added. A run that
        // failed while another process applied migrations is run again, and finds them
        // applied; a run that failed with nobody else making progress is a real failure.
        // Each retry needs one more migration applied, so the loop is bounded.
        let mut applied = self.applied_migrations().await?;
        loop {
            let Err(error) = MIGRATOR.run(&self.pool).await else {
                return Ok(());
            };
            let now = self.applied_migrations().await?;
            if now.len() <= applied.len() {
                return Err(error.into());
            }
            tracing::debug!(%error, "another process migrated the database meanwhile; migrating again");
            applied = now;
        }
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

/// Rows, cursors and runs stored under `name`: whether a source of that name has a past.
async fn held(tx: &mut sqlx::SqliteConnection, name: &str) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (SELECT COUNT(*) FROM conversations WHERE source = ?1)
                + (SELECT COUNT(*) FROM cursors WHERE source = ?1)
                + (SELECT COUNT(*) FROM sync_runs WHERE source = ?1) AS "n!: i64""#,
        name
    )
    .fetch_one(tx)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::super::schema::newest_known_version;
    use super::*;
    use crate::store::{Backend, StoreSettings};

    /// Two processes migrating one fresh file at the same moment (a daemon starting while an
    /// operator runs `convsync migrate`) both succeed: the one that finds its migration
    /// already applied by the other runs again instead of failing on a duplicate column.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_migrations_of_one_file_both_succeed() {
        let newest = newest_known_version();
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let settings = StoreSettings {
                url: format!("sqlite://{}", dir.path().join("mirror.db").display()),
                max_connections: 1,
                ..StoreSettings::default()
            };
            let first = SqliteStore::connect(&settings).await.unwrap();
            let second = SqliteStore::connect(&settings).await.unwrap();
            let (a, b) = tokio::join!(first.migrate(&settings.url), second.migrate(&settings.url));
            assert!(a.is_ok() && b.is_ok(), "round {round}: {a:?} / {b:?}");
            let applied = first.applied_migrations().await.unwrap();
            assert_eq!(applied.last(), Some(&newest), "round {round}");
            first.close().await;
            second.close().await;
        }
    }
}
