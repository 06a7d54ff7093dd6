//! JSON Lines: one object per row, its keys the view's columns in order; NULL is `null`,
//! integers and flags are JSON numbers and booleans, instants RFC 3339 UTC strings.

use std::io::Write;

use serde_json::Value;

use super::RowWriter;
use super::output::Counted;
use crate::store::export::{ExportRow, ExportValue, ExportView};

/// Writes a view's rows as JSON Lines.
pub(super) struct JsonlWriter {
    view: &'static ExportView,
    out: Counted<Box<dyn Write + Send>>,
}

impl JsonlWriter {
    /// A writer of `view`'s rows into `out`.
    pub(super) fn new(view: &'static ExportView, out: Counted<Box<dyn Write + Send>>) -> Self {
        JsonlWriter { view, out }
    }
}

impl RowWriter for JsonlWriter {
    fn write_batch(&mut self, rows: &[ExportRow]) -> anyhow::Result<()> {
        for row in rows {
            // Written key by key: a map would not keep the view's column order.
            self.out.write_all(b"{")?;
            for (i, (column, value)) in self.view.columns.iter().zip(row).enumerate() {
                if i > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, column.name)?;
                self.out.write_all(b":")?;
                serde_json::to_writer(&mut self.out, &json(value))?;
            }
            self.out.write_all(b"}\n")?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// A value as JSON (a non-finite float, which JSON cannot spell, as `null`).
fn json(value: &ExportValue) -> Value {
    match value {
        ExportValue::Null => Value::Null,
        ExportValue::Text(text) => Value::from(text.as_str()),
        ExportValue::Integer(n) => Value::from(*n),
        ExportValue::Float(x) => {
            serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
        }
        ExportValue::Boolean(b) => Value::from(*b),
        ExportValue::Timestamp(at) => Value::from(at.to_mirror_text()),
        ExportValue::Date(day) => Value::from(day.to_string()),
    }
}
