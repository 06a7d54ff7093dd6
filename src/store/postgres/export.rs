//! Streaming a report view out of PostgreSQL: its `boolean`, `timestamptz` and `date`
//! columns decode straight into the view column's neutral type (a column of another type
//! fails the decode, so a retyped view is an error, never a silent change).

use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Row};

use super::PgStore;
use crate::store::export::{ColumnType, EXPORT_BATCH_ROWS, ExportRow, ExportValue, ExportView};
use crate::store::{StoreError, ViewExports};
use crate::time::Timestamp;

impl ViewExports for PgStore {
    fn export_batches<'a>(
        &'a self,
        view: &'static ExportView,
        source: Option<&'a str>,
    ) -> BoxStream<'a, Result<Vec<ExportRow>, StoreError>> {
        let query = sqlx::query(AssertSqlSafe(view.select_sql("$1", source.is_some())));
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
fn decode_row(view: &ExportView, row: &PgRow) -> Result<ExportRow, StoreError> {
    let mut values = Vec::with_capacity(view.columns.len());
    for (i, column) in view.columns.iter().enumerate() {
        let value = match column.kind {
            ColumnType::Text => row.try_get::<Option<String>, _>(i)?.map(ExportValue::Text),
            ColumnType::Integer => row.try_get::<Option<i64>, _>(i)?.map(ExportValue::Integer),
            ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(ExportValue::Float),
            ColumnType::Boolean => row.try_get::<Option<bool>, _>(i)?.map(ExportValue::Boolean),
            ColumnType::Timestamp => row
                .try_get::<Option<DateTime<Utc>>, _>(i)?
                .map(|at| ExportValue::Timestamp(Timestamp::from(at))),
            ColumnType::Date => row
                .try_get::<Option<NaiveDate>, _>(i)?
                .map(ExportValue::Date),
        };
        values.push(value.unwrap_or(ExportValue::Null));
    }
    Ok(values)
}
