//! The database's health: the write probe readiness takes, the database's size for
//! `/metrics`, and what convsync can check of its integrity.

use async_trait::async_trait;

use super::PgStore;
use super::locks::lock_sources;
use crate::store::{HealthProbes, StoreError, WriteFailure};

#[async_trait]
impl HealthProbes for PgStore {
    /// Proves that a write transaction can start and take the mirror's lock (a read-only
    /// standby, or a server that refuses writes, fails here); the probe writes nothing.
    async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION READ WRITE")
            .execute(&mut *tx)
            .await?;
        lock_sources(&mut tx, &[]).await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS convsync_probe (x int) ON COMMIT DROP")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }

    fn last_write_failure(&self) -> Option<WriteFailure> {
        self.last_write.failure()
    }

    /// `pg_database_size` of the mirror's database (tables, indexes and TOAST).
    async fn database_size_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&self.pool)
            .await?;
        Ok(bytes.max(0) as u64)
    }

    /// PostgreSQL guards its own pages (WAL, checksums); what is convsync's to check is
    /// that no schema migration was left half applied.
    async fn integrity_check(&self) -> Result<(), StoreError> {
        let unfinished: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE NOT success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        match unfinished.as_slice() {
            [] => Ok(()),
            versions => Err(StoreError::Corrupt(format!(
                "schema migrations {versions:?} did not complete"
            ))),
        }
    }
}
