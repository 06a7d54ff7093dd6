//! Replay after downtime (docs/webhooks.md, "Replay after downtime"): a source whose
//! provider keeps a log of the events it sent (Spruce's delivery log) reads that log at
//! start-up, from a little before the newest event the mirror recorded, and writes each
//! logged event exactly as the receiver would have: parsed by the provider's
//! [`Webhooks::parse`](crate::provider::Webhooks::parse) (the log came over the provider's
//! authenticated API: there is no signature to check, and the replay window does not apply
//! to events that are old by design), then recorded by id and applied in one transaction.
//!
//! - **Position**: the newest `sent_at` in `webhook_deliveries` for the source
//!   ([`crate::store::WebhookWrites::newest_delivery`]). It is written in the transaction
//!   that applies each event, received or replayed, so it never runs ahead of the mirror.
//!   The replay starts [`LOOKBACK`] before it: an event dropped while a later one got
//!   through, or retried late, is inside the range. Dedupe makes the overlap harmless (the
//!   log's event ids are the delivered ones): an event already recorded writes nothing.
//! - **Nothing recorded yet**: no replay. A source that never took an event has no
//!   downtime to make up; its first poll brings the mirror up to date.
//! - **Bounds**: the log's retention (30 days for Spruce), [`MAX_REPLAY_PAGES`] pages (a
//!   log longer than that is left to polling, with a warning), a repeated page token
//!   ends the replay, and the requests go through the source's own client and budget at
//!   the daemon's own priority, like its follow-ups.
//! - **Polling is untouched**: the replay runs beside the source's cycles; the ordering
//!   rule makes the order in which a poll and a replayed event reach a row irrelevant.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use super::{WebhookTarget, event_write};
use crate::http::HttpError;
use crate::provider::webhook::WebhookRequest;
use crate::provider::{Provider, ProviderError};
use crate::store::{EventOutcome, Store, StoreError};
use crate::sync::Source;
use crate::time::Timestamp;

/// Pages of the log read at most in one replay (Spruce: 20 events each, so 1,000 events).
pub const MAX_REPLAY_PAGES: u32 = 50;

/// How long before the newest recorded event the replay starts: longer than Spruce's
/// retry horizon seen by the receiver (docs/webhooks.md, `replay_window`).
pub const LOOKBACK: Duration = Duration::from_secs(3600);

/// What one replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Pages of the log read.
    pub pages: u32,
    /// Events the log listed.
    pub listed: u64,
    /// Events written for the first time (any outcome but `duplicate`).
    pub recorded: u64,
    /// Events already recorded: nothing written.
    pub duplicates: u64,
    /// Logged bodies the provider's parser refused: skipped (polling covers them).
    pub unreadable: u64,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The position could not be read or an event written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request of the log failed.
    #[error("event log request: {0}")]
    Http(#[from] HttpError),
    /// A page of the log is not what the provider documents.
    #[error("event log page: {0}")]
    Provider(ProviderError),
    /// The log is longer than [`MAX_REPLAY_PAGES`] pages.
    #[error("the event log has more than {0} pages since the position")]
    TooLong(u32),
    /// The provider handed back a page token already followed.
    #[error("the event log repeated a page token")]
    Loop,
    /// Shutdown was requested.
    #[error("interrupted by shutdown")]
    Interrupted,
}

/// Replays `source`'s event log into `store`, from its recorded position to now. `None`
/// when there is nothing to replay: no log configured, or no event recorded yet.
pub async fn replay_source(
    source: &Source,
    store: &Store,
    max_pages: u32,
    cancel: &CancellationToken,
) -> Result<Option<ReplayReport>, ReplayError> {
    let provider: &dyn Provider = &*source.provider;
    let (Some(webhooks), Some(log)) = (provider.webhooks(), provider.event_log()) else {
        return Ok(None);
    };
    let Some(position) = store.newest_delivery(&source.name).await? else {
        tracing::info!(source = %source.name, "no webhook event recorded yet: nothing to replay");
        return Ok(None);
    };
    let end = Timestamp::now();
    // A minute inside the retention, so the first page is not refused for its start.
    let oldest = end.saturating_sub(log.retention().saturating_sub(Duration::from_secs(60)));
    let start = position.saturating_sub(LOOKBACK).max(oldest);
    let target = WebhookTarget {
        entry: source.name.clone(),
        source: source.name.clone(),
        provider: source.provider.clone(),
    };
    let headers = HeaderMap::new();
    let mut report = ReplayReport::default();
    let mut token: Option<String> = None;
    let mut followed = HashSet::new();
    loop {
        if report.pages >= max_pages {
            return Err(ReplayError::TooLong(max_pages));
        }
        let request = log
            .request(start, end, token.as_deref())
            .map_err(|e| ReplayError::Provider(e.redacted()))?;
        let response = tokio::select! {
            sent = source.client.send(&request, provider) => sent?,
            _ = cancel.cancelled() => return Err(ReplayError::Interrupted),
        };
        report.pages = report.pages.saturating_add(1);
        let page = log
            .parse_page(&response)
            .map_err(|e| ReplayError::Provider(e.redacted()))?;
        for logged in &page.events {
            report.listed = report.listed.saturating_add(1);
            let request = WebhookRequest {
                subpath: "",
                headers: &headers,
                body: &logged.body,
            };
            let events = match webhooks.parse(&request) {
                Ok(events) => events,
                Err(rejection) => {
                    report.unreadable = report.unreadable.saturating_add(1);
                    tracing::warn!(source = %source.name, reason = rejection.reason(), error = %rejection, "logged webhook event skipped");
                    continue;
                }
            };
            for event in &events {
                match store.apply_event(&event_write(&target, event)).await? {
                    EventOutcome::Duplicate => {
                        report.duplicates = report.duplicates.saturating_add(1);
                    }
                    outcome => {
                        report.recorded = report.recorded.saturating_add(1);
                        tracing::debug!(source = %source.name, kind = %event.kind, outcome = outcome.as_str(), "replayed webhook event");
                    }
                }
            }
        }
        match page.next {
            None => break,
            Some(next) => {
                if !followed.insert(next.clone()) {
                    return Err(ReplayError::Loop);
                }
                token = Some(next);
            }
        }
    }
    Ok(Some(report))
}

/// Replays every source of `sources` that has an event log, once, logging the outcome: a
/// failed replay is left to polling.
pub async fn replay_all(sources: Vec<Arc<Source>>, store: Store, cancel: CancellationToken) {
    for source in sources {
        match replay_source(&source, &store, MAX_REPLAY_PAGES, &cancel).await {
            Ok(None) => {}
            Ok(Some(report)) => {
                tracing::info!(source = %source.name, pages = report.pages, listed = report.listed, recorded = report.recorded, duplicates = report.duplicates, unreadable = report.unreadable, "webhook event log replayed");
            }
            Err(ReplayError::Interrupted) => return,
            Err(e) => {
                tracing::warn!(source = %source.name, error = %e, "webhook event log not replayed; polling covers what was missed");
            }
        }
    }
}
