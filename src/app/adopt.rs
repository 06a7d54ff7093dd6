//! At the start of `run` and `sync`: the database's source names checked against the
//! configuration, so that a renamed or removed source never orphans rows silently.

use crate::config::ConfiguredSource;
use crate::store::{RenameOutcome, Store, StoreError, StoredSource};

/// The database's sources that the configuration does not name.
pub fn unconfigured(
    configured: &[ConfiguredSource],
    stored: Vec<StoredSource>,
) -> impl Iterator<Item = StoredSource> {
    let names: Vec<String> = configured.iter().map(|c| c.name.clone()).collect();
    stored.into_iter().filter(move |s| !names.contains(&s.name))
}

/// At the start of `run` and `sync`: moves rows stored under a bare entry name (the old
/// naming of a one-location HighLevel or one-app Sinch source) to the `name/account`
/// source they belong to, found by the rows' `account` column; then warns about every
/// source whose rows are no longer configured, so that nothing is orphaned silently.
pub async fn adopt_and_warn(
    store: &Store,
    configured: &[ConfiguredSource],
) -> Result<(), StoreError> {
    for stored in unconfigured(configured, store.stored_sources().await?) {
        let expansions: Vec<&ConfiguredSource> = configured
            .iter()
            .filter(|c| c.entry == stored.name && c.name != stored.name)
            .collect();
        if expansions.is_empty() {
            continue;
        }
        let accounts = store.source_accounts(&stored.name).await?;
        let target = match (accounts.as_slice(), expansions.as_slice()) {
            ([account], _) => expansions
                .iter()
                .find(|c| c.name == crate::config::expanded_name(&stored.name, Some(account))),
            ([], [only]) => Some(only),
            _ => None,
        };
        let Some(target) = target else { continue };
        if let RenameOutcome::Renamed { rows } =
            store.rename_source(&stored.name, &target.name).await?
        {
            tracing::info!(
                source = %target.name,
                old_name = %stored.name,
                rows,
                "source renamed to the stable name/account scheme; rows and cursors kept"
            );
        }
    }
    for orphan in unconfigured(configured, store.stored_sources().await?) {
        tracing::warn!(
            source = %orphan.name,
            rows = orphan.rows,
            "the database holds rows of a source that is not configured: `convsync sources \
             rename {} NEW` keeps them under a configured name, `convsync sources forget {}` \
             deletes them",
            orphan.name,
            orphan.name
        );
    }
    Ok(())
}
