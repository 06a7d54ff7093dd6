//! The `refresh_tokens` table: one row per vault key. `sent_at` is written before a refresh
//! is sent and cleared when an answer is recorded; `refused_at` marks a token the endpoint
//! refused, so that it is never sent again (see `store::vault`). Each is one statement,
//! atomic on its own, committed at once: a refresh's steps must be durable before the
//! next one (its request) happens. What keeps two replicas from spending one token is the
//! vault key's lock, held by a connection of its own for the whole refresh.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{ConnectOptions, PgConnection};

use super::{PgStore, instant, locks};
use crate::http::{HeldVaultLock, RefreshRefusal, StoredRefreshToken, VaultLock};
use crate::secret::Secret;
use crate::store::{RefreshTokenAge, RefreshTokens, StoreError};
use crate::time::Timestamp;

/// A `refresh_tokens` row: token, issued, sent, refused, refused after a lost answer.
type Row = (
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
);

#[async_trait]
impl RefreshTokens for PgStore {
    async fn load_refresh_token(
        &self,
        key: &str,
    ) -> Result<Option<StoredRefreshToken>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT token, rotated_at, sent_at, refused_at, refused_after_lost_answer
             FROM refresh_tokens WHERE vault_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(token, issued_at, sent_at, refused_at, after_lost_answer)| StoredRefreshToken {
                token: Secret::new(token),
                issued_at: Timestamp::from(issued_at),
                sent_at: sent_at.map(Timestamp::from),
                refused: refused_at.map(|at| RefreshRefusal {
                    at: Timestamp::from(at),
                    after_lost_answer,
                }),
            },
        ))
    }

    async fn save_refresh_token_issued_at(
        &self,
        key: &str,
        token: &Secret,
        issued_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at) VALUES ($1, $2, $3)
             ON CONFLICT (vault_key) DO UPDATE SET token = excluded.token,
                 rotated_at = excluded.rotated_at, sent_at = NULL, refused_at = NULL,
                 refused_after_lost_answer = false",
        )
        .bind(key)
        .bind(token.expose())
        .bind(instant(issued_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_refresh_sent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        let now = instant(Timestamp::now());
        sqlx::query(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at, sent_at)
             VALUES ($1, $2, $3, $3)
             ON CONFLICT (vault_key) DO UPDATE SET sent_at = excluded.sent_at
             WHERE refresh_tokens.token = excluded.token",
        )
        .bind(key)
        .bind(token.expose())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_refresh_unspent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET sent_at = NULL WHERE vault_key = $1 AND token = $2")
            .bind(key)
            .bind(token.expose())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn mark_refresh_refused(
        &self,
        key: &str,
        token: &Secret,
        after_lost_answer: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE refresh_tokens
             SET sent_at = NULL, refused_at = $1, refused_after_lost_answer = $2
             WHERE vault_key = $3 AND token = $4",
        )
        .bind(instant(Timestamp::now()))
        .bind(after_lost_answer)
        .bind(key)
        .bind(token.expose())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lock_refresh_token(&self, key: &str) -> Result<VaultLock, StoreError> {
        // Not a pooled connection: a lock must never go back to the pool with it, and the
        // refresh's own writes need the pool meanwhile.
        let mut session = self.pool.connect_options().connect().await?;
        locks::lock_vault_key(&mut session, key).await?;
        Ok(VaultLock::held(Box::new(VaultKeySession {
            session,
            key: key.to_owned(),
        })))
    }

    async fn refresh_token_ages(&self) -> Result<Vec<RefreshTokenAge>, StoreError> {
        let rows: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT vault_key, rotated_at, refused_at FROM refresh_tokens
             ORDER BY vault_key COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(vault_key, issued_at, refused_at)| RefreshTokenAge {
                vault_key,
                issued_at: Timestamp::from(issued_at),
                refused_at: refused_at.map(Timestamp::from),
            })
            .collect())
    }
}

/// The connection whose session holds a vault key's lock. Dropped without
/// [`HeldVaultLock::release`], its socket closes and the server ends the session, which
/// releases the lock.
struct VaultKeySession {
    session: PgConnection,
    key: String,
}

impl HeldVaultLock for VaultKeySession {
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let VaultKeySession { mut session, key } = *self;
            if let Err(error) = locks::unlock_vault_key(&mut session, &key).await {
                // Closing the session below releases it all the same.
                tracing::debug!(error = %error, "unlocking the vault key failed");
            }
            let _ = sqlx::Connection::close(session).await;
        })
    }
}
