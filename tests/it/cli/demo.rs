//! `convsync demo`: the newcomer's first command works end to end.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Runs `convsync demo --dir DIR ARGS…` (warnings only on stderr) and checks it exits 0;
/// returns its stdout.
fn run_demo(demo_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_convsync"))
        .arg("demo")
        .args(args)
        .arg("--dir")
        .arg(demo_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run convsync demo");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// Rows of a table of the demo's output: the lines after the header that starts with
/// `header`'s first column, up to the first blank line, split on whitespace.
fn table_rows<'s>(stdout: &'s str, title: &str, header: &str) -> Vec<Vec<&'s str>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with(title))
        .skip_while(|l| !l.trim_start().starts_with(header))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// The "awaiting" cell of the `d365-0` line of the demo's summary.
fn d365_awaiting(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("d365-0"))
        .unwrap_or_else(|| panic!("no d365 line in the summary: {stdout}"));
    line.split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .to_owned()
}

/// Runs `sql` (a `key, count` query) on the demo's mirror.
fn counts_by_key(db: &Path, sql: &'static str) -> BTreeMap<String, i64> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.into_iter().collect()
    })
}

/// `convsync demo --duration 10s` runs the simulator and the daemon together, exits 0,
/// leaves a non-empty mirror for every provider, and prints the summary, the webhook
/// table and the report.
#[test]
fn demo_leaves_a_non_empty_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let stdout = run_demo(&demo_dir, &["--duration", "10s"]);
    assert!(stdout.contains("Sample report"), "{stdout}");
    assert!(stdout.contains("Webhooks beside polling"), "{stdout}");
    // The printed query reads the versioned view reports are meant to use.
    assert!(stdout.contains("FROM v1_awaiting_reply"), "{stdout}");
    // The config points at this run's random ports: the demo must not promise more.
    assert!(
        stdout.contains("works only while this demo runs"),
        "{stdout}"
    );
    // D365's listing does not say who wrote last: its message follow-ups (on with webhooks,
    // `messages = true`) and its events (an agent's message answers the conversation) do,
    // so "awaiting" counts the rows they told about.
    let db = demo_dir.join("mirror.db");
    let known = counts_by_key(
        &db,
        "SELECT provider, SUM(awaiting_reply = 1) FROM conversations \
         WHERE provider = 'd365' AND awaiting_reply IS NOT NULL GROUP BY provider",
    );
    let expected = known
        .get("d365")
        .map_or_else(|| "–".to_owned(), |n| n.to_string());
    assert_eq!(d365_awaiting(&stdout), expected, "{stdout}");

    let counts = counts_by_key(
        &db,
        "SELECT provider, COUNT(*) FROM conversations GROUP BY provider",
    );
    let providers: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(
        providers,
        ["d365", "highlevel", "sinch", "spruce"],
        "{counts:?}"
    );
    assert!(counts.values().all(|n| *n > 0), "{counts:?}");
    // The generated config keeps secrets in owner-only files, never inline.
    let config = std::fs::read_to_string(demo_dir.join("convsync.toml")).unwrap();
    assert!(config.contains("{ file = "), "{config}");
}

/// With webhooks on (the default), the demo ends with the webhook table: every provider's
/// events accepted, a share of changes first seen by an event, no signature refusal
/// without a forge fault, and the table's counts equal to the deliveries the receiver
/// recorded in the mirror.
#[test]
fn demo_shows_webhook_freshness_beside_polling() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    // Ten changes a second, so that even D365 (events for outbound messages and closes
    // only) sends some within the run.
    let stdout = run_demo(&demo_dir, &["--duration", "10s", "--activity-rate", "10"]);
    assert!(stdout.contains("/webhooks/NAME"), "{stdout}");
    let rows = table_rows(&stdout, "Webhooks beside polling", "source");
    assert!(!rows.is_empty(), "no webhook table: {stdout}");
    // Columns: source, provider, accepted, refused (with reasons), latencies (with
    // units), …, first seen by event, by poll, event share.
    let mut accepted_by_provider: BTreeMap<&str, u64> = BTreeMap::new();
    let mut accepted_by_source = BTreeMap::new();
    let mut first_by_event = BTreeMap::new();
    for row in &rows {
        let accepted: u64 = row[2].parse().unwrap_or_else(|_| panic!("{row:?}"));
        *accepted_by_provider.entry(row[1]).or_default() += accepted;
        accepted_by_source.insert(row[0].to_owned(), accepted as i64);
        let by_event: i64 = row[row.len() - 3].parse().unwrap();
        first_by_event.insert(row[0].to_owned(), by_event);
        let text = row.join(" ");
        assert!(
            !text.contains("bad_signature") && !text.contains("missing_signature"),
            "signature refusals without a forge fault: {text}"
        );
    }
    assert_eq!(
        accepted_by_provider.keys().copied().collect::<Vec<_>>(),
        ["d365", "highlevel", "sinch", "spruce"],
        "{stdout}"
    );
    assert!(
        accepted_by_provider.values().all(|n| *n > 0),
        "a provider without accepted events: {accepted_by_provider:?}\n{stdout}"
    );
    assert!(
        first_by_event.values().sum::<i64>() > 0,
        "no change first seen by an event: {stdout}"
    );
    assert!(
        rows.iter()
            .any(|r| r[r.len() - 1] != "0%" && r[r.len() - 1] != "–"),
        "no event share above 0: {stdout}"
    );

    // The table reads the receiver's metrics; the mirror's delivery records must agree:
    // one row per accepted event, `applied` where the event changed the mirror first.
    let db = demo_dir.join("mirror.db");
    let recorded = counts_by_key(
        &db,
        "SELECT source, COUNT(*) FROM webhook_deliveries GROUP BY source",
    );
    let applied = counts_by_key(
        &db,
        "SELECT source, COUNT(*) FROM webhook_deliveries WHERE outcome = 'applied' GROUP BY source",
    );
    for (source, accepted) in &accepted_by_source {
        assert_eq!(
            recorded.get(source).copied().unwrap_or(0),
            *accepted,
            "{source}: {stdout}"
        );
        assert_eq!(
            applied.get(source).copied().unwrap_or(0),
            first_by_event[source],
            "{source}: {stdout}"
        );
    }
    // The generated config has the receiver and every provider's webhook key.
    let config = std::fs::read_to_string(demo_dir.join("convsync.toml")).unwrap();
    for key in [
        "[webhooks]",
        "webhook_secret",
        "webhook_token",
        "webhook_public_key",
    ] {
        assert!(config.contains(key), "{key}: {config}");
    }
}

/// `--no-webhooks`: polling alone, no receiver in the config and no webhook table.
#[test]
fn demo_without_webhooks_polls_alone() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let stdout = run_demo(&demo_dir, &["--duration", "3s", "--no-webhooks"]);
    assert!(stdout.contains("Sample report"), "{stdout}");
    assert!(!stdout.contains("Webhooks beside polling"), "{stdout}");
    assert!(!stdout.contains("/webhooks/"), "{stdout}");
    // Polling alone: D365's listing does not say who wrote last, so its "awaiting" is
    // unknown, not 0.
    assert_eq!(d365_awaiting(&stdout), "–", "{stdout}");
    let config = std::fs::read_to_string(demo_dir.join("convsync.toml")).unwrap();
    assert!(!config.contains("[webhooks]"), "{config}");
    assert!(!config.contains("webhook_"), "{config}");
}
