//! The change history's cost (`-- --history`, alone): the same backfill with the history
//! off (its triggers removed and nothing written), with `[history] backfill = "none"` and
//! with the default `"first_seen"` (one event row per conversation, written in the page's
//! transaction: by SQLite's new-row fast path, by PostgreSQL's statement trigger), on each
//! backend asked for, runs interleaved so that a busy moment of the machine hits every
//! variant alike. The ratio to "off" is the history's price.

use std::path::Path;

use convsync::store::{Store, StoreSettings};
use convsync_sim::Platform;

use crate::process::{self, ProcessStats};
use crate::simproc::{self, Budget, SimProcess};
use crate::{
    Args, BackendArg, Checks, Env, distinct, fresh_mirror, load_average_now, load_range, median,
    table_head,
};

/// How a backfill treats the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The history's triggers dropped before the sync (and, on SQLite, whose fast path
    /// writes `first_seen` itself, `backfill = "none"`): the cost of a mirror without it.
    Off,
    /// `[history] backfill = "none"`: the history is there and the backfill writes nothing.
    Quiet,
    /// The default: a `first_seen` row per conversation.
    FirstSeen,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Off, Variant::Quiet, Variant::FirstSeen];

    fn label(self) -> &'static str {
        match self {
            Variant::Off => "off (no history)",
            Variant::Quiet => "backfill = \"none\"",
            Variant::FirstSeen => "backfill = \"first_seen\" (default)",
        }
    }
}

/// One backfill's figures.
struct Sample {
    provider: Platform,
    size: u32,
    backend: BackendArg,
    variant: Variant,
    sync: ProcessStats,
    events: i64,
    /// The 1-minute load average as the sync started.
    load: f64,
}

/// Runs the scenario for every provider and size asked for; prints its table.
pub async fn measure(env: &Env, args: &Args, checks: &mut Checks) -> anyhow::Result<()> {
    let mut samples = Vec::new();
    for &provider in &args.providers {
        for &size in &args.sizes {
            let dir = env.work.join(format!("history-{provider}-{size}"));
            std::fs::create_dir_all(&dir)?;
            let sim = SimProcess::start(
                &env.bin,
                provider,
                size,
                &simproc::unlimited_flags(),
                &dir.join("simulator.log"),
            )
            .await?;
            for run in 0..args.runs {
                for &backend in &args.backends {
                    for variant in Variant::ALL {
                        let run_dir = dir.join(format!("{backend:?}-{variant:?}-{run}"));
                        std::fs::create_dir_all(&run_dir)?;
                        let sample = backfill(env, &sim, size, backend, variant, &run_dir).await?;
                        eprintln!(
                            "[history {provider} N={size} {backend:?} run {run}] {}: {:.2} s wall, {:.2} s CPU, {} events (load {:.2})",
                            variant.label(),
                            sample.sync.wall.as_secs_f64(),
                            sample.sync.cpu.as_secs_f64(),
                            sample.events,
                            sample.load
                        );
                        checks.expect(
                            sample.sync.success,
                            format!("history {provider} {backend:?} {variant:?}: sync failed"),
                        );
                        checks.expect(
                            (sample.events > 0) == (variant == Variant::FirstSeen),
                            format!(
                                "history {provider} {backend:?} {variant:?}: {} events",
                                sample.events
                            ),
                        );
                        samples.push(sample);
                        if !args.keep {
                            let _ = std::fs::remove_dir_all(&run_dir);
                        }
                    }
                }
            }
            sim.stop().await;
        }
    }
    print(&samples);
    Ok(())
}

/// One backfill of `sim`'s world into a fresh mirror on `backend`, prepared for `variant`.
async fn backfill(
    env: &Env,
    sim: &SimProcess,
    size: u32,
    backend: BackendArg,
    variant: Variant,
    run_dir: &Path,
) -> anyhow::Result<Sample> {
    let (_postgres, url) = fresh_mirror(backend, run_dir).await;
    let store = Store::open(&StoreSettings {
        url: url.clone(),
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?;
    if variant == Variant::Off {
        let drops: &[&str] = match backend {
            // The first-seen trigger went in migration 0011.
            BackendArg::Sqlite => &["DROP TRIGGER conversation_changed"],
            BackendArg::Postgres => &[
                "DROP TRIGGER conversation_first_seen ON conversations",
                "DROP TRIGGER conversation_changed ON conversations",
            ],
        };
        for drop in drops {
            execute(&store, drop).await?;
        }
    }
    store.close().await;
    let config = sim.write_config(run_dir, &url, Budget::Unlimited)?;
    let writes_nothing =
        variant == Variant::Quiet || (variant == Variant::Off && backend == BackendArg::Sqlite);
    if writes_nothing {
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str("\n[history]\nbackfill = \"none\"\n");
        std::fs::write(&config, text)?;
    }
    let load = load_average_now();
    let sync = process::sync_once(&env.bin, &config, &run_dir.join("sync.log")).await?;
    let store = Store::connect(&StoreSettings {
        url,
        max_connections: 1,
        ..StoreSettings::default()
    })
    .await?;
    let events = store.events_after(0, None, u32::MAX).await?.len() as i64;
    store.close().await;
    Ok(Sample {
        provider: sim.provider,
        size,
        backend,
        variant,
        sync,
        events,
        load,
    })
}

/// Runs one statement on the store's own pool.
async fn execute(store: &Store, sql: &str) -> anyhow::Result<()> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if let Some(sqlite) = store.as_sqlite() {
        sqlx::query(sql).execute(sqlite.pool()).await?;
    } else if let Some(postgres) = store.as_postgres() {
        sqlx::query(sql).execute(postgres.pool()).await?;
    }
    Ok(())
}

fn print(samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    table_head(
        "Change history: backfill with and without events (medians)",
        &[
            "provider",
            "N",
            "backend",
            "history",
            "runs",
            "sync wall s",
            "sync CPU s",
            "events",
            "wall vs off",
            "CPU vs off",
            "load average (1 min) at start",
        ],
        "lrllrrrrrrl",
    );
    let mut paired = Vec::new();
    let keys = distinct(samples.iter().map(|s| (s.provider, s.size, s.backend)));
    for (provider, size, backend) in keys {
        let of = |variant: Variant| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| {
                    (s.provider, s.size, s.backend, s.variant) == (provider, size, backend, variant)
                })
                .collect()
        };
        let wall = |v: &[&Sample]| median(v.iter().map(|s| s.sync.wall.as_secs_f64()).collect());
        let cpu_of = |v: &[&Sample]| median(v.iter().map(|s| s.sync.cpu.as_secs_f64()).collect());
        let off = wall(&of(Variant::Off));
        let off_cpu = cpu_of(&of(Variant::Off));
        for variant in Variant::ALL {
            let runs = of(variant);
            let cpu = cpu_of(&runs);
            let events = runs.last().map_or(0, |s| s.events);
            println!(
                "| {provider} | {size} | {backend:?} | {} | {} | {:.2} | {:.2} | {events} | {:+.1} % | {:+.1} % | {} |",
                variant.label(),
                runs.len(),
                wall(&runs),
                cpu,
                (wall(&runs) / off - 1.0) * 100.0,
                (cpu / off_cpu - 1.0) * 100.0,
                load_range(runs.iter().map(|s| s.load))
            );
        }
        paired.push(format!(
            "{provider} N={size} {backend:?}: {}",
            per_run(&of(Variant::Off), &of(Variant::FirstSeen))
        ));
    }
    println!("\nPer run, the default against the run's own *off* (wall):");
    for line in paired {
        println!("- {line}");
    }
    println!();
}

/// Each run's `on` wall time against the same run's `off` ("+8.1 %, +12.0 %, …"): runs
/// are interleaved, so a pair shared the machine's load.
fn per_run(off: &[&Sample], on: &[&Sample]) -> String {
    off.iter()
        .zip(on)
        .map(|(off, on)| {
            format!(
                "{:+.1} %",
                (on.sync.wall.as_secs_f64() / off.sync.wall.as_secs_f64() - 1.0) * 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
