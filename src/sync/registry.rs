//! The running sources, as a registry the engine adds to and retires from while it runs
//! (a HighLevel agency's locations installed or uninstalled), and that what watches the
//! engine (the webhook receiver, `/metrics`, readiness, the watchdog) reads per request
//! rather than as a list captured at start.
//!
//! Changes are asked for through the registry and done by the engine's run loop, the one
//! place that spawns and cancels source tasks: a request while no loop listens (`sync
//! --once`, a PostgreSQL replica) is refused and the next start lists the accounts anew.

use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::mpsc;

use super::Source;
use super::discovery::Directory;

/// How many account changes may wait for the run loop; more are dropped (logged) and
/// left to the periodic re-listing, so a flood of verified events cannot grow memory.
pub(super) const MAX_PENDING_CHANGES: usize = 64;

/// An account of a directory entry that should now run, or stop running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// The app was installed on `account` of `entry`: run `entry/account`.
    Installed {
        /// The directory entry.
        entry: String,
        /// The account (a HighLevel location id).
        account: String,
    },
    /// The app was removed from `account` of `entry`: stop `entry/account`, keep its rows.
    Uninstalled {
        /// The directory entry.
        entry: String,
        /// The account.
        account: String,
    },
}

/// The running sources and the directories whose accounts may change. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct SourceRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    running: RwLock<Vec<Arc<Source>>>,
    directories: Vec<Arc<Directory>>,
    changes: Mutex<Option<mpsc::Sender<AccountChange>>>,
}

impl SourceRegistry {
    /// A registry of `sources`, whose `directories` may add and retire accounts.
    pub(super) fn new(sources: Vec<Arc<Source>>, directories: Vec<Arc<Directory>>) -> Self {
        SourceRegistry {
            inner: Arc::new(Inner {
                running: RwLock::new(sources),
                directories,
                changes: Mutex::new(None),
            }),
        }
    }

    /// A registry of `sources` that no directory changes (a one-off read of their
    /// figures).
    pub fn of(sources: Vec<Arc<Source>>) -> Self {
        SourceRegistry::new(sources, Vec::new())
    }

    /// The sources running now, in the order they started.
    pub fn snapshot(&self) -> Vec<Arc<Source>> {
        self.inner
            .running
            .read()
            .expect("source registry poisoned")
            .clone()
    }

    /// The running source named `name`.
    pub fn find(&self, name: &str) -> Option<Arc<Source>> {
        self.inner
            .running
            .read()
            .expect("source registry poisoned")
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    /// The directory entry named `entry`, if that entry finds its accounts at the provider.
    pub fn directory(&self, entry: &str) -> Option<&Arc<Directory>> {
        self.inner
            .directories
            .iter()
            .find(|d| d.settings().entry == entry)
    }

    /// The directories.
    pub(super) fn directories(&self) -> &[Arc<Directory>] {
        &self.inner.directories
    }

    /// Asks the run loop to apply `change`. False when no loop listens (it is then applied
    /// by the next start's listing) or too many changes are waiting.
    pub fn request(&self, change: AccountChange) -> bool {
        let changes = self.inner.changes.lock().expect("source registry poisoned");
        match changes.as_ref().map(|tx| tx.try_send(change)) {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                tracing::warn!(change = ?e.into_inner(), "account change dropped: too many are waiting; the periodic re-listing applies it");
                false
            }
            None => false,
        }
    }

    /// Makes the run loop the receiver of the changes asked for from now on.
    pub(super) fn listen(&self) -> mpsc::Receiver<AccountChange> {
        let (tx, rx) = mpsc::channel(MAX_PENDING_CHANGES);
        *self.inner.changes.lock().expect("source registry poisoned") = Some(tx);
        rx
    }

    /// Stops taking changes (the run loop ends).
    pub(super) fn deafen(&self) {
        *self.inner.changes.lock().expect("source registry poisoned") = None;
    }

    /// Adds `source` unless one of that name runs. False when it already ran.
    pub(super) fn add(&self, source: Arc<Source>) -> bool {
        let mut running = self
            .inner
            .running
            .write()
            .expect("source registry poisoned");
        if running.iter().any(|s| s.name == source.name) {
            return false;
        }
        running.push(source);
        true
    }

    /// Removes the source named `name`; false when none ran.
    pub(super) fn remove(&self, name: &str) -> bool {
        let mut running = self
            .inner
            .running
            .write()
            .expect("source registry poisoned");
        let before = running.len();
        running.retain(|s| s.name != name);
        running.len() != before
    }
}
