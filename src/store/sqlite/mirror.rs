//! Pages into the mirror, each transaction ending with the walk's cursor: the open
//! [`SqlitePageTransaction`] takes pages as they come (rows through `rows.rs`, rejected
//! items, follow-ups) and commits them with the cursor; a sweep's completion applies its
//! absences behind the mass-change guard, with its cursor, in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Sqlite, Transaction};

use super::SqliteStore;
use super::cursor::write_cursor;
use super::rows::SqliteRows;
use super::runs::note_commit;
use crate::record::Absence;
use crate::store::last_write::LastWrite;
use crate::store::upsert;
use crate::store::{
    AbsenceOutcome, CursorState, PageOutcome, PageTransaction, PageWrite, PageWrites, StoreError,
    SweepCompletion,
};
use crate::time::Timestamp;

#[async_trait]
impl PageWrites for SqliteStore {
    async fn begin_pages(&self) -> Result<Box<dyn PageTransaction>, StoreError> {
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqlitePageTransaction {
            tx,
            now: Timestamp::now().to_mirror_text(),
            last_write: self.last_write.clone(),
            runs: Vec::new(),
        }))
    }

    async fn apply_absence(
        &self,
        sweep: &SweepCompletion<'_>,
    ) -> Result<AbsenceOutcome, StoreError> {
        let result = self.write_absence(sweep).await;
        self.last_write.note(sweep.source, &result);
        result
    }
}

impl SqliteStore {
    async fn write_absence(
        &self,
        sweep: &SweepCompletion<'_>,
    ) -> Result<AbsenceOutcome, StoreError> {
        let SweepCompletion {
            source,
            walk,
            run_id,
            absence,
            sweep_started_at,
            guard,
            cursor,
        } = *sweep;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let candidate_filter = match absence {
            Absence::Closed => "source = ? AND deleted_at IS NULL AND closed_at IS NULL",
            Absence::Deleted => "source = ? AND deleted_at IS NULL",
        };
        let started = sweep_started_at.to_mirror_text();
        let candidates: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM conversations WHERE {candidate_filter}"
        )))
        .bind(source)
        .fetch_one(&mut *tx)
        .await?;
        let missing: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM conversations WHERE {candidate_filter} AND last_seen_at < ?"
        )))
        .bind(source)
        .bind(&started)
        .fetch_one(&mut *tx)
        .await?;
        let (candidates, missing) = (candidates as u64, missing as u64);
        let outcome = if guard.refuses(missing, candidates) {
            AbsenceOutcome::Refused {
                missing,
                candidates,
            }
        } else if missing == 0 {
            AbsenceOutcome::Applied { count: 0 }
        } else {
            let now = Timestamp::now().to_mirror_text();
            let set = match absence {
                Absence::Closed => "active = 0, closed_at = ?, last_changed_at = ?, run_id = ?",
                Absence::Deleted => "deleted_at = ?, last_changed_at = ?, run_id = ?",
            };
            let done = sqlx::query(AssertSqlSafe(format!(
                "UPDATE conversations SET {set} WHERE {candidate_filter} AND last_seen_at < ?"
            )))
            .bind(&now)
            .bind(&now)
            .bind(run_id)
            .bind(source)
            .bind(&started)
            .execute(&mut *tx)
            .await?;
            AbsenceOutcome::Applied {
                count: done.rows_affected(),
            }
        };
        write_cursor(&mut tx, source, walk, cursor).await?;
        note_commit(&mut tx, &[run_id]).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// An open `BEGIN IMMEDIATE` transaction of page writes ([`PageWrites::begin_pages`]).
/// Dropping it without committing rolls everything back, cursor included.
#[derive(Debug)]
struct SqlitePageTransaction {
    tx: Transaction<'static, Sqlite>,
    /// The transaction's time: first seen, last seen and last changed of what it writes.
    now: String,
    /// The store's record of what its latest write met.
    last_write: Arc<LastWrite>,
    /// The runs whose pages the transaction holds (`sync_runs.last_commit_at`).
    runs: Vec<i64>,
}

#[async_trait]
impl PageTransaction for SqlitePageTransaction {
    async fn apply(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError> {
        for page in pages {
            if !self.runs.contains(&page.run_id) {
                self.runs.push(page.run_id);
            }
        }
        let result = self.write(pages).await;
        if let Some(page) = pages.last() {
            self.last_write.note(page.source, &result);
        }
        result
    }

    async fn commit(
        mut self: Box<Self>,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError> {
        let last_write = self.last_write.clone();
        let result = async {
            write_cursor(&mut self.tx, source, walk, cursor).await?;
            note_commit(&mut self.tx, &self.runs).await?;
            self.tx.commit().await?;
            Ok(())
        }
        .await;
        last_write.note(source, &result);
        result
    }
}

impl SqlitePageTransaction {
    async fn write(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError> {
        upsert::write_pages(&mut SqliteRows::new(&mut self.tx, &self.now), pages).await
    }
}
