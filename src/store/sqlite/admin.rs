//! Operator tools on the whole database: which sources it holds rows for, renaming and
//! forgetting a source, writing a walk's cursor back, and which migrations are applied.
//! Used by the `sources`, `state` and `migrate` commands, never by the engine's cycles.

use std::collections::BTreeMap;

use sqlx::AssertSqlSafe;

use super::cursor::write_cursor;
use super::{CursorState, Store, StoreError};

/// Every table with a `source` column: what a rename moves and a forget deletes. Fixed
/// names, never input, so formatting them into statements is safe.
const SOURCE_TABLES: &[&str] = &[
    "conversations",
    "cursors",
    "sync_runs",
    "follow_ups",
    "rejected_records",
];

/// What the database holds for one source name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoredSource {
    /// The name in the `source` columns.
    pub name: String,
    /// Conversation rows (deleted ones included).
    pub rows: u64,
    /// Walk cursors.
    pub walks: u64,
    /// Recorded cycles.
    pub runs: u64,
}

/// How a rename went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenameOutcome {
    /// Every row, cursor and run moved to the new name.
    Renamed {
        /// Conversation rows moved.
        rows: u64,
    },
    /// The database holds nothing under the old name.
    NothingToRename,
    /// The new name already has rows or cursors; nothing was changed.
    TargetInUse,
}

impl Store {
    /// Every source name found in the database, with its counts, by name.
    pub async fn stored_sources(&self) -> Result<Vec<StoredSource>, StoreError> {
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

    /// The distinct provider accounts (`account` column) of a source's rows.
    pub async fn source_accounts(&self, source: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT account FROM conversations WHERE source = ? ORDER BY account",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Moves everything stored under `old` (rows, cursors, runs, follow-ups, rejected
    /// records) to `new` in one transaction, so the next cycle of `new` continues where
    /// `old` stood. Refuses when `new` already has rows or cursors.
    pub async fn rename_source(&self, old: &str, new: &str) -> Result<RenameOutcome, StoreError> {
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

    /// Deletes everything stored under `source`; returns what was there.
    pub async fn forget_source(&self, source: &str) -> Result<StoredSource, StoreError> {
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

    /// Writes the given walks' cursors of `source` in one transaction (`convsync state
    /// set`); walks not named keep theirs.
    pub async fn write_cursors(
        &self,
        source: &str,
        walks: &BTreeMap<String, CursorState>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (walk, cursor) in walks {
            write_cursor(&mut tx, source, walk, cursor).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Versions of the schema migrations applied so far (none in a new file).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
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
}
