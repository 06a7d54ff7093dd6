//! Operator tools on the whole database: which sources it holds rows for, renaming and
//! forgetting a source, the migrations, and retention (in `retention.rs`). What rewrites
//! sources holds the whole mirror's lock (`locks.rs`), so no page lands meanwhile.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;
use super::locks::lock_mirror;
use super::schema::{MIGRATOR, check_schema};
use crate::store::admin::{SourceStatements, forget_source_rows, rename_source_rows};
use crate::store::{
    Administration, PurgeCounts, RenameOutcome, RetentionPolicy, StoreError, StoredSource,
};
use crate::time::Timestamp;

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
        let outcome = rename_source_rows(&mut PgSources { tx: &mut tx }, old, new).await?;
        if matches!(outcome, RenameOutcome::Renamed { .. }) {
            tx.commit().await?;
        }
        Ok(outcome)
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
        forget_source_rows(&mut PgSources { tx: &mut tx }, source).await?;
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

/// A source's rows, inside the transaction that holds the mirror's lock.
struct PgSources<'t> {
    tx: &'t mut PgConnection,
}

impl SourceStatements for PgSources<'_> {
    async fn held(&mut self, name: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM conversations WHERE source = $1)
                  + (SELECT count(*) FROM cursors WHERE source = $1)
                  + (SELECT count(*) FROM sync_runs WHERE source = $1)",
        )
        .bind(name)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn rename_in(
        &mut self,
        table: &'static str,
        old: &str,
        new: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET source = $1 WHERE source = $2"
        )))
        .bind(new)
        .bind(old)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_from(&mut self, table: &'static str, source: &str) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE source = $1"
        )))
        .bind(source)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
