//! The PostgreSQL backend's backfill against its own limit, measured in the same run.
//!
//! The server is a throw-away cluster started by the benchmark itself (`convsync_testpg`,
//! the tests' cluster: loopback, `fsync`, `synchronous_commit` and `full_page_writes` off),
//! with a fresh database per backfill. The limit is the rows that backfill just wrote,
//! copied into a fresh database with the same schema (convsync's migrations) by **one raw
//! `COPY … FROM STDIN (FORMAT binary)` in one transaction**; reading them out of the
//! mirror (`COPY … TO STDOUT`) is not timed.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use convsync::store::{Store, StoreSettings};
use convsync_sim::Platform;
use convsync_testpg::TestPgDb;
use futures::TryStreamExt as _;
use sqlx::{Connection as _, PgConnection};

use crate::Env;
use crate::process::{self, ProcessStats};
use crate::simproc::{Budget, SimProcess};

/// One backfill into PostgreSQL.
pub struct PgBackfill {
    pub provider: Platform,
    pub size: u32,
    pub sync: ProcessStats,
    /// The sync's cycles alone (first `sync_runs.started_at` to last `finished_at`).
    pub cycles: Duration,
    pub rows: u64,
    pub limit: Option<CopyLimit>,
}

/// What the raw `COPY` achieved.
#[derive(Debug, Clone, Copy)]
pub struct CopyLimit {
    /// Rows copied.
    pub rows: u64,
    /// `BEGIN` through `COMMIT`.
    pub took: Duration,
}

impl PgBackfill {
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.sync.wall.as_secs_f64()
    }
    pub fn cycles_rate(&self) -> f64 {
        self.rows as f64 / self.cycles.as_secs_f64()
    }
    pub fn limit_rate(&self) -> Option<f64> {
        self.limit.map(|l| l.rows as f64 / l.took.as_secs_f64())
    }
    pub fn ratio(&self) -> Option<f64> {
        Some(self.rate() / self.limit_rate()?)
    }
    pub fn cycles_ratio(&self) -> Option<f64> {
        Some(self.cycles_rate() / self.limit_rate()?)
    }
}

/// Backfills `sim`'s world into a fresh PostgreSQL database with `convsync sync --once`
/// (logs and configuration under `run_dir`), then, unless `no_limit`, measures the limit
/// on the rows it wrote.
pub async fn backfill(
    env: &Env,
    sim: &SimProcess,
    size: u32,
    run_dir: &std::path::Path,
    no_limit: bool,
) -> anyhow::Result<PgBackfill> {
    let mirror = TestPgDb::new().await;
    let config = sim.write_config(run_dir, &mirror.url, Budget::Unlimited)?;
    let log = run_dir.join("sync.log");
    let sync = process::sync_once(&env.bin, &config, &log).await?;
    anyhow::ensure!(
        sync.success,
        "sync --once into PostgreSQL failed (see {})",
        log.display()
    );
    let mut conn = mirror.connect().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&mut conn)
        .await?;
    let (first, last): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT min(started_at), max(finished_at) FROM sync_runs")
            .fetch_one(&mut conn)
            .await?;
    let cycles = (last.context("no finished run")? - first.context("no run")?)
        .to_std()
        .context("runs that end before they start")?;
    let limit = if no_limit {
        None
    } else {
        Some(copy_limit(&mut conn).await?)
    };
    conn.close().await.ok();
    Ok(PgBackfill {
        provider: sim.provider,
        size,
        sync,
        cycles,
        rows: rows as u64,
        limit,
    })
}

/// Copies every row of `mirror`'s `conversations` into a fresh database with convsync's
/// schema in one transaction through one binary `COPY`, and times that transaction.
async fn copy_limit(mirror: &mut PgConnection) -> anyhow::Result<CopyLimit> {
    let target = TestPgDb::new().await;
    Store::open(&StoreSettings {
        url: target.url.clone(),
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?
    .close()
    .await;
    let data: Vec<Bytes> = mirror
        .copy_out_raw("COPY conversations TO STDOUT (FORMAT binary)")
        .await?
        .try_collect()
        .await?;
    // Large messages: a `CopyData` per 8 KiB chunk the server sent would time the client.
    let data = data.concat();
    let mut conn = target.connect().await;
    let started = Instant::now();
    let mut tx = conn.begin().await?;
    let mut copy = tx
        .copy_in_raw("COPY conversations FROM STDIN (FORMAT binary)")
        .await?;
    copy.send(&data[..]).await?;
    let rows = copy.finish().await?;
    tx.commit().await?;
    let took = started.elapsed();
    conn.close().await.ok();
    Ok(CopyLimit { rows, took })
}

/// The PostgreSQL table (medians per provider and size).
pub fn print_backfills(samples: &[PgBackfill]) {
    if samples.is_empty() {
        return;
    }
    println!("### Backfill into PostgreSQL (medians)\n");
    println!(
        "| provider | N | runs | rows | sync conv/s | raw COPY limit conv/s | ratio | cycles conv/s | cycles ratio | sync wall s | sync CPU s | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut keys: Vec<(Platform, u32)> = samples.iter().map(|s| (s.provider, s.size)).collect();
    keys.dedup();
    for (provider, size) in keys {
        let runs: Vec<&PgBackfill> = samples
            .iter()
            .filter(|s| s.provider == provider && s.size == size)
            .collect();
        let median_of = |f: &dyn Fn(&PgBackfill) -> Option<f64>| {
            let v: Vec<f64> = runs.iter().filter_map(|s| f(s)).collect();
            (!v.is_empty()).then(|| crate::median(v))
        };
        let rate = |f: &dyn Fn(&PgBackfill) -> Option<f64>| {
            median_of(f).map_or("-".to_owned(), |v| format!("{v:.0}"))
        };
        let percent = |f: &dyn Fn(&PgBackfill) -> Option<f64>| {
            median_of(f).map_or("-".to_owned(), |v| format!("{:.0} %", v * 100.0))
        };
        println!(
            "| {provider} | {size} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            runs.len(),
            rate(&|s| Some(s.rows as f64)),
            rate(&|s| Some(s.rate())),
            rate(&|s| s.limit_rate()),
            percent(&|s| s.ratio()),
            rate(&|s| Some(s.cycles_rate())),
            percent(&|s| s.cycles_ratio()),
            median_of(&|s| Some(s.sync.wall.as_secs_f64())).unwrap_or(f64::NAN),
            median_of(&|s| Some(s.sync.cpu.as_secs_f64())).unwrap_or(f64::NAN),
            median_of(&|s| Some(s.sync.peak_rss_mib)).unwrap_or(f64::NAN),
        );
    }
    println!();
}
