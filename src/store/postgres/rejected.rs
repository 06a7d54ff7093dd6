//! `rejected_records`: items a provider sent that the mirror cannot hold. A walk re-reads
//! the same bad item on every cycle, so an item is recorded once per (source, walk, item
//! hash) with how often and when it was last seen; rows not seen for the retention period
//! are removed when a run of their source ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::text::storable;
use super::{PgStore, instant};
use crate::record::RejectedRecord;
use crate::store::StoreError;
use crate::time::Timestamp;

/// Records one sighting of a rejected item.
pub(super) async fn record_rejected(
    tx: &mut PgConnection,
    source: &str,
    run_id: i64,
    walk: &str,
    rejected: &RejectedRecord,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO rejected_records
            (source, run_id, walk, reason, raw, rejected_at, item_hash, times_seen, last_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $6)
         ON CONFLICT (source, walk, item_hash) DO UPDATE SET
            times_seen = rejected_records.times_seen + 1, last_seen_at = excluded.last_seen_at,
            run_id = excluded.run_id, reason = excluded.reason",
    )
    .bind(source)
    .bind(run_id)
    .bind(walk)
    .bind(storable(&rejected.reason))
    .bind(storable(rejected.kept_raw()))
    .bind(now)
    .bind(rejected.item_hash().as_bytes().as_slice())
    .execute(tx)
    .await?;
    Ok(())
}

impl PgStore {
    /// Removes `source`'s rejected items not seen for `retention`; returns how many.
    pub(super) async fn prune_rejected(
        &self,
        source: &str,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let cutoff = instant(Timestamp::now().saturating_sub(retention));
        let done =
            sqlx::query("DELETE FROM rejected_records WHERE source = $1 AND last_seen_at < $2")
                .bind(source)
                .bind(cutoff)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}
