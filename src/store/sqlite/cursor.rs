//! Where each walk of each source stands, kept as an opaque value: the engine's cursor
//! rules ([`crate::sync::cursor`]) decide what the value holds and how it may move; the
//! store only keeps it atomically with the pages it belongs to.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Sqlite, Transaction};

use super::{Store, StoreError};
use crate::time::Timestamp;

/// One walk's cursor as stored: JSON text the store never looks into (the `state` column
/// of `cursors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState(String);

impl CursorState {
    /// Encodes a cursor.
    pub fn encode(cursor: &impl Serialize) -> Result<CursorState, StoreError> {
        serde_json::to_string(cursor)
            .map(CursorState)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode cursor: {e}")))
    }

    /// Decodes the cursor of `source`'s walk `walk` (named in the error).
    pub fn decode<T: DeserializeOwned>(&self, source: &str, walk: &str) -> Result<T, StoreError> {
        serde_json::from_str(&self.0)
            .map_err(|e| StoreError::Corrupt(format!("cursor {source}/{walk}: {e}")))
    }
}

impl Store {
    /// All walk cursors of `source`, by walk name.
    pub async fn load_cursors(
        &self,
        source: &str,
    ) -> Result<HashMap<String, CursorState>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT walk, state FROM cursors WHERE source = ?")
                .bind(source)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(walk, state)| (walk, CursorState(state)))
            .collect())
    }

    /// Stores one walk's cursor outside a page (e.g. initialising a sweep schedule).
    pub async fn save_cursor(
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

    /// Rewrites every cursor of `source` in one transaction, walk by walk in name order,
    /// with what `rewrite` makes of it. With `apply` false nothing is written (a dry run:
    /// `rewrite` still sees every cursor).
    pub async fn rewrite_cursors(
        &self,
        source: &str,
        apply: bool,
        mut rewrite: impl FnMut(&str, &CursorState) -> Result<CursorState, StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT walk, state FROM cursors WHERE source = ? ORDER BY walk")
                .bind(source)
                .fetch_all(&mut *tx)
                .await?;
        for (walk, state) in rows {
            let rewritten = rewrite(&walk, &CursorState(state))?;
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

pub(super) async fn write_cursor(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    walk: &str,
    cursor: &CursorState,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cursors (source, walk, state, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (source, walk) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .bind(source)
    .bind(walk)
    .bind(&cursor.0)
    .bind(Timestamp::now().to_mirror_text())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
