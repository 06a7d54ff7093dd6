//! Reading a `v1_` report view row by row for `convsync export`: the views are the stable
//! interface (docs/schema.md, "Report views"), so they are the only thing exported.
//!
//! Each exportable view's columns carry a neutral [`ColumnType`], so that CSV, JSONL and
//! Parquet get the same values from SQLite (flags as 0/1, instants as text) and PostgreSQL
//! (`boolean`, `timestamptz`). A backend streams the view's rows in bounded batches
//! ([`ViewExports::export_batches`]), naming each column, and decodes each value as its
//! neutral type: a view that lost a column, or whose column changed type, fails the export
//! loudly instead of mislabelling data.

use futures::stream::BoxStream;

use super::StoreError;
use crate::time::Timestamp;

/// Rows per batch a backend hands to the writer: big enough to amortise the hand-over,
/// small enough that memory stays flat at any view size.
pub const EXPORT_BATCH_ROWS: usize = 1024;

/// A view column's type, the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Text.
    Text,
    /// A 64-bit integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// SQLite's 0/1 flag, PostgreSQL's `boolean`.
    Boolean,
    /// An instant in UTC, microsecond precision.
    Timestamp,
    /// A calendar day (`YYYY-MM-DD`).
    Date,
}

/// One column of an exportable view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportColumn {
    /// Its name in the view.
    pub name: &'static str,
    /// Its neutral type.
    pub kind: ColumnType,
}

/// A `v1_` view that `convsync export` may read.
#[derive(Debug, PartialEq, Eq)]
pub struct ExportView {
    /// The view's name.
    pub name: &'static str,
    /// Its columns, in the view's order.
    pub columns: &'static [ExportColumn],
    /// The columns the rows are ordered by, so that two exports of the same mirror match.
    order_by: &'static str,
}

impl ExportView {
    /// Whether the view has a `source` column to filter on.
    pub fn has_source(&self) -> bool {
        self.columns.iter().any(|c| c.name == "source")
    }

    /// The view's `SELECT`, with `placeholder` (`?` or `$1`) for the source filter when
    /// `by_source`. The view's name is one of [`EXPORT_VIEWS`], never the user's text.
    pub(crate) fn select_sql(&self, placeholder: &str, by_source: bool) -> String {
        let columns: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        let filter = if by_source {
            format!(" WHERE source = {placeholder}")
        } else {
            String::new()
        };
        format!(
            "SELECT {} FROM {}{filter} ORDER BY {}",
            columns.join(", "),
            self.name,
            self.order_by
        )
    }

    /// The error for a stored value of `column` that is not of its type.
    pub(crate) fn bad_value(
        &self,
        column: &ExportColumn,
        detail: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::Corrupt(format!(
            "{}.{} is not a {:?}: {detail}",
            self.name, column.name, column.kind
        ))
    }
}

/// One value of an exported row.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportValue {
    /// SQL NULL: the provider did not say.
    Null,
    /// Text.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A flag.
    Boolean(bool),
    /// An instant.
    Timestamp(Timestamp),
    /// A day.
    Date(chrono::NaiveDate),
}

/// One exported row: a value per column of its view, in order.
pub type ExportRow = Vec<ExportValue>;

const fn col(name: &'static str, kind: ColumnType) -> ExportColumn {
    ExportColumn { name, kind }
}

use ColumnType::{Boolean, Date, Integer, Text, Timestamp as Instant};

/// Every exportable view: the `v1_` views of docs/schema.md, with the columns
/// tests/it/reports/views.rs pins.
pub const EXPORT_VIEWS: &[ExportView] = &[
    ExportView {
        name: "v1_conversations",
        columns: &[
            col("source", Text),
            col("conversation_id", Text),
            col("provider", Text),
            col("account", Text),
            col("channel", Text),
            col("channel_kind", Text),
            col("status", Text),
            col("active", Boolean),
            col("is_open", Boolean),
            col("opened_at", Instant),
            col("opened_at_source", Text),
            col("created_at", Instant),
            col("first_seen_at", Instant),
            col("last_activity_at", Instant),
            col("closed_at", Instant),
            col("deleted_at", Instant),
            col("contact_id", Text),
            col("contact_name", Text),
            col("contact_phone", Text),
            col("contact_email", Text),
            col("title", Text),
            col("assignee", Text),
            col("unread_count", Integer),
            col("last_message_direction", Text),
            col("last_inbound_at", Instant),
            col("last_outbound_at", Instant),
            col("awaiting_reply", Boolean),
            col("waiting_since", Instant),
            col("waiting_seconds", Integer),
            col("last_changed_at", Instant),
        ],
        order_by: "source, conversation_id",
    },
    ExportView {
        name: "v1_awaiting_reply",
        columns: &[
            col("source", Text),
            col("conversation_id", Text),
            col("provider", Text),
            col("account", Text),
            col("channel", Text),
            col("channel_kind", Text),
            col("contact_id", Text),
            col("contact_name", Text),
            col("contact_phone", Text),
            col("contact_email", Text),
            col("title", Text),
            col("assignee", Text),
            col("unread_count", Integer),
            col("waiting_since", Instant),
            col("waiting_seconds", Integer),
        ],
        order_by: "waiting_since, source, conversation_id",
    },
    ExportView {
        name: "v1_daily_volume",
        columns: &[
            col("day", Date),
            col("provider", Text),
            col("channel_kind", Text),
            col("opened", Integer),
            col("opened_first_seen", Integer),
            col("closed", Integer),
            col("deleted", Integer),
        ],
        order_by: "day, provider, channel_kind",
    },
];

/// The exportable view called `name`, or `None` (the caller lists [`EXPORT_VIEWS`]).
pub fn export_view(name: &str) -> Option<&'static ExportView> {
    EXPORT_VIEWS.iter().find(|v| v.name == name)
}

/// Streaming reads of the report views.
pub trait ViewExports: Send + Sync {
    /// The rows of `view` (only those of `source` when given; the view must have a
    /// `source` column), in batches of at most [`EXPORT_BATCH_ROWS`], read as the
    /// database streams them: memory holds one batch, whatever the view's size.
    fn export_batches<'a>(
        &'a self,
        view: &'static ExportView,
        source: Option<&'a str>,
    ) -> BoxStream<'a, Result<Vec<ExportRow>, StoreError>>;
}
