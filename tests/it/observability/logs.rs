//! What an operator reads in the logs (issue #18 items 5 and 1): each error once, nothing
//! but JSON lines on stderr under `--log-format json` (whatever the command), the source at
//! the top level of each JSON line, retries summarised, journald priorities under systemd.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use convsync_sim::{Faults, PlatformSelector};

use crate::support::reliability::{BINARY, PATIENCE, Site, SiteOptions, sim_options};

/// `convsync ARGS` with a configuration file that does not exist, at `RUST_LOG=info`.
fn without_config(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .args(["sync", "--once"])
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .env_remove("CONVSYNC_CONFIG")
        .stdin(Stdio::null());
    command
}

/// A command that fails prints its error once: it was a log line and again an `error:`
/// line.
#[test]
fn a_failing_command_prints_its_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let output = without_config(&dir).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let naming = stderr
        .lines()
        .filter(|line| line.contains("absent.toml"))
        .count();
    assert_eq!(naming, 1, "the error is printed once:\n{stderr}");
    assert!(output.stdout.is_empty(), "{stderr}");
}

/// A `sync --once --log-format json` against providers that answer every request with a
/// 500: every line on stdout and stderr is a JSON object, the per-source verdicts
/// included; retries are not one warning each, but each request that gives up is
/// summarised once, naming its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_of_a_faulty_sync_are_only_json_lines() {
    let site = Site::start(sim_options(47, 10), SiteOptions::default()).await;
    site.sim.set_faults(
        PlatformSelector::All,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    let mut command = site.command(&["--log-format", "json", "sync", "--once"]);
    command.env("RUST_LOG", "info").env_remove("JOURNAL_STREAM");
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("sync --once ends")
        .unwrap();
    assert!(!output.status.success(), "every source failed");

    let mut events = Vec::new();
    for stream in [&output.stdout, &output.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            events.push(event);
        }
    }
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().map(str::to_owned);
    let retry_warnings = events
        .iter()
        .filter(|e| message(e).as_deref() == Some("request failed, retrying"))
        .count();
    assert_eq!(retry_warnings, 0, "retries are logged at debug");

    let gave_up: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| message(e).as_deref() == Some("request gave up after retrying"))
        .collect();
    assert!(!gave_up.is_empty(), "a request that gives up is summarised");
    for event in &gave_up {
        assert_eq!(event["level"], "WARN", "{event}");
        assert_eq!(
            event["fields"]["retries"], 5,
            "max_retries of the site: {event}"
        );
        assert!(event["source"].is_string(), "names its source: {event}");
    }

    // Every line logged inside a source's task names that source at the top level, where
    // a log shipper indexes it (not only inside `spans`).
    let mut sources_seen = std::collections::BTreeSet::new();
    for event in &events {
        let in_span = event["spans"].as_array().and_then(|spans| {
            spans
                .iter()
                .find_map(|span| span["source"].as_str().map(str::to_owned))
        });
        if let Some(source) = in_span {
            assert_eq!(event["source"], source.as_str(), "{event}");
            sources_seen.insert(source);
        }
    }
    assert!(
        sources_seen.len() >= 4,
        "lines of every source: {sources_seen:?}"
    );

    let verdicts: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| message(e).as_deref() == Some("sync --once result"))
        .collect();
    assert!(verdicts.len() >= 4, "one verdict per source: {verdicts:?}");
    for verdict in verdicts {
        assert_eq!(verdict["fields"]["succeeded"], false, "{verdict}");
        assert!(verdict["fields"]["source"].is_string(), "{verdict}");
    }
}

/// Every command under `--log-format json`: each stderr line is a JSON object (the log
/// stream; errors and refusals included), while a command's result stays on stdout (text,
/// or JSON where `--json` asks for it). Failing commands say why in an ERROR line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_writes_only_json_lines_on_stderr_under_json_logs() {
    let site = Site::start(sim_options(59, 10), SiteOptions::default()).await;
    let dir = site.dir.path().to_owned();
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        "[http]\ntimeout = \"0s\"\n[health]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let backup = dir.join("backup.db");
    let man = dir.join("man");
    let (backup, man) = (backup.to_str().unwrap(), man.to_str().unwrap());
    // (arguments, whether it succeeds, what stdout holds)
    use Stdout::{Json, Nothing, Text};
    let commands: Vec<(Vec<&str>, bool, Stdout)> = vec![
        (vec!["check-config"], true, Text),
        (vec!["migrate"], true, Text),
        (vec!["sync", "--once"], true, Nothing),
        (vec!["status"], true, Text),
        (vec!["status", "--json"], true, Json),
        (vec!["sources", "list"], true, Text),
        (vec!["sources", "list", "--json"], true, Json),
        (vec!["sources", "forget", "nobody"], false, Nothing),
        (
            vec!["reset", "--source", "nobody", "--dry-run"],
            false,
            Nothing,
        ),
        (vec!["purge", "--dry-run"], true, Text),
        (vec!["backup", "--to", backup], true, Text),
        (
            vec!["health", "--url", "http://127.0.0.1:9/"],
            false,
            Nothing,
        ),
        (vec!["completions", "bash"], true, Text),
        (vec!["man", "--out", man], true, Text),
        (vec!["frobnicate"], false, Nothing),
    ];
    for (args, succeeds, out) in commands {
        let mut all = vec!["--log-format", "json"];
        all.extend(&args);
        let mut command = site.command(&all);
        command.env("RUST_LOG", "info").env_remove("JOURNAL_STREAM");
        let output = tokio::time::timeout(PATIENCE, command.output())
            .await
            .expect("the command ends")
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let context = format!("{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert_eq!(output.status.success(), succeeds, "{context}");
        let levels = json_levels(&stderr, &context);
        if !succeeds {
            assert!(levels.iter().any(|l| l == "ERROR"), "says why: {context}");
        }
        match out {
            Json => {
                serde_json::from_str::<serde_json::Value>(&stdout)
                    .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {context}"));
            }
            Nothing => assert!(stdout.is_empty(), "{context}"),
            Text => assert!(!stdout.is_empty(), "{context}"),
        }
    }

    // The configuration's mistakes, each an ERROR line naming it.
    let output = Command::new(BINARY)
        .args(["--log-format", "json", "check-config", "--config"])
        .arg(&broken)
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    json_levels(&stderr, "check-config");
    let mistakes = stderr
        .lines()
        .filter(|line| line.contains("\"configuration mistake\""))
        .count();
    assert!(mistakes >= 2, "each mistake a line: {stderr}");
    assert!(output.stdout.is_empty());
}

/// What a command's stdout holds under `--log-format json`.
enum Stdout {
    /// One JSON document.
    Json,
    /// Nothing at all.
    Nothing,
    /// Its result as text.
    Text,
}

/// The level of each line of `stderr`, each of which must be a JSON object.
fn json_levels(stderr: &str, context: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n{context}"));
            event["level"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Under systemd (`JOURNAL_STREAM` names stderr), each line starts with its syslog
/// priority, which journald turns into the entry's level: an error `<3>`, a warning
/// `<4>`. A `JOURNAL_STREAM` inherited by a process whose stderr goes elsewhere is ignored.
#[test]
fn under_systemd_lines_carry_journald_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let stderr_with = |journal_stream: &dyn Fn(&std::fs::Metadata) -> String| {
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let status = without_config(&dir)
            .env("RUST_LOG", "convsync=loud")
            .env("JOURNAL_STREAM", journal_stream(&meta))
            .stderr(file)
            .status()
            .unwrap();
        assert!(!status.success());
        std::fs::read_to_string(&path).unwrap()
    };

    let journal = stderr_with(&|meta| format!("{}:{}", meta.dev(), meta.ino()));
    let lines: Vec<&str> = journal.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("RUST_LOG")),
        "the warning has priority 4:\n{journal}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>") && l.contains("absent.toml")),
        "the error has priority 3:\n{journal}"
    );

    let elsewhere = stderr_with(&|meta| format!("{}:{}", meta.dev(), meta.ino() + 1));
    assert!(!elsewhere.contains("<3>"), "{elsewhere}");
    assert!(elsewhere.contains("absent.toml"), "{elsewhere}");
}
