//! `rejected_records`: items a provider sent that the mirror cannot hold. A walk re-reads
//! the same bad item on every cycle, so an item is recorded once per (source, walk, item
//! hash) with how often and when it was last seen; rows not seen for the retention period
//! are removed when a run of their source ends.

use std::time::Duration;

use sqlx::{Sqlite, Transaction};

use super::SqliteStore;
use crate::record::RejectedRecord;
use crate::store::StoreError;
use crate::time::Timestamp;

/// Records one sighting of a rejected item.
pub(super) async fn record_rejected(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    run_id: i64,
    walk: &str,
    rejected: &RejectedRecord,
    now: &str,
) -> Result<(), StoreError> {
    let item_hash = rejected.item_hash().to_hex().to_string();
    let raw = rejected.kept_raw();
    sqlx::query!(
        "INSERT INTO rejected_records
            (source, run_id, walk, reason, raw, rejected_at, item_hash, times_seen, last_seen_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)
         ON CONFLICT (source, walk, item_hash) DO UPDATE SET
            times_seen = times_seen + 1, last_seen_at = excluded.last_seen_at,
            run_id = excluded.run_id, reason = excluded.reason",
        source,
        run_id,
        walk,
        rejected.reason,
        raw,
        now,
        item_hash,
        now
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SqliteStore {
    /// Removes `source`'s rejected items not seen for `retention`; returns how many.
    pub(super) async fn prune_rejected(
        &self,
        source: &str,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let cutoff = Timestamp::now().saturating_sub(retention).to_mirror_text();
        let done = sqlx::query!(
            "DELETE FROM rejected_records WHERE source = ? AND last_seen_at < ?",
            source,
            cutoff
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
