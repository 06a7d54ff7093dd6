//! SQLite's statements for the row rules of `store::upsert`: new rows through the prepared
//! fast path (`prepared.rs`), changed rows updated, re-listed unchanged rows touched, all
//! inside the caller's open transaction. Instants are the mirror's fixed-width text.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::prepared::insert_new_rows;
use super::queue::queue_follow_up;
use super::rejected::record_rejected;
use crate::record::{ConversationRecord, DetailRequest, RejectedRecord};
use crate::store::upsert::{self, Hashed, MirrorTime, Owner, ReplyFacts, RowStatements, StoredRow};
use crate::store::{PageOutcome, StoreError};
use crate::time::Timestamp;

/// The mirror's text form of an instant (`Timestamp::to_mirror_text`): fixed width, so
/// text order is time order.
impl MirrorTime for String {
    fn of(t: Timestamp) -> Self {
        t.to_mirror_text()
    }

    fn to_timestamp(&self) -> Option<Timestamp> {
        Timestamp::parse_rfc3339(self).ok()
    }
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    conversation_id: String,
    payload_hash: Vec<u8>,
    last_activity_at: Option<String>,
    last_seen_at: String,
    closed: bool,
    deleted: bool,
    last_message_direction: Option<String>,
    last_inbound_at: Option<String>,
    last_outbound_at: Option<String>,
    awaiting_reply: Option<bool>,
    state_changed_at: Option<String>,
}

const SELECT_CHUNK: usize = 400;

/// Writes `records` of `owner` by `store::upsert`'s rules inside `tx` at the
/// transaction's time `now` (see [`upsert::upsert_records`]).
pub(super) async fn upsert_records(
    tx: &mut Transaction<'static, Sqlite>,
    owner: Owner<'_>,
    now: &str,
    records: &[Hashed<'_>],
) -> Result<PageOutcome, StoreError> {
    let mut statements = SqliteRows::new(tx, now);
    upsert::upsert_records(&mut statements, owner, records, None, &[]).await
}

/// The row statements on an open SQLite transaction, at its time `now`.
pub(super) struct SqliteRows<'t> {
    tx: &'t mut Transaction<'static, Sqlite>,
    now: String,
}

impl<'t> SqliteRows<'t> {
    pub(super) fn new(tx: &'t mut Transaction<'static, Sqlite>, now: &str) -> Self {
        SqliteRows {
            tx,
            now: now.to_owned(),
        }
    }
}

impl RowStatements for SqliteRows<'_> {
    type Time = String;

    fn now(&self) -> &String {
        &self.now
    }

    async fn load_existing(
        &mut self,
        source: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, StoredRow<String>>, StoreError> {
        load_existing(self.tx, source, ids).await
    }

    async fn insert_new(
        &mut self,
        owner: Owner<'_>,
        rows: &[Hashed<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        insert_new_rows(self.tx, owner, &self.now, rows).await
    }

    async fn update(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
        hash: &[u8; 16],
    ) -> Result<(), StoreError> {
        update_record(self.tx, owner.source, owner.run_id, record, hash, &self.now).await
    }

    async fn queue_follow_up(
        &mut self,
        source: &str,
        detail: &DetailRequest,
    ) -> Result<(), StoreError> {
        queue_follow_up(self.tx, source, detail, &self.now).await
    }

    async fn forget_reply_state(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<(), StoreError> {
        forget_reply_state(self.tx, source, conversation_id).await
    }

    async fn touch(&mut self, source: &str, ids: &[&str]) -> Result<(), StoreError> {
        touch_rows(self.tx, source, ids, &self.now).await
    }

    async fn record_rejected(
        &mut self,
        owner: Owner<'_>,
        walk: &str,
        rejected: &RejectedRecord,
    ) -> Result<(), StoreError> {
        record_rejected(
            self.tx,
            owner.source,
            owner.run_id,
            walk,
            rejected,
            &self.now,
        )
        .await
    }

    async fn last_activity(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let known: Option<String> = sqlx::query_scalar!(
            "SELECT last_activity_at FROM conversations WHERE source = ? AND conversation_id = ?",
            source,
            conversation_id
        )
        .fetch_optional(&mut **self.tx)
        .await?
        .flatten();
        Ok(known.and_then(|t| Timestamp::parse_rfc3339(&t).ok()))
    }
}

/// [`RowStatements::forget_reply_state`].
async fn forget_reply_state(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    conversation_id: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE conversations SET last_message_direction = NULL, awaiting_reply = NULL
         WHERE source = ? AND conversation_id = ?",
        source,
        conversation_id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn load_existing(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    ids: &[&str],
) -> Result<HashMap<String, StoredRow<String>>, StoreError> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(SELECT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT conversation_id, payload_hash, last_activity_at, last_seen_at,
                    closed_at IS NOT NULL AS closed, deleted_at IS NOT NULL AS deleted,
                    last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply,
                    state_changed_at
             FROM conversations WHERE source = ",
        );
        q.push_bind(source);
        q.push(" AND conversation_id IN (");
        let mut separated = q.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        q.push(")");
        let rows: Vec<ExistingRow> = q.build_query_as().fetch_all(&mut **tx).await?;
        for row in rows {
            found.insert(
                row.conversation_id,
                StoredRow {
                    hash: row.payload_hash,
                    last_activity_at: row.last_activity_at,
                    last_seen_at: row.last_seen_at,
                    closed: row.closed,
                    deleted: row.deleted,
                    reply: ReplyFacts {
                        direction: row.last_message_direction,
                        inbound: row.last_inbound_at,
                        outbound: row.last_outbound_at,
                        awaiting: row.awaiting_reply,
                    },
                    state_changed_at: row.state_changed_at,
                },
            );
        }
    }
    Ok(found)
}

/// Refreshes `last_seen_at` of rows a sweep listed unchanged, a chunk of ids at a time.
async fn touch_rows(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    ids: &[&str],
    now: &str,
) -> Result<(), StoreError> {
    for chunk in ids.chunks(SELECT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE conversations SET last_seen_at = ");
        q.push_bind(now);
        q.push(" WHERE source = ");
        q.push_bind(source);
        q.push(" AND conversation_id IN (");
        let mut separated = q.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        q.push(")");
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn update_record(
    tx: &mut Transaction<'static, Sqlite>,
    source: &str,
    run_id: i64,
    r: &ConversationRecord,
    hash: &[u8; 16],
    now: &str,
) -> Result<(), StoreError> {
    // Listing fields a provider does not report (None) keep what follow-ups learned.
    let inbound = r.last_inbound_at.map(|t| t.to_mirror_text());
    let outbound = r.last_outbound_at.map(|t| t.to_mirror_text());
    let created_at = r.created_at.map(|t| t.to_mirror_text());
    let last_activity_at = r.last_activity_at.map(|t| t.to_mirror_text());
    let direction = r.last_message_direction.map(|d| d.as_str());
    let (raw, hash) = (r.raw.get(), &hash[..]);
    sqlx::query!(
        "UPDATE conversations SET
            created_at = COALESCE(?, created_at),
            last_activity_at = COALESCE(?, last_activity_at),
            active = COALESCE(?, active),
            status = ?, channel = ?, contact_id = ?, contact_name = ?, contact_phone = ?,
            contact_email = ?, title = ?, assignee = ?, unread_count = ?,
            last_message_direction = COALESCE(?, last_message_direction),
            last_inbound_at = CASE WHEN last_inbound_at IS NULL OR ? > last_inbound_at
                                   THEN COALESCE(?, last_inbound_at) ELSE last_inbound_at END,
            last_outbound_at = CASE WHEN last_outbound_at IS NULL OR ? > last_outbound_at
                                    THEN COALESCE(?, last_outbound_at) ELSE last_outbound_at END,
            awaiting_reply = COALESCE(?, awaiting_reply),
            raw = ?, payload_hash = ?, last_seen_at = ?, last_changed_at = ?, run_id = ?,
            closed_at = CASE WHEN ? = 0 THEN COALESCE(closed_at, ?)
                             WHEN ? = 1 THEN NULL ELSE closed_at END,
            deleted_at = NULL
         WHERE source = ? AND conversation_id = ?",
        created_at,
        last_activity_at,
        r.active,
        r.status,
        r.channel,
        r.contact_id,
        r.contact_name,
        r.contact_phone,
        r.contact_email,
        r.title,
        r.assignee,
        r.unread_count,
        direction,
        inbound,
        inbound,
        outbound,
        outbound,
        r.awaiting_reply,
        raw,
        hash,
        now,
        now,
        run_id,
        r.active,
        now,
        r.active,
        source,
        r.id
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
