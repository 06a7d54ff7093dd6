//! `convsync migrate` and `convsync reset`: the two commands that change the database's
//! schema or cursors on an operator's request, each saying exactly what it did.

use std::path::Path;

use anyhow::Context;

use super::database::Mirror;
use crate::store::{Store, StoreSettings, shown_url};
use crate::time::Timestamp;

/// Creates or upgrades the schema; returns the sentence saying which.
pub async fn migrate(settings: &StoreSettings) -> anyhow::Result<String> {
    let store = Store::connect(settings)
        .await
        .with_context(|| format!("opening {}", shown_url(&settings.url)))?;
    let before = store.applied_migrations().await?;
    store.migrate(&settings.url).await?;
    let after = store.applied_migrations().await?;
    store.close().await;
    let applied: Vec<String> = after
        .iter()
        .filter(|v| !before.contains(v))
        .map(i64::to_string)
        .collect();
    let version = after.last().copied().unwrap_or(0);
    let database = shown_url(&settings.url);
    Ok(if before.is_empty() {
        format!("{database}: created the schema (version {version})")
    } else if applied.is_empty() {
        format!("{database}: schema already up to date (version {version}); nothing changed")
    } else {
        format!(
            "{database}: upgraded the schema to version {version} (applied migration(s) {})",
            applied.join(", ")
        )
    })
}

/// Moves a source's watermarks back to `since` (RFC 3339; from the beginning without it),
/// or with `dry_run` only prints what that would do. A `since` in the future is refused:
/// it would move nothing back, and a reset that "succeeds" without effect misleads.
pub async fn reset(
    config_path: &Path,
    source: &str,
    since: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let since = since
        .map(|s| {
            Timestamp::parse_rfc3339(s)
                .with_context(|| "--since must be RFC 3339, e.g. 2026-01-31T00:00:00Z")
        })
        .transpose()?;
    if let Some(t) = since.filter(|t| *t > Timestamp::now()) {
        anyhow::bail!(
            "--since {t} is in the future: a reset can only move watermarks back (nothing changed)"
        );
    }
    let mirror = Mirror::open(config_path).await?;
    super::sources::ensure_known(&mirror, source).await?;
    // A one-shot write waits out another writer's lock like the daemon's writes do.
    let limit = mirror
        .file
        .sources
        .iter()
        .map(|s| s.stall_timeout)
        .max()
        .unwrap_or(mirror.file.database.busy_timeout);
    let resets = crate::store::while_busy(
        limit,
        &super::shutdown_on_signals(),
        "resetting the source",
        || crate::sync::reset_source(&mirror.store, source, since, !dry_run),
    )
    .await?;
    mirror.store.close().await;
    let verb = if dry_run { "would re-read" } else { "re-reads" };
    for r in &resets {
        match (r.before, r.after) {
            // Sweeps keep no watermark: only a sweep in progress is abandoned.
            (None, None) => println!(
                "{source}: walk {} has no watermark; a walk in progress starts over",
                r.walk
            ),
            (before, after) => println!(
                "{source}: walk {} {verb} from {} (watermark was {})",
                r.walk,
                after.map_or_else(|| "the beginning".to_owned(), |t| t.to_string()),
                before.map_or_else(|| "-".to_owned(), |t| t.to_string())
            ),
        }
    }
    match (resets.is_empty(), dry_run) {
        (true, _) => println!("{source}: no walk has run yet; nothing to reset"),
        (false, true) => println!("dry run: nothing changed"),
        (false, false) => println!(
            "{source}: {} walk(s) reset; the next cycle re-reads from there",
            resets.len()
        ),
    }
    Ok(())
}
