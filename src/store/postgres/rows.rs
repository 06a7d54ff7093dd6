//! PostgreSQL's statements for the row rules of `store::upsert`, inside the caller's open
//! transaction: new rows (and the follow-ups they ask for) in one multi-row insert per
//! batch, a batch's stored rows in one lookup, changed rows updated one by one, re-listed
//! unchanged rows touched together. Arrays are bound column by column (`unnest`), so a
//! batch costs one round trip whatever its size; a large batch of new rows (a backfill's)
//! goes through `COPY` instead (`copy.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgBindIterExt;

use super::copy::{COPY_MIN_ROWS, Staging, insert_staged};
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
    let mut staging = Staging::default();
    let mut statements = PgRows {
        tx,
        now,
        staging: &mut staging,
    };
    upsert::upsert_records(&mut statements, owner, records, None, &[]).await
}

/// The row statements on an open PostgreSQL transaction, at its time `now`.
pub(super) struct PgRows<'t> {
    pub tx: &'t mut PgConnection,
    pub now: DateTime<Utc>,
    /// The transaction's staging table for new rows (`copy.rs`).
    pub staging: &'t mut Staging,
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
    state_changed_at: Option<DateTime<Utc>>,
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
        insert_new_rows(self.tx, self.staging, owner, self.now, rows).await
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
                last_message_direction, last_inbound_at, last_outbound_at, awaiting_reply,
                    state_changed_at
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
                state_changed_at: row.state_changed_at,
            };
            (id, stored)
        })
        .collect())
}

/// The columns a new row takes from its record, in the order both ways of inserting
/// them bind or copy them: `r.<name>` in [`INSERT_NEW_ROWS`].
pub(super) const NEW_ROW_COLUMNS: [(&str, &str); 19] = [
    ("id", "text"),
    ("created_at", "timestamptz"),
    ("last_activity_at", "timestamptz"),
    ("active", "boolean"),
    ("status", "text"),
    ("channel", "text"),
    ("contact_id", "text"),
    ("contact_name", "text"),
    ("contact_phone", "text"),
    ("contact_email", "text"),
    ("title", "text"),
    ("assignee", "text"),
    ("unread_count", "bigint"),
    ("direction", "text"),
    ("inbound", "timestamptz"),
    ("outbound", "timestamptz"),
    ("awaiting", "boolean"),
    ("raw", "text"),
    ("hash", "bytea"),
];

/// New rows from a row source `r` with [`NEW_ROW_COLUMNS`] (what follows is `FROM …`):
/// $1 source, $2 provider, $3 account, $4 the transaction's time, $5 the run.
pub(super) const INSERT_NEW_ROWS: &str = "INSERT INTO conversations (
        source, conversation_id, provider, account, created_at, last_activity_at, active,
        status, channel, contact_id, contact_name, contact_phone, contact_email, title,
        assignee, unread_count, last_message_direction, last_inbound_at, last_outbound_at,
        awaiting_reply, raw, payload_hash,
        first_seen_at, last_seen_at, last_changed_at, run_id, closed_at)
     SELECT $1, r.id, $2, $3, r.created_at, r.last_activity_at, r.active,
            r.status, r.channel, r.contact_id, r.contact_name, r.contact_phone,
            r.contact_email, r.title, r.assignee, r.unread_count, r.direction,
            r.inbound, r.outbound, r.awaiting, r.raw::jsonb, r.hash,
            $4, $4, $4, $5, CASE WHEN r.active = false THEN $4 END";

/// A mirrored row is left alone; the ids written are the answer.
pub(super) const ON_CONFLICT_RETURNING: &str =
    "ON CONFLICT (source, conversation_id) DO NOTHING RETURNING conversation_id";

/// [`INSERT_NEW_ROWS`] from one array per column ($6 onwards).
static INSERT_UNNESTED: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = NEW_ROW_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| format!("${}::{kind}[]", i + 6))
        .collect();
    let names: Vec<&str> = NEW_ROW_COLUMNS.iter().map(|(name, _)| *name).collect();
    format!(
        "{INSERT_NEW_ROWS} FROM unnest({}) AS r({}) {ON_CONFLICT_RETURNING}",
        arrays.join(", "),
        names.join(", ")
    )
});

/// Inserts those of `rows` the mirror does not hold yet and queues the follow-ups they ask
/// for (from the start: no `since`), inside `tx`. Says, row by row, which were inserted:
/// of an id listed twice, only the first copy can be; the others are left for the caller
/// to compare and update.
async fn insert_new_rows(
    tx: &mut PgConnection,
    staging: &mut Staging,
    c: Owner<'_>,
    now: DateTime<Utc>,
    rows: &[Hashed<'_>],
) -> Result<Vec<bool>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::with_capacity(rows.len());
    let first: Vec<bool> = rows.iter().map(|(r, _)| seen.insert(&r.id)).collect();
    let batch: Vec<&Hashed<'_>> = rows
        .iter()
        .zip(&first)
        .filter(|(_, first)| **first)
        .map(|(row, _)| row)
        .collect();
    let inserted = if batch.len() >= COPY_MIN_ROWS {
        insert_staged(tx, staging, c, now, &batch).await?
    } else {
        insert_unnested(tx, c, now, &batch).await?
    };
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

/// Inserts `rows` (distinct ids) of `c` at `now` with one statement binding an array per
/// column. Answers the (storable) ids inserted.
async fn insert_unnested(
    tx: &mut PgConnection,
    c: Owner<'_>,
    now: DateTime<Utc>,
    rows: &[&Hashed<'_>],
) -> Result<Vec<String>, StoreError> {
    let batch = || rows.iter().copied();
    let time = |t: Option<Timestamp>| t.map(instant);
    let inserted = sqlx::query_scalar(sqlx::AssertSqlSafe(INSERT_UNNESTED.as_str()))
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
    Ok(inserted)
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
