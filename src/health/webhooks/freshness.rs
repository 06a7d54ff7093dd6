//! Webhook freshness per source, as `/metrics` shows it: events accepted and refused, the
//! event→commit latency and which path (event or poll) saw changes first.
//!
//! The figures are read from the receiver's own series, rendered exactly as `/metrics`
//! renders them, so that a reader of these figures (`convsync demo`) and a Prometheus
//! scraper cannot disagree: there is no second set of counters to drift. The classic
//! histogram's quantiles are estimated the way Prometheus' `histogram_quantile` does
//! (linear within the bucket), so they are as coarse as its doubling buckets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;

use super::metrics::WebhookMetrics;
use crate::sync::Source;

/// One source's webhook figures so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceFreshness {
    /// The source's name.
    pub source: String,
    /// Its provider (`spruce`, …).
    pub provider: String,
    /// Events accepted (whatever they did to the mirror), duplicates not included.
    pub accepted: u64,
    /// Deliveries of an event id already recorded.
    pub duplicates: u64,
    /// Refused requests by reason (`bad_signature`, `stale`, `busy`, …).
    pub rejected: BTreeMap<String, u64>,
    /// Median time from the provider's sending to the commit (`None`: no event yet).
    pub event_to_commit_p50: Option<Duration>,
    /// 95th percentile of the same.
    pub event_to_commit_p95: Option<Duration>,
    /// Changes of the mirror an event brought first.
    pub first_by_event: u64,
    /// Changes a poll found that no event had brought (the first backfill included).
    pub first_by_poll: u64,
}

impl SourceFreshness {
    /// Requests refused, all reasons together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .values()
            .fold(0, |sum, n| sum.saturating_add(*n))
    }

    /// The share of changes first seen by an event (`None` before any change).
    pub fn event_share(&self) -> Option<f64> {
        let total = self.first_by_event.saturating_add(self.first_by_poll);
        (total > 0).then(|| self.first_by_event as f64 / total as f64)
    }
}

/// The figures of every source in `sources` that takes events (in that order), read from
/// `metrics` as `/metrics` renders them.
pub fn read(
    metrics: &WebhookMetrics,
    sources: &[Arc<Source>],
) -> Result<Vec<SourceFreshness>, std::fmt::Error> {
    let mut registry = Registry::default();
    metrics.register(
        registry.sub_registry_with_prefix("convsync"),
        crate::sync::SourceRegistry::of(sources.to_vec()),
    );
    let text = crate::health::metrics::encode(&registry)?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map_err(|_| std::fmt::Error)?;
    let mut by_source: BTreeMap<String, SourceFreshness> = BTreeMap::new();
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in &scrape.samples {
        let Some(source) = sample.labels.get("source") else {
            continue;
        };
        let figures = by_source
            .entry(source.to_owned())
            .or_insert_with(|| SourceFreshness {
                source: source.to_owned(),
                ..SourceFreshness::default()
            });
        let label = |name: &str| sample.labels.get(name);
        let count = count_of(&sample.value);
        match sample.metric.as_str() {
            "convsync_webhook_events_total" => match (label("outcome"), label("reason")) {
                (Some("accepted"), _) => {
                    figures.accepted = figures.accepted.saturating_add(count);
                }
                (Some("duplicate"), _) => {
                    figures.duplicates = figures.duplicates.saturating_add(count);
                }
                (Some("rejected"), Some(reason)) => {
                    let n = figures.rejected.entry(reason.to_owned()).or_default();
                    *n = n.saturating_add(count);
                }
                _ => {}
            },
            "convsync_webhook_event_to_commit_seconds" => {
                if let prometheus_parse::Value::Histogram(counts) = &sample.value {
                    buckets
                        .entry(source.to_owned())
                        .or_default()
                        .extend(counts.iter().map(|b| (b.less_than, b.count)));
                }
            }
            "convsync_changes_first_seen_total" => match label("path") {
                Some("event") => figures.first_by_event = count,
                Some("poll") => figures.first_by_poll = count,
                _ => {}
            },
            _ => {}
        }
    }
    for (source, mut cumulative) in buckets {
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(figures) = by_source.get_mut(&source) {
            figures.event_to_commit_p50 = quantile(&cumulative, 0.5);
            figures.event_to_commit_p95 = quantile(&cumulative, 0.95);
        }
    }
    Ok(sources
        .iter()
        .filter(|s| s.provider.webhooks().is_some())
        .map(|s| SourceFreshness {
            provider: s.provider.kind().as_str().to_owned(),
            ..by_source
                .remove(&s.name)
                .unwrap_or_else(|| SourceFreshness {
                    source: s.name.clone(),
                    ..SourceFreshness::default()
                })
        })
        .collect())
}

/// The `q` quantile of a classic histogram given as cumulative `(upper bound, count)`
/// pairs in ascending bound order, as Prometheus' `histogram_quantile` estimates it:
/// linear within the bucket that holds the rank, the highest finite bound when the rank
/// falls in the `+Inf` bucket. `None` without observations.
fn quantile(cumulative: &[(f64, f64)], q: f64) -> Option<Duration> {
    let total = cumulative.last()?.1;
    if total <= 0.0 || !q.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in cumulative {
        if count >= rank {
            let seconds = if upper.is_infinite() {
                lower
            } else if count > below {
                lower + (upper - lower) * (rank - below) / (count - below)
            } else {
                upper
            };
            return Duration::try_from_secs_f64(seconds).ok();
        }
        (lower, below) = (upper, count);
    }
    None
}

/// A counter's value as a count (counters are whole numbers; anything else reads as 0).
fn count_of(value: &prometheus_parse::Value) -> u64 {
    match value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v)
            if v.is_finite() && *v >= 0.0 =>
        {
            *v as u64
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket_like_prometheus() {
        // 10 observations: 4 up to 1 s, 4 more up to 2 s, 2 above 4 s.
        let buckets = [(1.0, 4.0), (2.0, 8.0), (4.0, 8.0), (f64::INFINITY, 10.0)];
        // rank 5 is the first of the four in (1, 2]: a quarter of the way.
        assert_eq!(quantile(&buckets, 0.5), Some(Duration::from_millis(1250)));
        // rank 9.5 falls in +Inf: the highest finite bound.
        assert_eq!(quantile(&buckets, 0.95), Some(Duration::from_secs(4)));
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_event_share_counts_both_paths() {
        let figures = SourceFreshness {
            first_by_event: 3,
            first_by_poll: 1,
            ..SourceFreshness::default()
        };
        assert_eq!(figures.event_share(), Some(0.75));
        assert_eq!(SourceFreshness::default().event_share(), None);
    }
}
