//! `convsync backup --to FILE` and `convsync restore --from FILE`.
//!
//! Both need only `[database]` from the configuration (no secrets), like `migrate`.
//! `backup` opens its own connection and takes no lock beyond SQLite's read snapshot, so
//! it runs beside a live daemon; `restore` replaces the file, so it takes the daemon lock
//! and is refused while a daemon runs. Both are SQLite's: the backup is reached through
//! `Store::as_sqlite`, and another backend is refused with a clear error.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::store::{
    self, BackendKind, BackupError, BackupSummary, DaemonLock, Store, StoreSettings,
};
use crate::time::Timestamp;

/// The database settings of the configuration at `config_path`, with one connection.
fn database(config_path: &Path) -> anyhow::Result<(StoreSettings, PathBuf)> {
    let file = Config::load_file(config_path)
        .with_context(|| format!("invalid configuration in {}", config_path.display()))?;
    let backend = BackendKind::of(&file.database.url)?;
    if backend != BackendKind::Sqlite {
        return Err(BackupError::Unsupported { backend }.into());
    }
    let path = store::database_file(&file.database.url)
        .ok_or(BackupError::NotAFile)
        .with_context(|| format!("[database] url is {:?}", file.database.url))?;
    let settings = StoreSettings {
        max_connections: 1,
        ..file
            .store_settings()
            .with_context(|| format!("invalid configuration in {}", config_path.display()))?
    };
    Ok((settings, path))
}

/// `convsync backup --to FILE`.
pub async fn backup(config_path: &Path, to: &Path) -> anyhow::Result<()> {
    let (settings, path) = database(config_path)?;
    if !path.is_file() {
        return Err(BackupError::NoDatabase(path).into());
    }
    let store = Store::connect(&settings)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let result = match store.as_sqlite() {
        Some(sqlite) => sqlite.backup_to(to).await,
        None => Err(BackupError::Unsupported {
            backend: store.kind(),
        }),
    };
    store.close().await;
    let summary =
        result.with_context(|| format!("backing up {} to {}", path.display(), to.display()))?;
    println!("{}", describe("backup written", &summary));
    Ok(())
}

/// `convsync restore --from FILE`.
pub async fn restore(config_path: &Path, from: &Path) -> anyhow::Result<()> {
    let (settings, path) = database(config_path)?;
    let _lock = DaemonLock::for_database(&settings.url).context(
        "a convsync daemon is running on this database: stop it first (e.g. `systemctl stop \
         convsync`), then restore",
    )?;
    let (summary, set_aside) = store::restore(&settings.url, from, Timestamp::now())
        .await
        .with_context(|| format!("restoring {} from {}", path.display(), from.display()))?;
    if let Some(aside) = set_aside {
        println!("previous database moved to {}", aside.display());
    }
    // Brings an older backup's schema up to date now rather than at the next start.
    let store = Store::open(&settings)
        .await
        .with_context(|| format!("opening the restored {}", path.display()))?;
    store.close().await;
    println!("{}", describe("database restored", &summary));
    println!("start convsync again; its next cycles re-read what changed since the backup");
    Ok(())
}

fn describe(what: &str, summary: &BackupSummary) -> String {
    format!(
        "{what}: {} ({} bytes, {} conversations, schema version {})",
        summary.path.display(),
        summary.bytes,
        summary.conversations,
        summary.schema_version
    )
}
