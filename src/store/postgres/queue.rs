//! Queuing one follow-up inside the open transaction of the page (or the row update) that
//! asks for it. New rows queue theirs in `rows.rs`, by the same rule.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::instant;
use super::text::storable;
use crate::record::DetailRequest;
use crate::store::StoreError;

/// Queues one follow-up; queued twice, it keeps the earlier `since` (no `since` is the
/// earliest), so no message is skipped. `since` keeps microseconds, so a follow-up may
/// read again a message in the same microsecond as the last one mirrored (which changes
/// nothing).
pub(super) async fn queue_follow_up(
    tx: &mut PgConnection,
    source: &str,
    detail: &DetailRequest,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO follow_ups (source, conversation_id, kind, since, position, queued_at)
         VALUES ($1, $2, $3, $4, NULL, $5)
         ON CONFLICT (source, conversation_id, kind) DO UPDATE SET
            since = CASE WHEN follow_ups.since IS NULL OR excluded.since IS NULL THEN NULL
                         ELSE LEAST(follow_ups.since, excluded.since) END,
            position = NULL",
    )
    .bind(source)
    .bind(storable(&detail.conversation_id))
    .bind(&detail.kind)
    .bind(detail.since.map(instant))
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}
