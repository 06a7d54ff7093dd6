//! Rotating OAuth refresh tokens. A provider that invalidates the old refresh token on every
//! refresh (HighLevel) leaves us with exactly one live token: it is committed here before
//! the access token that came with it is used.
//!
//! The vault also records what happened to the token it holds, because a refresh whose
//! answer is lost may or may not have spent it: "sent" is written *before* a refresh is
//! sent and cleared when an answer is recorded, and a token the endpoint refused is marked
//! so that no later attempt, not even after a restart, sends it again.
//!
//! Replicas that share a PostgreSQL mirror share its vault: each refresh holds the vault
//! key's lock from reading the token to storing its successor
//! ([`RefreshTokens::lock_refresh_token`]), so a replica that waited reads the successor.

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Store, StoreError};
use crate::http::{StoredRefreshToken, TokenUse, TokenVault, VaultError, VaultLock};
use crate::retry::Transient;
use crate::secret::Secret;
use crate::time::Timestamp;

/// The age of one stored refresh token, for status output and expiry warnings.
#[derive(Debug, Clone)]
pub struct RefreshTokenAge {
    /// The vault key.
    pub vault_key: String,
    /// When the token was issued (or first seen).
    pub issued_at: Timestamp,
    /// When it was refused, if it was.
    pub refused_at: Option<Timestamp>,
}

/// The stored refresh tokens, each under its vault key, with what is known about its use.
#[async_trait]
pub trait RefreshTokens: Send + Sync {
    /// The refresh token stored under `key`, with its state, if any.
    async fn load_refresh_token(&self, key: &str)
    -> Result<Option<StoredRefreshToken>, StoreError>;

    /// Replaces the refresh token under `key` with a newly issued one, with a clean state
    /// (durably committed on return).
    async fn save_refresh_token(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        self.save_refresh_token_issued_at(key, token, Timestamp::now())
            .await
    }

    /// [`RefreshTokens::save_refresh_token`] with an explicit issue instant (tests of token
    /// ages).
    async fn save_refresh_token_issued_at(
        &self,
        key: &str,
        token: &Secret,
        issued_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Records, before a refresh is sent, that `token` is about to be spent. A configured
    /// token not yet in the vault is stored with it, so the vault holds it from now on.
    async fn mark_refresh_sent(&self, key: &str, token: &Secret) -> Result<(), StoreError>;

    /// Records that the refresh with `token` certainly did not spend it (the request never
    /// left, or the endpoint answered without rotating).
    async fn mark_refresh_unspent(&self, key: &str, token: &Secret) -> Result<(), StoreError>;

    /// Records that the token endpoint refused `token`: it is never sent again.
    async fn mark_refresh_refused(
        &self,
        key: &str,
        token: &Secret,
        after_lost_answer: bool,
    ) -> Result<(), StoreError>;

    /// The age of every stored refresh token.
    async fn refresh_token_ages(&self) -> Result<Vec<RefreshTokenAge>, StoreError>;

    /// Locks `key` for one refresh (see [`TokenVault::lock`]), waiting at most the busy
    /// timeout. The default holds nothing: a SQLite file has one daemon, whose
    /// authenticator already refreshes a credential one at a time.
    async fn lock_refresh_token(&self, key: &str) -> Result<VaultLock, StoreError> {
        let _ = key;
        Ok(VaultLock::none())
    }
}

/// The HTTP layer's vault for rotating refresh tokens is this database.
impl TokenVault for Store {
    fn load<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredRefreshToken>, VaultError>> {
        vault_call(self.load_refresh_token(key))
    }

    fn lock<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<VaultLock, VaultError>> {
        Box::pin(self.lock_refresh_token(key).map(|locked| {
            locked.map_err(|e| {
                if e.is_transient() {
                    VaultError::busy(e)
                } else {
                    VaultError::new(e)
                }
            })
        }))
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        token: &'a Secret,
    ) -> BoxFuture<'a, Result<(), VaultError>> {
        vault_call(self.save_refresh_token(key, token))
    }

    fn mark<'a>(
        &'a self,
        key: &'a str,
        token: &'a Secret,
        what: TokenUse,
    ) -> BoxFuture<'a, Result<(), VaultError>> {
        match what {
            TokenUse::Sent => vault_call(self.mark_refresh_sent(key, token)),
            TokenUse::Unspent => vault_call(self.mark_refresh_unspent(key, token)),
            TokenUse::Refused { after_lost_answer } => {
                vault_call(self.mark_refresh_refused(key, token, after_lost_answer))
            }
        }
    }
}

/// A store call as the vault's boxed future, its error kept as the vault's.
fn vault_call<'a, T: 'a>(
    call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, VaultError>> {
    Box::pin(call.map(|result| result.map_err(VaultError::new)))
}
