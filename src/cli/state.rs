//! `convsync state show|set`: each walk's watermark and page position, as text or as JSON
//! that `state set` writes back (to move a watermark by hand, or to restore one saved
//! before an experiment).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::database::{Mirror, ensure_no_daemon};
use crate::sync::WalkCursor;
use crate::time::Timestamp;

/// `convsync state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print each walk's watermark and page position of a source.
    Show {
        /// The source.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// Print JSON (the input `state set` takes).
        #[arg(long)]
        json: bool,
    },
    /// Write walk cursors back from the JSON `state show --json` prints. Walks the file
    /// does not name keep theirs. Refused while a daemon runs.
    Set {
        /// The source.
        #[arg(long, value_name = "NAME")]
        source: String,
        /// The JSON file (`-` for standard input).
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
    },
}

/// The JSON form of a source's state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceState {
    source: String,
    walks: BTreeMap<String, WalkCursor>,
}

/// Runs a `state` subcommand.
pub async fn run(command: StateCommand, mirror: Mirror) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::Show { source, json } => {
            super::sources::ensure_known(&mirror, &source).await?;
            let walks: BTreeMap<String, WalkCursor> = WalkCursor::load_all(&mirror.store, &source)
                .await?
                .into_iter()
                .collect();
            let state = SourceState { source, walks };
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                print!("{}", render(&state));
            }
        }
        StateCommand::Set { source, from } => {
            super::sources::ensure_known(&mirror, &source).await?;
            let text = if from.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&from)
                    .with_context(|| format!("reading {}", from.display()))?
            };
            let state: SourceState = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not the JSON `convsync state show --json` prints",
                    from.display()
                )
            })?;
            let current = WalkCursor::load_all(&mirror.store, &source).await?;
            check(&state, &source, &current)?;
            let _lock = ensure_no_daemon(&mirror.file)?;
            let walks = state
                .walks
                .iter()
                .map(|(walk, cursor)| Ok((walk.clone(), cursor.to_state()?)))
                .collect::<Result<_, crate::store::StoreError>>()?;
            mirror.store.write_cursors(&source, &walks).await?;
            println!("{source}: {} walk cursor(s) written", state.walks.len());
        }
    }
    mirror.store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Refuses a state meant for another source, walks the source does not have, and
/// watermarks in the future (they would skip everything up to then).
fn check(
    state: &SourceState,
    source: &str,
    current: &std::collections::HashMap<String, WalkCursor>,
) -> anyhow::Result<()> {
    if state.source != source {
        anyhow::bail!(
            "the file holds the state of {:?}, not {source:?}: nothing written",
            state.source
        );
    }
    let now = Timestamp::now();
    for (walk, cursor) in &state.walks {
        if !current.is_empty() && !current.contains_key(walk) {
            let mut known: Vec<&str> = current.keys().map(String::as_str).collect();
            known.sort_unstable();
            anyhow::bail!(
                "{source} has no walk {walk:?} (its walks: {}): nothing written",
                known.join(", ")
            );
        }
        if let Some(w) = cursor.watermark.filter(|w| *w > now) {
            anyhow::bail!(
                "walk {walk:?}: watermark {w} is in the future and would skip everything until \
                 then: nothing written"
            );
        }
    }
    Ok(())
}

fn render(state: &SourceState) -> String {
    if state.walks.is_empty() {
        return format!("{}: no walk has run yet\n", state.source);
    }
    let dash = || "-".to_owned();
    let mut table = super::table::plain([
        "walk",
        "watermark",
        "position",
        "walk started",
        "last completed",
    ]);
    for (walk, c) in &state.walks {
        table.add_row([
            walk.clone(),
            c.watermark.map_or_else(dash, |t| t.to_string()),
            c.position.as_ref().map_or_else(dash, |p| p.to_string()),
            c.walk_started_at.map_or_else(dash, |t| t.to_string()),
            c.last_completed_at.map_or_else(dash, |t| t.to_string()),
        ]);
    }
    format!("{}\n{table}\n", state.source)
}
