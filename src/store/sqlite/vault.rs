//! The `refresh_tokens` table: one row per vault key. `sent_at` is written before a refresh
//! is sent and cleared when an answer is recorded; `refused_at` marks a token the endpoint
//! refused, so that it is never sent again (see `store::vault`).

use async_trait::async_trait;

use super::SqliteStore;
use crate::http::{RefreshRefusal, StoredRefreshToken};
use crate::secret::Secret;
use crate::store::{RefreshTokenAge, RefreshTokens, StoreError};
use crate::time::Timestamp;

fn timestamp(text: &str) -> Result<Timestamp, StoreError> {
    Timestamp::parse_rfc3339(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl RefreshTokens for SqliteStore {
    async fn load_refresh_token(
        &self,
        key: &str,
    ) -> Result<Option<StoredRefreshToken>, StoreError> {
        let row = sqlx::query!(
            "SELECT token, rotated_at, sent_at, refused_at, refused_after_lost_answer
             FROM refresh_tokens WHERE vault_key = ?",
            key
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let after_lost_answer = row.refused_after_lost_answer;
        Ok(Some(StoredRefreshToken {
            token: Secret::new(row.token),
            issued_at: timestamp(&row.rotated_at)?,
            sent_at: row.sent_at.as_deref().map(timestamp).transpose()?,
            refused: row
                .refused_at
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
        let (token, issued_at) = (token.expose(), issued_at.to_mirror_text());
        sqlx::query!(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at) VALUES (?, ?, ?)
             ON CONFLICT (vault_key) DO UPDATE SET token = excluded.token,
                 rotated_at = excluded.rotated_at, sent_at = NULL, refused_at = NULL,
                 refused_after_lost_answer = 0",
            key,
            token,
            issued_at
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_refresh_sent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        let now = Timestamp::now().to_mirror_text();
        let token = token.expose();
        sqlx::query!(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at, sent_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (vault_key) DO UPDATE SET sent_at = excluded.sent_at
             WHERE refresh_tokens.token = excluded.token",
            key,
            token,
            now,
            now
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mark_refresh_unspent(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        let token = token.expose();
        sqlx::query!(
            "UPDATE refresh_tokens SET sent_at = NULL WHERE vault_key = ? AND token = ?",
            key,
            token
        )
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
        let refused_at = Timestamp::now().to_mirror_text();
        let (after_lost_answer, token) = (i64::from(after_lost_answer), token.expose());
        sqlx::query!(
            "UPDATE refresh_tokens SET sent_at = NULL, refused_at = ?, refused_after_lost_answer = ?
             WHERE vault_key = ? AND token = ?",
            refused_at,
            after_lost_answer,
            key,
            token
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn refresh_token_ages(&self) -> Result<Vec<RefreshTokenAge>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT vault_key AS "vault_key!", rotated_at, refused_at
             FROM refresh_tokens ORDER BY vault_key"#
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(RefreshTokenAge {
                    vault_key: row.vault_key,
                    issued_at: timestamp(&row.rotated_at)?,
                    refused_at: row.refused_at.as_deref().map(timestamp).transpose()?,
                })
            })
            .collect()
    }
}
