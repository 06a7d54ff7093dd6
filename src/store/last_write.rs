//! What the last write of mirror data met. A probe transaction that is rolled back never
//! reaches the disk, so it cannot tell a full disk from a healthy one; the writes that
//! carry pages and cursors can, and readiness reports what the latest of them met. Kept
//! per writer (each source, and the `sync_runs` records): on a nearly full disk one
//! source's small cursor update may still fit while another's pages do not, and the first
//! must not hide the second.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::StoreError;
use crate::time::Timestamp;

/// The writer name under which run records' writes are noted.
pub(super) const RUN_RECORDS: &str = "sync_runs";

/// A write of mirror data that the disk refused.
#[derive(Debug, Clone)]
pub struct WriteFailure {
    /// Whose write it was: a source's name, or `sync_runs` for the run records.
    pub writer: String,
    /// When it failed.
    pub at: Timestamp,
    /// The store error, as text.
    pub error: String,
}

/// The failure of each writer's latest write, shared by a store's clones.
#[derive(Debug, Default)]
pub(super) struct LastWrite(Mutex<BTreeMap<String, WriteFailure>>);

impl LastWrite {
    /// Notes what a write met: success clears an earlier failure, a failure of the file
    /// (full, read-only, I/O) replaces it; other errors (a busy lock, a bad value) say
    /// nothing about the disk and change nothing.
    pub(super) fn note<T>(&self, writer: &str, result: &Result<T, StoreError>) {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                failures.remove(writer);
            }
            Err(e) if e.is_file_failure() => {
                let failure = WriteFailure {
                    writer: writer.to_owned(),
                    at: Timestamp::now(),
                    error: e.to_string(),
                };
                failures.insert(writer.to_owned(), failure);
            }
            Err(_) => {}
        }
    }

    /// The most recent failure among the writers whose latest write failed.
    pub(super) fn failure(&self) -> Option<WriteFailure> {
        let failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        failures.values().max_by_key(|f| f.at).cloned()
    }
}
