//! `sync --once` on a real terminal (a tmux pane, a pseudo-terminal of a chosen width;
//! issue #18 item 1): no line wider than the terminal (long log lines included), log lines
//! above the bars rather than inside them, an ETA where the provider reports a total, the
//! final figures and verdicts intact.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use convsync_sim::Platform;

use crate::support::reliability::{BINARY, Site, SiteOptions, latency, sim_options};

/// What a pane showed.
struct Pane {
    /// The whole history, row by row, once the command has ended.
    screen: String,
    /// The same with the rows the terminal wrapped joined again (`capture-pane -J`): a
    /// line the terminal had to wrap is one row wider than the pane here.
    joined: String,
    /// Bar rows seen while the sync ran that showed an ETA.
    eta_rows: Vec<String>,
}

/// Runs `sync --once --full` in a detached tmux pane `columns` wide, watching the pane
/// while it runs.
fn sync_in_pane(dir: &Path, config: &Path, columns: u16) -> Pane {
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
    let capture = |join: bool| {
        let mut args = vec!["capture-pane", "-p", "-S", "-", "-E", "-"];
        if join {
            args.push("-J");
        }
        let out = tmux(&args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut eta_rows = Vec::new();
    let mut screen = capture(false);
    for _ in 0..1200 {
        for row in screen.lines().filter(|row| row.contains(" ETA ")) {
            if !eta_rows.iter().any(|seen| seen == row) {
                eta_rows.push(row.to_owned());
            }
        }
        if screen.contains("ended ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        screen = capture(false);
    }
    let joined = capture(true);
    tmux(&["kill-server"]);
    assert!(screen.contains("ended 0"), "the sync ended well:\n{screen}");
    Pane {
        screen,
        joined,
        eta_rows,
    }
}

/// No log line was wider than the pane: each was wrapped by convsync into rows that fit,
/// not by the terminal (a row the terminal wrapped is joined again by `-J`). Bar rows are
/// left out: tmux marks the rows indicatif pads to the full width as wrapped.
fn assert_log_lines_fit(pane: &Pane, columns: usize) {
    let mut log_rows = 0;
    for row in pane.joined.lines() {
        if row.contains(" INFO ") || row.contains(" WARN ") || row.starts_with("    ") {
            log_rows += 1;
            assert!(
                console::measure_text_width(row) <= columns,
                "a log line wider than the terminal:\n{row}\n\n{}",
                pane.joined
            );
        }
    }
    assert!(log_rows > 0, "{}", pane.joined);
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

/// An ETA row: the walk's `read/total`, then `ETA` and a duration.
fn shows_an_eta(row: &str) -> bool {
    let words: Vec<&str> = row.split_whitespace().collect();
    words.windows(3).any(|w| {
        let fraction = w[0].split_once('/').is_some_and(|(read, total)| {
            read.parse::<u64>().is_ok() && total.parse::<u64>().is_ok()
        });
        fraction && w[1] == "ETA" && w[2].ends_with(['s', 'm', 'h'])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_fits_80_and_160_columns_with_logs_above_the_bars() {
    for columns in [80, 160] {
        let mut options = sim_options(53, 100);
        // A second Sinch app in DISPATCH mode, which lists nothing: syncing it logs a long
        // warning (the provider note naming the app) while the bars are drawn.
        options.sinch_dispatch_app = true;
        let site = Site::start(options, SiteOptions::default()).await;
        let sinch = site.sim.accounts().sinch[0].clone();
        let dispatch = sinch.dispatch_app_id.clone().expect("a DISPATCH app");
        let text = std::fs::read_to_string(&site.config).unwrap();
        let app = format!("app_id = \"{}\"", sinch.app_id);
        assert!(text.contains(&app), "{text}");
        let text = text.replace(&app, &format!("app_id = \"{dispatch}\""));
        std::fs::write(&site.config, text).unwrap();
        // HighLevel pages slow enough to watch: its `total` gives an ETA on the way.
        site.sim.set_faults(Platform::HighLevel, latency(400, 400));
        let (dir, config) = (site.dir.path().to_owned(), site.config.clone());
        let pane = tokio::task::spawn_blocking(move || sync_in_pane(&dir, &config, columns))
            .await
            .unwrap();
        let screen = &pane.screen;
        let pool = site.pool().await;
        let sources: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT source FROM conversations ORDER BY source")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(sources.len() >= 4, "{sources:?}\n{screen}");
        if columns == 80 {
            println!("80-column capture:\n{screen}");
        } else {
            println!("160-column rows with an ETA:\n{}", pane.eta_rows.join("\n"));
        }
        assert_readable(screen, &sources);
        assert!(
            pane.joined.contains("DISPATCH"),
            "the long warning was printed:\n{}",
            pane.joined
        );
        assert_log_lines_fit(&pane, usize::from(columns));
        if columns == 160 {
            assert!(
                pane.eta_rows.iter().any(|row| shows_an_eta(row)),
                "an ETA while HighLevel paged:\n{}",
                pane.eta_rows.join("\n")
            );
        }
        pool.close().await;
    }
}
