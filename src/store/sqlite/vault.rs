//! Rotating OAuth refresh tokens. A provider that invalidates the old refresh token on every
//! refresh (HighLevel) leaves us with exactly one live token: it is committed here before
//! the access token that came with it is used.
//!
//! The vault also records what happened to the token it holds, because a refresh whose
//! answer is lost may or may not have spent it: `sent_at` is written *before* a refresh is
//! sent and cleared when an answer is recorded, and a token the endpoint refused is marked
//! so that no later attempt, not even after a restart, sends it again.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Store, StoreError};
use crate::http::{RefreshRefusal, StoredRefreshToken, TokenUse, TokenVault, VaultError};
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

type Row = (String, String, Option<String>, Option<String>, i64);

fn timestamp(text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_rfc3339(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// The refresh token stored under `key`, with its state, if any.
    pub async fn load_refresh_token(
        &self,
        key: &str,
    ) -> Result<Option<StoredRefreshToken>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT token, rotated_at, sent_at, refused_at, refused_after_lost_answer
             FROM refresh_tokens WHERE vault_key = ?",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        let Some((token, issued_at, sent_at, refused_at, after_lost_answer)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredRefreshToken {
            token: Secret::new(token),
            issued_at: timestamp(&issued_at)?,
            sent_at: sent_at.as_deref().map(timestamp).transpose()?,
            refused: refused_at
                .as_deref()
                .map(timestamp)
                .transpose()?
                .map(|at| RefreshRefusal {
                    at,
                    after_lost_answer: after_lost_answer != 0,
                }),
        }))
    }

    /// Replaces the refresh token under `key` with a newly issued one, with a clean state
    /// (durably committed on return).
    pub async fn save_refresh_token(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        self.save_refresh_token_issued_at(key, token, Timestamp::now())
            .await
    }

    /// [`Store::save_refresh_token`] with an explicit issue instant (tests of token ages).
    pub async fn save_refresh_token_issued_at(
        &self,
        key: &str,
        token: &Secret,
        issued_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at) VALUES (?, ?, ?)
             ON CONFLICT (vault_key) DO UPDATE SET token = excluded.token,
                 rotated_at = excluded.rotated_at, sent_at = NULL, refused_at = NULL,
                 refused_after_lost_answer = 0",
        )
        .bind(key)
        .bind(token.expose())
        .bind(issued_at.to_mirror_text())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records, before a refresh is sent, that `token` is about to be spent. A configured
    /// token not yet in the vault is stored with it, so the vault holds it from now on.
    pub async fn mark_refresh_sent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        let now = Timestamp::now().to_mirror_text();
        sqlx::query(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at, sent_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (vault_key) DO UPDATE SET sent_at = excluded.sent_at
             WHERE refresh_tokens.token = excluded.token",
        )
        .bind(key)
        .bind(token.expose())
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that the refresh with `token` certainly did not spend it (the request never
    /// left, or the endpoint answered without rotating).
    pub async fn mark_refresh_unspent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET sent_at = NULL WHERE vault_key = ? AND token = ?")
            .bind(key)
            .bind(token.expose())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that the token endpoint refused `token`: it is never sent again.
    pub async fn mark_refresh_refused(
        &self,
        key: &str,
        token: &Secret,
        after_lost_answer: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens SET sent_at = NULL, refused_at = ?, refused_after_lost_answer = ?
             WHERE vault_key = ? AND token = ?",
        )
        .bind(Timestamp::now().to_mirror_text())
        .bind(i64::from(after_lost_answer))
        .bind(key)
        .bind(token.expose())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The age of every stored refresh token.
    pub async fn refresh_token_ages(&self) -> Result<Vec<RefreshTokenAge>, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT vault_key, rotated_at, refused_at FROM refresh_tokens ORDER BY vault_key",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(vault_key, issued_at, refused_at)| {
                Ok(RefreshTokenAge {
                    vault_key,
                    issued_at: timestamp(&issued_at)?,
                    refused_at: refused_at.as_deref().map(timestamp).transpose()?,
                })
            })
            .collect()
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
