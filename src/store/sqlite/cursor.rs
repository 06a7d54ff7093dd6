//! The `cursors` table: one opaque [`CursorState`] per walk of each source, written in the
//! transaction of the page (or sweep completion) it follows, or on its own.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use crate::store::{CursorRewrite, CursorState, Cursors, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl Cursors for SqliteStore {
    async fn load_cursors(&self, source: &str) -> Result<HashMap<String, CursorState>, StoreError> {
        let rows = sqlx::query!("SELECT walk, state FROM cursors WHERE source = ?", source)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.walk, CursorState::from_stored(row.state)))
            .collect())
    }

    async fn save_cursor(
        &self,
        source: &str,
        walk: &str,
        cursor: &CursorState,
    ) -> Result<(), StoreError> {
        let result = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query!(
            "SELECT walk, state FROM cursors WHERE source = ? ORDER BY walk",
            source
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            let rewritten = rewrite(&row.walk, &CursorState::from_stored(row.state))?;
            write_cursor(&mut tx, source, &row.walk, &rewritten).await?;
        }
        if apply {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }
}

/// Stores `cursor` as `source`'s walk `walk` inside `tx`.
pub(super) async fn write_cursor(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    walk: &str,
    cursor: &CursorState,
) -> Result<(), StoreError> {
    let state = cursor.as_stored();
    let updated_at = Timestamp::now().to_mirror_text();
    sqlx::query!(
        "INSERT INTO cursors (source, walk, state, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (source, walk) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        source,
        walk,
        state,
        updated_at
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
