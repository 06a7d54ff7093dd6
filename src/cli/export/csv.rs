//! CSV through the `csv` crate (RFC 4180 quoting of commas, quotes and line breaks): a
//! header row of the view's column names, then one record per row; NULL is an empty
//! field, instants are RFC 3339 UTC with microseconds, flags `true`/`false`.

use std::io::Write;

use super::RowWriter;
use super::output::Counted;
use crate::store::export::{ExportRow, ExportValue, ExportView};

/// Writes a view's rows as CSV.
pub(super) struct CsvWriter {
    out: csv::Writer<Counted<Box<dyn Write + Send>>>,
}

impl CsvWriter {
    /// Writes the header row of `view` into `out`.
    pub(super) fn new(
        view: &'static ExportView,
        out: Counted<Box<dyn Write + Send>>,
    ) -> anyhow::Result<CsvWriter> {
        let mut out = csv::Writer::from_writer(out);
        out.write_record(view.columns.iter().map(|c| c.name))?;
        Ok(CsvWriter { out })
    }
}

impl RowWriter for CsvWriter {
    fn write_batch(&mut self, rows: &[ExportRow]) -> anyhow::Result<()> {
        for row in rows {
            self.out.write_record(row.iter().map(field))?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// A value as a CSV field.
fn field(value: &ExportValue) -> String {
    match value {
        ExportValue::Null => String::new(),
        ExportValue::Text(text) => text.clone(),
        ExportValue::Integer(n) => n.to_string(),
        ExportValue::Float(x) => x.to_string(),
        ExportValue::Boolean(b) => b.to_string(),
        ExportValue::Timestamp(at) => at.to_mirror_text(),
        ExportValue::Date(day) => day.to_string(),
    }
}
