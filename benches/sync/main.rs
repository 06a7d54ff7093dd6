//! `cargo bench --bench sync`: convsync's performance against the limits, per provider.
//!
//! The simulator runs as its own process (`convsync simulate`, loopback, no background
//! activity) and the measured sync is the real `convsync sync --once` binary, so CPU time
//! and peak RSS are the sync process's alone (read from the kernel with `wait4`).
//!
//! 1. **Backfill** of N conversations into a fresh mirror, several runs, against the
//!    write limit and the fetch+parse limit measured in the same run (`limits`); the same
//!    into PostgreSQL, against a raw `COPY` of the same rows measured in the same run
//!    (`postgres`).
//! 2. **Delta**: after the backfill, K conversations change; one more `sync --once`;
//!    requests by kind (listing, follow-up, token) against the minimum, rows written.
//!    The first backfill's requests go in a table of their own, next to the minimum and the
//!    time they take under the provider's rate limit (`costs`).
//! 3. **Rate limit**: the simulator enforces a limit, convsync is configured to it; the
//!    requests per second achieved as a share of the limit, and the 429s received.
//!
//! 4. **Scale-out** (`-- --replicas 1,2,3`, alone): 2,000 HighLevel locations mirrored into
//!    PostgreSQL by 1, 2 and 3 `convsync run` replicas (`replicas`).
//!
//! 5. **Change history** (`-- --history`, alone): the backfill with and without the
//!    history's events, on each backend (`history`).
//!
//! 6. **Export** (`-- --export`, alone): the real `convsync export` of `v1_conversations`
//!    to CSV, JSON Lines and Parquet from mirrors of 100 000 and 1 000 000 rows (`export`).
//!
//! 7. **Webhooks** (`-- --webhooks`, alone): signed events into `convsync run`'s receiver
//!    at increasing concurrency, clean and with faults (`webhooks`).
//!
//! `-- --smoke` runs a small version of everything in seconds (CI). BENCHMARKS.md has the
//! figures and how to read them.

mod costs;
mod export;
mod history;
mod limits;
mod postgres;
mod process;
mod replicas;
mod simproc;
mod webhooks;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use convsync::store::{Store, StoreSettings};
use convsync::time::Timestamp;
use convsync_sim::{MessageKind, Mutation, Platform, RequestCounts};

use crate::costs::{FirstMirror, Requests, max_page_size};
use crate::limits::{FetchLimit, WriteLimit};
use crate::process::ProcessStats;
use crate::simproc::{Budget, SimProcess};

/// `store.pool()`: the SQLite pool behind the benchmark's store, for its report queries
/// (the backend-neutral `Store` has no pool of its own).
trait StorePool {
    fn pool(&self) -> &sqlx::SqlitePool;
}

impl StorePool for Store {
    fn pool(&self) -> &sqlx::SqlitePool {
        self.as_sqlite()
            .expect("the benchmark's mirror is SQLite")
            .pool()
    }
}

/// Benchmarks of convsync against the limits (see BENCHMARKS.md).
#[derive(Debug, Parser)]
struct Args {
    /// A small version of every scenario that runs in seconds (for CI): one size of 2000,
    /// one run, K = 0 and 10, a 4-second rate-limit check on HighLevel only.
    #[arg(long)]
    smoke: bool,
    /// Conversations per account for the backfills.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<u32>,
    /// Mirrors to backfill: a SQLite file (backfill, limits, deltas) and a PostgreSQL
    /// database of a throw-away cluster (backfill against its raw `COPY` limit).
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<BackendArg>,
    /// Providers to measure (d365, spruce, sinch, highlevel).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "d365,spruce,sinch,highlevel"
    )]
    providers: Vec<Platform>,
    /// Backfill runs per provider and size (the tables show medians).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Changed conversations per delta cycle.
    #[arg(long, value_delimiter = ',', default_value = "0,10,1000")]
    delta: Vec<u32>,
    /// Length of each rate-limit measurement.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    rate_duration: Duration,
    /// Skip the rate-limit measurements.
    #[arg(long)]
    no_rate: bool,
    /// Skip the backfill and delta measurements (rate limits only).
    #[arg(long)]
    no_backfill: bool,
    /// Skip the backfill limits (write, fetch+parse): end-to-end figures only.
    #[arg(long)]
    no_limits: bool,
    /// The scale-out scenario alone: these replica counts, one after another, each
    /// mirroring `--replica-locations` HighLevel locations into PostgreSQL.
    #[arg(long, value_delimiter = ',')]
    replicas: Vec<usize>,
    /// HighLevel locations (rate-limit scopes) of the scale-out scenario.
    #[arg(long, default_value_t = 2000)]
    replica_locations: u32,
    /// Conversations per location in the scale-out scenario.
    #[arg(long, default_value_t = 50)]
    replica_conversations: u32,
    /// Measure this `convsync` binary instead of the one cargo built with the bench: a
    /// before/after comparison of a change in one session (build the "before", copy its
    /// `target/release/convsync` aside, then run the bench with this flag and without).
    #[arg(long)]
    convsync_bin: Option<PathBuf>,
    /// The change-history scenario alone: each size's backfill with the history off, with
    /// `[history] backfill = "none"` and with the default, on each backend asked for
    /// (`history`).
    #[arg(long)]
    history: bool,
    /// The export scenario alone: a mirror of each of `--export-sizes` rows, exported by
    /// `convsync export` to every format, `--runs` times, on each backend asked for
    /// (`export`).
    #[arg(long)]
    export: bool,
    /// Mirror sizes (rows) of the export scenario.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    export_sizes: Vec<u32>,
    /// The webhook scenario alone: signed Spruce events into `convsync run`'s receiver at
    /// each `--webhook-concurrency`, clean and with faults (`webhooks`).
    #[arg(long)]
    webhooks: bool,
    /// Concurrent senders of the webhook scenario, one level each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    webhook_concurrency: Vec<usize>,
    /// Events per webhook level (bounded to 60 s per level).
    #[arg(long, default_value_t = 5000)]
    webhook_events: usize,
    /// Keep the work directory (databases, configs, logs) for inspection.
    #[arg(long)]
    keep: bool,
    /// `cargo bench` passes `--bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A mirror backend to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        args.sizes = vec![2000];
        args.runs = 1;
        args.delta = vec![0, 10];
        args.rate_duration = Duration::from_secs(4);
        args.export_sizes = vec![2000];
        if args.replicas.is_empty() {
            args.replicas = vec![1, 2];
            args.replica_locations = 40;
            args.replica_conversations = 20;
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some checks failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the run needs to find.
struct Env {
    bin: PathBuf,
    work: PathBuf,
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let env = Env {
        bin: args
            .convsync_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_convsync"))),
        work: Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("bench-sync-{}", std::process::id())),
    };
    std::fs::create_dir_all(&env.work)?;
    let started = Instant::now();
    println!(
        "# convsync sync benchmark{}",
        if args.smoke { " (smoke)" } else { "" }
    );
    println!("{}", machine());
    println!("binary: {}", env.bin.display());
    println!("work directory: {}\n", env.work.display());

    if args.history {
        let mut checks = Checks::default();
        history::measure(&env, &args, &mut checks).await?;
        println!("load average at the end: {}", load_average());
        if !args.keep {
            let _ = std::fs::remove_dir_all(&env.work);
        }
        return Ok(checks.failures.is_empty());
    }
    if args.export {
        let mut checks = Checks::default();
        let samples = export::measure(&env, &args, &args.export_sizes, &mut checks).await?;
        export::print(&samples);
        println!("load average at the end: {}", load_average());
        if !args.keep {
            let _ = std::fs::remove_dir_all(&env.work);
        }
        return Ok(checks.failures.is_empty());
    }
    if args.webhooks && !args.smoke {
        let mut checks = Checks::default();
        webhooks::run(&env, &args, &mut checks).await?;
        println!("load average at the end: {}", load_average());
        if !args.keep {
            let _ = std::fs::remove_dir_all(&env.work);
        }
        return Ok(checks.failures.is_empty());
    }
    let scale_only = !args.replicas.is_empty() && !args.smoke;
    let mut backfills = Vec::new();
    let mut pg_backfills = Vec::new();
    let mut first_mirrors = Vec::new();
    let mut deltas = Vec::new();
    let mut checks = Checks::default();
    let sizes = if args.no_backfill || scale_only {
        &[][..]
    } else {
        &args.sizes[..]
    };
    for &provider in &args.providers {
        for &size in sizes {
            measure_size(
                &env,
                &args,
                provider,
                size,
                &mut Samples {
                    backfills: &mut backfills,
                    pg_backfills: &mut pg_backfills,
                    first_mirrors: &mut first_mirrors,
                    deltas: &mut deltas,
                },
                &mut checks,
            )
            .await
            .with_context(|| format!("{provider} with {size} conversations"))?;
        }
    }
    let mut rates = Vec::new();
    if !args.no_rate && !scale_only {
        for case in rate_cases(&args) {
            let sample = measure_rate(&env, &args, &case)
                .await
                .with_context(|| format!("rate limit of {}", case.provider))?;
            checks.expect(
                sample.status_429 == 0 || !args.smoke,
                format!("{}: {} responses 429", case.provider, sample.status_429),
            );
            rates.push(sample);
        }
    }

    let scale = if args.replicas.is_empty() {
        Vec::new()
    } else {
        let samples = replicas::measure(
            &env,
            &args.replicas,
            args.replica_locations,
            args.replica_conversations,
        )
        .await
        .context("scale-out")?;
        for s in &samples {
            checks.expect(
                s.per_replica.iter().all(|(_, _, stats)| stats.success),
                format!("{} replica(s): a replica did not exit cleanly", s.replicas),
            );
        }
        samples
    };
    let exports = if args.smoke {
        export::measure(&env, &args, &args.export_sizes, &mut checks)
            .await
            .context("export")?
    } else {
        Vec::new()
    };

    println!("\n## Results (load average now: {})\n", load_average());
    print_backfills(&backfills);
    postgres::print_backfills(&pg_backfills);
    costs::print_first_mirrors(&first_mirrors);
    print_deltas(&deltas);
    print_rates(&rates);
    replicas::print(&scale);
    export::print(&exports);
    if args.smoke {
        webhooks::run(&env, &args, &mut checks).await?;
    }
    println!(
        "\ntotal bench time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.keep {
        println!("kept {}", env.work.display());
    } else {
        let _ = std::fs::remove_dir_all(&env.work);
    }
    for failure in &checks.failures {
        eprintln!("CHECK FAILED: {failure}");
    }
    Ok(checks.failures.is_empty())
}

/// Invariants that make a figure meaningless when broken; the bench exits non-zero.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            eprintln!("check failed: {what}");
            self.failures.push(what);
        }
    }
}

/// One backfill run.
struct Backfill {
    provider: Platform,
    size: u32,
    sync: ProcessStats,
    /// The sync's cycles alone (see [`cycles_span`]).
    cycles: Duration,
    rows: u64,
    requests: u64,
    write: Option<WriteLimit>,
    /// The same raw write, committed every page (diagnostic).
    paged: Option<WriteLimit>,
    fetch: Option<FetchLimit>,
}

impl Backfill {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.sync.wall.as_secs_f64()
    }
    fn cycles_rate(&self) -> f64 {
        self.rows as f64 / self.cycles.as_secs_f64()
    }
    fn write_rate(&self) -> Option<f64> {
        self.write.map(|w| w.rows as f64 / w.took.as_secs_f64())
    }
    fn paged_rate(&self) -> Option<f64> {
        self.paged.map(|w| w.rows as f64 / w.took.as_secs_f64())
    }
    fn fetch_rate(&self) -> Option<f64> {
        self.fetch
            .map(|f| f.conversations as f64 / f.took.as_secs_f64())
    }
    fn ratio(&self) -> Option<f64> {
        Some(self.rate() / self.write_rate()?.min(self.fetch_rate()?))
    }
    fn cycles_ratio(&self) -> Option<f64> {
        Some(self.cycles_rate() / self.write_rate()?.min(self.fetch_rate()?))
    }
}

/// One delta cycle after a backfill.
struct Delta {
    provider: Platform,
    size: u32,
    changed: u32,
    measured: Requests,
    minimum: Requests,
    rows_written: u64,
    reread_unchanged: u64,
}

/// Where `measure_size` puts what it measured.
struct Samples<'a> {
    backfills: &'a mut Vec<Backfill>,
    pg_backfills: &'a mut Vec<postgres::PgBackfill>,
    first_mirrors: &'a mut Vec<FirstMirror>,
    deltas: &'a mut Vec<Delta>,
}

/// Backfills `size` conversations `args.runs` times into each backend asked for, then runs
/// the delta cycles on the last SQLite mirror.
async fn measure_size(
    env: &Env,
    args: &Args,
    provider: Platform,
    size: u32,
    samples: &mut Samples<'_>,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let dir = env.work.join(format!("{provider}-{size}"));
    std::fs::create_dir_all(&dir)?;
    let generation = Instant::now();
    let sim = SimProcess::start(
        &env.bin,
        provider,
        size,
        &simproc::unlimited_flags(),
        &dir.join("simulator.log"),
    )
    .await?;
    eprintln!(
        "[{provider} N={size}] simulator ready in {:.1} s",
        generation.elapsed().as_secs_f64()
    );
    if args.backends.contains(&BackendArg::Sqlite) {
        measure_sqlite(env, args, &sim, &dir, size, samples, checks).await?;
    }
    if args.backends.contains(&BackendArg::Postgres) {
        for run in 0..args.runs {
            let run_dir = dir.join(format!("postgres-run-{run}"));
            std::fs::create_dir_all(&run_dir)?;
            let sample = postgres::backfill(env, &sim, size, &run_dir, args.no_limits).await?;
            checks.expect(
                sample.rows > 0,
                format!("{provider} N={size}: the PostgreSQL mirror is empty"),
            );
            eprintln!(
                "[{provider} N={size} postgres run {run}] sync {:.2} s ({:.0} conv/s; cycles {:.2} s, {:.0} conv/s; CPU {:.2} s, peak RSS {:.1} MiB); raw COPY limit {}",
                sample.sync.wall.as_secs_f64(),
                sample.rate(),
                sample.cycles.as_secs_f64(),
                sample.cycles_rate(),
                sample.sync.cpu.as_secs_f64(),
                sample.sync.peak_rss_mib,
                sample
                    .limit_rate()
                    .map_or("-".into(), |r| format!("{r:.0} conv/s")),
            );
            samples.pg_backfills.push(sample);
            if !args.keep {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
        }
    }
    sim.stop().await;
    Ok(())
}

/// The SQLite backfills of `size` conversations from `sim`, then the delta cycles on the
/// last mirror.
async fn measure_sqlite(
    env: &Env,
    args: &Args,
    sim: &SimProcess,
    dir: &Path,
    size: u32,
    samples: &mut Samples<'_>,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let provider = sim.provider;
    let mut last_run = None;
    for run in 0..args.runs {
        let run_dir = dir.join(format!("run-{run}"));
        std::fs::create_dir_all(&run_dir)?;
        let db = run_dir.join("mirror.db");
        let config = sim.write_config(&run_dir, &sqlite_url(&db), Budget::Unlimited)?;
        sim.client.reset_requests().await?;
        let started = chrono::Utc::now();
        let sync = process::sync_once(&env.bin, &config, &run_dir.join("sync.log")).await?;
        let (requests, listing, follow_ups, tokens) =
            data_requests(&sim.client.requests().await?, provider);
        if run == 0 {
            let truth = sim.client.truth(provider, &account_key(sim).await?).await?;
            samples.first_mirrors.push(FirstMirror {
                provider,
                size,
                measured: Requests {
                    listing,
                    follow_ups,
                    tokens,
                },
                minimum: costs::first_sync_minimum(provider, &truth, started),
            });
        }
        let rows = count_rows(&db).await?;
        let cycles = cycles_span(&db).await?;
        checks.expect(
            sync.success,
            format!(
                "{provider} N={size}: sync --once failed (see {})",
                run_dir.join("sync.log").display()
            ),
        );
        checks.expect(
            rows > 0,
            format!("{provider} N={size}: the mirror is empty"),
        );
        let (write, paged, fetch) = if args.no_limits {
            (None, None, None)
        } else {
            let write = limits::write_limit(&db, &run_dir.join("write-limit.db"), None).await?;
            remove_database(&run_dir.join("write-limit.db"));
            let paged = limits::write_limit(
                &db,
                &run_dir.join("write-paged.db"),
                Some(max_page_size(provider) as usize),
            )
            .await?;
            remove_database(&run_dir.join("write-paged.db"));
            let fetch = limits::fetch_limit(&config, &run_dir.join("fetch-scratch.db")).await?;
            (Some(write), Some(paged), Some(fetch))
        };
        let sample = Backfill {
            provider,
            size,
            sync,
            cycles,
            rows,
            requests,
            write,
            paged,
            fetch,
        };
        eprintln!(
            "[{provider} N={size} run {run}] sync {:.2} s ({:.0} conv/s; cycles {:.2} s, {:.0} conv/s; CPU {:.2} s, peak RSS {:.1} MiB, {} requests); write limit {} (committing per page: {}); fetch+parse limit {}",
            sync.wall.as_secs_f64(),
            sample.rate(),
            cycles.as_secs_f64(),
            sample.cycles_rate(),
            sync.cpu.as_secs_f64(),
            sync.peak_rss_mib,
            requests,
            sample
                .write_rate()
                .map_or("-".into(), |r| format!("{r:.0} conv/s")),
            sample
                .paged_rate()
                .map_or("-".into(), |r| format!("{r:.0} conv/s")),
            sample.fetch.map_or("-".into(), |f| format!(
                "{:.0} conv/s ({} requests)",
                f.conversations as f64 / f.took.as_secs_f64(),
                f.requests
            )),
        );
        samples.backfills.push(sample);
        if let Some(previous) = last_run.replace(run_dir) {
            let _ = std::fs::remove_dir_all(previous);
        }
    }
    if let Some(run_dir) = last_run {
        let db = run_dir.join("mirror.db");
        let config = run_dir.join("convsync.toml");
        let mut offset = 0;
        for &changed in &args.delta {
            let delta =
                measure_delta(env, sim, &run_dir, &db, &config, size, changed, offset).await?;
            offset += changed;
            if changed == 0 {
                checks.expect(
                    delta.rows_written == 0,
                    format!(
                        "{provider} N={size}: {} rows rewritten although nothing changed",
                        delta.rows_written
                    ),
                );
            }
            samples.deltas.push(delta);
        }
        if !args.keep {
            let _ = std::fs::remove_dir_all(&run_dir);
        }
    }
    Ok(())
}

/// Changes `changed` conversations (D365 lists by creation time, so there they are new
/// conversations; elsewhere an inbound message on existing open ones, since a closed Sinch
/// conversation cannot receive one), runs one `sync --once`
/// and counts what it cost.
#[allow(clippy::too_many_arguments)]
async fn measure_delta(
    env: &Env,
    sim: &SimProcess,
    run_dir: &Path,
    db: &Path,
    config: &Path,
    size: u32,
    changed: u32,
    offset: u32,
) -> anyhow::Result<Delta> {
    let provider = sim.provider;
    let store = open_mirror(db).await?;
    let account = account_key(sim).await?;
    if changed > 0 {
        if provider == Platform::D365 {
            sim.client
                .mutate(
                    provider,
                    &account,
                    Mutation::CreateConversations { count: changed },
                )
                .await?;
        } else {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT conversation_id FROM conversations
                 WHERE active IS NOT 0 AND deleted_at IS NULL
                 ORDER BY conversation_id LIMIT ? OFFSET ?",
            )
            .bind(i64::from(changed))
            .bind(i64::from(offset))
            .fetch_all(store.pool())
            .await?;
            for id in ids {
                sim.client
                    .mutate(
                        provider,
                        &account,
                        Mutation::AddMessage {
                            id,
                            message: MessageKind::Inbound,
                        },
                    )
                    .await?;
            }
        }
    }
    let last_run: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM sync_runs")
        .fetch_one(store.pool())
        .await?;
    store.close().await;
    sim.client.reset_requests().await?;
    let stats = process::sync_once(&env.bin, config, &run_dir.join("delta.log")).await?;
    anyhow::ensure!(
        stats.success,
        "delta sync failed (see {})",
        run_dir.join("delta.log").display()
    );
    let (_, listing, follow_ups, tokens) = data_requests(&sim.client.requests().await?, provider);
    let store = open_mirror(db).await?;
    let rows_written: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM conversations WHERE run_id > ?")
            .bind(last_run)
            .fetch_one(store.pool())
            .await?;
    let reread_unchanged: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(rows_unchanged), 0) FROM sync_runs WHERE id > ?")
            .bind(last_run)
            .fetch_one(store.pool())
            .await?;
    store.close().await;
    let delta = Delta {
        provider,
        size,
        changed,
        measured: Requests {
            listing,
            follow_ups,
            tokens,
        },
        minimum: costs::delta_minimum(provider, u64::from(changed)),
        rows_written: rows_written as u64,
        reread_unchanged: reread_unchanged as u64,
    };
    eprintln!(
        "[{provider} N={size} K={changed}] requests {} (minimum {}), rows written {}, re-read unchanged {}",
        delta.measured, delta.minimum, delta.rows_written, delta.reread_unchanged
    );
    Ok(delta)
}

/// The simulator's key of the one account it serves.
async fn account_key(sim: &SimProcess) -> anyhow::Result<String> {
    let accounts = sim.client.accounts().await?;
    let key = match sim.provider {
        Platform::D365 => accounts.d365.first().map(|a| a.account.clone()),
        Platform::Spruce => accounts.spruce.first().map(|a| a.account.clone()),
        Platform::Sinch => accounts.sinch.first().map(|a| a.account.clone()),
        Platform::HighLevel => accounts.highlevel.first().map(|a| a.account.clone()),
    };
    key.context("the simulator has no account")
}

/// (all data requests, listing requests, follow-up requests, token requests) to
/// `provider`. Follow-ups are the per-conversation routes (`{id}` in the route template).
fn data_requests(counts: &RequestCounts, provider: Platform) -> (u64, u64, u64, u64) {
    let (mut listing, mut follow_ups, mut tokens) = (0, 0, 0);
    for e in counts.entries.iter().filter(|e| e.provider == provider) {
        if e.endpoint.contains("token") {
            tokens += e.count;
        } else if e.endpoint.contains("{id}") {
            follow_ups += e.count;
        } else {
            listing += e.count;
        }
    }
    (listing + follow_ups, listing, follow_ups, tokens)
}

/// Deletes a scratch database and its WAL files.
fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// The `database.url` of the SQLite file `db`.
fn sqlite_url(db: &Path) -> String {
    format!("sqlite://{}", db.display())
}

async fn open_mirror(db: &Path) -> anyhow::Result<Store> {
    Ok(Store::connect(&StoreSettings {
        url: sqlite_url(db),
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?)
}

async fn count_rows(db: &Path) -> anyhow::Result<u64> {
    let store = open_mirror(db).await?;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
        .fetch_one(store.pool())
        .await?;
    store.close().await;
    Ok(rows as u64)
}

/// From the start of the sync's first cycle to the end of its last, as `sync_runs`
/// recorded them: the part of the process the limits compare with (they do not time
/// opening files, migrating or building clients either).
async fn cycles_span(db: &Path) -> anyhow::Result<Duration> {
    let store = open_mirror(db).await?;
    let (first, last): (String, String) =
        sqlx::query_as("SELECT MIN(started_at), MAX(finished_at) FROM sync_runs")
            .fetch_one(store.pool())
            .await?;
    store.close().await;
    let first = Timestamp::parse_rfc3339(&first)?;
    let last = Timestamp::parse_rfc3339(&last)?;
    Ok(first.elapsed_until(last))
}

/// A rate-limit measurement: what the simulator enforces and how convsync is configured.
struct RateCase {
    provider: Platform,
    conversations: u32,
    sim_flags: Vec<String>,
    budget: Budget,
    budget_text: &'static str,
    limit: u32,
    window: Duration,
}

fn rate_cases(args: &Args) -> Vec<RateCase> {
    let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if args.smoke {
        return vec![RateCase {
            provider: Platform::HighLevel,
            conversations: 20_000,
            sim_flags: flags(&[
                "--highlevel-burst-limit",
                "20",
                "--highlevel-burst-window",
                "1s",
            ]),
            budget: Budget::Explicit {
                requests: 20,
                per_ms: 1000,
            },
            budget_text: "20 per 1 s",
            limit: 20,
            window: Duration::from_secs(1),
        }];
    }
    let all = vec![
        RateCase {
            provider: Platform::D365,
            conversations: 200_000,
            sim_flags: flags(&[
                "--fault-providers",
                "d365",
                "--fault-rate-limit",
                "300",
                "--fault-rate-window",
                "60s",
            ]),
            budget: Budget::ProductDefault,
            budget_text: "default: 300 per min, burst 10",
            limit: 300,
            window: Duration::from_secs(60),
        },
        RateCase {
            provider: Platform::Spruce,
            conversations: 20_000,
            sim_flags: flags(&["--spruce-rate-limit", "1000"]),
            budget: Budget::Explicit {
                requests: 1000,
                per_ms: 60_000,
            },
            budget_text: "rate_limit = 1000 per 60 s",
            limit: 1000,
            window: Duration::from_secs(60),
        },
        RateCase {
            provider: Platform::Sinch,
            conversations: 200_000,
            sim_flags: flags(&[
                "--fault-providers",
                "sinch",
                "--fault-rate-limit",
                "200",
                "--fault-rate-window",
                "1s",
            ]),
            budget: Budget::ProductDefault,
            budget_text: "default: 200 per s",
            limit: 200,
            window: Duration::from_secs(1),
        },
        RateCase {
            provider: Platform::HighLevel,
            conversations: 200_000,
            sim_flags: Vec::new(),
            budget: Budget::ProductDefault,
            budget_text: "default: 100 per 10 s",
            limit: 100,
            window: Duration::from_secs(10),
        },
    ];
    all.into_iter()
        .filter(|c| args.providers.contains(&c.provider))
        .collect()
}

/// One rate-limit measurement.
struct Rate {
    provider: Platform,
    limit: u32,
    window: Duration,
    budget_text: &'static str,
    measured: Duration,
    answered: u64,
    status_429: u64,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.answered as f64 / self.measured.as_secs_f64()
    }
    fn utilisation(&self) -> f64 {
        self.per_second() / (f64::from(self.limit) / self.window.as_secs_f64())
    }
}

/// Runs a backfill against an enforced limit for `args.rate_duration` after the first
/// request, then stops convsync with SIGTERM.
async fn measure_rate(env: &Env, args: &Args, case: &RateCase) -> anyhow::Result<Rate> {
    let provider = case.provider;
    let dir = env.work.join(format!("rate-{provider}"));
    std::fs::create_dir_all(&dir)?;
    let sim = SimProcess::start(
        &env.bin,
        provider,
        case.conversations,
        &case.sim_flags,
        &dir.join("simulator.log"),
    )
    .await?;
    let config = sim.write_config(&dir, &sqlite_url(&dir.join("mirror.db")), case.budget)?;
    sim.client.reset_requests().await?;
    let running = process::spawn(
        &env.bin,
        &config,
        &["sync", "--once"],
        &dir.join("sync.log"),
    )?;
    let poll = Duration::from_millis(100);
    let deadline = Instant::now() + args.rate_duration + Duration::from_secs(60);
    let mut first: Option<(Instant, u64)> = None;
    // (time of the last new request, requests answered then, 429s then)
    let mut last = (Instant::now(), 0u64, 0u64);
    loop {
        tokio::time::sleep(poll).await;
        let counts = sim.client.requests().await?;
        let answered = answered_ok(&counts, provider);
        let now = Instant::now();
        if answered > last.1 {
            last = (now, answered, status_count(&counts, provider, 429));
        }
        if answered > 0 && first.is_none() {
            first = Some((now, answered));
        }
        let measured_enough =
            first.is_some_and(|(t, _)| now.duration_since(t) >= args.rate_duration);
        // The world ran out (or convsync stopped): what was measured stands. A pause of a
        // whole window is part of what is measured, so the wait is longer than that.
        let stalled =
            first.is_some() && now.duration_since(last.0) > case.window + Duration::from_secs(15);
        if measured_enough || stalled || now > deadline {
            break;
        }
    }
    running.terminate();
    let _ = tokio::task::spawn_blocking(move || running.wait()).await?;
    sim.stop().await;
    let (start, at_start) = first.context("convsync sent no request")?;
    let rate = Rate {
        provider,
        limit: case.limit,
        window: case.window,
        budget_text: case.budget_text,
        measured: last.0.duration_since(start),
        answered: last.1 - at_start,
        status_429: last.2,
    };
    eprintln!(
        "[{provider} rate] {:.2} requests/s over {:.1} s = {:.1} % of {} per {:?}; {} responses 429",
        rate.per_second(),
        rate.measured.as_secs_f64(),
        rate.utilisation() * 100.0,
        rate.limit,
        rate.window,
        rate.status_429
    );
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(rate)
}

/// Successful data requests (2xx, token endpoints excluded) to `provider`.
fn answered_ok(counts: &RequestCounts, provider: Platform) -> u64 {
    counts
        .entries
        .iter()
        .filter(|e| {
            e.provider == provider
                && !e.endpoint.contains("token")
                && e.status.is_some_and(|s| (200..300).contains(&s))
        })
        .map(|e| e.count)
        .sum()
}

fn status_count(counts: &RequestCounts, provider: Platform, status: u16) -> u64 {
    counts
        .entries
        .iter()
        .filter(|e| e.provider == provider && e.status == Some(status))
        .map(|e| e.count)
        .sum()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_backfills(samples: &[Backfill]) {
    if samples.is_empty() {
        return;
    }
    println!("### Backfill (medians)\n");
    println!(
        "| provider | N | runs | sync conv/s | write limit conv/s | fetch+parse limit conv/s | ratio to tighter limit | cycles conv/s | cycles ratio | raw write committed per page conv/s | sync wall s | sync CPU s | peak RSS MiB | requests |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut keys: Vec<(Platform, u32)> = samples.iter().map(|s| (s.provider, s.size)).collect();
    keys.dedup();
    for (provider, size) in keys {
        let runs: Vec<&Backfill> = samples
            .iter()
            .filter(|s| s.provider == provider && s.size == size)
            .collect();
        let m = |f: &dyn Fn(&Backfill) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(|s| f(s)).collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0}", median(v))
            }
        };
        let percent = |f: &dyn Fn(&Backfill) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(|s| f(s)).collect();
            if v.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.0} %", median(v) * 100.0)
            }
        };
        println!(
            "| {provider} | {size} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {} |",
            runs.len(),
            m(&|s| Some(s.rate())),
            m(&|s| s.write_rate()),
            m(&|s| s.fetch_rate()),
            percent(&|s| s.ratio()),
            m(&|s| Some(s.cycles_rate())),
            percent(&|s| s.cycles_ratio()),
            m(&|s| s.paged_rate()),
            median(runs.iter().map(|s| s.sync.wall.as_secs_f64()).collect()),
            median(runs.iter().map(|s| s.sync.cpu.as_secs_f64()).collect()),
            median(runs.iter().map(|s| s.sync.peak_rss_mib).collect()),
            m(&|s| Some(s.requests as f64)),
        );
    }
    println!();
}

fn print_deltas(samples: &[Delta]) {
    if samples.is_empty() {
        return;
    }
    println!("### Delta cycle after the backfill\n");
    println!(
        "| provider | N | K changed | requests (listing + follow-ups [+ token]) | minimum | rows written | rows re-read unchanged |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for d in samples {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            d.provider,
            d.size,
            d.changed,
            d.measured,
            d.minimum,
            d.rows_written,
            d.reread_unchanged
        );
    }
    println!();
}

fn print_rates(samples: &[Rate]) {
    if samples.is_empty() {
        return;
    }
    println!("### Rate-limit utilisation\n");
    println!(
        "| provider | enforced limit | convsync budget | measured s | requests/s | utilisation | 429s |"
    );
    println!("|---|---|---|---:|---:|---:|---:|");
    for r in samples {
        println!(
            "| {} | {} per {} | {} | {:.1} | {:.2} | {:.1} % | {} |",
            r.provider,
            r.limit,
            humantime::format_duration(r.window),
            r.budget_text,
            r.measured.as_secs_f64(),
            r.per_second(),
            r.utilisation() * 100.0,
            r.status_429
        );
    }
    println!();
}

/// Cores, memory and CPU model, for the record.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("?", str::trim)
        .to_owned();
    format!(
        "machine: {cores} cores ({model}), {memory} memory; load average at start: {}",
        load_average()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The 1-minute load average now (NaN where /proc/loadavg cannot be read).
fn load_average_now() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::NAN)
}

/// "low–high" of the load averages recorded for a table row's runs ("x" for one run).
fn load_range(loads: impl Iterator<Item = f64>) -> String {
    let loads: Vec<f64> = loads.collect();
    let low = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let high = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if loads.len() == 1 || (high - low) < 0.05 {
        format!("{low:.1}")
    } else {
        format!("{low:.1}–{high:.1}")
    }
}

/// `items` without repeats, in first-seen order (a table's rows from its samples).
fn distinct<K: PartialEq>(items: impl Iterator<Item = K>) -> Vec<K> {
    let mut out: Vec<K> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Prints a Markdown table's title, header row and alignment row (`align`: one `l` or `r`
/// per column).
fn table_head(title: &str, columns: &[&str], align: &str) {
    println!("### {title}\n");
    println!("| {} |", columns.join(" | "));
    let marks: Vec<&str> = align
        .chars()
        .map(|a| if a == 'r' { "---:" } else { "---" })
        .collect();
    println!("|{}|", marks.join("|"));
}

/// A fresh, empty mirror on `backend`: a new database of the throw-away PostgreSQL
/// cluster (dropped with the handle), or a SQLite file `mirror.db` under `dir`; and its
/// `database.url`.
async fn fresh_mirror(
    backend: BackendArg,
    dir: &Path,
) -> (Option<convsync_testpg::TestPgDb>, String) {
    match backend {
        BackendArg::Sqlite => (None, sqlite_url(&dir.join("mirror.db"))),
        BackendArg::Postgres => {
            let db = convsync_testpg::TestPgDb::new().await;
            let url = db.url.clone();
            (Some(db), url)
        }
    }
}
