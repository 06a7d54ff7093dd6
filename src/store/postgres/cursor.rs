//! The `cursors` table: one opaque [`CursorState`] per walk of each source, written in the
//! transaction of the page (or sweep completion) it follows, or on its own under the
//! source's lock.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::PgConnection;

use super::leases::hold_fence;
use super::locks::lock_sources;
use super::{PgStore, instant};
use crate::store::{CursorRewrite, CursorState, Cursors, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl Cursors for PgStore {
    async fn load_cursors(&self, source: &str) -> Result<HashMap<String, CursorState>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT walk, state FROM cursors WHERE source = $1")
                .bind(source)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(walk, state)| (walk, CursorState::from_stored(state)))
            .collect())
    }

    async fn save_cursor(
        &self,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError> {
        let result = async {
            let mut tx = self.pool.begin().await?;
            lock_sources(&mut tx, &[source]).await?;
            hold_fence(&mut tx, self.fence.as_ref()).await?;
            write_cursor(&mut tx, source, walk, cursor).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        self.last_write.note(source, &result);
        result
    }

    async fn write_cursors(
        &self,
        source: &str,
        walks: &BTreeMap<String, CursorState>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_sources(&mut tx, &[source]).await?;
        for (walk, cursor) in walks {
            write_cursor(&mut tx, source, walk, cursor).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rewrite_cursors(
        &self,
        source: &str,
        apply: bool,
        rewrite: &mut CursorRewrite<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_sources(&mut tx, &[source]).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT walk, state FROM cursors WHERE source = $1 ORDER BY walk COLLATE \"C\"",
        )
        .bind(source)
        .fetch_all(&mut *tx)
        .await?;
        for (walk, state) in rows {
            let rewritten = rewrite(&walk, &CursorState::from_stored(state))?;
            write_cursor(&mut tx, source, &walk, &rewritten).await?;
        }
        if apply {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }
}

/// Stores `cursor` as `source`'s walk `walk` inside the caller's transaction.
pub(super) async fn write_cursor(
    tx: &mut PgConnection,
    source: &str,
    walk: &str,
    cursor: &CursorState,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cursors (source, walk, state, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, walk) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .bind(source)
    .bind(walk)
    .bind(cursor.as_stored())
    .bind(instant(Timestamp::now()))
    .execute(tx)
    .await?;
    Ok(())
}
