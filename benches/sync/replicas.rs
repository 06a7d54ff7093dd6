//! The scale benchmark (`--replicas 1,2,3`): many HighLevel locations (one rate-limit scope
//! each) mirrored into one PostgreSQL database by 1, 2, 3 replicas of `convsync run` with
//! the same configuration, as in production (product defaults: lease TTL, fair share,
//! HighLevel's budget of 100 requests per 10 s per location).
//!
//! Per replica count: a fresh database, the replicas started together, and the time until
//! every location's first cycle caught up (read from `sync_runs` every 200 ms); requests
//! per second over that time (the simulator's counters); each replica's share of the
//! scopes (the leases it held at that moment); then SIGTERM, and each replica's CPU time
//! (`wait4`) and peak RSS (`/proc/<pid>/status` `VmHWM`, see `process`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use convsync_sim::Platform;
use convsync_testpg::OwnPgCluster;
use sqlx::postgres::PgPoolOptions;

use crate::Env;
use crate::process::{self, ProcessStats};
use crate::simproc::{Budget, SimProcess};

/// A first full sync that takes longer than this is a failure, not a figure.
const FULL_SYNC_TIMEOUT: Duration = Duration::from_secs(900);

/// One replica count's run.
pub struct ScaleSample {
    pub replicas: usize,
    pub locations: u32,
    pub rows: u64,
    /// From the replicas' start until every location's first cycle caught up.
    pub first_full_sync: Duration,
    /// Data requests the simulator answered in that time.
    pub requests: u64,
    /// Per replica, by name: scopes held when the first full sync was complete, and what
    /// the process cost.
    pub per_replica: Vec<(String, i64, ProcessStats)>,
}

impl ScaleSample {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.first_full_sync.as_secs_f64()
    }
}

/// Runs the scale scenario for every count in `replica_counts` against one simulator of
/// `locations` locations with `conversations` each.
pub async fn measure(
    env: &Env,
    replica_counts: &[usize],
    locations: u32,
    conversations: u32,
) -> anyhow::Result<Vec<ScaleSample>> {
    let dir = env.work.join(format!("replicas-{locations}"));
    std::fs::create_dir_all(&dir)?;
    let cluster = tokio::task::spawn_blocking(OwnPgCluster::start).await?;
    let generation = Instant::now();
    let sim = SimProcess::start_with(
        &env.bin,
        &[
            "--conversations".into(),
            conversations.to_string(),
            "--highlevel-locations".into(),
            locations.to_string(),
            "--d365-accounts".into(),
            "0".into(),
            "--spruce-accounts".into(),
            "0".into(),
            "--sinch-accounts".into(),
            "0".into(),
        ],
        Platform::HighLevel,
        &dir.join("simulator.log"),
    )
    .await?;
    eprintln!(
        "[replicas L={locations}] simulator ready in {:.1} s",
        generation.elapsed().as_secs_f64()
    );
    let mut samples = Vec::new();
    for &count in replica_counts {
        let sample = measure_count(env, &cluster, &sim, &dir, count, locations)
            .await
            .with_context(|| format!("{count} replica(s)"))?;
        eprintln!(
            "[replicas L={locations} R={count}] first full sync {:.1} s, {} rows, {:.0} requests/s; {}",
            sample.first_full_sync.as_secs_f64(),
            sample.rows,
            sample.requests_per_second(),
            sample
                .per_replica
                .iter()
                .map(|(name, scopes, stats)| format!(
                    "{name}: {scopes} scopes, CPU {:.1} s, peak RSS {:.1} MiB",
                    stats.cpu.as_secs_f64(),
                    stats.peak_rss_mib
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        samples.push(sample);
    }
    sim.stop().await;
    Ok(samples)
}

async fn measure_count(
    env: &Env,
    cluster: &OwnPgCluster,
    sim: &SimProcess,
    dir: &Path,
    count: usize,
    locations: u32,
) -> anyhow::Result<ScaleSample> {
    let run_dir = dir.join(format!("r{count}"));
    std::fs::create_dir_all(&run_dir)?;
    let url = cluster.create_database(&format!("scale_r{count}")).await;
    // The same file for every replica.
    let config = sim.write_config(&run_dir, &url, Budget::ProductDefault)?;
    // Migrate first, so that the clock starts with the replicas' work, not the schema.
    let migrate = process::spawn(
        &env.bin,
        &config,
        &["migrate"],
        &run_dir.join("migrate.log"),
    )?;
    let migrated = tokio::task::spawn_blocking(move || migrate.wait()).await??;
    anyhow::ensure!(migrated.success, "convsync migrate failed");

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    sim.client.reset_requests().await?;
    let started = Instant::now();
    let mut replicas = Vec::new();
    for i in 1..=count {
        let name = format!("replica-{i}");
        let log = run_dir.join(format!("{name}.log"));
        replicas.push((
            name.clone(),
            process::spawn_with_env(
                &env.bin,
                &config,
                &["run"],
                &log,
                &[
                    ("CONVSYNC_REPLICAS__NAME", name.as_str()),
                    // One host: each replica's health endpoint on a port of its own.
                    ("CONVSYNC_HEALTH__LISTEN", "127.0.0.1:0"),
                ],
            )?,
        ));
    }
    let first_full_sync = loop {
        let caught_up: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT source) FROM sync_runs WHERE outcome = 'caught_up'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
        if caught_up >= i64::from(locations) {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < FULL_SYNC_TIMEOUT,
            "only {caught_up} of {locations} locations caught up after {FULL_SYNC_TIMEOUT:?} (see {})",
            run_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let requests = crate::data_requests(&sim.client.requests().await?, Platform::HighLevel).0;
    let shares: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT owner, count(*) FROM leases
         WHERE owner IS NOT NULL AND released_at IS NULL AND expires_at > clock_timestamp()
         GROUP BY owner",
    )
    .fetch_all(&pool)
    .await
    .context("reading the leases")?
    .into_iter()
    .collect();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM conversations")
        .fetch_one(&pool)
        .await?;
    pool.close().await;
    let mut per_replica = Vec::new();
    for (name, running) in replicas {
        running.terminate();
        let stats = tokio::task::spawn_blocking(move || running.wait()).await??;
        let scopes = shares.get(&name).copied().unwrap_or(0);
        per_replica.push((name, scopes, stats));
    }
    Ok(ScaleSample {
        replicas: count,
        locations,
        rows: rows as u64,
        first_full_sync,
        requests,
        per_replica,
    })
}

/// The table for BENCHMARKS.md.
pub fn print(samples: &[ScaleSample]) {
    if samples.is_empty() {
        return;
    }
    println!("### Scale-out: HighLevel locations across replicas (PostgreSQL)\n");
    println!(
        "| replicas | locations | rows | first full sync s | requests/s | scopes per replica | CPU s per replica | peak RSS MiB per replica |"
    );
    println!("|---:|---:|---:|---:|---:|---|---|---|");
    for s in samples {
        let each = |f: &dyn Fn(&(String, i64, ProcessStats)) -> String| {
            s.per_replica.iter().map(f).collect::<Vec<_>>().join(" / ")
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} |",
            s.replicas,
            s.locations,
            s.rows,
            s.first_full_sync.as_secs_f64(),
            s.requests_per_second(),
            each(&|(_, scopes, _)| scopes.to_string()),
            each(&|(_, _, stats)| format!("{:.1}", stats.cpu.as_secs_f64())),
            each(&|(_, _, stats)| format!("{:.1}", stats.peak_rss_mib)),
        );
    }
    println!();
}
