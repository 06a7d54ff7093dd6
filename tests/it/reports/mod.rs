//! The versioned reporting interface (docs/schema.md, "Report views"): the `v1_` views keep
//! their columns, the channel mapping is the one the provider pages show, and the report
//! queries the docs print run as printed on a mirror of every provider.

mod channels;
mod documented;
mod export;
mod upgrade;
mod verify;
mod views;

use std::collections::BTreeMap;

use convsync::record::ConversationRecord;
use convsync::store::{CursorState, PageWrite, Store};
use serde_json::Value;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::support::mirror::{AsMirrorDb, MirrorDb};

/// One result row, by column name, in JSON values: a report query's columns may have any
/// type (PostgreSQL sums integers as `numeric`), so the rows are read generically.
type JsonRow = BTreeMap<String, Value>;

/// Every row `sql` returns (one statement, as a reader would paste it), as [`JsonRow`]s in
/// the query's order.
async fn json_rows(db: &(impl AsMirrorDb + ?Sized), sql: &str) -> Vec<JsonRow> {
    let sql = sql.trim().trim_end_matches(';');
    match db.mirror_db() {
        MirrorDb::Sqlite(pool) => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter()
                .map(|row| {
                    row.columns()
                        .iter()
                        .map(|column| {
                            let i = column.ordinal();
                            let raw = row.try_get_raw(i).unwrap();
                            let value = match raw.type_info().name() {
                                _ if raw.is_null() => Value::Null,
                                "INTEGER" => Value::from(row.get::<i64, _>(i)),
                                "REAL" => Value::from(row.get::<f64, _>(i)),
                                _ => Value::from(row.get::<String, _>(i)),
                            };
                            (column.name().to_owned(), value)
                        })
                        .collect()
                })
                .collect()
        }
        MirrorDb::Postgres(pool) => {
            // PostgreSQL turns any row into JSON itself; the subquery keeps its order.
            let wrapped = format!("SELECT to_jsonb(q)::text FROM ({sql}) AS q");
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(wrapped))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter()
                .map(|text| serde_json::from_str(text).unwrap())
                .collect()
        }
    }
}

/// Mirrors `records` as one page of a source named after `provider`, as a sync would.
async fn mirror_records(store: &Store, provider: &str, records: &[ConversationRecord]) {
    let page = PageWrite {
        source: provider,
        provider,
        account: "account",
        walk: "delta",
        run_id: 1,
        records,
        rejected: &[],
        follow_ups: &[],
        touch_seen_before: None,
        insert_first: false,
    };
    let cursor = CursorState::encode(&serde_json::json!({ "position": 1 })).unwrap();
    store.apply_page(&page, &cursor).await.unwrap();
}
