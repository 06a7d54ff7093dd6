//! `convsync demo`: the bundled simulator and the daemon together, so a newcomer sees the
//! mirror fill up without credentials or network access, then a summary and a report.
//! The simulator also signs webhooks for its activity and sends them to the daemon's
//! receiver, so the demo shows events making the mirror fresh beside polling
//! (`--no-webhooks`: polling alone, to compare).

mod freshness_table;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::database::Mirror;
use crate::app::App;
use crate::config::Config;
use crate::health::webhooks::freshness;
use crate::sim_config::{
    SecretPlacement, SourceTuning, WebhookKeys, convsync_sources, write_highlevel_public_key,
};
use crate::store::Store;
use convsync_sim::{SimOptions, Simulator};

/// Options of `convsync demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. `30s`, `5m`); without it, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Directory for the generated config, its secret files and the mirror database
    /// (`mirror.db`). The database is recreated on every run: the simulated world is new.
    #[arg(long, default_value = "convsync-demo")]
    pub dir: PathBuf,
    /// Poll interval of the sources (D365 sources poll at their 60 s minimum when this is
    /// shorter).
    #[arg(long, default_value = "10s")]
    pub poll_interval: String,
    /// Do not run the webhook receiver: the simulator sends no events and the mirror is
    /// as fresh as polling alone makes it.
    #[arg(long)]
    pub no_webhooks: bool,
    /// Simulator settings (world size, activity, faults).
    #[command(flatten)]
    pub sim: SimOptions,
}

/// Runs the demo.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sim = Simulator::start(args.sim.clone())
        .await
        .context("starting the provider simulator")?;
    let config_path = write_config(&args, &sim)?;
    println!(
        "simulator running; config written to {}",
        config_path.display()
    );
    println!(
        "(it points at this run's simulator, on ports chosen for this run: it works only while \
         this demo runs; `convsync simulate` prints a config for a simulator of your own)\n"
    );

    let config = Config::load(&config_path).context("loading the generated demo config")?;
    // The daemon `convsync run` starts, over the demo's mirror.
    let app = App::build(&config).await?.start(shutdown.clone()).await?;
    // The receiver took a free loopback port: the simulator learns it now, before the
    // sources run, so that events flow from the first poll on.
    let webhooks = match app.service().webhook_addr() {
        Some(addr) => {
            let base = format!("http://{addr}/webhooks/");
            sim.set_webhook_base(&base.parse()?)
                .context("pointing the simulator's webhooks at the receiver")?;
            println!(
                "webhooks: the simulator signs an event for each change and sends it to {base}NAME\n"
            );
            app.service().webhook_metrics().cloned()
        }
        None => None,
    };
    let sources = app.engine().sources().to_vec();
    if let Some(duration) = args.duration {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let display = super::progress::ProgressDisplay::start(app.engine(), webhooks.clone());
    app.run().await?;
    display.finish().await;
    sim.shutdown().await;

    // The daemon has stopped and closed the mirror: it is read as `convsync status` reads it.
    let store = Mirror::open(&config_path).await?.store;
    println!("\n{}", summary(&store).await?);
    if let Some(metrics) = &webhooks {
        let rows =
            freshness::read(metrics, &sources).context("reading the webhook receiver's metrics")?;
        println!("{}", freshness_table::render(&rows));
    }
    println!("{}", report(&store).await?);
    println!(
        "mirror: {} — open it with `sqlite3 {}` (schema: docs/schema.md)",
        args.dir.join("mirror.db").display(),
        args.dir.join("mirror.db").display()
    );
    store.close().await;
    Ok(())
}

fn write_config(args: &DemoArgs, sim: &convsync_sim::SimHandle) -> anyhow::Result<PathBuf> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    for stale in ["mirror.db", "mirror.db-wal", "mirror.db-shm"] {
        let path = dir.join(stale);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the previous demo's {}", path.display()))?;
        }
    }
    let webhooks = if args.no_webhooks {
        None
    } else {
        let path = dir.join("highlevel-webhook-public-key.pem");
        write_highlevel_public_key(&path).with_context(|| format!("writing {}", path.display()))?;
        Some(WebhookKeys {
            highlevel_public_key: path,
        })
    };
    // Port 0: the receiver takes a free loopback port for this run.
    let receiver = if webhooks.is_some() {
        "[webhooks]\nlisten = \"127.0.0.1:0\"\n\n"
    } else {
        ""
    };
    let generated = convsync_sources(
        sim,
        &SecretPlacement::Files(dir.join("secrets")),
        &SourceTuning {
            poll_interval: Some(args.poll_interval.clone()),
            sweep_interval: Some("2m".into()),
            highlevel_oauth: true,
            webhooks,
        },
    );
    generated
        .write_secret_files()
        .context("writing the demo's secret files")?;
    let toml = format!(
        "# Generated by `convsync demo` for the bundled simulator.\n\n[database]\nurl = \"sqlite://{}\"\n\n[health]\nenabled = false\n\n{receiver}{}",
        dir.join("mirror.db").display(),
        generated.toml
    );
    let path = dir.join("convsync.toml");
    std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn summary(store: &Store) -> anyhow::Result<String> {
    let mut table = super::table::plain([
        "source",
        "provider",
        "rows",
        "open",
        "awaiting",
        "closed/deleted",
        "cycles",
    ]);
    for row in store.source_summaries().await? {
        // `awaiting` is unknown where the provider does not say who wrote last (D365's
        // listing): shown as "–", not as a count of 0.
        table.add_row([
            row.source,
            row.provider,
            row.rows.to_string(),
            row.open.to_string(),
            row.awaiting
                .map_or_else(|| "–".to_owned(), |n| n.to_string()),
            row.closed_or_deleted.to_string(),
            row.cycles.to_string(),
        ]);
    }
    Ok(format!("{table}\n"))
}

async fn report(store: &Store) -> anyhow::Result<String> {
    let rows = store.longest_waiting().await?;
    let mut out = format!(
        "Sample report — who has waited longest for a reply:\n\n{};\n\n",
        store.waiting_query()
    );
    if rows.is_empty() {
        out.push_str("(no conversation is waiting for a reply)\n");
    }
    let dash = || "-".to_owned();
    for row in rows {
        out.push_str(&format!(
            "  {:<10} {:<28} {:<18} waiting since {}\n",
            row.provider,
            row.contact_name.unwrap_or_else(dash),
            row.channel_kind.unwrap_or_else(dash),
            row.waiting_since.unwrap_or_else(dash)
        ));
    }
    Ok(out)
}
