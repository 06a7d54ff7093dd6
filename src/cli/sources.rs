//! `convsync sources list|rename|forget`: the source names the database holds rows for,
//! next to the ones the configuration names; and, at the start of `run` and `sync`, the
//! move of rows stored under a name of the old scheme (a one-location HighLevel or one-app
//! Sinch source was stored under the bare entry name) to the stable `name/account` one.

use std::process::ExitCode;

use clap::Subcommand;

use super::database::{Mirror, ensure_no_daemon};
use crate::app::unconfigured;
use crate::config::ConfiguredSource;
use crate::store::{RenameOutcome, StoredSource};

/// `convsync sources ...`.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// List the configured sources and every source the database holds rows for; rows of
    /// sources no longer configured are marked "not configured".
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move a source's rows, cursors and run history to a new name (e.g. after renaming its
    /// `[[sources]]` entry), so the next cycle continues where it stood. Refused while a
    /// daemon runs and when NEW already has rows.
    Rename {
        /// The name the rows are stored under.
        old: String,
        /// The name to store them under.
        new: String,
    },
    /// Delete every row, cursor and run of a source that is no longer configured. Without
    /// --yes, only says what would be deleted (and exits non-zero).
    Forget {
        /// The source name.
        name: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// One line of `sources list`.
#[derive(Debug, serde::Serialize)]
struct Listed {
    name: String,
    provider: Option<String>,
    state: &'static str,
    rows: u64,
    walks: u64,
    runs: u64,
}

/// Runs a `sources` subcommand.
pub async fn run(command: SourcesCommand, mirror: Mirror) -> anyhow::Result<ExitCode> {
    let Mirror {
        file,
        sources,
        store,
    } = mirror;
    let code = match command {
        SourcesCommand::List { json } => {
            let listed = list(&sources, store.stored_sources().await?);
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                let mut table =
                    super::table::plain(["source", "provider", "state", "rows", "walks", "runs"]);
                for l in &listed {
                    table.add_row([
                        l.name.clone(),
                        l.provider.clone().unwrap_or_else(|| "-".into()),
                        l.state.to_owned(),
                        l.rows.to_string(),
                        l.walks.to_string(),
                        l.runs.to_string(),
                    ]);
                }
                println!("{table}");
            }
            ExitCode::SUCCESS
        }
        SourcesCommand::Rename { old, new } => {
            let _lock = ensure_no_daemon(&file)?;
            match store.rename_source(&old, &new).await? {
                RenameOutcome::Renamed { rows } => {
                    println!("{old} renamed to {new}: {rows} row(s), cursors and run history kept");
                    if !sources.iter().any(|s| s.name == new) {
                        println!(
                            "note: {new:?} is not a configured source name; `convsync sources list` shows the names"
                        );
                    }
                    ExitCode::SUCCESS
                }
                RenameOutcome::NothingToRename => {
                    anyhow::bail!("the database holds nothing under {old:?}: nothing renamed")
                }
                RenameOutcome::TargetInUse => anyhow::bail!(
                    "the database already holds rows or cursors under {new:?}: nothing renamed \
                     (`convsync sources forget {new}` first if they are not wanted)"
                ),
            }
        }
        SourcesCommand::Forget { name, yes } => {
            if sources.iter().any(|s| s.name == name) {
                anyhow::bail!(
                    "{name:?} is still configured: remove it from the configuration first, or use \
                     `convsync reset --source {name}` to re-read it"
                );
            }
            let Some(held) = store
                .stored_sources()
                .await?
                .into_iter()
                .find(|s| s.name == name)
            else {
                anyhow::bail!("the database holds nothing under {name:?}: nothing to forget");
            };
            let what = format!(
                "{} row(s), {} walk cursor(s) and {} run(s) of {name}",
                held.rows, held.walks, held.runs
            );
            if yes {
                let _lock = ensure_no_daemon(&file)?;
                store.forget_source(&name).await?;
                println!("deleted {what}");
                ExitCode::SUCCESS
            } else {
                super::tell_operator(&format!(
                    "would delete {what}; nothing changed. Add --yes to delete them."
                ));
                ExitCode::FAILURE
            }
        }
    };
    store.close().await;
    Ok(code)
}

fn list(configured: &[ConfiguredSource], stored: Vec<StoredSource>) -> Vec<Listed> {
    let mut listed: Vec<Listed> = configured
        .iter()
        .map(|c| {
            let held = stored.iter().find(|s| s.name == c.name);
            Listed {
                name: c.name.clone(),
                provider: Some(c.provider.clone()),
                state: if c.enabled { "enabled" } else { "disabled" },
                rows: held.map_or(0, |s| s.rows),
                walks: held.map_or(0, |s| s.walks),
                runs: held.map_or(0, |s| s.runs),
            }
        })
        .collect();
    listed.extend(unconfigured(configured, stored).map(|s| Listed {
        name: s.name,
        provider: None,
        state: "not configured",
        rows: s.rows,
        walks: s.walks,
        runs: s.runs,
    }));
    listed
}

/// Checks that a `--source` names a configured source or one the database holds.
pub async fn ensure_known(mirror: &Mirror, name: &str) -> anyhow::Result<()> {
    let stored = mirror.store.stored_sources().await?;
    if mirror.sources.iter().any(|s| s.name == name) || stored.iter().any(|s| s.name == name) {
        return Ok(());
    }
    anyhow::bail!(
        "no source named {name:?} in the configuration or the database (configured: {}; \
         `convsync sources list` shows them all)",
        mirror
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
