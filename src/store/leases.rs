//! Leases that let several replicas share one database's sources: each rate-limit scope
//! (a HighLevel location, a Spruce organization, a Sinch project, a D365 org) is run by at
//! most one replica at a time, the one holding its lease.
//!
//! A lease carries an **epoch**, raised by every claim: the fencing token. A replica runs a
//! scope's sources through [`Leases::fenced`], a store whose every write of their data
//! re-checks, inside its own transaction and with a row lock on the lease, that the lease
//! still names this replica and this epoch. A replica whose lease was taken (it paused
//! longer than the lease lasts, its database connection hung) therefore cannot commit
//! anything: the write rolls back with [`StoreError::LeaseLost`]. Expiry is computed by the
//! database's clock alone, never a replica's.
//!
//! PostgreSQL implements this (`store::postgres::leases`); a SQLite file has one daemon
//! (its lock file, [`super::DaemonLock`]) and answers [`StoreError::LeasesUnsupported`].

use std::time::Duration;

use async_trait::async_trait;

use super::{Store, StoreError};
use crate::time::Timestamp;

/// The longest replica name accepted: it is stored in every run row.
const MAX_NAME_LEN: usize = 200;

/// A replica's name, unique among the replicas sharing a database (`[replicas] name`,
/// by default `hostname:pid`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaName(String);

impl ReplicaName {
    /// `name` when it is usable: 1 to 200 characters, none of them a control character.
    pub fn new(name: &str) -> Result<ReplicaName, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if name.chars().count() > MAX_NAME_LEN {
            return Err(format!("must be at most {MAX_NAME_LEN} characters"));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        Ok(ReplicaName(name.to_owned()))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReplicaName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a write under a lease proves before it commits: the scope's lease still names
/// `owner` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The rate-limit scope.
    pub scope: String,
    /// The replica holding it.
    pub owner: ReplicaName,
    /// The epoch its claim set.
    pub epoch: i64,
}

/// A scope a replica just claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The rate-limit scope.
    pub scope: String,
    /// The new epoch: the fencing token of this replica's writes.
    pub epoch: i64,
    /// The rate-limit state the previous owner stored, to seed the scope's budget with
    /// (`http::RateLimitSnapshot` as JSON); `None` when none was stored.
    pub rate_limit: Option<serde_json::Value>,
}

/// One scope's lease as `convsync status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseOwner {
    /// The rate-limit scope.
    pub scope: String,
    /// Its sources, as the last replica to register it listed them.
    pub sources: Vec<String>,
    /// The replica holding it; `None` when unowned (released, or never claimed). An
    /// expired lease still names its last owner: see `expires_at`.
    pub owner: Option<String>,
    /// The epoch of the latest claim.
    pub epoch: i64,
    /// When the owner claimed it.
    pub acquired_at: Option<Timestamp>,
    /// When it expires unless renewed (by the database's clock).
    pub expires_at: Option<Timestamp>,
    /// Whether it has expired, by the database's clock at the time of asking.
    pub expired: bool,
}

/// The lease table and the replicas' heartbeats.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Records that `replica` is alive (its `replicas` row, by the database's clock).
    async fn heartbeat(&self, replica: &ReplicaName) -> Result<(), StoreError>;

    /// Removes `replica`'s heartbeat: it is stopping, so that the others' fair share grows
    /// at once rather than when its heartbeat ages out.
    async fn leave(&self, replica: &ReplicaName) -> Result<(), StoreError>;

    /// Makes each `(scope, sources)` claimable, inserting its lease row or updating the
    /// sources it lists. Nothing else of an existing lease changes.
    async fn register_scopes(&self, scopes: &[(String, Vec<String>)]) -> Result<(), StoreError>;

    /// Claims up to `max` of the `wanted` scopes that are unowned or expired (skipping any
    /// another transaction holds locked), each for `ttl` from the database's clock, with
    /// its epoch raised by one. Runs its sources' previous owner left `running` are marked
    /// `interrupted`.
    async fn claim(
        &self,
        replica: &ReplicaName,
        wanted: &[String],
        max: usize,
        ttl: Duration,
    ) -> Result<Vec<Claim>, StoreError>;

    /// Extends the leases of `held` that still name their owner and epoch by `ttl` from the
    /// database's clock. Returns the scopes renewed: any other was lost.
    async fn renew(
        &self,
        replica: &ReplicaName,
        held: &[Fence],
        ttl: Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Stores each scope's rate-limit state with its lease (where the fence still holds),
    /// in one statement, so that a replica taking a scope over after a crash does not
    /// burst either.
    async fn store_rate_limits(
        &self,
        states: &[(Fence, serde_json::Value)],
    ) -> Result<(), StoreError>;

    /// Gives the lease up (when the fence still holds): unowned, with `released_at` and
    /// the scope's rate-limit state, for the next owner to take over at once.
    async fn release(
        &self,
        fence: &Fence,
        rate_limit: Option<&serde_json::Value>,
    ) -> Result<(), StoreError>;

    /// The replicas whose heartbeat is younger than `ttl` (a replica beats every third of
    /// it), by name; rows older than three times `ttl` are removed as gone.
    async fn live_replicas(&self, ttl: Duration) -> Result<Vec<ReplicaName>, StoreError>;

    /// Every scope's lease, by scope.
    async fn lease_owners(&self) -> Result<Vec<LeaseOwner>, StoreError>;

    /// This store as the holder of `fence` writes to it: every write of mirror data
    /// (pages, absences, follow-up answers, cursors, run starts) re-checks the lease in its
    /// transaction and fails with [`StoreError::LeaseLost`] when it no longer holds; runs
    /// it begins record the replica and epoch.
    fn fenced(&self, fence: Fence) -> Result<Store, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica name is trimmed and refused when empty, too long or holding control
    /// characters (it is stored and logged).
    #[test]
    fn replica_names_are_checked() {
        assert_eq!(ReplicaName::new(" web-1:42 ").unwrap().as_str(), "web-1:42");
        assert!(ReplicaName::new("  ").is_err());
        assert!(ReplicaName::new("a\nb").is_err());
        assert!(ReplicaName::new(&"x".repeat(201)).is_err());
        assert!(ReplicaName::new(&"x".repeat(200)).is_ok());
    }
}
