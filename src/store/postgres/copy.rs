//! New rows through `COPY`, the backfill's fast path: a batch's rows are streamed in
//! PostgreSQL's binary `COPY` format into a temporary staging table (created once per
//! transaction, `ON COMMIT DROP`), then moved into `conversations` by one
//! `INSERT … SELECT … ON CONFLICT DO NOTHING` that also empties the staging table.
//!
//! Binding a batch as arrays (`unnest`, `rows.rs`) makes the driver build one array per
//! column and the server take each apart again; `COPY` sends each value once, in the
//! server's own binary representation, and the client can stream a batch in chunks instead
//! of holding all its arguments at once. It costs two statements more (the `COPY` and, once
//! per transaction, the `CREATE`), so small batches (a delta's few rows, a follow-up's
//! one) keep the single `unnest` statement: [`COPY_MIN_ROWS`] decides. Which rows are new,
//! and what the caller does with the answer, is `rows.rs`'s business; this file only moves
//! a batch of distinct rows into the table.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::instant;
use super::rows::{INSERT_NEW_ROWS, NEW_ROW_COLUMNS, ON_CONFLICT_RETURNING};
use super::text::{storable, storable_json, storable_opt};
use crate::store::StoreError;
use crate::store::upsert::{Hashed, Owner};
use crate::time::Timestamp;

/// Batches of at least this many new rows go through `COPY`; smaller ones through one
/// `unnest` statement, which costs a single round trip.
pub const COPY_MIN_ROWS: usize = 64;

/// The staging table's name (in the session's temporary schema).
const STAGING: &str = "convsync_new_rows";

/// Encoded rows are sent once this many bytes are waiting, so a batch of large rows is
/// never held whole.
const SEND_AT: usize = 256 * 1024;

/// PostgreSQL's epoch (2000-01-01T00:00:00Z) in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// [`INSERT_NEW_ROWS`] from the staging table, which it empties for the next batch.
static INSERT_STAGED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH r AS (DELETE FROM {STAGING} RETURNING *) {INSERT_NEW_ROWS} FROM r \
         {ON_CONFLICT_RETURNING}"
    )
});

/// Whether the transaction has created its staging table yet (it is dropped at commit).
#[derive(Debug, Default)]
pub(super) struct Staging {
    created: bool,
}

/// Inserts `rows` (distinct ids) of `owner` at `now` through the staging table inside
/// `tx`. Answers the (storable) ids inserted; the others were already mirrored.
pub(super) async fn insert_staged(
    tx: &mut PgConnection,
    staging: &mut Staging,
    owner: Owner<'_>,
    now: DateTime<Utc>,
    rows: &[&Hashed<'_>],
) -> Result<Vec<String>, StoreError> {
    if !staging.created {
        let columns: Vec<String> = NEW_ROW_COLUMNS
            .iter()
            .map(|(name, kind)| format!("{name} {kind}"))
            .collect();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE IF NOT EXISTS {STAGING} ({}) ON COMMIT DROP",
            columns.join(", ")
        )))
        .execute(&mut *tx)
        .await?;
        staging.created = true;
    }
    let mut copy = tx
        .copy_in_raw(&format!("COPY {STAGING} FROM STDIN (FORMAT binary)"))
        .await?;
    let mut out = CopyRows::new();
    for row in rows {
        encode(&mut out, row);
        if out.buf.len() >= SEND_AT {
            copy.send(std::mem::take(&mut out.buf)).await?;
        }
    }
    copy.send(out.finish()).await?;
    copy.finish().await?;
    let inserted = sqlx::query_scalar(sqlx::AssertSqlSafe(INSERT_STAGED.as_str()))
        .bind(owner.source)
        .bind(owner.provider)
        .bind(owner.account)
        .bind(now)
        .bind(owner.run_id)
        .fetch_all(&mut *tx)
        .await?;
    Ok(inserted)
}

/// Writes one row's fields in the order of [`NEW_ROW_COLUMNS`].
fn encode(out: &mut CopyRows, (r, hash): &Hashed<'_>) {
    out.start_row(NEW_ROW_COLUMNS.len());
    out.text(Some(&storable(&r.id)));
    out.time(r.created_at);
    out.time(r.last_activity_at);
    out.boolean(r.active);
    for text in [
        &r.status,
        &r.channel,
        &r.contact_id,
        &r.contact_name,
        &r.contact_phone,
        &r.contact_email,
        &r.title,
        &r.assignee,
    ] {
        out.text(storable_opt(text).as_deref());
    }
    out.int8(r.unread_count);
    out.text(r.last_message_direction.map(|d| d.as_str()));
    out.time(r.last_inbound_at);
    out.time(r.last_outbound_at);
    out.boolean(r.awaiting_reply);
    out.text(Some(&storable_json(r.raw.get())));
    out.bytes(Some(&hash[..]));
}

/// Rows in `COPY`'s binary format: a header, per row its field count and each field as a
/// length (-1 for NULL) and the type's binary representation, then a trailer.
struct CopyRows {
    buf: Vec<u8>,
}

impl CopyRows {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(SEND_AT + 64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        CopyRows { buf }
    }

    fn start_row(&mut self, fields: usize) {
        self.buf
            .extend_from_slice(&i16::try_from(fields).unwrap_or(i16::MAX).to_be_bytes());
    }

    fn field(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(bytes) => {
                self.length(bytes.len());
                self.buf.extend_from_slice(bytes);
            }
        }
    }

    /// A field's length. A value of 1 GiB or more is beyond what PostgreSQL stores in a
    /// field; it is written as such and the server refuses the batch.
    fn length(&mut self, len: usize) {
        self.buf
            .extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    }

    fn text(&mut self, value: Option<&str>) {
        self.field(value.map(str::as_bytes));
    }

    fn bytes(&mut self, value: Option<&[u8]>) {
        self.field(value);
    }

    /// `timestamptz`: microseconds since PostgreSQL's epoch, as the mirror stores them.
    fn time(&mut self, value: Option<Timestamp>) {
        let micros = value.map(|t| instant(t).timestamp_micros() - PG_EPOCH_MICROS);
        self.field(micros.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn boolean(&mut self, value: Option<bool>) {
        self.field(value.map(|b| [u8::from(b)]).as_ref().map(|b| &b[..]));
    }

    fn int8(&mut self, value: Option<i64>) {
        self.field(value.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary format's framing: header, field count, NULL as -1, big-endian values,
    /// instants from PostgreSQL's epoch, trailer.
    #[test]
    fn rows_are_framed_as_binary_copy_expects() {
        let mut out = CopyRows::new();
        out.start_row(4);
        out.text(None);
        out.time(Some(
            Timestamp::parse_rfc3339("2000-01-01T00:00:01.000001Z").unwrap(),
        ));
        out.boolean(Some(true));
        out.text(Some("{}"));
        let bytes = out.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_001i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 1, 1]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
