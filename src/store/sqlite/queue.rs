//! Queuing one follow-up inside the open transaction of the page (or the row update) that
//! asks for it. New rows queue theirs in `prepared.rs`, by the same rule.

use sqlx::{Sqlite, Transaction};

use crate::record::DetailRequest;
use crate::store::StoreError;

/// Queues one follow-up; queued twice, it keeps the earlier `since`.
pub(super) async fn queue_follow_up(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    detail: &DetailRequest,
    now: &str,
) -> Result<(), StoreError> {
    // A follow-up queued twice keeps the earlier `since`, so no message is skipped.
    let since = detail.since.map(|t| t.to_rfc3339_nanos());
    sqlx::query!(
        "INSERT INTO follow_ups (source, conversation_id, kind, since, position, queued_at)
         VALUES (?, ?, ?, ?, NULL, ?)
         ON CONFLICT (source, conversation_id, kind) DO UPDATE SET
            since = CASE WHEN follow_ups.since IS NULL OR excluded.since IS NULL THEN NULL
                         WHEN excluded.since < follow_ups.since THEN excluded.since
                         ELSE follow_ups.since END,
            position = NULL",
        source,
        detail.conversation_id,
        detail.kind,
        since,
        now
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
