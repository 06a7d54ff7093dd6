//! Outgoing webhooks: for every change the simulator makes, the signed events the real
//! provider would push, sent to a loopback URL configured per account, with faults.
//!
//! A change is turned into events while the world is locked (`events`: what each
//! provider sends, in its own envelope), queued in a bounded outbox, and sent by one
//! delivery task (`delivery`: faults, the provider's retry policy, loopback only), which
//! signs each body with the account's key (`signing`). What happened to every event is
//! counted per account (`WebhookCounts`) and, for Spruce, kept in the endpoint's
//! delivery log (`log`), which `GET /v1/webhooks/endpoints/{id}/events` serves.
//!
//! Nothing is generated for an account without a target, so the simulator costs
//! nothing extra unless a test or the demo asks for webhooks.
//!
//! Every time in an event (Spruce `eventTime`, Sinch's timestamp header, HighLevel
//! `timestamp`, D365 activity `timestamp`) is the simulated clock's: a receiver that
//! checks a replay window against its own clock needs a simulator whose clock runs from
//! the real now (no `--clock-start`, no `--frozen-clock`).
//!
//! Not modelled: Spruce's 1,000 events per minute per endpoint, HighLevel's retry jitter.

mod delivery;
pub(crate) mod events;
pub(crate) mod log;
pub(crate) mod signing;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use url::Url;

use super::accounts::SimAccounts;
use super::clock::SimClock;
use super::ids::hash_all;
use super::platform::Platform;

pub use self::signing::HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM;

pub(crate) use self::delivery::Outgoing;
use self::events::EventIds;
use self::log::DeliveryLog;

/// Misbehaviour of one provider's webhook deliveries. Every ratio is the share of events
/// the fault hits, drawn from a generator seeded by the simulator's seed, so the same
/// seed and the same changes give the same faults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookFaults {
    /// Never sent (the provider's delivery log still lists it, as failed).
    pub drop_ratio: f64,
    /// Sent twice, byte for byte (same id, same signature).
    pub duplicate_ratio: f64,
    /// Sent `delay_ms` later than it was due; later events overtake it.
    pub delay_ratio: f64,
    /// How late a delayed event is sent, in milliseconds.
    pub delay_ms: u64,
    /// Held back until the next event has been sent (the two arrive swapped).
    pub reorder_ratio: f64,
    /// Preceded by a forged copy: a new event id and a signature by the wrong key.
    pub forge_ratio: f64,
    /// Followed by a replayed copy: the same event as a capture `replay_age_ms` old would
    /// carry it (old timestamps, validly signed at that time).
    pub replay_ratio: f64,
    /// Age of a replayed copy, in milliseconds (default 1 hour when 0: beyond every
    /// receiver's replay window, widened by the providers' retry horizons).
    pub replay_age_ms: u64,
    /// Padded with a filler field to `oversize_bytes` (validly signed).
    pub oversize_ratio: f64,
    /// Size of an oversized body in bytes (default 2 MiB when 0).
    pub oversize_bytes: u64,
}

impl WebhookFaults {
    pub(crate) fn replay_age(&self) -> Duration {
        Duration::from_millis(if self.replay_age_ms == 0 {
            3_600_000
        } else {
            self.replay_age_ms
        })
    }

    pub(crate) fn oversize_len(&self) -> usize {
        let bytes = if self.oversize_bytes == 0 {
            2 << 20
        } else {
            self.oversize_bytes
        };
        usize::try_from(bytes.min(64 << 20)).unwrap_or(64 << 20)
    }
}

/// What happened to webhook events, as counted per account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// An event was generated for a change (one change may produce several).
    Generated,
    /// The outbox was full: the event was lost before any attempt.
    Overflowed,
    /// One HTTP attempt (first sends, retries and every extra copy).
    Attempt,
    /// A retry was scheduled after a failed attempt.
    Retried,
    /// The receiver answered 2xx (counted once per event, copies excluded).
    Delivered,
    /// Attempts exhausted, or the answer was final without being 2xx.
    Failed,
    /// Drop fault: never sent.
    Dropped,
    /// Duplicate fault: a second identical copy was sent.
    Duplicated,
    /// Delay fault.
    Delayed,
    /// Reorder fault.
    Reordered,
    /// Forge fault: a copy with a bad signature was sent.
    Forged,
    /// A forged copy was answered 401 Unauthorized: the receiver refused its signature
    /// (a copy it refused for another reason, or did not answer, is not counted).
    ForgedRefused,
    /// Replay fault: an old copy was sent.
    Replayed,
    /// Oversize fault.
    Oversized,
    /// The event left the outbox and its first attempt and every extra copy are done
    /// (dropped and overflowed ones included; retries may follow). When it equals
    /// `Generated`, nothing is queued or about to be sent.
    Handled,
}

/// One counter row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCount {
    /// Provider of the account.
    pub provider: Platform,
    /// Account key (see `SimAccounts`).
    pub account: String,
    /// What happened.
    pub outcome: WebhookOutcome,
    /// How often since start or the last reset.
    pub count: u64,
}

/// Snapshot of the webhook counters: the simulator's truth about its deliveries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCounts {
    /// Rows sorted by provider, account, outcome.
    pub entries: Vec<WebhookCount>,
    /// Targets refused because they were not loopback URLs.
    pub refused_targets: u64,
}

impl WebhookCounts {
    /// `outcome` summed over every account of `provider`.
    pub fn total(&self, provider: Platform, outcome: WebhookOutcome) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.provider == provider && e.outcome == outcome)
            .map(|e| e.count)
            .sum()
    }

    /// `outcome` for one account.
    pub fn of(&self, provider: Platform, account: &str, outcome: WebhookOutcome) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.provider == provider && e.account == account && e.outcome == outcome)
            .map(|e| e.count)
            .sum()
    }
}

/// Why a webhook target was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookTargetError {
    /// Tests must never send anywhere else.
    #[error("webhook target {0} is not a loopback http URL (127.0.0.0/8 or ::1)")]
    NotLoopback(String),
    /// No such account.
    #[error("{provider} has no account {account:?}")]
    UnknownAccount {
        /// Provider asked for.
        provider: Platform,
        /// Account key asked for.
        account: String,
    },
}

/// Whether `url` is plain HTTP to a literal loopback address (names are refused: a
/// resolver could point them anywhere).
pub(crate) fn is_loopback(url: &Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        _ => false,
    }
}

/// Start-up settings of the delivery machinery.
#[derive(Clone, Debug)]
pub(crate) struct DeliverySettings {
    /// Events waiting to be sent at most; more are counted as overflowed.
    pub(crate) queue_cap: usize,
    /// Multiplier on the providers' retry intervals (tests shrink two minutes to ms).
    pub(crate) retry_scale: f64,
    /// Retries waiting at once at most; a failure beyond it is final.
    pub(crate) max_pending_retries: usize,
    /// D365 authenticates with `Authorization: Bearer` (2025-09) instead of `x-ms-token`.
    pub(crate) d365_bearer: bool,
    /// Events in flight at once (1: strictly in order).
    pub(crate) concurrency: usize,
}

type CounterKey = (Platform, usize, WebhookOutcome);

/// Per-account counters.
#[derive(Debug, Default)]
struct Counters {
    table: Mutex<BTreeMap<CounterKey, u64>>,
    refused_targets: Mutex<u64>,
}

/// Everything the activity code and the delivery task share.
pub(crate) struct WebhookHub {
    accounts: Arc<SimAccounts>,
    pub(crate) clock: SimClock,
    seed: u64,
    targets: RwLock<HashMap<(Platform, usize), Url>>,
    faults: RwLock<[WebhookFaults; 4]>,
    counters: Counters,
    pub(crate) log: DeliveryLog,
    pub(crate) ids: EventIds,
    outbox: mpsc::Sender<Outgoing>,
    inbox: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    pub(crate) settings: DeliverySettings,
}

impl WebhookHub {
    pub(crate) fn new(
        accounts: Arc<SimAccounts>,
        clock: SimClock,
        seed: u64,
        settings: DeliverySettings,
        initial: [WebhookFaults; 4],
    ) -> WebhookHub {
        let (outbox, inbox) = mpsc::channel(settings.queue_cap.max(1));
        WebhookHub {
            accounts,
            clock,
            seed: hash_all(&[seed, 0x3EB_400C]),
            targets: RwLock::new(HashMap::new()),
            faults: RwLock::new(initial),
            counters: Counters::default(),
            log: DeliveryLog::default(),
            ids: EventIds::default(),
            outbox,
            inbox: Mutex::new(Some(inbox)),
            settings,
        }
    }

    /// Start the delivery task (once).
    pub(crate) fn start(
        self: &Arc<Self>,
        tracker: &tokio_util::task::TaskTracker,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(inbox) = inbox {
            tracker.spawn(delivery::run(
                Arc::clone(self),
                inbox,
                tracker.clone(),
                cancel,
            ));
        }
    }

    pub(crate) fn account_key(&self, provider: Platform, account: usize) -> String {
        self.accounts
            .keys(provider)
            .into_iter()
            .nth(account)
            .unwrap_or_default()
    }

    /// Set or clear where `account`'s events go.
    pub(crate) fn set_target(
        &self,
        provider: Platform,
        account: &str,
        url: Option<Url>,
    ) -> Result<(), WebhookTargetError> {
        let index = self.accounts.position(provider, account).ok_or_else(|| {
            WebhookTargetError::UnknownAccount {
                provider,
                account: account.to_owned(),
            }
        })?;
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        match url {
            Some(url) if !is_loopback(&url) => {
                *self
                    .counters
                    .refused_targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) += 1;
                Err(WebhookTargetError::NotLoopback(url.to_string()))
            }
            Some(url) => {
                targets.insert((provider, index), url);
                Ok(())
            }
            None => {
                targets.remove(&(provider, index));
                Ok(())
            }
        }
    }

    /// Send every account's events under `base`: `{base}{provider}-{i}` (HighLevel:
    /// `{base}highlevel`), the source names `convsync simulate`'s configuration uses.
    pub(crate) fn set_base(&self, base: &Url) -> Result<(), WebhookTargetError> {
        for provider in Platform::ALL {
            for (i, key) in self.accounts.keys(provider).iter().enumerate() {
                let name = match provider {
                    Platform::HighLevel => "highlevel".to_owned(),
                    _ => format!("{provider}-{i}"),
                };
                let url = base
                    .join(&name)
                    .map_err(|_| WebhookTargetError::NotLoopback(base.to_string()))?;
                self.set_target(provider, key, Some(url))?;
            }
        }
        Ok(())
    }

    pub(crate) fn target(&self, provider: Platform, account: usize) -> Option<Url> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(provider, account))
            .cloned()
    }

    /// Whether events of this account are wanted at all (cheap; checked before rendering).
    pub(crate) fn wants(&self, provider: Platform, account: usize) -> bool {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(provider, account))
    }

    pub(crate) fn faults(&self, provider: Platform) -> WebhookFaults {
        self.faults.read().unwrap_or_else(|e| e.into_inner())[provider.index()].clone()
    }

    pub(crate) fn set_faults(&self, provider: Platform, faults: WebhookFaults) {
        self.faults.write().unwrap_or_else(|e| e.into_inner())[provider.index()] = faults;
    }

    pub(crate) fn count(&self, provider: Platform, account: usize, outcome: WebhookOutcome) {
        let mut table = self
            .counters
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *table.entry((provider, account, outcome)).or_insert(0) += 1;
    }

    /// Queue rendered events (never blocks: a full outbox loses them, counted).
    pub(crate) fn enqueue(&self, events: Vec<Outgoing>) {
        for event in events {
            let (provider, account) = (event.provider, event.account);
            self.count(provider, account, WebhookOutcome::Generated);
            if provider == Platform::Spruce {
                self.log.record(&event, self.clock.now_us());
            }
            if let Err(error) = self.outbox.try_send(event) {
                let event = match error {
                    mpsc::error::TrySendError::Full(event)
                    | mpsc::error::TrySendError::Closed(event) => event,
                };
                self.count(provider, account, WebhookOutcome::Overflowed);
                self.count(provider, account, WebhookOutcome::Handled);
                self.log.finish(&event.event_id, log::Status::Failed, None);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> WebhookCounts {
        let table = self
            .counters
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        WebhookCounts {
            entries: table
                .iter()
                .map(|((provider, account, outcome), count)| WebhookCount {
                    provider: *provider,
                    account: self.account_key(*provider, *account),
                    outcome: *outcome,
                    count: *count,
                })
                .collect(),
            refused_targets: *self
                .counters
                .refused_targets
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    pub(crate) fn reset(&self) {
        self.counters
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn accounts(&self) -> &SimAccounts {
        &self.accounts
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literal_loopback_http_urls_are_targets() {
        let ok = |text: &str| is_loopback(&text.parse().expect("url"));
        assert!(ok("http://127.0.0.1:8080/webhooks/a"));
        assert!(ok("http://127.255.0.9/"));
        assert!(ok("http://[::1]:9/"));
        assert!(!ok("https://127.0.0.1/"));
        assert!(!ok("http://localhost/"));
        assert!(!ok("http://10.1.2.3/"));
        assert!(!ok("http://[::ffff:10.0.0.1]/"));
        assert!(!ok("http://128.0.0.1/"));
    }
}
