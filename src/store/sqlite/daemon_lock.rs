//! One syncing process per database. Two daemons on one mirror double every provider's
//! request budget and race on HighLevel's single-use refresh tokens, so `convsync run` and
//! `sync --once` hold an exclusive lock on a file beside the database (`<db>.lock`) for
//! as long as they run. The file names the holder (pid, host, start time) so that a
//! refused start can say who has the database. `status`, `reset`, `migrate` and backups
//! take no lock.
//!
//! The lock is the operating system's (`flock`): it goes with the process, so a killed
//! daemon leaves no stale lock, only a file the next holder overwrites. It only works
//! where the database's file system supports it (a local disk, not every network share).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::time::Timestamp;

/// The most of the lock file's text a refusal quotes (it is only ours by convention).
const MAX_HOLDER_TEXT: usize = 200;

/// Held while this process syncs the database; dropping it releases the lock.
#[derive(Debug)]
pub struct DaemonLock {
    /// The locked file (`None` for an in-memory database, which no one else can open).
    _file: Option<File>,
}

impl DaemonLock {
    /// Takes the lock of the database at `db` (`None`: in memory), or says who holds it.
    pub fn acquire(db: Option<&Path>) -> Result<DaemonLock, StoreError> {
        let Some(db) = db else {
            return Ok(DaemonLock { _file: None });
        };
        let path = lock_path(db);
        let io_error = |e: std::io::Error| StoreError::LockFile {
            path: path.display().to_string(),
            source: e,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let mut options = OpenOptions::new();
        // Not truncated before the lock is ours: the text names the current holder.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::InUse {
                    database: db.display().to_string(),
                    holder: holder_text(&mut file),
                    lock_file: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        let holder = format!(
            "pid {} on host {}, running since {}",
            std::process::id(),
            host_name(),
            Timestamp::now().to_rfc3339_seconds()
        );
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_error)?;
        Ok(DaemonLock { _file: Some(file) })
    }
}

/// `<db>.lock`.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// What the lock file says about its holder, printable and bounded.
fn holder_text(file: &mut File) -> String {
    let mut bytes = Vec::new();
    let _ = Read::by_ref(file)
        .take(MAX_HOLDER_TEXT as u64)
        .read_to_end(&mut bytes);
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if text.trim().is_empty() {
        "a process that has not written its details yet".to_owned()
    } else {
        text.trim().to_owned()
    }
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
