//! `sync --once` on a real terminal (a tmux pane, a pseudo-terminal of a chosen width;
//! issue #18 item 1): no line wider than the terminal, log lines above the bars rather
//! than inside them, the final figures and verdicts intact.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::reliability_support::{BINARY, Site, SiteOptions, sim_options};

/// Runs `sync --once --full` in a detached tmux pane `columns` wide and returns the pane's
/// whole history, row by row, once the command has ended. (Not `capture-pane -J`: tmux
/// marks the rows indicatif pads to the full width as wrapped and would join them.)
fn sync_in_pane(dir: &Path, config: &Path, columns: u16) -> String {
    let socket = dir.join(format!("tmux-{columns}"));
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux runs (.ci/install-packages installs it)")
    };
    let script = format!(
        "RUST_LOG=info {BINARY} --config '{}' sync --once --full; echo \"ended $?\"; sleep 600",
        config.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        &columns.to_string(),
        "-y",
        "50",
        &script,
    ]);
    assert!(started.status.success(), "{started:?}");
    let capture = || {
        let out = tmux(&["capture-pane", "-p", "-S", "-", "-E", "-"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut screen = capture();
    for _ in 0..1200 {
        if screen.contains("ended ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        screen = capture();
    }
    tmux(&["kill-server"]);
    assert!(screen.contains("ended 0"), "the sync ended well:\n{screen}");
    screen
}

/// Every bar row shows a source's whole line (its name up to the request count: a line
/// wider than the pane would wrap and leave the count on the next row), a log line
/// starts a row of its own, and each source's final figures and verdict are there.
fn assert_readable(screen: &str, sources: &[String]) {
    let is_bar = |row: &str, source: &str| {
        let shown: String = source.chars().take(20).collect();
        row.trim_start().starts_with(&shown) && row.contains(" new ")
    };
    for row in screen.lines() {
        // A log line starts with its timestamp; one printed into a bar would follow the
        // bar's text on the same row.
        if let Some(at) = row.find(" INFO ").or_else(|| row.find(" WARN ")) {
            let before = row[..at].trim_end();
            assert!(
                before.starts_with("20") && !before.contains(' '),
                "a log line inside another line:\n{row}\n\n{screen}"
            );
        }
        if sources.iter().any(|s| is_bar(row, s)) {
            assert!(
                row.contains(" req"),
                "a bar wider than the terminal:\n{row:?}\n\n{screen}"
            );
        }
    }
    for source in sources {
        assert!(
            screen.lines().any(|row| is_bar(row, source)),
            "the final figures of {source}:\n{screen}"
        );
        let verdict = screen
            .lines()
            .any(|row| row.starts_with(source.as_str()) && row.contains("caught up"));
        assert!(verdict, "the verdict of {source}:\n{screen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_fits_80_and_160_columns_with_logs_above_the_bars() {
    for columns in [80, 160] {
        let site = Site::start(sim_options(53, 40), SiteOptions::default()).await;
        let (dir, config) = (site.dir.path().to_owned(), site.config.clone());
        let screen = tokio::task::spawn_blocking(move || sync_in_pane(&dir, &config, columns))
            .await
            .unwrap();
        let pool = site.pool().await;
        let sources: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT source FROM conversations ORDER BY source")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(sources.len() >= 4, "{sources:?}\n{screen}");
        if columns == 80 {
            println!("80-column capture:\n{screen}");
        }
        assert_readable(&screen, &sources);
        pool.close().await;
    }
}
