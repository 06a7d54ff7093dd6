//! What readiness, `/metrics` and the reliability checks ask of the database itself,
//! rather than of the mirror's rows.

use async_trait::async_trait;

use super::{StoreError, WriteFailure};

/// The database's health, as the health endpoints and tests probe it.
#[async_trait]
pub trait HealthProbes: Send + Sync {
    /// Proves that the write lock can be taken (for readiness checks). The probe is rolled
    /// back and never reaches the disk: see [`HealthProbes::last_write_failure`] for that.
    async fn check_writable(&self) -> Result<(), StoreError>;

    /// The failure of the latest write of mirror data (pages, cursors, follow-ups, run
    /// records), unless a later one succeeded.
    fn last_write_failure(&self) -> Option<WriteFailure>;

    /// Bytes the database takes, for the size gauge on `/metrics`.
    async fn database_size_bytes(&self) -> Result<u64, StoreError>;

    /// Checks the database's integrity; `Ok(())` means sound.
    async fn integrity_check(&self) -> Result<(), StoreError>;
}
