//! The `refresh_tokens` table: one row per vault key. `sent_at` is written before a refresh
//! is sent and cleared when an answer is recorded; `refused_at` marks a token the endpoint
//! refused, so that it is never sent again (see `store::vault`).

use async_trait::async_trait;

use super::SqliteStore;
use crate::http::{RefreshRefusal, StoredRefreshToken};
use crate::secret::Secret;
use crate::store::{RefreshTokenAge, RefreshTokens, StoreError};
use crate::time::Timestamp;

/// A `refresh_tokens` row: token, issued, sent, refused, refused after a lost answer.
type Row = (String, String, Option<String>, Option<String>, i64);

fn timestamp(text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_rfc3339(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl RefreshTokens for SqliteStore {
    async fn load_refresh_token(
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

    async fn save_refresh_token_issued_at(
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

    async fn mark_refresh_sent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
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

    async fn mark_refresh_unspent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET sent_at = NULL WHERE vault_key = ? AND token = ?")
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

    async fn refresh_token_ages(&self) -> Result<Vec<RefreshTokenAge>, StoreError> {
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
