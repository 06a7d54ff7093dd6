//! The command line: `run`, `sync --once`, `status`, `reset`, `check-config`, `migrate`,
//! `sources`, `state`, `credentials`, and the files a package installs (`completions`, `man`).
//! Each command loads what it needs and calls into the library; nothing here knows SQL or
//! a provider's fields.

mod backup;
pub mod changes;
mod credentials;
mod database;
#[cfg(feature = "sim")]
mod demo;
mod export;
mod install_files;
mod maintenance;
mod progress;
mod purge;
#[cfg(feature = "sim")]
mod simulate;
mod sources;
mod state;
mod status;
mod table;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{self, Config};
use crate::store::StoreSettings;
use crate::sync::CycleOptions;
use crate::telemetry::{self, LogFormat};
use crate::time::Timestamp;

/// convsync keeps a local SQL mirror of the conversations held by contact-center and
/// messaging platforms (Dynamics 365 Contact Center, Spruce Health, Sinch, HighLevel).
///
/// Start with `convsync check-config --config convsync.toml`, then `convsync sync --once`
/// for a first backfill, then `convsync run` as a service. `convsync status` shows where
/// each source stands.
#[derive(Debug, Parser)]
#[command(name = "convsync", version, about, long_about)]
#[cfg_attr(
    not(feature = "sim"),
    command(
        after_help = "This build has no provider simulator: `simulate` and `demo` come with the \
                      default build (cargo feature `sim`)."
    )
)]
pub struct Cli {
    /// Configuration file (TOML). Default: $CONVSYNC_CONFIG, else ./convsync.toml.
    #[arg(long, short, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log line format on stderr. With json, every stderr line is a JSON object (errors,
    /// warnings and `sync --once` verdicts included; the source's name at the top level);
    /// a command's result stays on stdout (text, or JSON where --json asks for it).
    /// Verbosity follows RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "CONVSYNC_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: poll every enabled source forever; stop gracefully on SIGINT/SIGTERM.
    Run,
    /// Run one sync of each source (or one source) until it is caught up, then exit.
    /// Exits non-zero if any source failed.
    Sync {
        /// Required: one pass, then exit (use `convsync run` for the daemon).
        #[arg(long, required = true)]
        once: bool,
        /// Only this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Also run every sweep (closures, deletions) now, even if not due.
        #[arg(long)]
        full: bool,
    },
    /// Show each source's watermark, lag, last run and row counts, including sources the
    /// database holds rows for that are no longer configured. Reads the database only
    /// (no secret is read); exits non-zero if the database does not exist.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move a source's watermarks back so the next cycle re-reads from there (or from the
    /// beginning without --since). Rows are kept; re-read rows are updated in place. Reads
    /// the database only (no secret is read).
    Reset {
        /// The source to reset.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// Re-sync from this instant in the past (RFC 3339, e.g. 2026-01-31T00:00:00Z).
        #[arg(long, value_name = "RFC3339")]
        since: Option<String>,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the configuration (and that every secret can be read), report every
    /// mistake found, then exit (non-zero if there was any).
    CheckConfig,
    /// Create or upgrade the database schema, say which migrations were applied, then exit.
    Migrate,
    /// Write a consistent copy of the mirror database to FILE (mode 0600) while the
    /// daemon keeps running. Never overwrites FILE. (Copying the live file is not a backup.)
    Backup {
        /// The new file to write.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Write a report view (`v1_conversations`, `v1_awaiting_reply`, `v1_daily_volume`)
    /// to FILE as CSV, JSON Lines or Parquet, streaming: memory stays flat at any size. FILE
    /// appears only once complete; an existing FILE is kept unless --force.
    Export(export::ExportArgs),
    /// Replace the mirror database with a backup, after checking it. Refused while a
    /// daemon runs; the current database is moved aside, not deleted.
    Restore {
        /// The backup written by `convsync backup`.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Apply `[retention]` now: redact or delete conversations that ended long ago and
    /// trim `rejected_records` and `sync_runs`. Runs beside the daemon.
    Purge {
        /// Only print what would be purged.
        #[arg(long, required_unless_present = "apply", conflicts_with = "apply")]
        dry_run: bool,
        /// Purge, and record the counts in `retention_purges`.
        #[arg(long)]
        apply: bool,
    },
    /// Print the change history (`conversation_events`) in `seq` order, as JSON lines or
    /// CSV: every committed change exactly once. Store the last `seq` you processed and
    /// resume with `--after` it to feed a warehouse or a queue incrementally. Reads the
    /// database only (no secret is read), beside the daemon.
    Changes {
        /// Print the events after this `seq` (0: from the start of the history).
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: i64,
        /// Keep waiting for new events until SIGINT/SIGTERM.
        #[arg(long)]
        follow: bool,
        /// Only this source's events.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: changes::ChangesFormat,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Check the mirror against each source's provider (or one source) without writing a
    /// conversation: report conversations missing, stale, extra and deleted-but-listed,
    /// with their ids, and record the verification. Exits 0 when there is no drift, 1 on
    /// drift, 2 when a verification could not be done.
    Verify(verify::VerifyArgs),
    /// Manage stored credentials (`credentials set-refresh-token --source NAME`).
    Credentials {
        /// What to do.
        #[command(subcommand)]
        action: credentials::CredentialsCommand,
    },
    /// List the sources the configuration names and the database holds; rename or forget
    /// the rows of a source.
    #[command(subcommand)]
    Sources(sources::SourcesCommand),
    /// Show or set each walk's watermark and page position of a source.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Serve the bundled provider simulator (all four APIs on 127.0.0.1) until Ctrl-C.
    /// Prints the URLs and a ready-to-paste convsync configuration.
    #[cfg(feature = "sim")]
    Simulate(convsync_sim::SimOptions),
    /// Start the simulator and the daemon together, sync all four providers into a local
    /// SQLite file with live progress, then print a summary and a sample report.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// Ask a running `convsync run` whether it is ready (`/readyz`: database writable,
    /// every source synced recently) or, with --live, alive (`/healthz`). Exits 0 when it
    /// is, 1 when not; prints the endpoint's JSON verdict. Used by container health checks.
    Health {
        /// Ask only whether the process and its supervisor are alive.
        #[arg(long)]
        live: bool,
        /// Base URL of the endpoint (default: from `[health] listen` in the configuration).
        #[arg(long, value_name = "URL")]
        url: Option<url::Url>,
    },
    /// Print a shell completion script on stdout, e.g. `source <(convsync completions bash)`.
    /// The Debian package installs them for bash, zsh and fish.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (`convsync.1` and one per subcommand, `convsync-run.1`, ...) into a
    /// directory. The Debian package installs them.
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Parses the command line and runs the command: the whole of `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage mistake under `--log-format json` is a JSON line like any other error;
        // help, version and the pretty format keep clap's own output.
        Err(e) if e.use_stderr() && json_asked() => {
            telemetry::init(LogFormat::Json);
            tracing::error!(usage = %e.render(), "invalid command line: {}", e.kind());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(code) => code,
        // Once, as a log line: a second plain `error:` line repeated it and was not
        // JSON under `--log-format json`.
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the command line or the environment asks for JSON logs, read without clap for
/// a command line clap refused.
fn json_asked() -> bool {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let in_args = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json");
    in_args || std::env::var("CONVSYNC_LOG_FORMAT").is_ok_and(|v| v == "json")
}

/// A line for the operator on stderr that is no log event of the work itself (a refusal
/// that changed nothing): plain text, or a JSON warning under `--log-format json`, so that
/// stderr stays one stream of JSON lines there.
fn tell_operator(text: &str) {
    if telemetry::json_logs() {
        tracing::warn!("{text}");
    } else {
        eprintln!("{text}");
    }
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let log_format = cli.log_format;
    let config_path = config::resolve_path(cli.config.clone());
    match cli.command {
        Command::CheckConfig => {
            let file = Config::load_file(&config_path)
                .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
            let config = match Config::validate_all(file) {
                Ok(config) => config,
                Err(mistakes) => {
                    if telemetry::json_logs() {
                        for mistake in &mistakes {
                            tracing::error!(
                                file = %config_path.display(),
                                mistake = %mistake,
                                "configuration mistake"
                            );
                        }
                    } else {
                        eprintln!("{}: {} mistake(s):", config_path.display(), mistakes.len());
                        for mistake in &mistakes {
                            eprintln!("  {mistake}");
                        }
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            println!(
                "{}: OK — {} source(s) enabled{}",
                config_path.display(),
                config.sources.len(),
                if config.disabled_sources.is_empty() {
                    String::new()
                } else {
                    format!(", disabled: {}", config.disabled_sources.join(", "))
                }
            );
            let mut table = table::plain(["source", "provider", "account", "every"]);
            for s in &config.sources {
                table.add_row([
                    s.name.clone(),
                    s.setup.provider.kind().to_string(),
                    s.setup.provider.account().to_owned(),
                    humantime::format_duration(s.schedule.poll_interval).to_string(),
                ]);
            }
            for d in &config.directories {
                table.add_row([
                    format!("{}/*", d.entry),
                    d.kind.to_string(),
                    "each installed location, listed at start".to_owned(),
                    humantime::format_duration(d.schedule.poll_interval).to_string(),
                ]);
            }
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { live, url } => {
            let base = match url {
                Some(url) => url,
                None => {
                    let health = if config_path.exists() {
                        Config::load_file(&config_path)?.health
                    } else {
                        config::HealthConfig::default()
                    };
                    let listen = crate::health::listen_address(&health.listen)?;
                    crate::health::probe::local_base_url(listen)
                }
            };
            let check = if live {
                crate::health::probe::Check::Live
            } else {
                crate::health::probe::Check::Ready
            };
            let answer = crate::health::probe::probe(&base, check).await?;
            println!("{}", answer.body);
            if !answer.healthy {
                tracing::error!(url = %answer.url, status = %answer.status, "not healthy");
            }
            Ok(if answer.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Completions { shell } => {
            install_files::write_completions(shell, &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            for page in install_files::write_man_pages(&out)? {
                println!("{}", out.join(page).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Simulate(options) => {
            simulate::run(options, shutdown_on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Demo(args) => {
            demo::run(args, shutdown_on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let file = Config::load_file(&config_path)?;
            let settings = StoreSettings {
                max_connections: 1,
                ..file.store_settings()?
            };
            println!("{}", maintenance::migrate(&settings).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let config = load_config(&config_path)?;
            // Signals first: a SIGTERM while the database is opened and migrated still
            // means a clean stop (exit 0), not death by the default signal action.
            let shutdown = shutdown_on_signals();
            let app = App::build(&config).await?;
            // Every source stopped on its own: exit non-zero, saying why, so that
            // systemd's Restart=on-failure (or an operator) notices.
            app.run_until_stopped(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            once: _,
            source,
            full,
        } => {
            let config = load_config(&config_path)?;
            if let Some(name) = &source {
                enabled_source(&config, name)?;
            }
            let shutdown = shutdown_on_signals();
            let app = App::build(&config).await?;
            let display = progress::ProgressDisplay::start(app.engine(), None);
            let results = app
                .sync_once(
                    source.as_deref(),
                    CycleOptions {
                        force_sweep: full,
                        ..CycleOptions::default()
                    },
                    shutdown,
                )
                .await?;
            display.finish().await;
            let mut failed = false;
            for r in &results {
                failed |= !r.succeeded();
                print_verdict(log_format, r);
            }
            app.close().await;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Status { json } => {
            let mirror = database::Mirror::open(&config_path).await?;
            // The refresh-token lines need the configured tokens' fingerprints, so only
            // where the secrets are readable here; everything else comes from the database.
            let refresh = match Config::load(&config_path) {
                Ok(config) => credentials::rotating_refresh_by_source(&config),
                Err(e) => {
                    tracing::debug!(error = %e, "status: secrets unreadable, refresh tokens not shown");
                    Default::default()
                }
            };
            let report =
                status::collect(&mirror.store, &mirror.sources, &refresh, Timestamp::now()).await?;
            mirror.store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { to } => {
            backup::backup(&config_path, &to).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(args) => {
            export::run(&config_path, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { from } => {
            backup::restore(&config_path, &from).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Purge { dry_run: _, apply } => {
            purge::run(&config_path, apply).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Changes {
            after,
            follow,
            source,
            format,
            limit,
        } => {
            let request = changes::ChangesRequest {
                after,
                follow,
                source,
                format,
                limit,
            };
            changes::run(&config_path, &request, shutdown_on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            match verify::run(&config_path, &args, shutdown_on_signals()).await {
                Ok(drift) => Ok(ExitCode::from(u8::from(drift))),
                Err(e) => {
                    tracing::error!("{e:#}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Command::Credentials { action } => {
            let config = load_config(&config_path)?;
            credentials::run(action, &config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reset {
            source,
            since,
            dry_run,
        } => {
            maintenance::reset(&config_path, &source, since.as_deref(), dry_run).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sources(command) => {
            sources::run(command, database::Mirror::open(&config_path).await?).await
        }
        Command::State(command) => {
            state::run(command, database::Mirror::open(&config_path).await?).await
        }
    }
}

/// The enabled source called `name`, or an error listing the configured ones.
fn enabled_source<'a>(
    config: &'a Config,
    name: &str,
) -> anyhow::Result<&'a crate::config::SourceSettings> {
    config
        .sources
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no enabled source named {name:?} (configured: {})",
                config
                    .sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("invalid configuration in {}", path.display()))
}

/// A token cancelled by the first SIGINT or SIGTERM. A second signal exits at once.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the page in flight");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One source's `sync --once` verdict: the command's result, so on stdout as a line of
/// text, or as a JSON event among the log lines under `--log-format json` (every line a
/// log shipper reads is then JSON).
fn print_verdict(format: telemetry::LogFormat, result: &crate::sync::OnceResult) {
    match format {
        telemetry::LogFormat::Pretty => println!("{:<24} {}", result.source, result.verdict()),
        telemetry::LogFormat::Json => tracing::info!(
            source = %result.source,
            succeeded = result.succeeded(),
            verdict = %result.verdict(),
            "sync --once result"
        ),
    }
}
