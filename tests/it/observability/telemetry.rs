//! What the logs tell an operator: a line about a source names it (README: "Every line
//! carries the source's name"), so that filtering the logs by source shows all of it.

use std::collections::BTreeMap;
use std::time::Duration;

use convsync::http::AuthScheme;
use tokio_util::sync::CancellationToken;

use crate::hostile::engine::{conversations, panicky};
use crate::support::app::{Sweep, spawn_app};
use crate::support::capture::trace_capture;
use crate::support::double::{Double, spawn_double_app};
use crate::support::reliability::{Site, SiteOptions, sim_options};
use crate::support::{TestDb, quick_http, schedule, source};

/// Asserts that `logs` hold `count` warnings about runs a previous process left
/// unfinished, the last of which names the source `double` and `runs` of its runs.
fn assert_last_interrupted_warning(logs: &str, count: usize, runs: u64) {
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("previous process stopped mid-cycle"))
        .collect();
    assert_eq!(
        warnings.len(),
        count,
        "one warning per source and start:\n{logs}"
    );
    let last = warnings[count - 1];
    assert!(
        last.contains("source=double") && last.contains(&format!("runs={runs}")),
        "the warning names the source and how many of its runs: {last}"
    );
}

/// Runs left `running` by a process that died are closed as interrupted at the next
/// start, by `sync --once` and by the daemon alike, and the warning names the source
/// whose cycle was cut short and how many of its runs were.
#[tokio::test(flavor = "current_thread")]
async fn interrupted_runs_are_logged_with_their_source() {
    let (capture, _guard) = trace_capture();
    let double = Double::start().await;
    let db = TestDb::new();
    let app = spawn_double_app(&double, &db, 50, false).await;

    // A process that died mid-cycle, twice.
    app.store().begin_run("double").await.unwrap();
    app.store().begin_run("double").await.unwrap();
    app.sync_once(Sweep::IfDue).await;
    assert_last_interrupted_warning(&capture.text(), 1, 2);

    // The daemon does the same at its start.
    app.store().begin_run("double").await.unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), app.app.run_until_stopped(shutdown))
        .await
        .expect("a daemon told to stop ends")
        .unwrap();
    assert_last_interrupted_warning(&capture.text(), 2, 1);
}

/// A `RUST_LOG` that does not parse is reported on stderr, naming the variable and the
/// value, instead of being quietly replaced by `info`; a valid one is not remarked upon.
#[test]
fn an_unusable_rust_log_is_reported() {
    // A loopback port nobody listens on: `health` fails fast, after logging is set up.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let stderr_with = |rust_log: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
            .args([
                "health",
                "--live",
                "--url",
                &format!("http://127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", rust_log)
            .env("CONVSYNC_CONFIG", dir.path().join("absent.toml"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };

    let mistyped = stderr_with("convsync=loud");
    assert!(
        mistyped.contains("RUST_LOG") && mistyped.contains("convsync=loud"),
        "the mistake is named: {mistyped}"
    );
    let valid = stderr_with("convsync=debug");
    assert!(!valid.contains("RUST_LOG"), "{valid}");
}

/// `sync --once --log-format json` as a CI job runs it (stderr is not a terminal): each
/// source's progress is logged, at the latest when the run ends, as numeric fields of an
/// event naming the source, not as text in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_logs_each_sources_progress_as_json_fields() {
    let site = Site::start(sim_options(43, 30), SiteOptions::default()).await;
    let done = site.run(&["--log-format", "json", "sync", "--once"]).await;
    assert!(done.status.success(), "{}", done.tail());

    // The log lines; the verdict lines printed after them are plain text.
    let events: Vec<serde_json::Value> = done
        .stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect();
    let mut progress: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for event in &events {
        let fields = &event["fields"];
        if fields["message"] == "progress" {
            let source = fields["source"]
                .as_str()
                .expect("progress names its source");
            progress.insert(source.to_owned(), fields);
        }
    }

    let mirrored: Vec<(String, i64)> =
        sqlx::query_as("SELECT source, COUNT(*) FROM conversations GROUP BY source")
            .fetch_all(&site.pool().await)
            .await
            .unwrap();
    assert!(mirrored.len() >= 4, "every provider synced: {mirrored:?}");
    for (source, rows) in mirrored {
        let fields = progress
            .get(&source)
            .unwrap_or_else(|| panic!("no progress logged for {source}: {progress:?}"));
        assert_eq!(
            fields["inserted"].as_i64(),
            Some(rows),
            "the last progress of {source} counts every row it inserted: {fields}"
        );
        assert!(
            fields["requests"].as_u64().is_some_and(|n| n > 0),
            "{fields}"
        );
    }
}

/// Puts the panic hook that was in place before back. Not while the test fails (a hook
/// cannot be changed while panicking): the hook under test then stays, and it hands the
/// panics of threads without a log capture to the previous one anyway.
struct RestoreHook(Option<PanicHook>);

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send>;

impl Drop for RestoreHook {
    fn drop(&mut self) {
        if let Some(hook) = self.0.take()
            && !std::thread::panicking()
        {
            std::panic::set_hook(hook);
        }
    }
}

/// A panic in a source's cycle (a bug) is logged as one event of the logging pipeline, on
/// the task that panicked, so it names the source (the standard hook prints plain text
/// that names no source and breaks `--log-format json`).
#[tokio::test(flavor = "current_thread")]
async fn a_panic_is_logged_as_an_event_naming_its_source() {
    let (capture, _guard) = trace_capture();
    let _restore = RestoreHook(Some(std::panic::take_hook()));
    convsync::telemetry::install_panic_hook();

    let double = Double::start().await;
    conversations(&double, &["calm", "PANIC"]);
    let db = TestDb::new();
    let double = source("double", panicky(&double, 50), AuthScheme::None, schedule());
    let app = spawn_app(&db.config(quick_http(), vec![double])).await;
    tokio::time::timeout(Duration::from_secs(60), app.sync_all(Sweep::IfDue))
        .await
        .expect("sync --once ends");

    let logs = capture.text();
    let panics: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("panicked: this is a bug in convsync"))
        .collect();
    assert_eq!(panics.len(), 1, "{logs}");
    assert!(
        panics[0].contains("source=double") && panics[0].contains("marked page reached"),
        "the event names the source and says what panicked: {}",
        panics[0]
    );
}
