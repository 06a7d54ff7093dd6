//! Webhooks through the real binaries, set up as docs/webhooks.md ("Trying it with the
//! simulator") tells a user: `convsync simulate --webhook-base` as a child process, its
//! printed configuration and `export` lines given to `convsync run` as another. The
//! simulator sends its signed events with faults; the daemon is stopped with SIGTERM,
//! events are generated while it is down, it is started again, and `convsync sync --once
//! --full` is the reconciliation poll. The test sees what a user sees: the mirror through
//! a pool of its own, the daemon's `/metrics` on its health port, and the simulator's
//! counters and truth over its control API.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use convsync_sim::{
    ActivityCommand, Platform, PlatformSelector, SimClient, WebhookCounts, WebhookFaults,
    WebhookOutcome,
};
use convsync_testpg::TestPgDb;
use tokio::io::AsyncBufReadExt as _;

use super::end_to_end::{
    ENTRIES, RETRYING, all_settled, assert_no_forgery_recorded, assert_refusals,
    assert_retried_events_taken, deliveries, entry_sum, median_event_to_commit, of_entry,
    truth_sources,
};
use crate::support::deploy::{Scrape, documented_steps_in};
use crate::support::mirror::MirrorPool;
use crate::support::reliability::{
    BINARY, Daemon, PATIENCE, free_loopback_address, pool, postgres_mirror, wait_caught_up,
};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::Truth;

/// The document and section whose commands the test runs.
const DOC: &str = "docs/webhooks.md";
const SECTION: &str = "webhooks-simulator";
/// The receiver's address in the documented command; the test uses a free port instead.
const DOC_WEBHOOK_ADDRESS: &str = "127.0.0.1:9478";

/// The test's additions to the documented `simulate` command: a small world of one account
/// per provider that changes only when the test says, the providers' retries a tenth as far
/// apart (Spruce 12 s, D365 1 s, Sinch from 100 ms doubling: a restart of the daemon fits
/// in every provider's retry horizon), and every fault but oversized bodies (an oversized
/// Spruce event is retried for two minutes at this scale; `end_to_end` covers it).
const TEST_OPTIONS: &[&str] = &[
    "--seed",
    "2404",
    "--conversations",
    "8",
    "--activity-rate",
    "0",
    "--d365-accounts",
    "1",
    "--spruce-accounts",
    "1",
    "--sinch-accounts",
    "1",
    "--highlevel-locations",
    "1",
    "--webhook-retry-scale",
    "0.1",
    "--webhook-drop-ratio",
    "0.1",
    "--webhook-duplicate-ratio",
    "0.2",
    "--webhook-delay-ratio",
    "0.2",
    "--webhook-delay",
    "150ms",
    "--webhook-reorder-ratio",
    "0.2",
    "--webhook-forge-ratio",
    "0.2",
    "--webhook-replay-ratio",
    "0.2",
];

/// `convsync simulate` running as a child, with what its banner printed.
struct SimulateProcess {
    child: tokio::process::Child,
    client: SimClient,
    /// The configuration snippet: `[webhooks]` and the sources.
    snippet: String,
    /// (name, value) of every `export` line.
    environment: Vec<(String, String)>,
}

impl SimulateProcess {
    /// Runs the documented `command` with the receiver at `webhook_address` and the test's
    /// options, in `dir` (where the HighLevel public key file goes), and reads its banner.
    async fn start(command: &str, webhook_address: &str, dir: &Path) -> SimulateProcess {
        let command = command.replace(DOC_WEBHOOK_ADDRESS, webhook_address);
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("convsync"), "{command}");
        let log = std::fs::File::create(dir.join("simulate.log")).unwrap();
        let mut child = tokio::process::Command::new(BINARY)
            .args(words)
            .args(TEST_OPTIONS)
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("convsync simulate starts");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let read = async {
            // The banner ends with the `export` lines and a blank line.
            while let Some(line) = lines.next_line().await.unwrap() {
                let done =
                    line.is_empty() && banner.iter().any(|l: &String| l.starts_with("export "));
                banner.push(line);
                if done {
                    return;
                }
            }
            panic!(
                "convsync simulate ended its banner early:\n{}",
                banner.join("\n")
            );
        };
        tokio::time::timeout(PATIENCE, read)
            .await
            .expect("convsync simulate prints its banner");
        // Nothing else is expected on stdout; whatever comes is read, so that it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let banner = Banner::parse(&banner);
        let client = SimClient::new(banner.control.parse().unwrap());
        client.wait_ready(PATIENCE).await.unwrap();
        SimulateProcess {
            child,
            client,
            snippet: banner.snippet,
            environment: banner.environment,
        }
    }

    /// `changes` changes of the simulated world, a few milliseconds apart (two messages
    /// of one conversation in the same millisecond are a tie no provider time orders).
    async fn activity(&self, changes: u64) {
        for _ in 0..changes {
            self.client
                .activity(&ActivityCommand::Apply { count: 1 })
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    async fn counts(&self) -> WebhookCounts {
        self.client.webhook_counts().await.unwrap()
    }

    /// Waits until every event generated has been sent, with its copies, and no retry
    /// is pending; returns the counters then.
    async fn settled(&self) -> WebhookCounts {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let counts = self.counts().await;
            if all_settled(&counts) {
                return counts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "webhook deliveries never settled: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// What `convsync simulate` printed that the test uses.
struct Banner {
    control: String,
    snippet: String,
    environment: Vec<(String, String)>,
}

impl Banner {
    fn parse(lines: &[String]) -> Banner {
        let text = lines.join("\n");
        let control = lines
            .iter()
            .find_map(|l| l.trim_start().strip_prefix("control"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no control URL in the banner:\n{text}"))
            .to_owned();
        let (_, after) = text
            .split_once("# --- configuration snippet")
            .unwrap_or_else(|| panic!("no configuration snippet in the banner:\n{text}"));
        let (snippet, exports) = after
            .split_once("# --- environment ---")
            .unwrap_or_else(|| panic!("no environment in the banner:\n{text}"));
        let snippet = snippet
            .split_once('\n')
            .map_or("", |(_, rest)| rest)
            .to_owned();
        let environment = exports
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .map(|assignment| {
                let (name, value) = assignment.split_once('=').unwrap();
                (name.to_owned(), value.trim_matches('\'').to_owned())
            })
            .collect();
        Banner {
            control,
            snippet,
            environment,
        }
    }
}

/// Where the daemon's configuration and mirror live, and how to start it as documented.
struct DaemonSite {
    dir: PathBuf,
    /// The documented `run` command.
    run: String,
    health: String,
    environment: Vec<(String, String)>,
    postgres: Option<TestPgDb>,
    runs: u32,
}

impl DaemonSite {
    /// `convsync.toml` in `dir`: a `[database]` section on `backend`, then the snippet.
    async fn write(backend: Backend, dir: &Path, run: &str, sim: &SimulateProcess) -> DaemonSite {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestPgDb::new().await),
        };
        // The documented URL, relative to the daemon's working directory.
        let url = postgres
            .as_ref()
            .map_or("sqlite://convsync.db".to_owned(), |db| db.url.clone());
        std::fs::write(
            dir.join("convsync.toml"),
            format!("[database]\nurl = \"{url}\"\n\n{}", sim.snippet),
        )
        .unwrap();
        DaemonSite {
            dir: dir.to_owned(),
            run: run.to_owned(),
            health: free_loopback_address(),
            environment: sim.environment.clone(),
            postgres,
            runs: 0,
        }
    }

    /// `convsync ARGS` in the site's directory with the banner's environment and the
    /// health endpoint on a free port (the documented override of `[health] listen`).
    fn command(&self, command: &str) -> tokio::process::Command {
        let mut words = command.split_whitespace();
        assert_eq!(words.next(), Some("convsync"), "{command}");
        let mut child = tokio::process::Command::new(BINARY);
        child
            .args(words)
            .current_dir(&self.dir)
            .envs(self.environment.iter().map(|(k, v)| (k, v)))
            .env("CONVSYNC_HEALTH__LISTEN", &self.health)
            .env_remove("CONVSYNC_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        child
    }

    /// Starts the documented `convsync run`.
    fn spawn_daemon(&mut self) -> Daemon {
        self.runs += 1;
        let log = self.dir.join(format!("daemon-{}.log", self.runs));
        Daemon::spawn(self.command(&self.run), log)
    }

    /// A pool of the test's own on the mirror (once the daemon created a SQLite file).
    async fn mirror(&self) -> MirrorPool {
        match &self.postgres {
            Some(db) => postgres_mirror(&db.url).await,
            None => MirrorPool::Sqlite(pool(&self.dir.join("convsync.db")).await),
        }
    }

    /// The daemon's `/metrics`, once its health endpoint answers.
    async fn scrape(&self, daemon: &mut Daemon) -> Scrape {
        let base = format!("http://{}/", self.health);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while reqwest::get(format!("{base}healthz")).await.is_err() {
            assert!(daemon.is_running(), "the daemon died:\n{}", daemon.output());
            assert!(
                tokio::time::Instant::now() < deadline,
                "{base} never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Scrape::fetch(&base).await
    }
}

/// Accepted events of an entry on the daemon's metrics.
fn accepted(scrape: &Scrape, entry: &str) -> f64 {
    entry_sum(
        scrape,
        "convsync_webhook_events_total",
        entry,
        &[("outcome", "accepted")],
    )
}

/// Delivery records of an entry in the mirror (every accepted event has one).
async fn recorded(mirror: &MirrorPool, entry: &str) -> i64 {
    mirror
        .sql_value(&format!(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE {}",
            of_entry(entry)
        ))
        .await
}

/// The documented set-up, end to end through the binaries: signed events with faults are
/// committed and counted, forged copies answered 401, a SIGTERM and a restart lose no
/// event the provider retries, and after the reconciliation poll every source equals the
/// simulator's truth.
async fn convsync_run_takes_the_simulators_events_across_a_restart(backend: Backend) {
    let steps = documented_steps_in(DOC, SECTION);
    let [simulate, run] = steps.as_slice() else {
        panic!("{DOC} ({SECTION}): two commands expected, got {steps:?}");
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = SimulateProcess::start(simulate, &free_loopback_address(), dir.path()).await;
    let mut site = DaemonSite::write(backend, dir.path(), run, &sim).await;
    let sources: Vec<String> = truth_sources(&sim.client.accounts().await.unwrap())
        .into_iter()
        .map(|s| s.name)
        .collect();

    // The start-up poll backfills every source; the receiver listens beside the health
    // endpoint.
    let mut daemon = site.spawn_daemon();
    let mirror = site.mirror().await;
    wait_caught_up(&sources, &mirror, &mut daemon, 0).await;
    site.scrape(&mut daemon).await;

    // Events with every fault but oversized bodies.
    sim.activity(60).await;
    let counts = sim.settled().await;
    let scrape = site.scrape(&mut daemon).await;
    for (provider, entry) in ENTRIES {
        let delivered = counts.total(provider, WebhookOutcome::Delivered);
        assert!(delivered > 0, "{provider}: no event delivered: {counts:?}");
        // Every delivered event was answered 200 after its commit: accepted, or a
        // duplicate of one accepted before.
        let taken = accepted(&scrape, entry)
            + entry_sum(
                &scrape,
                "convsync_webhook_events_total",
                entry,
                &[("outcome", "duplicate")],
            );
        assert!(
            taken >= delivered as f64,
            "{provider}: {taken} taken for {delivered} delivered"
        );
        assert_eq!(
            recorded(&mirror, entry).await as f64,
            accepted(&scrape, entry),
            "{provider}: every accepted event is recorded in the mirror"
        );
        let changed = deliveries(&mirror, entry, "applied").await
            + deliveries(&mirror, entry, "queued").await;
        assert!(changed > 0, "{provider}: no event changed anything");
        assert_refusals(&scrape, &counts, provider, entry);
        assert_no_forgery_recorded(&mirror, provider, entry).await;
    }
    let refused: u64 = Platform::ALL
        .iter()
        .map(|&p| counts.total(p, WebhookOutcome::ForgedRefused))
        .sum();
    assert!(refused > 0, "no forged copy was answered 401: {counts:?}");
    let median = median_event_to_commit(&scrape).expect("events were committed");
    println!(
        "convsync run ({backend:?}): {refused} forged copies answered 401; median \
         event→mirror delay {:.1} ms",
        median * 1_000.0
    );

    // SIGTERM; events generated while the daemon is down (no faults now, so that every
    // one is accounted for); a restart.
    let status = daemon.sigterm().await;
    assert!(status.success(), "convsync run after SIGTERM: {status}");
    sim.client
        .set_webhook_faults(PlatformSelector::All, &WebhookFaults::default())
        .await
        .unwrap();
    sim.client.reset_webhook_counts().await.unwrap();
    let mut before = Vec::new();
    for (_, entry) in ENTRIES {
        before.push(recorded(&mirror, entry).await);
    }
    sim.activity(40).await;
    // Every provider that retries has met the closed port at least once.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let counts = sim.counts().await;
        if RETRYING
            .iter()
            .all(|&p| counts.total(p, WebhookOutcome::Retried) > 0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a retrying provider never met the closed port: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut daemon = site.spawn_daemon();
    let counts = sim.settled().await;
    let scrape = site.scrape(&mut daemon).await;
    assert_retried_events_taken(&scrape, &counts);
    for ((provider, entry), before) in ENTRIES.into_iter().zip(before) {
        let added = recorded(&mirror, entry).await - before;
        assert_eq!(
            added as f64,
            accepted(&scrape, entry),
            "{provider}: every event the restarted daemon accepted is recorded"
        );
    }
    let status = daemon.sigterm().await;
    assert!(status.success(), "convsync run after SIGTERM: {status}");

    // The reconciliation poll, then every source equals the truth.
    let reconcile = site
        .command("convsync sync --once --full --config convsync.toml")
        .output()
        .await
        .unwrap();
    assert!(
        reconcile.status.success(),
        "sync --once --full: {}",
        String::from_utf8_lossy(&reconcile.stderr)
    );
    let accounts = sim.client.accounts().await.unwrap();
    Truth::control(&sim.client, truth_sources(&accounts))
        .assert_matches(&mirror)
        .await;
    mirror.close().await;
    sim.stop().await;
}

on_both_stores!(multi_thread: convsync_run_takes_the_simulators_events_across_a_restart);
