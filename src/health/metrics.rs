//! `/metrics`: the engine's live figures in Prometheus (OpenMetrics) text format.
//!
//! Nothing is copied into metric objects as the engine runs: a [`Collector`] reads each
//! source's [`SourceProgress`](crate::sync::SourceProgress) and request tally at scrape
//! time, so gauges such as the watermark lag are computed against the scrape's own
//! clock. Figures that live in the database (follow-up backlog, database size) are read
//! by the `/metrics` handler just before encoding ([`StoreFigures::refresh`]), because a
//! collector cannot wait for a query. Every series is named `convsync_*` and labelled by
//! `source` and `provider`, besides the standard `process_*` family
//! ([`ProcessCollector`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::process::ProcessCollector;
use super::readiness::{ReadinessRule, assess};
use crate::store::{Store, VerificationRecord};
use crate::sync::{ReplicaProgress, Source, SourceRegistry};
use crate::time::Timestamp;

/// The `Content-Type` of the body [`encode`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Builds the registry served at `/metrics`.
pub fn registry(
    sources: SourceRegistry,
    ready_after_intervals: f64,
    started_at: Timestamp,
    store_figures: Arc<StoreFigures>,
    replica: Arc<ReplicaProgress>,
) -> Registry {
    let mut root = Registry::default();
    root.register_collector(Box::new(ProcessCollector));
    let registry = root.sub_registry_with_prefix("convsync");
    registry.register(
        "build",
        "Version of the running convsync binary",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(SourceCollector {
        sources,
        ready_after_intervals,
        started_at,
        store_figures,
    }));
    registry.register_collector(Box::new(ReplicaCollector(replica)));
    root
}

/// Reads the replica's lease figures on each scrape; nothing when the engine does not run
/// as a replica (SQLite).
#[derive(Debug)]
struct ReplicaCollector(Arc<ReplicaProgress>);

impl Collector for ReplicaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(name) = self.0.name() else {
            return Ok(());
        };
        let mut family = Family {
            encoder: &mut encoder,
        };
        family.gauges(
            "replica_info",
            "This process's replica name (1 while it runs as a replica)",
            None,
            [(vec![("replica", name.as_str())], 1.0)],
        )?;
        family.gauge(
            "leases_held",
            "Rate-limit scopes whose lease this replica holds (it runs their sources)",
            None,
            self.0.held.load(Relaxed) as f64,
        )?;
        family.counter(
            "lease_claims",
            "Leases this replica claimed",
            self.0.claims.load(Relaxed),
        )?;
        family.counter(
            "lease_lost",
            "Leases this replica lost: taken over by another replica, or not renewed before its local deadline",
            self.0.lost.load(Relaxed),
        )?;
        Ok(())
    }
}

/// The figures `/metrics` reads from the database, as of the last scrape.
#[derive(Debug, Default)]
pub struct StoreFigures(Mutex<StoreSnapshot>);

/// One reading of [`StoreFigures`]; `None`/absent where the query failed.
#[derive(Debug, Default, Clone)]
struct StoreSnapshot {
    database_bytes: Option<u64>,
    follow_ups: Option<BTreeMap<String, u64>>,
    /// Each source's latest verification (`convsync verify`).
    verifications: Option<BTreeMap<String, VerificationRecord>>,
}

impl StoreFigures {
    /// Reads the figures again. A failed query leaves its series out of this scrape (an
    /// absent series is what alerting on "no data" expects) and is logged at debug.
    pub async fn refresh(&self, store: &Store) {
        let database_bytes = store.database_size_bytes().await;
        let follow_ups = store.follow_up_backlog().await;
        let verifications = store.latest_verifications().await;
        if let Err(e) = database_bytes
            .as_ref()
            .map(|_| ())
            .and(follow_ups.as_ref().map(|_| ()))
            .and(verifications.as_ref().map(|_| ()))
        {
            tracing::debug!(error = %e, "metrics: could not read the database's figures");
        }
        *self.0.lock().expect("store figures lock poisoned") = StoreSnapshot {
            database_bytes: database_bytes.ok(),
            follow_ups: follow_ups.ok().map(|rows| rows.into_iter().collect()),
            verifications: verifications.ok().map(|rows| {
                rows.into_iter()
                    .map(|row| (row.source.clone(), row))
                    .collect()
            }),
        };
    }

    fn snapshot(&self) -> StoreSnapshot {
        self.0.lock().expect("store figures lock poisoned").clone()
    }
}

/// Renders the registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}

/// Reads every source's figures on each scrape.
#[derive(Debug)]
struct SourceCollector {
    /// Read on each scrape: the sources running now.
    sources: SourceRegistry,
    ready_after_intervals: f64,
    started_at: Timestamp,
    store_figures: Arc<StoreFigures>,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

fn labels(source: &Source) -> Labels<'_> {
    vec![
        ("source", source.name.as_str()),
        ("provider", source.provider.kind().as_str()),
    ]
}

/// One metric family: a descriptor, then one sample per label set.
struct Family<'e, 'w> {
    encoder: &'e mut DescriptorEncoder<'w>,
}

impl<'w> Family<'_, 'w> {
    /// Counters of any value type Prometheus counts in (whole requests, seconds).
    fn counters<'a, V: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels<'a>, V)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// One counter without labels.
    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
        let metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(metric)
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        value: f64,
    ) -> Result<(), std::fmt::Error> {
        let metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    fn gauges<'a>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        samples: impl IntoIterator<Item = (Labels<'a>, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, unit, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn epoch_seconds(t: Timestamp) -> f64 {
    t.epoch_millis() as f64 / 1000.0
}

impl Collector for SourceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = Timestamp::now();
        let sources = self.sources.snapshot();
        let states: Vec<_> = sources.iter().map(|s| s.progress.state()).collect();
        let each = |f: &dyn Fn(&Source) -> u64| -> Vec<(Labels<'_>, u64)> {
            sources.iter().map(|s| (labels(s), f(s))).collect()
        };
        let mut family = Family {
            encoder: &mut encoder,
        };

        family.gauge(
            "start_time",
            "When this convsync process started (Unix time)",
            Some(&Unit::Seconds),
            epoch_seconds(self.started_at),
        )?;
        family.gauges(
            "watermark_lag",
            "Now minus the newest delta watermark: how far behind the provider the mirror may be",
            Some(&Unit::Seconds),
            sources
                .iter()
                .zip(&states)
                .filter_map(|(s, st)| st.watermark.map(|w| (labels(s), signed_seconds(w, now)))),
        )?;
        family.gauges(
            "last_success_timestamp",
            "When the source last completed a cycle (Unix time)",
            Some(&Unit::Seconds),
            sources
                .iter()
                .zip(&states)
                .filter_map(|(s, st)| st.last_success_at.map(|t| (labels(s), epoch_seconds(t)))),
        )?;
        family.gauges(
            "last_success_age",
            "Now minus when the source last completed a cycle: how stale the mirror can be; \
             compare with poll_interval_seconds",
            Some(&Unit::Seconds),
            sources.iter().zip(&states).filter_map(|(s, st)| {
                st.last_success_at
                    .map(|t| (labels(s), signed_seconds(t, now)))
            }),
        )?;
        family.gauges(
            "poll_interval",
            "The source's configured poll_interval",
            Some(&Unit::Seconds),
            sources
                .iter()
                .map(|s| (labels(s), s.schedule.poll_interval.as_secs_f64())),
        )?;
        family.gauges(
            "refresh_token_expiry_timestamp",
            "When the source's rotating OAuth refresh token dies if unused (Unix time); alert \
             well before it (convsync rotates it at least monthly while it runs)",
            Some(&Unit::Seconds),
            sources.iter().filter_map(|s| {
                s.client
                    .refresh_token_expires_at()
                    .map(|t| (labels(s), epoch_seconds(t)))
            }),
        )?;
        family.gauges(
            "source_ready",
            "1 when the source completed a cycle within ready_after_intervals poll intervals",
            None,
            sources.iter().zip(&states).map(|(s, st)| {
                let rule = ReadinessRule {
                    poll_interval: s.schedule.poll_interval,
                    ready_after_intervals: self.ready_after_intervals,
                    started_at: self.started_at,
                };
                let ready = assess(st, rule, now).0.is_fine();
                (labels(s), if ready { 1.0 } else { 0.0 })
            }),
        )?;
        family.counters(
            "cycles",
            "Cycles completed",
            None,
            each(&|s| s.progress.cycles.load(Relaxed)),
        )?;
        let mut outcomes = Vec::new();
        for s in &sources {
            for (outcome, count) in s.progress.outcomes.snapshot() {
                let mut l = labels(s);
                l.push(("outcome", outcome));
                outcomes.push((l, count));
            }
        }
        family.counters(
            "cycle_outcomes",
            "Cycles completed, by outcome (caught_up, more_to_do, rate_limited, stalled, failed)",
            None,
            outcomes,
        )?;
        let figures = self.store_figures.snapshot();
        if let Some(backlog) = &figures.follow_ups {
            family.gauges(
                "follow_ups_queued",
                "Per-conversation follow-up requests waiting in the queue",
                None,
                sources.iter().map(|s| {
                    let queued = backlog.get(&s.name).copied().unwrap_or(0);
                    (labels(s), queued as f64)
                }),
            )?;
        }
        if let Some(verified) = &figures.verifications {
            let last = |s: &Source| verified.get(&s.name);
            let mut drift = Vec::new();
            for s in &sources {
                if let Some(v) = last(s) {
                    for (kind, count) in v.drift.by_kind() {
                        let mut l = labels(s);
                        l.push(("kind", kind));
                        drift.push((l, count as f64));
                    }
                }
            }
            family.gauges(
                "mirror_drift",
                "Conversations the source's latest verification found drifted, by kind \
                 (missing, stale, extra, deleted_listed)",
                None,
                drift,
            )?;
            family.gauges(
                "last_verification_timestamp",
                "When the source's latest verification finished (Unix time)",
                Some(&Unit::Seconds),
                sources
                    .iter()
                    .filter_map(|s| last(s).map(|v| (labels(s), epoch_seconds(v.finished_at)))),
            )?;
            family.gauges(
                "last_verification_age",
                "Now minus when the source's latest verification finished",
                Some(&Unit::Seconds),
                sources.iter().filter_map(|s| {
                    last(s).map(|v| (labels(s), signed_seconds(v.finished_at, now)))
                }),
            )?;
        }
        if let Some(bytes) = figures.database_bytes {
            family.gauge(
                "database_size",
                "Bytes the mirror database's pages take (the WAL excluded)",
                Some(&Unit::Bytes),
                bytes as f64,
            )?;
        }
        family.counters(
            "cycle_panics",
            "Cycles that ended in a panic (a bug): recorded as failed and retried",
            None,
            each(&|s| s.progress.panics.load(Relaxed)),
        )?;
        family.counters(
            "pages",
            "Pages applied to the mirror",
            None,
            each(&|s| s.progress.pages.load(Relaxed)),
        )?;
        let mut rows = Vec::new();
        for s in &sources {
            let p = &s.progress;
            for (change, value) in [
                ("inserted", p.inserted.load(Relaxed)),
                ("updated", p.updated.load(Relaxed)),
                ("unchanged", p.unchanged.load(Relaxed)),
            ] {
                let mut l = labels(s);
                l.push(("change", change));
                rows.push((l, value));
            }
        }
        family.counters(
            "rows",
            "Rows read from providers, by what happened to the mirror row (inserted, updated, unchanged)",
            None,
            rows,
        )?;
        family.counters(
            "rows_closed",
            "Mirror rows marked closed by sweeps and follow-ups",
            None,
            each(&|s| s.progress.closed.load(Relaxed)),
        )?;
        family.counters(
            "rows_deleted",
            "Mirror rows marked deleted by sweeps",
            None,
            each(&|s| s.progress.deleted.load(Relaxed)),
        )?;
        family.counters(
            "records_rejected",
            "Provider records rejected as unreadable (kept out of the mirror)",
            None,
            each(&|s| s.progress.rejected.load(Relaxed)),
        )?;
        family.counters(
            "records_late",
            "Records that appeared later than the lookback window allows for",
            None,
            each(&|s| s.progress.late.load(Relaxed)),
        )?;
        let tallies: Vec<_> = sources
            .iter()
            .map(|s| (s, s.client.tally().by_status()))
            .collect();
        let mut statuses: Vec<(&Source, String, u64)> = Vec::new();
        for (s, by_status) in &tallies {
            for (status, count) in by_status {
                let status = if *status == 0 {
                    "none".to_owned()
                } else {
                    status.to_string()
                };
                statuses.push((s, status, *count));
            }
        }
        family.counters(
            "requests",
            "HTTP responses from providers by status code (status=\"none\": connection error or timeout)",
            None,
            statuses.iter().map(|(s, status, count)| {
                let mut l = labels(s);
                l.push(("status", status.as_str()));
                (l, *count)
            }),
        )?;
        family.counters(
            "request_retries",
            "Requests sent again after a transient failure",
            None,
            each(&|s| s.client.tally().retries.load(Relaxed)),
        )?;
        family.counters(
            "rate_limit_wait",
            "Time spent waiting for the request budget or a provider's Retry-After",
            Some(&Unit::Seconds),
            sources.iter().map(|s| {
                (
                    labels(s),
                    s.client.tally().rate_limit_wait_ms.load(Relaxed) as f64 / 1000.0,
                )
            }),
        )?;
        let mut metric = encoder.encode_descriptor(
            "cycle_duration",
            "How long cycles took",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for s in &sources {
            s.progress
                .cycle_durations
                .histogram()
                .encode(metric.encode_family(&labels(s))?)?;
        }
        Ok(())
    }
}

/// `now − then` in seconds, negative when `then` is in the future (a provider clock ahead
/// of ours), so the gauge never hides skew.
fn signed_seconds(then: Timestamp, now: Timestamp) -> f64 {
    (now.epoch_millis() - then.epoch_millis()) as f64 / 1000.0
}
