//! `convsync purge --dry-run|--apply`: applies `[retention]` now. Needs only `[database]`
//! and `[retention]` from the configuration (no secrets), and runs beside the daemon.

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::store::{Store, StoreSettings, shown_url};
use crate::time::Timestamp;

/// Purges (or with `apply = false` counts) what `[retention]` says is past keeping.
pub async fn run(config_path: &Path, apply: bool) -> anyhow::Result<()> {
    let file = Config::load_file(config_path)
        .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
    let settings = file
        .retention
        .validate()
        .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
    if !settings.policy.is_active() {
        println!("[retention] sets no key: everything is kept, nothing to purge");
        return Ok(());
    }
    let store_settings = file
        .store_settings()
        .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
    let store = Store::open(&StoreSettings {
        max_connections: 1,
        ..store_settings
    })
    .await
    .with_context(|| format!("opening {}", shown_url(&file.database.url)))?;
    let result = store.purge(&settings.policy, Timestamp::now(), apply).await;
    store.close().await;
    let counts = result.context("purging")?;
    let verb = if apply {
        "purged"
    } else {
        "would purge (dry run)"
    };
    if counts.is_empty() {
        println!("nothing to purge");
    }
    for (source, c) in &counts {
        // The history's count only where `events_after` asks for it.
        let events = match settings.policy.events_after {
            Some(_) => format!(", {} event(s)", c.events),
            None => String::new(),
        };
        println!(
            "{source}: {verb}: {} conversation(s) redacted, {} conversation(s) deleted, {} rejected record(s), {} sync run(s){events}",
            c.redacted, c.deleted, c.rejected_records, c.sync_runs
        );
    }
    Ok(())
}
