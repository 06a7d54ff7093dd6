//! The daemon's retention schedule: applies `[retention]` once at start and then every
//! `retention.interval`, beside the source tasks. A failed purge is logged and retried at
//! the next tick; it never stops the daemon.

use tokio_util::sync::CancellationToken;

use crate::config::RetentionSettings;
use crate::store::Store;
use crate::time::Timestamp;

/// Runs until `shutdown`; returns at once when no retention key is set.
pub async fn run_retention(store: Store, settings: RetentionSettings, shutdown: CancellationToken) {
    if !settings.policy.is_active() {
        return;
    }
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.purge(&settings.policy, Timestamp::now(), true).await {
            Ok(counts) => {
                for (source, c) in counts {
                    tracing::info!(
                        source = %source,
                        redacted = c.redacted,
                        deleted = c.deleted,
                        rejected_records = c.rejected_records,
                        sync_runs = c.sync_runs,
                        events = c.events,
                        "retention purge applied"
                    );
                }
            }
            Err(e) => tracing::warn!(
                source = "retention",
                error = %e,
                "retention purge failed; retried at the next interval"
            ),
        }
    }
}
