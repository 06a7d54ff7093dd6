//! Apache Parquet through the `parquet` and `arrow` crates: one column per view column,
//! all nullable, typed by its neutral type (text UTF-8, integer INT64, float DOUBLE, flag
//! BOOLEAN, instant TIMESTAMP(µs, UTC), day DATE). Row groups are bounded, so the writer
//! holds at most one group's encoded pages, whatever the view's size.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::RowWriter;
use super::output::Counted;
use crate::store::export::{ColumnType, ExportRow, ExportValue, ExportView};

/// Rows per row group: large enough for columnar compression and readers' skipping,
/// small enough to keep the writer's buffer a few megabytes.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Writes a view's rows as Parquet.
pub(super) struct ParquetWriter {
    view: &'static ExportView,
    schema: SchemaRef,
    out: ArrowWriter<Counted<Box<dyn Write + Send>>>,
}

impl ParquetWriter {
    /// A writer of `view`'s rows into `out`.
    pub(super) fn new(
        view: &'static ExportView,
        out: Counted<Box<dyn Write + Send>>,
    ) -> anyhow::Result<ParquetWriter> {
        let schema: SchemaRef = Arc::new(Schema::new(
            view.columns
                .iter()
                .map(|c| Field::new(c.name, data_type(c.kind), true))
                .collect::<Vec<_>>(),
        ));
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_compression(Compression::SNAPPY)
            .build();
        let out = ArrowWriter::try_new(out, schema.clone(), Some(properties))?;
        Ok(ParquetWriter { view, schema, out })
    }
}

/// The Arrow type of a neutral column type.
fn data_type(kind: ColumnType) -> DataType {
    match kind {
        ColumnType::Text => DataType::Utf8,
        ColumnType::Integer => DataType::Int64,
        ColumnType::Float => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        ColumnType::Date => DataType::Date32,
    }
}

/// Days from 1970-01-01 to `day`, as Parquet's DATE counts them.
fn epoch_days(day: chrono::NaiveDate) -> anyhow::Result<i32> {
    let days = day
        .signed_duration_since(chrono::NaiveDate::default())
        .num_days();
    Ok(i32::try_from(days)?)
}

/// One column's values of a batch.
fn column(kind: ColumnType, rows: &[ExportRow], index: usize) -> anyhow::Result<ArrayRef> {
    let values = rows.iter().map(|row| &row[index]);
    let mismatch = |value: &ExportValue| anyhow::anyhow!("{value:?} in a {kind:?} column");
    let mut builder: Box<dyn ArrayBuilder> = match kind {
        ColumnType::Text => {
            let mut b = StringBuilder::new();
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Text(text) => b.append_value(text),
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
        ColumnType::Integer => {
            let mut b = Int64Builder::with_capacity(rows.len());
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Integer(n) => b.append_value(*n),
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
        ColumnType::Float => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Float(x) => b.append_value(*x),
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Boolean(flag) => b.append_value(*flag),
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
        ColumnType::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Timestamp(at) => {
                        b.append_value(at.as_datetime().timestamp_micros())
                    }
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
        ColumnType::Date => {
            let mut b = Date32Builder::with_capacity(rows.len());
            for value in values {
                match value {
                    ExportValue::Null => b.append_null(),
                    ExportValue::Date(day) => b.append_value(epoch_days(*day)?),
                    other => return Err(mismatch(other)),
                }
            }
            Box::new(b)
        }
    };
    Ok(builder.finish())
}

impl RowWriter for ParquetWriter {
    fn write_batch(&mut self, rows: &[ExportRow]) -> anyhow::Result<()> {
        let columns = (0..self.view.columns.len())
            .map(|i| column(self.view.columns[i].kind, rows, i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.out.write(&batch)?;
        Ok(())
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        let mut out = self.out.into_inner()?;
        out.flush()?;
        Ok(())
    }
}
