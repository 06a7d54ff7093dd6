//! `convsync export --view v1_… --format csv|jsonl|parquet --to FILE`: a report view,
//! streamed out of the mirror into a file for spreadsheets and analytics tools.
//!
//! Only the `v1_` views are exported: they are the interface that keeps its columns
//! (docs/schema.md, "Report views"), the tables are not. The store reads the view in
//! bounded batches and a blocking thread encodes them, so memory stays flat whatever the
//! view's size. A file is written beside its target under a temporary name and renamed
//! only once complete: a failed export never leaves a half file under the target's name.

mod csv;
mod jsonl;
mod output;
#[cfg(feature = "parquet")]
mod parquet;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::TryStreamExt;

use super::database::Mirror;
use crate::store::export::{EXPORT_VIEWS, ExportRow, ExportView, export_view};
use crate::telemetry;
use output::{Counted, Target};

/// The file formats `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header row; NULL is an empty field.
    Csv,
    /// One JSON object per line, keys in the view's column order; NULL is `null`.
    Jsonl,
    /// Apache Parquet (typed columns, Snappy-compressed); not to stdout.
    #[cfg(feature = "parquet")]
    Parquet,
}

/// `convsync export`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The report view to export (v1_conversations, v1_awaiting_reply, v1_daily_volume).
    #[arg(long, value_name = "VIEW")]
    pub view: String,
    /// The file format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The file to write, or `-` for stdout.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Only this source's rows (views with a `source` column).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Encodes batches of a view's rows into one format.
trait RowWriter: Send {
    /// Writes `rows`.
    fn write_batch(&mut self, rows: &[ExportRow]) -> anyhow::Result<()>;
    /// Writes what the format needs at the end and flushes.
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

/// The writer of `format` for `view`'s rows into `out`.
fn writer_for(
    format: Format,
    view: &'static ExportView,
    out: Counted<Box<dyn Write + Send>>,
) -> anyhow::Result<Box<dyn RowWriter>> {
    Ok(match format {
        Format::Csv => Box::new(csv::CsvWriter::new(view, out)?),
        Format::Jsonl => Box::new(jsonl::JsonlWriter::new(view, out)),
        #[cfg(feature = "parquet")]
        Format::Parquet => Box::new(parquet::ParquetWriter::new(view, out)?),
    })
}

/// The exportable view called `name`, or an error listing them.
fn exportable(name: &str) -> anyhow::Result<&'static ExportView> {
    export_view(name).ok_or_else(|| {
        let names: Vec<&str> = EXPORT_VIEWS.iter().map(|v| v.name).collect();
        anyhow::anyhow!(
            "{name:?} cannot be exported: only the report views can ({}); see docs/schema.md, \
             \"Report views\"",
            names.join(", ")
        )
    })
}

/// `convsync export`.
pub async fn run(config_path: &Path, args: ExportArgs) -> anyhow::Result<()> {
    let view = exportable(&args.view)?;
    if args.source.is_some() && !view.has_source() {
        anyhow::bail!(
            "{} has no source column: --source cannot filter it",
            view.name
        );
    }
    let to_stdout = args.to.as_os_str() == "-";
    #[cfg(feature = "parquet")]
    if to_stdout && args.format == Format::Parquet {
        anyhow::bail!("Parquet is written to a file only: pass --to FILE");
    }
    let target = if to_stdout {
        Target::Stdout
    } else {
        Target::file(&args.to, args.force)?
    };
    let mirror = Mirror::open(config_path).await?;
    let result = export(&mirror, view, &args, target).await;
    mirror.store.close().await;
    let (rows, bytes) = result?;
    let summary = format!(
        "exported {rows} rows of {} ({bytes} bytes, {}) to {}",
        view.name,
        format!("{:?}", args.format).to_lowercase(),
        if to_stdout {
            "stdout".to_owned()
        } else {
            args.to.display().to_string()
        }
    );
    if to_stdout || telemetry::json_logs() {
        tracing::info!(view = view.name, rows, bytes, "{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

/// Streams `view` into `target`; answers the rows and bytes written.
async fn export(
    mirror: &Mirror,
    view: &'static ExportView,
    args: &ExportArgs,
    target: Target,
) -> anyhow::Result<(u64, u64)> {
    if let Some(source) = &args.source {
        let configured = mirror.sources.iter().any(|s| &s.name == source);
        if !configured
            && !mirror
                .store
                .source_summaries()
                .await?
                .iter()
                .any(|s| &s.source == source)
        {
            anyhow::bail!(
                "no source {source:?}: it is neither configured nor in the mirror (`convsync sources list`)"
            );
        }
    }
    let (out, bytes) = Counted::new(target.writer()?);
    let mut writer = writer_for(args.format, view, out)?;
    // Two batches in flight: the database reads the next while the thread encodes one.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<ExportRow>>(2);
    let encoder = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        while let Some(batch) = receiver.blocking_recv() {
            writer.write_batch(&batch)?;
        }
        writer.finish()
    });
    let mut rows: u64 = 0;
    let mut batches = mirror.store.export_batches(view, args.source.as_deref());
    let read = async {
        while let Some(batch) = batches.try_next().await? {
            rows = rows.saturating_add(batch.len() as u64);
            if sender.send(batch).await.is_err() {
                // The encoder stopped on an error, which its join reports.
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    drop(sender);
    drop(batches);
    let encoded = encoder.await.context("the export's encoder panicked")?;
    // The encoder's error first: a read that stopped because it failed is no cause.
    encoded.with_context(|| format!("writing {}", target.describe()))?;
    read.with_context(|| format!("reading {}", view.name))?;
    target.complete()?;
    Ok((rows, bytes.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_report_views_are_exportable() {
        assert!(exportable("v1_conversations").is_ok());
        let refused = exportable("conversations").unwrap_err().to_string();
        assert!(
            refused.contains("v1_conversations, v1_awaiting_reply, v1_daily_volume"),
            "{refused}"
        );
    }
}
