//! Streaming a report view out of SQLite, whose flags are 0/1 integers and whose instants
//! and days are text: each value is turned into the view column's neutral type here.

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

use super::SqliteStore;
use crate::store::export::{ColumnType, EXPORT_BATCH_ROWS, ExportRow, ExportValue, ExportView};
use crate::store::{StoreError, ViewExports};
use crate::time::Timestamp;

impl ViewExports for SqliteStore {
    fn export_batches<'a>(
        &'a self,
        view: &'static ExportView,
        source: Option<&'a str>,
    ) -> BoxStream<'a, Result<Vec<ExportRow>, StoreError>> {
        let query = sqlx::query(AssertSqlSafe(view.select_sql("?", source.is_some())));
        let query = match source {
            Some(source) => query.bind(source),
            None => query,
        };
        query
            .fetch(&self.pool)
            .map(move |row| decode_row(view, &row?))
            .try_chunks(EXPORT_BATCH_ROWS)
            .map_err(|e| e.1)
            .boxed()
    }
}

/// The row's values in the view's neutral types.
fn decode_row(view: &ExportView, row: &SqliteRow) -> Result<ExportRow, StoreError> {
    let mut values = Vec::with_capacity(view.columns.len());
    for (i, column) in view.columns.iter().enumerate() {
        let value = match column.kind {
            ColumnType::Text => row.try_get::<Option<String>, _>(i)?.map(ExportValue::Text),
            ColumnType::Integer => row.try_get::<Option<i64>, _>(i)?.map(ExportValue::Integer),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(ExportValue::Float),
            ColumnType::Boolean => match row.try_get::<Option<i64>, _>(i)? {
                None => None,
                Some(0) => Some(ExportValue::Boolean(false)),
                Some(1) => Some(ExportValue::Boolean(true)),
                Some(other) => return Err(view.bad_value(column, other)),
            },
            ColumnType::Timestamp => match row.try_get::<Option<String>, _>(i)? {
                None => None,
                Some(text) => Some(ExportValue::Timestamp(
                    Timestamp::parse_rfc3339(&text).map_err(|e| view.bad_value(column, e))?,
                )),
            },
            ColumnType::Date => match row.try_get::<Option<String>, _>(i)? {
                None => None,
                Some(text) => Some(ExportValue::Date(
                    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                        .map_err(|e| view.bad_value(column, e))?,
                )),
            },
        };
        values.push(value.unwrap_or(ExportValue::Null));
    }
    Ok(values)
}
