//! The `leases` and `replicas` tables: claims with `FOR UPDATE SKIP LOCKED`, renewals and
//! releases checked against owner and epoch, every time from `clock_timestamp()` (the
//! database's clock, the one clock all replicas share), and the fence a leased write holds
//! until it commits ([`hold_fence`]).
//!
//! The fence check takes the lease row `FOR SHARE`: a claim's `UPDATE` of the row waits
//! for the write to commit (and then raises the epoch, so the stale owner's next write
//! fails), while several sources of one scope, each holding the row in share mode, still
//! commit side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::PgStore;
use crate::store::{Claim, Fence, LeaseOwner, Leases, ReplicaName, Store, StoreError};
use crate::time::Timestamp;

#[async_trait]
impl Leases for PgStore {
    async fn heartbeat(&self, replica: &ReplicaName) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO replicas (name, started_at, last_seen_at)
             VALUES ($1, clock_timestamp(), clock_timestamp())
             ON CONFLICT (name) DO UPDATE SET last_seen_at = clock_timestamp()",
        )
        .bind(replica.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn leave(&self, replica: &ReplicaName) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE name = $1")
            .bind(replica.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn register_scopes(&self, scopes: &[(String, Vec<String>)]) -> Result<(), StoreError> {
        if scopes.is_empty() {
            return Ok(());
        }
        // One statement for any number of scopes: a JSON object of scope → sources.
        let listed: BTreeMap<&str, &[String]> = scopes
            .iter()
            .map(|(scope, sources)| (scope.as_str(), sources.as_slice()))
            .collect();
        let listed = serde_json::to_value(listed)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode scopes: {e}")))?;
        sqlx::query(
            "INSERT INTO leases (scope, sources)
             SELECT key, ARRAY(SELECT jsonb_array_elements_text(value))
             FROM jsonb_each($1::jsonb)
             ON CONFLICT (scope) DO UPDATE SET sources = EXCLUDED.sources
             WHERE leases.sources IS DISTINCT FROM EXCLUDED.sources",
        )
        .bind(listed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn claim(
        &self,
        replica: &ReplicaName,
        wanted: &[String],
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        if wanted.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(String, i64, Option<serde_json::Value>, Vec<String>)> = sqlx::query_as(
            "WITH due AS (
                    SELECT scope FROM leases
                    WHERE scope = ANY($2)
                      AND (owner IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp())
                    ORDER BY scope
                    LIMIT $3
                    FOR UPDATE SKIP LOCKED
                 )
                 UPDATE leases AS l SET owner = $1, epoch = l.epoch + 1,
                    acquired_at = clock_timestamp(),
                    expires_at = clock_timestamp() + make_interval(secs => $4),
                    released_at = NULL
                 FROM due WHERE l.scope = due.scope
                 RETURNING l.scope, l.epoch, l.rate_limit, l.sources",
        )
        .bind(replica.as_str())
        .bind(wanted)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(ttl.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        // Whatever the previous owner left running ended with its lease.
        let sources: Vec<&str> = claimed
            .iter()
            .flat_map(|(_, _, _, sources)| sources.iter().map(String::as_str))
            .collect();
        if !sources.is_empty() {
            sqlx::query(
                "UPDATE sync_runs SET outcome = 'interrupted',
                    finished_at = COALESCE(finished_at, clock_timestamp())
                 WHERE outcome = 'running' AND source = ANY($1)",
            )
            .bind(&sources)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .map(|(scope, epoch, rate_limit, _)| Claim {
                scope,
                epoch,
                rate_limit,
            })
            .collect())
    }

    async fn renew(
        &self,
        replica: &ReplicaName,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let scopes: Vec<&str> = held.iter().map(|f| f.scope.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|f| f.epoch).collect();
        let renewed = sqlx::query_scalar(
            "UPDATE leases AS l SET expires_at = clock_timestamp() + make_interval(secs => $2)
             FROM unnest($3::text[], $4::bigint[]) AS held(scope, epoch)
             WHERE l.scope = held.scope AND l.epoch = held.epoch AND l.owner = $1
             RETURNING l.scope",
        )
        .bind(replica.as_str())
        .bind(ttl.as_secs_f64())
        .bind(&scopes)
        .bind(&epochs)
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed)
    }

    async fn store_rate_limits(
        &self,
        states: &[(Fence, serde_json::Value)],
    ) -> Result<(), StoreError> {
        if states.is_empty() {
            return Ok(());
        }
        let scopes: Vec<&str> = states.iter().map(|(f, _)| f.scope.as_str()).collect();
        let owners: Vec<&str> = states.iter().map(|(f, _)| f.owner.as_str()).collect();
        let epochs: Vec<i64> = states.iter().map(|(f, _)| f.epoch).collect();
        let values: Vec<&serde_json::Value> = states.iter().map(|(_, v)| v).collect();
        sqlx::query(
            "UPDATE leases AS l SET rate_limit = s.rate_limit
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[])
                AS s(scope, owner, epoch, rate_limit)
             WHERE l.scope = s.scope AND l.owner = s.owner AND l.epoch = s.epoch",
        )
        .bind(&scopes)
        .bind(&owners)
        .bind(&epochs)
        .bind(&values)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release(
        &self,
        fence: &Fence,
        rate_limit: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET owner = NULL, expires_at = NULL, released_at = clock_timestamp(),
                rate_limit = COALESCE($1, rate_limit)
             WHERE scope = $2 AND owner = $3 AND epoch = $4",
        )
        .bind(rate_limit)
        .bind(&fence.scope)
        .bind(fence.owner.as_str())
        .bind(fence.epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_replicas(&self, ttl: Duration) -> Result<Vec<ReplicaName>, StoreError> {
        let secs = ttl.as_secs_f64();
        sqlx::query(
            "DELETE FROM replicas WHERE last_seen_at < clock_timestamp() - 3 * make_interval(secs => $1)",
        )
        .bind(secs)
        .execute(&self.pool)
        .await?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM replicas
             WHERE last_seen_at >= clock_timestamp() - make_interval(secs => $1)
             ORDER BY name",
        )
        .bind(secs)
        .fetch_all(&self.pool)
        .await?;
        names
            .iter()
            .map(|name| {
                ReplicaName::new(name)
                    .map_err(|e| StoreError::Corrupt(format!("replica name {name:?}: {e}")))
            })
            .collect()
    }

    async fn lease_owners(&self) -> Result<Vec<LeaseOwner>, StoreError> {
        type Row = (
            String,
            Vec<String>,
            Option<String>,
            i64,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
            bool,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT scope, sources, owner, epoch, acquired_at, expires_at,
                COALESCE(expires_at <= clock_timestamp(), false)
             FROM leases ORDER BY scope",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(scope, sources, owner, epoch, acquired_at, expires_at, expired)| LeaseOwner {
                    scope,
                    sources,
                    owner,
                    epoch,
                    acquired_at: acquired_at.map(Timestamp::from),
                    expires_at: expires_at.map(Timestamp::from),
                    expired,
                },
            )
            .collect())
    }

    fn fenced(&self, fence: Fence) -> Result<Store, StoreError> {
        Ok(Store::from_backend(PgStore {
            pool: self.pool.clone(),
            last_write: self.last_write.clone(),
            rejected_retention: self.rejected_retention,
            fence: Some(fence),
        }))
    }
}

/// Proves, inside the transaction on `conn`, that `fence` (if any) still holds, and keeps
/// the lease row from being claimed until the transaction ends; a lost lease is
/// [`StoreError::LeaseLost`], and the caller's transaction rolls back when it is dropped.
pub(super) async fn hold_fence(
    conn: &mut PgConnection,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    let held: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM leases WHERE scope = $1 AND owner = $2 AND epoch = $3 FOR SHARE",
    )
    .bind(&fence.scope)
    .bind(fence.owner.as_str())
    .bind(fence.epoch)
    .fetch_optional(&mut *conn)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::LeaseLost {
            scope: fence.scope.clone(),
        }),
    }
}
