//! What the commands that only read or edit the mirror (`status`, `reset`, `state`,
//! `sources`, and the demo's summary once its daemon stopped) share: the configuration read without resolving a single secret (they must
//! work outside the service, where systemd credentials are not readable), and the
//! database it names, which they never create.

use std::path::Path;

use anyhow::Context;

use crate::config::{Config, ConfiguredSource, FileConfig};
use crate::store::{DaemonLock, Store, database_file, shown_url};

/// The configuration and the existing mirror database it names.
pub struct Mirror {
    /// The parsed (not validated) configuration.
    pub file: FileConfig,
    /// Every source the configuration names, enabled or not.
    pub sources: Vec<ConfiguredSource>,
    /// The open database.
    pub store: Store,
}

impl Mirror {
    /// Loads the configuration at `config_path` and opens the database it names; a
    /// missing database file is an error (a wrong path must not look like "never synced").
    pub async fn open(config_path: &Path) -> anyhow::Result<Mirror> {
        let file = Config::load_file(config_path)
            .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
        let settings = file
            .store_settings()
            .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
        if let Some(path) = database_file(&settings.url)
            && !path.exists()
        {
            anyhow::bail!(
                "the mirror database {} does not exist (database.url in {}): check the path, \
                 or create it with `convsync migrate` or a first `convsync sync --once`",
                path.display(),
                config_path.display()
            );
        }
        let store = Store::open(&settings)
            .await
            .with_context(|| format!("opening {}", shown_url(&settings.url)))?;
        let sources = file.configured_sources();
        Ok(Mirror {
            file,
            sources,
            store,
        })
    }
}

/// Refuses to go on while a `convsync run` (or `sync --once`) holds this configuration's
/// database: editing cursors or source names under a running poller would be overwritten
/// or split by its next page. Takes the daemon lock itself and returns it, so that no
/// daemon can start while the edit is under way; the error names the holder.
pub fn ensure_no_daemon(file: &FileConfig) -> anyhow::Result<DaemonLock> {
    DaemonLock::for_database(&file.database.url).context(
        "a convsync daemon is running on this database: stop it first (e.g. `systemctl stop \
         convsync`), then run this command again",
    )
}
