//! `convsync demo`: the newcomer's first command works end to end.

use std::process::Command;

/// `convsync demo --duration 10s` runs the simulator and the daemon together, exits 0,
/// leaves a non-empty mirror for every provider, and prints the summary and the report.
#[test]
fn demo_leaves_a_non_empty_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_convsync"))
        .args(["demo", "--duration", "10s", "--dir"])
        .arg(&demo_dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run convsync demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("Sample report"), "{stdout}");
    // The printed query reads the versioned view reports are meant to use.
    assert!(stdout.contains("FROM v1_awaiting_reply"), "{stdout}");
    // The config points at this run's random ports: the demo must not promise more.
    assert!(
        stdout.contains("works only while this demo runs"),
        "{stdout}"
    );
    // D365's listing does not say who wrote last: its "awaiting" is unknown, not 0.
    let d365_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("d365-0"))
        .unwrap_or_else(|| panic!("no d365 line in the summary: {stdout}"));
    let columns: Vec<&str> = d365_line.split_whitespace().collect();
    assert_eq!(columns[4], "–", "awaiting of d365: {d365_line}");

    let db = demo_dir.join("mirror.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let counts: Vec<(String, i64)> = runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let rows = sqlx::query_as(
            "SELECT provider, COUNT(*) FROM conversations GROUP BY provider ORDER BY provider",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    });
    let providers: Vec<&str> = counts.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        providers,
        ["d365", "highlevel", "sinch", "spruce"],
        "{counts:?}"
    );
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
    // The generated config keeps secrets in owner-only files, never inline.
    let config = std::fs::read_to_string(demo_dir.join("convsync.toml")).unwrap();
    assert!(config.contains("{ file = "), "{config}");
}
