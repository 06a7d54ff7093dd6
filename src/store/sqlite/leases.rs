//! Replica leases on SQLite: none. A SQLite file is synced by one daemon at a time, which
//! its lock file ([`crate::store::DaemonLock`]) already ensures; every operation answers
//! [`StoreError::LeasesUnsupported`].

use std::time::Duration;

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::{Claim, Fence, LeaseOwner, Leases, ReplicaName, Store, StoreError};

const UNSUPPORTED: StoreError = StoreError::LeasesUnsupported { backend: "sqlite" };

#[async_trait]
impl Leases for SqliteStore {
    async fn heartbeat(&self, _: &ReplicaName) -> Result<(), StoreError> {
        Err(UNSUPPORTED)
    }

    async fn leave(&self, _: &ReplicaName) -> Result<(), StoreError> {
        Err(UNSUPPORTED)
    }

    async fn register_scopes(&self, _: &[(String, Vec<String>)]) -> Result<(), StoreError> {
        Err(UNSUPPORTED)
    }

    async fn claim(
        &self,
        _: &ReplicaName,
        _: &[String],
        _: usize,
        _: Duration,
    ) -> Result<Vec<Claim>, StoreError> {
        Err(UNSUPPORTED)
    }

    async fn renew(
        &self,
        _: &ReplicaName,
        _: &[Fence],
        _: Duration,
    ) -> Result<Vec<String>, StoreError> {
        Err(UNSUPPORTED)
    }

    async fn store_rate_limits(&self, _: &[(Fence, serde_json::Value)]) -> Result<(), StoreError> {
        Err(UNSUPPORTED)
    }

    async fn release(&self, _: &Fence, _: Option<&serde_json::Value>) -> Result<(), StoreError> {
        Err(UNSUPPORTED)
    }

    async fn live_replicas(&self, _: Duration) -> Result<Vec<ReplicaName>, StoreError> {
        Err(UNSUPPORTED)
    }

    async fn lease_owners(&self) -> Result<Vec<LeaseOwner>, StoreError> {
        Err(UNSUPPORTED)
    }

    fn fenced(&self, _: Fence) -> Result<Store, StoreError> {
        Err(UNSUPPORTED)
    }
}
