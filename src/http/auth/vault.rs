//! The token vault: where a rotating refresh token is committed before the access token
//! that came with it is used, with what is known about its use. The HTTP layer owns the
//! trait (it decides when a token is spent); the store implements it, so that the client
//! does not depend on the database. A vault shared by several processes also locks a key
//! for the length of a refresh ([`TokenVault::lock`]).

use futures::future::BoxFuture;

use crate::secret::Secret;
use crate::time::Timestamp;

/// The refresh token stored under one key and what is known about its use.
#[derive(Debug, Clone)]
pub struct StoredRefreshToken {
    /// The token.
    pub token: Secret,
    /// When it was issued (for a configured token: when convsync first saw it).
    pub issued_at: Timestamp,
    /// A refresh with it was sent at this instant and no answer was recorded: the provider
    /// may have spent it.
    pub sent_at: Option<Timestamp>,
    /// The token endpoint refused it.
    pub refused: Option<RefreshRefusal>,
}

/// A recorded refusal of a stored refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRefusal {
    /// When the token endpoint refused it.
    pub at: Timestamp,
    /// The refusal followed a refresh whose answer was lost.
    pub after_lost_answer: bool,
}

/// A vault that could not read or write: the new token is not used.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct VaultError {
    #[source]
    error: Box<dyn std::error::Error + Send + Sync>,
    /// The vault key's lock was held elsewhere for longer than the vault waits.
    busy: bool,
}

impl VaultError {
    /// Wraps the backend's error, keeping its text.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        VaultError {
            error: error.into(),
            busy: false,
        }
    }

    /// The lock of a vault key was not granted in time: another process is refreshing
    /// the same credential. Worth trying again.
    pub fn busy(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        VaultError {
            error: error.into(),
            busy: true,
        }
    }

    /// Whether this is [`VaultError::busy`].
    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

/// What a vault backend holds while a key is locked (a database session holding a lock).
pub trait HeldVaultLock: Send {
    /// Releases the lock. Dropping it unreleased must release it too (a cancelled refresh
    /// must not keep other processes waiting), if less promptly.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The lock of one vault key, from [`TokenVault::lock`]: held until released or dropped.
#[must_use = "the lock is released when dropped"]
pub struct VaultLock(Option<Box<dyn HeldVaultLock>>);

impl VaultLock {
    /// No lock at all: for a vault that one process alone uses, where the authenticator's
    /// own mutex already keeps refreshes of a credential one at a time.
    pub fn none() -> VaultLock {
        VaultLock(None)
    }

    /// A lock the backend holds.
    pub fn held(lock: Box<dyn HeldVaultLock>) -> VaultLock {
        VaultLock(Some(lock))
    }

    /// Releases the lock now.
    pub async fn release(self) {
        if let Some(lock) = self.0 {
            lock.release().await;
        }
    }
}

/// What happened to a stored refresh token, as the vault records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// A refresh with it is about to be sent: it may be spent from now on (a configured
    /// token not yet in the vault is stored with this mark).
    Sent,
    /// The refresh certainly did not spend it (the request never left, or the endpoint
    /// answered without rotating).
    Unspent,
    /// The token endpoint refused it: it is never sent again.
    Refused {
        /// The refusal followed a refresh whose answer was lost.
        after_lost_answer: bool,
    },
}

/// Durable storage for rotating refresh tokens. Every write is committed on return.
pub trait TokenVault: Send + Sync {
    /// The refresh token stored under `key`, with its state, if any.
    fn load<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredRefreshToken>, VaultError>>;

    /// Replaces the refresh token under `key` with a newly issued one, with a clean state.
    fn save<'a>(&'a self, key: &'a str, token: &'a Secret)
    -> BoxFuture<'a, Result<(), VaultError>>;

    /// Locks `key` until the returned lock is released, for one refresh: read the token,
    /// spend it, store its successor. Processes that share the vault (replicas on one
    /// PostgreSQL) wait here, then read the successor, so that no two ever send the same
    /// refresh token. The wait is bounded: a lock held elsewhere for longer fails with
    /// [`VaultError::is_busy`]. A vault that one process alone uses needs no lock.
    fn lock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<VaultLock, VaultError>> {
        let _ = key;
        Box::pin(async { Ok(VaultLock::none()) })
    }

    /// Records what happened to `token` (see [`TokenUse`]).
    fn mark<'a>(
        &'a self,
        key: &'a str,
        token: &'a Secret,
        what: TokenUse,
    ) -> BoxFuture<'a, Result<(), VaultError>>;
}
