//! Pages into the mirror, each transaction ending with the walk's cursor: the open
//! [`PgPageTransaction`] takes pages as they come (rows through `rows.rs`, rejected
//! items, follow-ups) under their source's lock and commits them with the cursor; a
//! sweep's completion applies its absences behind the mass-change guard, with its cursor,
//! in one transaction. Under a lease each proves the lease still holds just before it
//! commits, and every commit stamps its runs' `last_commit_at`.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::cursor::write_cursor;
use super::leases::hold_fence;
use super::locks::lock_sources;
use super::rows::PgRows;
use super::runs::note_commit;
use super::{PgStore, instant};
use crate::record::Absence;
use crate::store::last_write::LastWrite;
use crate::store::upsert;
use crate::store::{
    AbsenceOutcome, CursorState, Fence, PageOutcome, PageTransaction, PageWrite, PageWrites,
    StoreError, SweepCompletion,
};
use crate::time::Timestamp;

#[async_trait]
impl PageWrites for PgStore {
    async fn begin_pages(&self) -> Result<Box<dyn PageTransaction>, StoreError> {
        let tx = self.pool.begin().await?;
        Ok(Box::new(PgPageTransaction {
            tx,
            locked: None,
            fence: self.fence.clone(),
            runs: Vec::new(),
            now: instant(Timestamp::now()),
            last_write: self.last_write.clone(),
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

impl PgStore {
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
        let mut tx = self.pool.begin().await?;
        lock_sources(&mut tx, &[source]).await?;
        // Candidates: rows the absence could still change; missing: those of them the
        // sweep did not see (not listed since it started).
        let candidate = match absence {
            Absence::Closed => "deleted_at IS NULL AND closed_at IS NULL",
            Absence::Deleted => "deleted_at IS NULL",
        };
        let started = instant(sweep_started_at);
        let (candidates, missing): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE last_seen_at < $2)
             FROM conversations WHERE source = $1 AND {candidate}"
        )))
        .bind(source)
        .bind(started)
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
            let set = match absence {
                Absence::Closed => "active = false, closed_at = $1",
                Absence::Deleted => "deleted_at = $1",
            };
            let done = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE conversations SET {set}, last_changed_at = $1, run_id = $2
                 WHERE source = $3 AND {candidate} AND last_seen_at < $4"
            )))
            .bind(instant(Timestamp::now()))
            .bind(run_id)
            .bind(source)
            .bind(started)
            .execute(&mut *tx)
            .await?;
            AbsenceOutcome::Applied {
                count: done.rows_affected(),
            }
        };
        hold_fence(&mut tx, self.fence.as_ref()).await?;
        write_cursor(&mut tx, source, walk, cursor).await?;
        note_commit(&mut tx, &[run_id]).await?;
        tx.commit().await?;
        Ok(outcome)
    }
}

/// An open transaction of page writes ([`PageWrites::begin_pages`]). Dropping it without
/// committing rolls everything back, cursor included.
#[derive(Debug)]
struct PgPageTransaction {
    tx: Transaction<'static, Postgres>,
    /// The source whose lock the transaction holds, once a page or its cursor came.
    locked: Option<String>,
    /// The lease the pages are written under, proved before the commit.
    fence: Option<Fence>,
    /// The runs whose pages the transaction holds (`sync_runs.last_commit_at`).
    runs: Vec<i64>,
    /// The transaction's time: first seen, last seen and last changed of what it writes.
    now: DateTime<Utc>,
    /// The store's record of what its latest write met.
    last_write: Arc<LastWrite>,
}

#[async_trait]
impl PageTransaction for PgPageTransaction {
    async fn apply(&mut self, pages: &[PageWrite<'_>]) -> Result<Vec<PageOutcome>, StoreError> {
        let Some(last) = pages.last() else {
            return Ok(Vec::new());
        };
        for page in pages {
            if !self.runs.contains(&page.run_id) {
                self.runs.push(page.run_id);
            }
        }
        let result = async {
            self.lock(last.source).await?;
            let mut rows = PgRows {
                tx: &mut self.tx,
                now: self.now,
            };
            upsert::write_pages(&mut rows, pages).await
        }
        .await;
        self.last_write.note(last.source, &result);
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
            self.lock(source).await?;
            hold_fence(&mut self.tx, self.fence.as_ref()).await?;
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

impl PgPageTransaction {
    /// Takes `source`'s lock, unless the transaction holds it already.
    async fn lock(&mut self, source: &str) -> Result<(), StoreError> {
        if self.locked.as_deref() != Some(source) {
            lock_sources(&mut self.tx, &[source]).await?;
            self.locked = Some(source.to_owned());
        }
        Ok(())
    }
}
