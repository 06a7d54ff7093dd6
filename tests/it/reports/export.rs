//! `convsync export` (docs/schema.md, "Exporting a report view"): each format carries the
//! view's values, the same on both backends, from a mirror the real binary synced from
//! the simulator with default settings; NULL stays NULL; only `v1_` views are exported;
//! a failed export leaves no file behind; an existing file is kept without --force.

use std::path::Path;

use convsync::store::export::{ColumnType, EXPORT_VIEWS, ExportView, export_view};
use serde_json::Value;

use super::{JsonRow, json_rows};
use crate::support::reliability::{Site, SiteOptions, sim_options};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

on_both_stores!(multi_thread: every_format_carries_the_views_values, refusals_and_failures_leave_no_file);

/// The view's rows as the database answers them, in the export's order, with each value
/// spelt as the export spells it: flags true/false, instants RFC 3339 UTC with
/// microseconds (`…Z`).
async fn view_rows(
    db: &(impl super::AsMirrorDb + ?Sized),
    view: &ExportView,
    order: &str,
) -> Vec<Vec<Value>> {
    let rows: Vec<JsonRow> =
        json_rows(db, &format!("SELECT * FROM {} ORDER BY {order}", view.name)).await;
    rows.into_iter()
        .map(|row| {
            view.columns
                .iter()
                .map(|column| {
                    let value = row.get(column.name).cloned().unwrap_or(Value::Null);
                    match (column.kind, value) {
                        (_, Value::Null) => Value::Null,
                        (ColumnType::Boolean, Value::Number(n)) => {
                            Value::Bool(n.as_i64() == Some(1))
                        }
                        (ColumnType::Timestamp, Value::String(text)) => {
                            let at = chrono::DateTime::parse_from_rfc3339(&text)
                                .unwrap_or_else(|e| panic!("{}: {text}: {e}", column.name));
                            Value::from(
                                at.with_timezone(&chrono::Utc)
                                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                            )
                        }
                        (_, value) => value,
                    }
                })
                .collect()
        })
        .collect()
}

/// A CSV export read back with the csv crate: the header, then each field as the JSON
/// value of its column's type (an empty field is NULL).
fn csv_rows(path: &Path, view: &ExportView) -> Vec<Vec<Value>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let names: Vec<&str> = view.columns.iter().map(|c| c.name).collect();
    assert_eq!(header, names, "the header is the view's columns");
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            view.columns
                .iter()
                .zip(record.iter())
                .map(|(column, field)| match (column.kind, field) {
                    (_, "") => Value::Null,
                    (ColumnType::Integer, n) => Value::from(n.parse::<i64>().unwrap()),
                    (ColumnType::Float, x) => Value::from(x.parse::<f64>().unwrap()),
                    (ColumnType::Boolean, b) => Value::Bool(b.parse::<bool>().unwrap()),
                    (_, text) => Value::from(text),
                })
                .collect()
        })
        .collect()
}

/// A JSON Lines export read back: each line one object whose keys are the view's columns
/// in order.
fn jsonl_rows(text: &str, view: &ExportView) -> Vec<Vec<Value>> {
    let names: Vec<&str> = view.columns.iter().map(|c| c.name).collect();
    text.lines()
        .map(|line| {
            let object: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
            let keys_in_order: Vec<usize> = names
                .iter()
                .map(|name| {
                    line.find(&format!("\"{name}\":"))
                        .expect("every column is a key")
                })
                .collect();
            assert!(
                keys_in_order.is_sorted(),
                "keys in the view's order: {line}"
            );
            assert_eq!(object.len(), names.len(), "{line}");
            names.iter().map(|name| object[*name].clone()).collect()
        })
        .collect()
}

/// Fails naming the first row and column where `found` differs from `expected`
/// (`waiting_seconds` may have grown meanwhile).
fn assert_same_rows(found: &[Vec<Value>], expected: &[Vec<Value>], view: &ExportView, what: &str) {
    for (i, (found, expected)) in found.iter().zip(expected).enumerate() {
        for ((column, found), expected) in view.columns.iter().zip(found).zip(expected) {
            if let ("waiting_seconds", Some(found), Some(expected)) =
                (column.name, found.as_i64(), expected.as_i64())
            {
                // Counted up to the database's clock: the export ran a little later.
                assert!(
                    (expected..=expected + 600).contains(&found),
                    "{what}: row {i}: waiting_seconds {found}, read before as {expected}"
                );
                continue;
            }
            assert_eq!(found, expected, "{what}: row {i}, column {}", column.name);
        }
    }
    assert_eq!(found.len(), expected.len(), "{what}: rows");
}

/// A Parquet export read back with the parquet crate's reader: its schema's columns and
/// types, then each value as the JSON value the other formats spell.
#[cfg(feature = "parquet")]
fn parquet_rows(path: &Path, view: &ExportView) -> Vec<Vec<Value>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Date32Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::{DataType, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let expected: Vec<&str> = view.columns.iter().map(|c| c.name).collect();
        assert_eq!(names, expected);
        let mut batch_rows = vec![Vec::new(); batch.num_rows()];
        for (column, array) in view.columns.iter().zip(batch.columns()) {
            let expected_type = match column.kind {
                ColumnType::Text => DataType::Utf8,
                ColumnType::Integer => DataType::Int64,
                ColumnType::Float => DataType::Float64,
                ColumnType::Boolean => DataType::Boolean,
                ColumnType::Timestamp => {
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                }
                ColumnType::Date => DataType::Date32,
            };
            assert_eq!(array.data_type(), &expected_type, "{}", column.name);
            for (i, row) in batch_rows.iter_mut().enumerate() {
                let value = if array.is_null(i) {
                    Value::Null
                } else {
                    match column.kind {
                        ColumnType::Text => Value::from(array.as_string::<i32>().value(i)),
                        ColumnType::Integer => {
                            Value::from(array.as_primitive::<Int64Type>().value(i))
                        }
                        ColumnType::Float => Value::from(
                            array
                                .as_primitive::<arrow_array::types::Float64Type>()
                                .value(i),
                        ),
                        ColumnType::Boolean => Value::from(array.as_boolean().value(i)),
                        ColumnType::Timestamp => {
                            let micros = array.as_primitive::<TimestampMicrosecondType>().value(i);
                            Value::from(
                                chrono::DateTime::from_timestamp_micros(micros)
                                    .unwrap()
                                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                            )
                        }
                        ColumnType::Date => {
                            let days = array.as_primitive::<Date32Type>().value(i);
                            let day = chrono::NaiveDate::default()
                                + chrono::Duration::days(i64::from(days));
                            Value::from(day.to_string())
                        }
                    }
                };
                row.push(value);
            }
        }
        rows.extend(batch_rows);
    }
    rows
}

fn order_of(view: &ExportView) -> &'static str {
    match view.name {
        "v1_conversations" => "source, conversation_id",
        "v1_awaiting_reply" => "waiting_since, source, conversation_id",
        _ => "day, provider, channel_kind",
    }
}

/// CSV, JSONL (file and stdout) and Parquet exports of every `v1_` view equal the view, NULLs
/// included, and `--source` keeps only that source's rows.
async fn every_format_carries_the_views_values(backend: Backend) {
    let site = Site::start_on(backend, sim_options(23, 30), SiteOptions::default()).await;
    site.sync_full().await;
    let mirror = site.mirror().await;
    let dir = site.dir.path();

    for view in EXPORT_VIEWS {
        let expected = view_rows(&mirror, view, order_of(view)).await;
        assert!(!expected.is_empty(), "{} has rows", view.name);

        let csv_file = dir.join(format!("{}.csv", view.name));
        let done = site
            .run(&[
                "export",
                "--view",
                view.name,
                "--format",
                "csv",
                "--to",
                csv_file.to_str().unwrap(),
            ])
            .await;
        assert!(done.status.success(), "{}", done.tail());
        assert!(
            done.stdout.contains(&format!(
                "exported {} rows of {}",
                expected.len(),
                view.name
            )),
            "{}",
            done.stdout
        );
        assert_same_rows(&csv_rows(&csv_file, view), &expected, view, "CSV");

        let jsonl_file = dir.join(format!("{}.jsonl", view.name));
        let done = site
            .run(&[
                "export",
                "--view",
                view.name,
                "--format",
                "jsonl",
                "--to",
                jsonl_file.to_str().unwrap(),
            ])
            .await;
        assert!(done.status.success(), "{}", done.tail());
        let jsonl = std::fs::read_to_string(&jsonl_file).unwrap();
        assert_same_rows(&jsonl_rows(&jsonl, view), &expected, view, "JSONL");

        #[cfg(feature = "parquet")]
        {
            let parquet_file = dir.join(format!("{}.parquet", view.name));
            let done = site
                .run(&[
                    "export",
                    "--view",
                    view.name,
                    "--format",
                    "parquet",
                    "--to",
                    parquet_file.to_str().unwrap(),
                ])
                .await;
            assert!(done.status.success(), "{}", done.tail());
            assert_same_rows(
                &parquet_rows(&parquet_file, view),
                &expected,
                view,
                "Parquet",
            );
        }

        let to_stdout = site
            .run(&[
                "export", "--view", view.name, "--format", "jsonl", "--to", "-",
            ])
            .await;
        assert!(to_stdout.status.success(), "{}", to_stdout.tail());
        // The same lines, and only them (jsonl_rows fails on any other line).
        assert_same_rows(
            &jsonl_rows(&to_stdout.stdout, view),
            &expected,
            view,
            "JSONL on stdout",
        );
    }

    // The simulated world leaves some values unknown: they are NULL in the export, not 0
    // or an empty text.
    let conversations = export_view("v1_conversations").unwrap();
    let rows = view_rows(&mirror, conversations, order_of(conversations)).await;
    let unread = conversations
        .columns
        .iter()
        .position(|c| c.name == "unread_count")
        .unwrap();
    assert!(
        rows.iter().any(|row| row[unread].is_null()),
        "some providers report no unread count"
    );
    let jsonl = site
        .run(&[
            "export",
            "--view",
            "v1_conversations",
            "--format",
            "jsonl",
            "--to",
            "-",
        ])
        .await;
    assert!(
        jsonl.stdout.contains("\"unread_count\":null"),
        "NULL is null in JSONL"
    );

    // --source keeps that source's rows only.
    let source: String = mirror
        .sql_value("SELECT min(source) FROM conversations")
        .await;
    let of_source: i64 = mirror
        .sql_value(&format!(
            "SELECT count(*) FROM v1_conversations WHERE source = '{source}'"
        ))
        .await;
    let filtered = site
        .run(&[
            "export",
            "--view",
            "v1_conversations",
            "--format",
            "csv",
            "--to",
            "-",
            "--source",
            &source,
        ])
        .await;
    assert!(filtered.status.success(), "{}", filtered.tail());
    let mut reader = csv::Reader::from_reader(filtered.stdout.as_bytes());
    let sources: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_owned()).collect();
    assert_eq!(sources.len() as i64, of_source);
    assert!(sources.iter().all(|s| *s == source), "only {source}'s rows");
    mirror.close().await;
}

/// Files in `dir` besides the site's own.
fn exports_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("out") || name.contains(".partial"))
        .collect();
    names.sort();
    names
}

/// A table or an unknown name is refused with the list of exportable views; an existing
/// file is kept unless --force; an export that fails part-way leaves neither the target
/// nor its temporary file.
async fn refusals_and_failures_leave_no_file(backend: Backend) {
    let site = Site::start_on(backend, sim_options(5, 10), SiteOptions::default()).await;
    site.sync_full().await;
    let dir = site.dir.path();
    let out = dir.join("out.csv");
    let out_arg = out.to_str().unwrap();

    let refused = site
        .run(&[
            "export",
            "--view",
            "conversations",
            "--format",
            "csv",
            "--to",
            out_arg,
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains(
            "only the report views can (v1_conversations, v1_awaiting_reply, v1_daily_volume)"
        ),
        "{}",
        refused.tail()
    );
    assert!(exports_in(dir).is_empty(), "{:?}", exports_in(dir));

    let no_source = site
        .run(&[
            "export",
            "--view",
            "v1_daily_volume",
            "--format",
            "csv",
            "--to",
            out_arg,
            "--source",
            "x",
        ])
        .await;
    assert!(
        no_source.stderr.contains("has no source column"),
        "{}",
        no_source.tail()
    );

    std::fs::write(&out, "keep me").unwrap();
    let kept = site
        .run(&[
            "export",
            "--view",
            "v1_conversations",
            "--format",
            "csv",
            "--to",
            out_arg,
        ])
        .await;
    assert!(!kept.status.success());
    assert!(
        kept.stderr.contains("pass --force to replace it"),
        "{}",
        kept.tail()
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let forced = site
        .run(&[
            "export",
            "--view",
            "v1_conversations",
            "--format",
            "csv",
            "--to",
            out_arg,
            "--force",
        ])
        .await;
    assert!(forced.status.success(), "{}", forced.tail());
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .starts_with("source,conversation_id,")
    );
    std::fs::remove_file(&out).unwrap();

    // A view that lost its columns fails the export after the header was written to the
    // temporary file: neither it nor the target remains.
    let mirror = site.mirror().await;
    mirror.sql_execute("DROP VIEW v1_awaiting_reply").await;
    mirror
        .sql_execute(
            "CREATE VIEW v1_awaiting_reply AS SELECT source, conversation_id FROM conversations",
        )
        .await;
    mirror.close().await;
    let failed = site
        .run(&[
            "export",
            "--view",
            "v1_awaiting_reply",
            "--format",
            "csv",
            "--to",
            out_arg,
        ])
        .await;
    assert!(!failed.status.success());
    assert!(
        failed.stderr.contains("reading v1_awaiting_reply"),
        "{}",
        failed.tail()
    );
    assert!(
        exports_in(dir).is_empty(),
        "no half file: {:?}",
        exports_in(dir)
    );
}

/// The zero-export path docs/schema.md shows (DuckDB attaching the SQLite file) needs the
/// file readable by another program while the daemon runs: the `sqlite3` CLI opens it
/// read-only and reads the views, and an export runs beside the daemon too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_reads_read_only_beside_the_daemon() {
    let site = Site::start(sim_options(7, 10), SiteOptions::default()).await;
    site.sync_full().await;
    let mut daemon = site.spawn_daemon();
    let db = site.db_path();
    let read = tokio::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(&db)
        .arg("SELECT count(*) FROM v1_conversations; SELECT count(*) FROM v1_daily_volume;")
        .output()
        .await
        .expect("the sqlite3 CLI is installed (.ci/install-packages)");
    let text = String::from_utf8_lossy(&read.stdout).into_owned();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let counts: Vec<i64> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(counts.len() == 2 && counts.iter().all(|n| *n > 0), "{text}");
    let export = site
        .run(&[
            "export",
            "--view",
            "v1_conversations",
            "--format",
            "csv",
            "--to",
            "-",
        ])
        .await;
    assert!(export.status.success(), "{}", export.tail());
    assert!(daemon.is_running(), "{}", daemon.output());
    daemon.sigterm().await;
}
