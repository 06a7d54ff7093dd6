//! Spruce's delivery log: every event attempted to an endpoint (dropped ones included),
//! listable for 30 days, 20 per page, oldest first, as
//! `GET /v1/webhooks/endpoints/{endpointId}/events?startTime&endTime&paginationToken`
//! (`ListWebhookEndpointEvents` of the official spec).
//!
//! ASSUMPTIONS (the spec is silent): `delivery.status` is `pending`, `delivered` or
//! `failed`; the page is ordered by `eventTime` ascending; `startTime` and `endTime` are
//! inclusive; `data` is the delivered body as a string (the schema types it `string`).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};

use super::super::ids::{crockford, parse_crockford};
use super::super::wire;
use super::delivery::{Outgoing, RetryPolicy};

/// How long the log keeps an event.
const RETENTION_US: i64 = 30 * 24 * 3600 * 1_000_000;
/// Events per page (fixed by Spruce).
const PAGE_SIZE: usize = 20;
/// Entries kept at most, whatever their age (the oldest go first).
const MAX_ENTRIES: usize = 200_000;

/// Where an event's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    account: usize,
    id: String,
    event_time_us: i64,
    data: String,
    attempts: u32,
    status: Status,
    delivery_time_us: Option<i64>,
    next_attempt_us: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Entry>,
    by_id: HashMap<String, u64>,
    next_seq: u64,
}

impl Inner {
    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let seq = *self.by_id.get(id)?;
        let first = self.entries.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.entries.get_mut(index)
    }
}

/// The log of every Spruce endpoint (one per organization).
#[derive(Debug, Default)]
pub(crate) struct DeliveryLog(Mutex<Inner>);

/// Why a page could not be listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PageError {
    #[error("invalid paginationToken")]
    BadToken,
}

impl DeliveryLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new event, before any attempt.
    pub(crate) fn record(&self, event: &Outgoing, now_us: i64) {
        let mut inner = self.lock();
        while inner
            .entries
            .front()
            .is_some_and(|e| e.event_time_us < now_us.saturating_sub(RETENTION_US))
            || inner.entries.len() >= MAX_ENTRIES
        {
            if let Some(old) = inner.entries.pop_front() {
                inner.by_id.remove(&old.id);
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.by_id.insert(event.event_id.clone(), seq);
        inner.entries.push_back(Entry {
            seq,
            account: event.account,
            id: event.event_id.clone(),
            event_time_us: event.sent_at_us,
            data: serde_json::to_string(&event.body).unwrap_or_default(),
            attempts: 0,
            status: Status::Pending,
            delivery_time_us: None,
            next_attempt_us: None,
        });
    }

    /// One more attempt of `id` was made.
    pub(crate) fn attempted(&self, id: &str) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.attempts = entry.attempts.saturating_add(1);
        }
    }

    /// `id` will be attempted again at `next_us`.
    pub(crate) fn retrying(&self, id: &str, next_us: i64) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.next_attempt_us = Some(next_us);
        }
    }

    /// `id` was delivered (at `delivered_us`) or given up.
    pub(crate) fn finish(&self, id: &str, status: Status, delivered_us: Option<i64>) {
        if let Some(entry) = self.lock().get_mut(id) {
            // A late copy's answer never turns a delivered event back.
            if entry.status != Status::Delivered {
                entry.status = status;
                entry.delivery_time_us = delivered_us;
                entry.next_attempt_us = None;
            }
        }
    }

    /// One page of `account`'s events with `eventTime` in `[start, end]`, after the
    /// position `token` names. Returns the events, `hasMore` and the next token.
    pub(crate) fn page(
        &self,
        account: usize,
        start_us: Option<i64>,
        end_us: Option<i64>,
        token: Option<&str>,
        now_us: i64,
    ) -> Result<(Vec<Value>, bool, Option<String>), PageError> {
        let fingerprint = wire::fingerprint(&[
            &account.to_string(),
            &format!("{start_us:?}"),
            &format!("{end_us:?}"),
        ]);
        let after = match token {
            None => None,
            // Thirteen characters of query fingerprint, thirteen of position.
            Some(text) => {
                let (query, position) = text.split_at_checked(13).ok_or(PageError::BadToken)?;
                let query = parse_crockford(query).ok_or(PageError::BadToken)?;
                if query != u128::from(fingerprint) {
                    return Err(PageError::BadToken);
                }
                let position = parse_crockford(position).ok_or(PageError::BadToken)?;
                Some(u64::try_from(position).map_err(|_| PageError::BadToken)?)
            }
        };
        let horizon = now_us.saturating_sub(RETENTION_US);
        let inner = self.lock();
        let mut rows = inner.entries.iter().filter(|e| {
            e.account == account
                && e.event_time_us >= horizon
                && after.is_none_or(|a| e.seq > a)
                && start_us.is_none_or(|s| e.event_time_us >= s)
                && end_us.is_none_or(|t| e.event_time_us <= t)
        });
        let page: Vec<&Entry> = rows.by_ref().take(PAGE_SIZE).collect();
        let has_more = rows.next().is_some();
        let next = has_more.then(|| page.last()).flatten().map(|last| {
            let query = crockford(u128::from(fingerprint), 13);
            format!("{query}{}", crockford(u128::from(last.seq), 13))
        });
        let limit = RetryPolicy::of(super::super::platform::Platform::Spruce).attempts;
        let events = page
            .into_iter()
            .map(|e| {
                let mut delivery = json!({
                    "attemptLimit": limit,
                    "attempts": e.attempts,
                    "status": e.status.as_str(),
                });
                if let Some(at) = e.delivery_time_us {
                    delivery["deliveryTime"] = json!(wire::rfc3339_ms(at));
                }
                if let Some(at) = e.next_attempt_us {
                    delivery["nextAttemptTime"] = json!(wire::rfc3339_ms(at));
                }
                json!({
                    "object": "webhookEndpointEvent",
                    "id": e.id,
                    "eventTime": wire::rfc3339_ms(e.event_time_us),
                    "data": e.data,
                    "delivery": delivery,
                })
            })
            .collect();
        Ok((events, has_more, next))
    }
}
