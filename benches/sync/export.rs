//! `convsync export` at scale (`-- --export`, alone; a small version in `--smoke`): the real
//! binary's `export --view v1_conversations --format csv|jsonl|parquet --to FILE` on a
//! mirror of N rows, with its wall time, rows per second, CPU, peak RSS and output size,
//! per format and backend, at two sizes so that a flat memory shows as the same peak RSS.
//!
//! **How the mirror is built.** By the product's own path: `convsync simulate` generates a
//! HighLevel location of N conversations (HighLevel, because every simulated conversation
//! is mirrored and every column the view derives — channel, unread count, assignee, reply
//! state — is filled) and one `convsync sync --once` mirrors it, so the rows are the ones a
//! real sync writes, NULLs and all. `[history] backfill = "none"` keeps that sync from
//! writing a million `first_seen` events, which export does not read. At 1 000 000 that is
//! the simulator's generation and a backfill of about half a minute each on a quiet
//! machine: slower than inserting generated rows directly, but with no second writer to
//! keep in step with the schema, and the same rows the views were written for. The mirror
//! is built once per size and backend; the simulator is stopped before the first export.
//!
//! **What is measured.** Each export is one `convsync export` process (started, waited for
//! and read by `process`: wall time and CPU from `wait4`, peak RSS from `VmHWM`); formats
//! are interleaved run by run so that a busy moment of the shared machine hits each alike,
//! and the load average is recorded as each export starts. Rows are the ones the process
//! says it exported, checked against `SELECT count(*) FROM v1_conversations` (and, for
//! JSON Lines, against the file's lines); the file is deleted after its size is read.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use convsync::store::{Store, StoreSettings};
use convsync_sim::Platform;
use convsync_testpg::TestPgDb;

use crate::process::{self, ProcessStats};
use crate::simproc::{Budget, SimProcess};
use crate::{
    Args, BackendArg, Checks, Env, distinct, fresh_mirror, load_average_now, load_range, median,
    table_head,
};

/// The view exported: the widest one, one row per conversation.
const VIEW: &str = "v1_conversations";

/// The formats measured, as `--format` spells them.
const FORMATS: [&str; 3] = ["csv", "jsonl", "parquet"];

/// A mirror ready to export: its configuration, and the database it holds.
struct Mirror {
    backend: BackendArg,
    config: PathBuf,
    rows: u64,
    /// Dropping it drops the PostgreSQL database.
    _postgres: Option<TestPgDb>,
}

/// One export's figures.
pub struct Sample {
    size: u32,
    backend: BackendArg,
    format: &'static str,
    rows: u64,
    bytes: u64,
    stats: ProcessStats,
    /// The 1-minute load average as the export started.
    load: f64,
}

/// Builds a mirror per size and backend asked for and exports it `args.runs` times in
/// every format.
pub async fn measure(
    env: &Env,
    args: &Args,
    sizes: &[u32],
    checks: &mut Checks,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for &size in sizes {
        let dir = env.work.join(format!("export-{size}"));
        std::fs::create_dir_all(&dir)?;
        let mut mirrors = Vec::new();
        let sim = SimProcess::start(
            &env.bin,
            Platform::HighLevel,
            size,
            &crate::simproc::unlimited_flags(),
            &dir.join("simulator.log"),
        )
        .await?;
        for &backend in &args.backends {
            let mirror = build(env, &sim, backend, &dir.join(format!("{backend:?}"))).await;
            match mirror {
                Ok(m) => {
                    checks.expect(
                        m.rows == u64::from(size),
                        format!(
                            "export N={size} {backend:?}: the mirror has {} rows",
                            m.rows
                        ),
                    );
                    mirrors.push(m);
                }
                Err(e) => {
                    sim.stop().await;
                    return Err(e.context(format!("building the {backend:?} mirror of {size}")));
                }
            }
        }
        sim.stop().await;
        for run in 0..args.runs {
            for mirror in &mirrors {
                for format in FORMATS {
                    let sample = export(env, mirror, size, format, run).await?;
                    eprintln!(
                        "[export N={size} {:?} run {run}] {format}: {} rows in {:.2} s, {:.2} s CPU, {:.1} MiB peak RSS, {} bytes (load {:.2})",
                        mirror.backend,
                        sample.rows,
                        sample.stats.wall.as_secs_f64(),
                        sample.stats.cpu.as_secs_f64(),
                        sample.stats.peak_rss_mib,
                        sample.bytes,
                        sample.load
                    );
                    let what = format!("export N={size} {:?} {format}", mirror.backend);
                    checks.expect(sample.stats.success, format!("{what}: failed"));
                    checks.expect(
                        sample.rows == mirror.rows,
                        format!("{what}: {} rows exported of {}", sample.rows, mirror.rows),
                    );
                    checks.expect(sample.bytes > 0, format!("{what}: an empty file"));
                    samples.push(sample);
                }
            }
        }
        if !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(samples)
}

/// Mirrors `sim`'s world into a fresh database on `backend` with `convsync sync --once`.
async fn build(
    env: &Env,
    sim: &SimProcess,
    backend: BackendArg,
    dir: &Path,
) -> anyhow::Result<Mirror> {
    std::fs::create_dir_all(dir)?;
    let (postgres, url) = fresh_mirror(backend, dir).await;
    let config = sim.write_config(dir, &url, Budget::Unlimited)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str("\n[history]\nbackfill = \"none\"\n");
    std::fs::write(&config, text)?;
    let log = dir.join("sync.log");
    let sync = process::sync_once(&env.bin, &config, &log).await?;
    anyhow::ensure!(sync.success, "sync --once failed (see {})", log.display());
    eprintln!(
        "[export {backend:?}] mirror built by sync --once in {:.1} s",
        sync.wall.as_secs_f64()
    );
    let store = Store::connect(&StoreSettings {
        url,
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?;
    let count = format!("SELECT count(*) FROM {VIEW}");
    let rows: i64 = if let Some(sqlite) = store.as_sqlite() {
        sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .fetch_one(sqlite.pool())
            .await?
    } else if let Some(pg) = store.as_postgres() {
        sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .fetch_one(pg.pool())
            .await?
    } else {
        anyhow::bail!("a store that is neither SQLite nor PostgreSQL")
    };
    store.close().await;
    Ok(Mirror {
        backend,
        config,
        rows: u64::try_from(rows)?,
        _postgres: postgres,
    })
}

/// One `convsync export` of the mirror into a new file in `format`.
async fn export(
    env: &Env,
    mirror: &Mirror,
    size: u32,
    format: &'static str,
    run: u32,
) -> anyhow::Result<Sample> {
    let dir = mirror.config.parent().unwrap_or(Path::new("."));
    let file = dir.join(format!("export-{run}.{format}"));
    let log = dir.join(format!("export-{run}-{format}.log"));
    let load = load_average_now();
    let to = file.display().to_string();
    let running = process::spawn(
        &env.bin,
        &mirror.config,
        &["export", "--view", VIEW, "--format", format, "--to", &to],
        &log,
    )?;
    let stats = tokio::task::spawn_blocking(move || running.wait()).await??;
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());
    let mut rows = exported_rows(&std::fs::read_to_string(&log).unwrap_or_default());
    if format == "jsonl" && stats.success {
        let lines = count_lines(&file)?;
        if lines != rows {
            eprintln!("export {format}: the process reported {rows} rows, the file has {lines}");
            rows = lines;
        }
    }
    let _ = std::fs::remove_file(&file);
    Ok(Sample {
        size,
        backend: mirror.backend,
        format,
        rows,
        bytes,
        stats,
        load,
    })
}

/// The row count of the summary `convsync export` prints (`exported N rows of …`), 0 when
/// there is none.
fn exported_rows(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("exported ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Newlines in `file` (a JSON Lines file has one per row).
fn count_lines(file: &Path) -> anyhow::Result<u64> {
    let mut reader = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// The export table (medians per backend, size and format).
pub fn print(samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    table_head(
        &format!("Export of {VIEW} (medians)"),
        &[
            "backend",
            "rows",
            "format",
            "runs",
            "wall s",
            "rows/s",
            "CPU s",
            "peak RSS MiB",
            "output MiB",
            "bytes/row",
            "load average (1 min) at start",
        ],
        "lrlrrrrrrrl",
    );
    let mut keys = distinct(samples.iter().map(|s| (s.backend, s.size, s.format)));
    keys.sort_by_key(|&(backend, size, format)| {
        (
            backend == BackendArg::Postgres,
            size,
            FORMATS.iter().position(|f| *f == format),
        )
    });
    for (backend, size, format) in keys {
        let runs: Vec<&Sample> = samples
            .iter()
            .filter(|s| (s.backend, s.size, s.format) == (backend, size, format))
            .collect();
        let of = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(|s| f(s)).collect());
        let rows = runs.iter().map(|s| s.rows).max().unwrap_or(0);
        let load = load_range(runs.iter().map(|s| s.load));
        println!(
            "| {backend:?} | {rows} | {format} | {} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} | {load} |",
            runs.len(),
            of(&|s| s.stats.wall.as_secs_f64()),
            of(&|s| s.rows as f64 / s.stats.wall.as_secs_f64()),
            of(&|s| s.stats.cpu.as_secs_f64()),
            of(&|s| s.stats.peak_rss_mib),
            of(&|s| s.bytes as f64 / 1024.0 / 1024.0),
            of(&|s| s.bytes as f64 / s.rows.max(1) as f64),
        );
    }
    println!();
}
