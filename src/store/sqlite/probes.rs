//! The database's health: the write probe readiness takes, the file's size for `/metrics`,
//! and SQLite's integrity check.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{HealthProbes, StoreError, WriteFailure};

#[async_trait]
impl HealthProbes for SqliteStore {
    async fn check_writable(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("CREATE TEMP TABLE IF NOT EXISTS convsync_probe (x INTEGER)")
            .execute(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok(())
    }

    fn last_write_failure(&self) -> Option<WriteFailure> {
        self.last_write.failure()
    }

    /// Bytes the database's pages take (the main file; the WAL comes and goes with
    /// checkpoints).
    async fn database_size_bytes(&self) -> Result<u64, StoreError> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// `PRAGMA integrity_check`; anything but "ok" is [`StoreError::Corrupt`].
    async fn integrity_check(&self) -> Result<(), StoreError> {
        let result: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(result))
        }
    }
}
