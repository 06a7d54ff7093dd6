//! The periodic re-listing of a directory entry's accounts while running: catches the
//! installs and uninstalls whose events were lost (HighLevel drops an event on any
//! failure but a 429) or arrived while the receiver was down or not configured.
//!
//! Every `relist_interval` of the directory the accounts are listed with the directory's credential
//! (bounded like the start-up listing) and the difference with the running accounts is
//! asked of the run loop as installs and uninstalls, the same changes the events ask for.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::discovery::Directory;
use super::registry::{AccountChange, SourceRegistry};
use crate::retry::sleep_unless_cancelled;

/// Lists `directory`'s accounts every `relist_interval` until `shutdown`.
pub(super) async fn run(
    directory: Arc<Directory>,
    registry: SourceRegistry,
    shutdown: CancellationToken,
) {
    let entry = directory.settings().entry.clone();
    let interval = directory.settings().directory.relist_interval();
    while sleep_unless_cancelled(interval, &shutdown).await {
        match directory.list().await {
            Ok(listed) => {
                for change in differences(&directory, &registry, &listed) {
                    registry.request(change);
                }
            }
            Err(e) => {
                tracing::warn!(source = %entry, error = %e, "re-listing the installed locations failed; the running ones keep running, the next re-listing tries again");
            }
        }
    }
}

/// The installs and uninstalls that make the running accounts of `directory` the
/// `listed` ones.
fn differences(
    directory: &Directory,
    registry: &SourceRegistry,
    listed: &[String],
) -> Vec<AccountChange> {
    let entry = &directory.settings().entry;
    let running: HashSet<String> = registry
        .snapshot()
        .iter()
        .filter_map(|s| {
            s.name
                .strip_prefix(entry.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_owned)
        })
        .collect();
    let listed_set: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let installs = listed
        .iter()
        .filter(|a| !running.contains(a.as_str()))
        .map(|account| AccountChange::Installed {
            entry: entry.clone(),
            account: account.clone(),
        });
    let uninstalls = running
        .iter()
        .filter(|a| !listed_set.contains(a.as_str()))
        .map(|account| AccountChange::Uninstalled {
            entry: entry.clone(),
            account: account.clone(),
        });
    installs.chain(uninstalls).collect()
}
