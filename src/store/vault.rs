//! Rotating OAuth refresh tokens. A provider that invalidates the old refresh token on every
//! refresh (HighLevel) leaves us with exactly one live token: it is committed here before
//! the access token that came with it is used.

use super::{Store, StoreError};
use crate::secret::Secret;
use crate::time::Timestamp;

impl Store {
    /// The newest refresh token stored under `key`, if any.
    pub async fn load_refresh_token(&self, key: &str) -> Result<Option<Secret>, StoreError> {
        let token: Option<String> =
            sqlx::query_scalar("SELECT token FROM refresh_tokens WHERE vault_key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(token.map(Secret::new))
    }

    /// Replaces the refresh token under `key` (durably committed on return).
    pub async fn save_refresh_token(&self, key: &str, token: &Secret) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (vault_key, token, rotated_at) VALUES (?, ?, ?)
             ON CONFLICT (vault_key) DO UPDATE SET token = excluded.token, rotated_at = excluded.rotated_at",
        )
        .bind(key)
        .bind(token.expose())
        .bind(Timestamp::now().to_mirror_text())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
