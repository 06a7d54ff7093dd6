//! `convsync verify [--source NAME] [--sample N | --full] [--json]`: each source's mirror
//! checked against its provider's listing, without writing a conversation
//! (docs/verify.md). Prints the drift found per kind with the ids (a bounded list) and
//! records each verification in `verifications`. Exit status: 0 no drift, 1 drift, 2 the
//! verification could not be done (the caller maps errors to 2).

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{DriftCounts, Store, VerifyMode};
use crate::sync::Engine;
use crate::sync::verify::{DriftIds, MAX_LISTED_IDS, Verification, VerifyOptions, verify_source};

/// What to verify.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// Only this source (default: every enabled source).
    #[arg(long, value_name = "NAME")]
    pub source: Option<String>,
    /// Check N random mirrored conversations only: the listing is read until each is found
    /// (or to its end), so missing conversations are not looked for.
    #[arg(long, value_name = "N", conflicts_with = "full")]
    pub sample: Option<u32>,
    /// Compare every listed and every mirrored conversation (the default).
    #[arg(long)]
    pub full: bool,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// One source's result as `--json` prints it.
#[derive(Debug, Serialize)]
struct SourceResult {
    source: String,
    mode: VerifyMode,
    walk: String,
    started_at: String,
    finished_at: String,
    checked: u64,
    drift: DriftCounts,
    ids: DriftIds,
    tolerated: u64,
    unresolved: u64,
    verified_through: Option<String>,
    requests: u64,
}

impl From<&Verification> for SourceResult {
    fn from(v: &Verification) -> Self {
        let r = &v.record;
        SourceResult {
            source: r.source.clone(),
            mode: r.mode,
            walk: r.walk.clone(),
            started_at: r.started_at.to_rfc3339_ticks(),
            finished_at: r.finished_at.to_rfc3339_ticks(),
            checked: r.checked,
            drift: r.drift,
            ids: v.ids.clone(),
            tolerated: v.tolerated,
            unresolved: v.unresolved,
            verified_through: r.verified_through.map(|t| t.to_rfc3339_ticks()),
            requests: r.requests,
        }
    }
}

/// Verifies the sources `args` names and prints the results. Returns whether any drift
/// was found.
pub async fn run(
    config_path: &Path,
    args: &VerifyArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<bool> {
    let config = super::load_config(config_path)?;
    if let Some(name) = &args.source {
        super::enabled_source(&config, name)?;
    }
    let store = Store::open(&config.store)
        .await
        .with_context(|| format!("opening {}", crate::store::shown_url(&config.store.url)))?;
    let result = verify_all(&config, &store, args, &shutdown).await;
    store.close().await;
    let results = result?;
    let drifted = results.iter().any(Verification::drifted);
    if args.json {
        let sources: Vec<SourceResult> = results.iter().map(SourceResult::from).collect();
        let out = serde_json::json!({ "drift": drifted, "sources": sources });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&results));
    }
    Ok(drifted)
}

async fn verify_all(
    config: &Config,
    store: &Store,
    args: &VerifyArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<Verification>> {
    let engine = Engine::new(store.clone(), &config.http, &config.sources)
        .context("building the HTTP client")?;
    let options = VerifyOptions {
        sample: args.sample,
    };
    let mut results = Vec::new();
    for source in engine
        .sources()
        .iter()
        .filter(|s| args.source.as_ref().is_none_or(|n| *n == s.name))
    {
        let verification = verify_source(source, store, options, shutdown)
            .await
            .with_context(|| format!("verifying {}", source.name))?;
        results.push(verification);
    }
    Ok(results)
}

/// The text report: a table of counts, then each drifted id list.
fn render(results: &[Verification]) -> String {
    let mut table = super::table::plain([
        "source",
        "mode",
        "checked",
        "missing",
        "stale",
        "extra",
        "deleted_listed",
        "requests",
    ]);
    for v in results {
        let r = &v.record;
        table.add_row([
            r.source.clone(),
            r.mode.as_str().to_owned(),
            r.checked.to_string(),
            r.drift.missing.to_string(),
            r.drift.stale.to_string(),
            r.drift.extra.to_string(),
            r.drift.deleted_listed.to_string(),
            r.requests.to_string(),
        ]);
    }
    let mut out = format!("{table}\n");
    for v in results {
        let lists = [
            ("missing", &v.ids.missing),
            ("stale", &v.ids.stale),
            ("extra", &v.ids.extra),
            ("deleted_listed", &v.ids.deleted_listed),
        ];
        for ((kind, ids), (_, count)) in lists.into_iter().zip(v.record.drift.by_kind()) {
            if ids.is_empty() {
                continue;
            }
            let more = count.saturating_sub(ids.len() as u64);
            let tail = if more > 0 {
                format!(" (+{more} more; {MAX_LISTED_IDS} listed at most)")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{} {kind}: {}{tail}\n",
                v.record.source,
                ids.join(", ")
            ));
        }
    }
    let drifted = results.iter().filter(|v| v.drifted()).count();
    out.push_str(&if drifted == 0 {
        "no drift\n".to_owned()
    } else {
        format!("DRIFT in {drifted} source(s)\n")
    });
    out
}
