//! PostgreSQL's statements for the row rules of `store::upsert`, inside the caller's open
//! transaction: new rows (and the follow-ups they ask for) in one multi-row insert per
//! batch, a batch's stored rows in one lookup, changed rows updated one by one, re-listed
//! unchanged rows touched together. Arrays are bound column by column (`unnest`), so a
//! batch costs one round trip whatever its size.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgBindIterExt;

use super::instant;
use super::queue::queue_follow_up;
use super::rejected::record_rejected;
use super::text::{storable, storable_json, storable_opt};
use crate::record::{ConversationRecord, DetailRequest, RejectedRecord};
use crate::store::upsert::{self, Hashed, Owner, ReplyFacts, RowStatements, StoredRow};
use crate::store::{PageOutcome, StoreError};
use crate::time::Timestamp;

/// Writes `records` of `owner` by `store::upsert`'s rules inside `tx` at the
/// transaction's time `now` (see [`upsert::upsert_records`]).
pub(super) async fn upsert_records(
    tx: &mut PgConnection,
    owner: Owner<'_>,
    now: DateTime<Utc>,
    records: &[Hashed<'_>],
) -> Result<PageOutcome, StoreError> {
    let mut statements = PgRows { tx, now };
    upsert::upsert_records(&mut statements, owner, records, None, &[]).await
}

/// The row statements on an open PostgreSQL transaction, at its time `now`.
pub(super) struct PgRows<'t> {
    pub tx: &'t mut PgConnection,
    pub now: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    conversation_id: String,
    payload_hash: Vec<u8>,
    last_activity_at: Option<DateTime<Utc>>,
    last_seen_at: DateTime<Utc>,
    closed: bool,
    deleted: bool,
    last_message_direction: Option<String>,
    last_inbound_at: Option<DateTime<Utc>>,
    last_outbound_at: Option<DateTime<Utc>>,
    awaiting_reply: Option<bool>,
}

impl RowStatements for PgRows<'_> {
    type Time = DateTime<Utc>;

    fn now(&self) -> &DateTime<Utc> {
        &self.now
    }

    async fn load_existing(
        &mut self,
        source: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, StoredRow<DateTime<Utc>>>, StoreError> {
        load_existing(self.tx, source, ids).await
    }

    async fn insert_new(
        &mut self,
        owner: Owner<'_>,
        rows: &[Hashed<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        insert_new_rows(self.tx, owner, self.now, rows).await
    }

    async fn update(
        &mut self,
        owner: Owner<'_>,
        record: &ConversationRecord,
        hash: &[u8; 16],
    ) -> Result<(), StoreError> {
        update_record(self.tx, owner, self.now, record, hash).await
    }

    async fn queue_follow_up(
        &mut self,
        source: &str,
        detail: &DetailRequest,
    ) -> Result<(), StoreError> {
        queue_follow_up(self.tx, source, detail, self.now).await
    }

    async fn forget_reply_state(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET last_message_direction = NULL, awaiting_reply = NULL
             WHERE source = $1 AND conversation_id = $2",
        )
        .bind(source)
        .bind(storable(conversation_id))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn touch(&mut self, source: &str, ids: &[&str]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE conversations SET last_seen_at = $1
             WHERE source = $2 AND conversation_id = ANY($3)",
        )
        .bind(self.now)
        .bind(source)
        .bind(ids.iter().map(|id| storable(id)).bind_iter())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
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
            self.now,
        )
        .await
    }

    async fn last_activity(
        &mut self,
        source: &str,
        conversation_id: &str,
    ) -> Result<Option<Timestamp>, StoreError> {
        let known: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT last_activity_at FROM conversations WHERE source = $1 AND conversation_id = $2",
        )
        .bind(source)
        .bind(storable(conversation_id))
        .fetch_optional(&mut *self.tx)
        .await?
        .flatten();
        Ok(known.map(Timestamp::from))
    }
}

/// [`RowStatements::load_existing`], keyed by the ids asked for, also where storing
/// changed one (a NUL character).
async fn load_existing(
    tx: &mut PgConnection,
    source: &str,
    ids: &[&str],
) -> Result<HashMap<String, StoredRow<DateTime<Utc>>>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<ExistingRow> = sqlx::query_as(
        "SELECT conversation_id, payload_hash, last_activity_at, last_seen_at,
                closed_at IS NOT NULL AS closed, deleted_at IS NOT NULL AS deleted,
                last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply
         FROM conversations WHERE source = $1 AND conversation_id = ANY($2)",
    )
    .bind(source)
    .bind(ids.iter().map(|id| storable(id)).bind_iter())
    .fetch_all(&mut *tx)
    .await?;
    let asked: HashMap<String, &str> = ids
        .iter()
        .filter(|id| id.contains('\0'))
        .map(|id| (storable(id).into_owned(), *id))
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let id = match asked.get(&row.conversation_id) {
                Some(id) => (*id).to_owned(),
                None => row.conversation_id,
            };
            let stored = StoredRow {
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
            };
            (id, stored)
        })
        .collect())
}

/// Inserts those of `rows` the mirror does not hold yet and queues the follow-ups they ask
/// for (from the start: no `since`), inside `tx`. Says, row by row, which were inserted:
/// of an id listed twice, only the first copy can be; the others are left for the caller
/// to compare and update.
async fn insert_new_rows(
    tx: &mut PgConnection,
    c: Owner<'_>,
    now: DateTime<Utc>,
    rows: &[Hashed<'_>],
) -> Result<Vec<bool>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::with_capacity(rows.len());
    let first: Vec<bool> = rows.iter().map(|(r, _)| seen.insert(&r.id)).collect();
    let batch = || {
        rows.iter()
            .zip(&first)
            .filter(|(_, first)| **first)
            .map(|(row, _)| row)
    };
    let time = |t: Option<Timestamp>| t.map(instant);
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO conversations (
            source, conversation_id, provider, account, created_at, last_activity_at, active,
            status, channel, contact_id, contact_name, contact_phone, contact_email, title,
            assignee, unread_count, last_message_direction, last_inbound_at, last_outbound_at,
            awaiting_reply, raw, payload_hash,
            first_seen_at, last_seen_at, last_changed_at, run_id, closed_at)
         SELECT $1, r.id, $2, $3, r.created_at, r.last_activity_at, r.active,
                r.status, r.channel, r.contact_id, r.contact_name, r.contact_phone,
                r.contact_email, r.title, r.assignee, r.unread_count, r.direction,
                r.inbound, r.outbound, r.awaiting, r.raw::jsonb, r.hash,
                $4, $4, $4, $5, CASE WHEN r.active = false THEN $4 END
         FROM unnest($6::text[], $7::timestamptz[], $8::timestamptz[], $9::boolean[],
                     $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                     $15::text[], $16::text[], $17::text[], $18::bigint[], $19::text[],
                     $20::timestamptz[], $21::timestamptz[], $22::boolean[], $23::text[],
                     $24::bytea[])
              AS r(id, created_at, last_activity_at, active, status, channel, contact_id,
                   contact_name, contact_phone, contact_email, title, assignee, unread_count,
                   direction, inbound, outbound, awaiting, raw, hash)
         ON CONFLICT (source, conversation_id) DO NOTHING
         RETURNING conversation_id",
    )
    .bind(c.source)
    .bind(c.provider)
    .bind(c.account)
    .bind(now)
    .bind(c.run_id)
    .bind(batch().map(|(r, _)| storable(&r.id)).bind_iter())
    .bind(batch().map(|(r, _)| time(r.created_at)).bind_iter())
    .bind(batch().map(|(r, _)| time(r.last_activity_at)).bind_iter())
    .bind(batch().map(|(r, _)| r.active).bind_iter())
    .bind(batch().map(|(r, _)| storable_opt(&r.status)).bind_iter())
    .bind(batch().map(|(r, _)| storable_opt(&r.channel)).bind_iter())
    .bind(
        batch()
            .map(|(r, _)| storable_opt(&r.contact_id))
            .bind_iter(),
    )
    .bind(
        batch()
            .map(|(r, _)| storable_opt(&r.contact_name))
            .bind_iter(),
    )
    .bind(
        batch()
            .map(|(r, _)| storable_opt(&r.contact_phone))
            .bind_iter(),
    )
    .bind(
        batch()
            .map(|(r, _)| storable_opt(&r.contact_email))
            .bind_iter(),
    )
    .bind(batch().map(|(r, _)| storable_opt(&r.title)).bind_iter())
    .bind(batch().map(|(r, _)| storable_opt(&r.assignee)).bind_iter())
    .bind(batch().map(|(r, _)| r.unread_count).bind_iter())
    .bind(
        batch()
            .map(|(r, _)| r.last_message_direction.map(|d| d.as_str()))
            .bind_iter(),
    )
    .bind(batch().map(|(r, _)| time(r.last_inbound_at)).bind_iter())
    .bind(batch().map(|(r, _)| time(r.last_outbound_at)).bind_iter())
    .bind(batch().map(|(r, _)| r.awaiting_reply).bind_iter())
    .bind(batch().map(|(r, _)| storable_json(r.raw.get())).bind_iter())
    .bind(batch().map(|(_, hash)| &hash[..]).bind_iter())
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<String> = inserted.into_iter().collect();
    let result: Vec<bool> = rows
        .iter()
        .zip(&first)
        .map(|((r, _), first)| *first && inserted.contains(storable(&r.id).as_ref()))
        .collect();

    let follow_ups = || {
        rows.iter()
            .zip(&result)
            .filter(|(_, new)| **new)
            .filter_map(|((r, _), _)| r.detail_on_activity.map(|kind| (r, kind)))
    };
    if follow_ups().next().is_some() {
        sqlx::query(
            "INSERT INTO follow_ups (source, conversation_id, kind, since, position, queued_at)
             SELECT $1, f.id, f.kind, NULL, NULL, $2
             FROM unnest($3::text[], $4::text[]) AS f(id, kind)
             ON CONFLICT (source, conversation_id, kind) DO UPDATE SET since = NULL, position = NULL",
        )
        .bind(c.source)
        .bind(now)
        .bind(follow_ups().map(|(r, _)| storable(&r.id)).bind_iter())
        .bind(follow_ups().map(|(_, kind)| kind).bind_iter())
        .execute(&mut *tx)
        .await?;
    }
    Ok(result)
}

/// [`RowStatements::update`]: listing fields a provider does not report (None) keep what
/// follow-ups learned.
async fn update_record(
    tx: &mut PgConnection,
    c: Owner<'_>,
    now: DateTime<Utc>,
    r: &ConversationRecord,
    hash: &[u8; 16],
) -> Result<(), StoreError> {
    let time = |t: Option<Timestamp>| t.map(instant);
    sqlx::query(
        "UPDATE conversations SET
            created_at = COALESCE($1, created_at),
            last_activity_at = COALESCE($2, last_activity_at),
            active = COALESCE($3, active),
            status = $4, channel = $5, contact_id = $6, contact_name = $7, contact_phone = $8,
            contact_email = $9, title = $10, assignee = $11, unread_count = $12,
            last_message_direction = COALESCE($13, last_message_direction),
            last_inbound_at = GREATEST(last_inbound_at, $14),
            last_outbound_at = GREATEST(last_outbound_at, $15),
            awaiting_reply = COALESCE($16, awaiting_reply),
            raw = $17::jsonb, payload_hash = $18, last_seen_at = $19, last_changed_at = $19,
            run_id = $20,
            closed_at = CASE WHEN $3 = false THEN COALESCE(closed_at, $19)
                             WHEN $3 = true THEN NULL ELSE closed_at END,
            deleted_at = NULL
         WHERE source = $21 AND conversation_id = $22",
    )
    .bind(time(r.created_at))
    .bind(time(r.last_activity_at))
    .bind(r.active)
    .bind(storable_opt(&r.status))
    .bind(storable_opt(&r.channel))
    .bind(storable_opt(&r.contact_id))
    .bind(storable_opt(&r.contact_name))
    .bind(storable_opt(&r.contact_phone))
    .bind(storable_opt(&r.contact_email))
    .bind(storable_opt(&r.title))
    .bind(storable_opt(&r.assignee))
    .bind(r.unread_count)
    .bind(r.last_message_direction.map(|d| d.as_str()))
    .bind(time(r.last_inbound_at))
    .bind(time(r.last_outbound_at))
    .bind(r.awaiting_reply)
    .bind(storable_json(r.raw.get()))
    .bind(&hash[..])
    .bind(now)
    .bind(c.run_id)
    .bind(c.source)
    .bind(storable(&r.id))
    .execute(tx)
    .await?;
    Ok(())
}
