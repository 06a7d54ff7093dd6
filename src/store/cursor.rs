//! Where each walk of each source stands.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Sqlite, Transaction};

use super::{Store, StoreError};
use crate::time::Timestamp;

/// The persisted state of one walk. The engine owns the fields; `position` is the
/// provider's opaque page position (page token, keyset value).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WalkCursor {
    /// Everything at or before this instant has been mirrored (delta walks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<Timestamp>,
    /// Position of an unfinished walk; `None` when no walk is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<Value>,
    /// When the unfinished walk started (sweeps compare `last_seen_at` against it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_started_at: Option<Timestamp>,
    /// Where the unfinished walk started from (`since`), so a resumed walk keeps the same
    /// lower bound even if the lookback changed in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_since: Option<Timestamp>,
    /// Highest watermark value seen by the unfinished walk, committed as the watermark
    /// when a walk that may only advance at its end completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_high_water: Option<Timestamp>,
    /// When this walk last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_at: Option<Timestamp>,
}

impl WalkCursor {
    /// Whether a walk is in progress (and should be resumed).
    pub fn in_progress(&self) -> bool {
        self.walk_started_at.is_some()
    }
}

impl Store {
    /// All walk cursors of `source`, by walk name.
    pub async fn load_cursors(
        &self,
        source: &str,
    ) -> Result<HashMap<String, WalkCursor>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT walk, state FROM cursors WHERE source = ?")
                .bind(source)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(walk, state)| {
                serde_json::from_str(&state)
                    .map(|c| (walk.clone(), c))
                    .map_err(|e| StoreError::Corrupt(format!("cursor {source}/{walk}: {e}")))
            })
            .collect()
    }

    /// Stores one walk's cursor outside a page (e.g. initialising a sweep schedule).
    pub async fn save_cursor(
        &self,
        source: &str,
        walk: &str,
        cursor: &WalkCursor,
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

    /// Moves the watermarks of `source` back to `since` (or forgets them, for a full
    /// re-sync) and abandons walks in progress. With `apply` false nothing is written (a
    /// dry run). Returns each walk's watermark before and after.
    pub async fn reset_source(
        &self,
        source: &str,
        since: Option<Timestamp>,
        apply: bool,
    ) -> Result<Vec<WalkReset>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT walk, state FROM cursors WHERE source = ? ORDER BY walk")
                .bind(source)
                .fetch_all(&mut *tx)
                .await?;
        let mut resets = Vec::with_capacity(rows.len());
        for (walk, state) in rows {
            let mut cursor: WalkCursor = serde_json::from_str(&state)
                .map_err(|e| StoreError::Corrupt(format!("cursor {source}/{walk}: {e}")))?;
            let before = cursor.watermark;
            cursor.watermark = match (cursor.watermark, since) {
                (Some(w), Some(s)) => Some(w.min(s)),
                _ => None,
            };
            cursor.position = None;
            cursor.walk_started_at = None;
            cursor.walk_since = None;
            cursor.pending_high_water = None;
            write_cursor(&mut tx, source, &walk, &cursor).await?;
            resets.push(WalkReset {
                walk,
                before,
                after: cursor.watermark,
            });
        }
        if apply {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(resets)
    }
}

/// What a reset does to one walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkReset {
    /// The walk.
    pub walk: String,
    /// Its watermark before.
    pub before: Option<Timestamp>,
    /// Its watermark after (`None`: re-read from the beginning).
    pub after: Option<Timestamp>,
}

pub(super) async fn write_cursor(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    walk: &str,
    cursor: &WalkCursor,
) -> Result<(), StoreError> {
    let state = serde_json::to_string(cursor)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode cursor: {e}")))?;
    sqlx::query(
        "INSERT INTO cursors (source, walk, state, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (source, walk) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
    )
    .bind(source)
    .bind(walk)
    .bind(state)
    .bind(Timestamp::now().to_mirror_text())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
