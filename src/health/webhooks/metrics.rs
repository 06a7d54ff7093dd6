//! The receiver's figures on `/metrics`: events by outcome and reason, how long an event
//! takes from the provider's sending (and from its arrival) to the commit, and which path
//! saw a change first.
//!
//! - `convsync_webhook_events_total{source, outcome, reason}`: `outcome` is `accepted`
//!   (`reason` says what it did: `applied`, `unchanged`, `stale`, `not_mirrored`,
//!   `queued`, `unrelated`), `duplicate` (`reason="duplicate"`) or `rejected` (`reason`:
//!   `missing_signature`, `bad_signature`, `malformed`, `stale`, `too_large`,
//!   `unknown_account`, `busy`, `store`).
//! - `convsync_webhook_event_to_commit_seconds{source}`: provider's `sent_at` → commit.
//! - `convsync_webhook_receive_to_commit_seconds{source}`: arrival → commit.
//! - `convsync_changes_first_seen_total{source, path}`: `path="event"`, events that changed
//!   the mirror (a poll then finds the row already at that version and counts nothing);
//!   `path="poll"`, rows a listing page inserted or changed (`SourceProgress::poll_changes`):
//!   changes no event had brought. `poll / (event + poll)` is the provider's webhook miss
//!   rate, once events flow.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::store::EventOutcome;
use crate::sync::SourceRegistry;
use crate::time::Timestamp;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Latency buckets: 1 ms to about 33 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The receiver's counters and histograms (cheap to clone: they share their values).
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    events: Family<Labels, Counter>,
    sent_to_commit: Histograms,
    received_to_commit: Histograms,
    /// Changes first seen by an event, per source.
    first_by_event: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics {
            events: Family::default(),
            sent_to_commit: Family::new_with_constructor(latency_histogram),
            received_to_commit: Family::new_with_constructor(latency_histogram),
            first_by_event: Arc::default(),
        }
    }
}

impl WebhookMetrics {
    /// Adds the series to `registry` (the `convsync` sub-registry); the poll side of
    /// `changes_first_seen` is read from `sources` (those that take events).
    pub fn register(&self, registry: &mut Registry, sources: SourceRegistry) {
        registry.register(
            "webhook_events",
            "Webhook events received, by outcome (accepted, duplicate, rejected) and reason",
            self.events.clone(),
        );
        registry.register_with_unit(
            "webhook_event_to_commit",
            "Time from the provider's sending of a webhook event to its commit in the mirror",
            Unit::Seconds,
            self.sent_to_commit.clone(),
        );
        registry.register_with_unit(
            "webhook_receive_to_commit",
            "Time from a webhook request's arrival to its event's commit in the mirror",
            Unit::Seconds,
            self.received_to_commit.clone(),
        );
        registry.register_collector(Box::new(FirstSeen {
            sources,
            by_event: self.first_by_event.clone(),
        }));
    }

    /// Counts a refused request.
    pub fn rejected(&self, source: &str, reason: &'static str) {
        self.events
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("outcome", "rejected".to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// Counts an event the store wrote (or recognised as a duplicate) and its latencies.
    pub fn written(
        &self,
        source: &str,
        outcome: EventOutcome,
        sent_at: Option<Timestamp>,
        received: Instant,
    ) {
        let kind = match outcome {
            EventOutcome::Duplicate => "duplicate",
            _ => "accepted",
        };
        self.events
            .get_or_create(&vec![
                ("source", source.to_owned()),
                ("outcome", kind.to_owned()),
                ("reason", outcome.as_str().to_owned()),
            ])
            .inc();
        let labels = vec![("source", source.to_owned())];
        self.received_to_commit
            .get_or_create(&labels)
            .observe(received.elapsed().as_secs_f64());
        if let Some(sent_at) = sent_at {
            let delay = sent_at.elapsed_until(Timestamp::now());
            self.sent_to_commit
                .get_or_create(&labels)
                .observe(delay.as_secs_f64());
        }
        if outcome == EventOutcome::Applied {
            let mut counts = self
                .first_by_event
                .lock()
                .expect("first-seen lock poisoned");
            let count = counts.entry(source.to_owned()).or_default();
            *count = count.saturating_add(1);
        }
    }
}

/// `changes_first_seen`: events' counts beside the sources' poll counts, read at scrape.
#[derive(Debug)]
struct FirstSeen {
    /// Read on each scrape: the sources running now.
    sources: SourceRegistry,
    by_event: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Collector for FirstSeen {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts: BTreeMap<String, (u64, u64)> = self
            .by_event
            .lock()
            .expect("first-seen lock poisoned")
            .iter()
            .map(|(source, n)| (source.clone(), (*n, 0)))
            .collect();
        let sources = self.sources.snapshot();
        for source in sources.iter().filter(|s| s.provider.webhooks().is_some()) {
            counts.entry(source.name.clone()).or_default().1 =
                source.progress.poll_changes.load(Ordering::Relaxed);
        }
        let mut metric = encoder.encode_descriptor(
            "changes_first_seen",
            "Changes of the mirror by the path that brought them first: a webhook event, or a poll that found a change no event had brought",
            None,
            MetricType::Counter,
        )?;
        for (source, (event, poll)) in &counts {
            for (path, value) in [("event", *event), ("poll", *poll)] {
                let labels = [("source", source.as_str()), ("path", path)];
                ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
