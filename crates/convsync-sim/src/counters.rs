//! Per provider / endpoint / status / auth-scheme request counters.
//!
//! Tests use them to assert how a client behaved: how many pages it fetched, that it
//! backed off after a 429, that it never used Sinch Basic auth for data calls. Beside the
//! counts, *sightings* record request details a handler found worth noting (which
//! generation of D365 auth headers, which HighLevel `Version`), so that tests can see
//! what a client actually sent. Per *scope* (one account's own budget or credential: a
//! HighLevel location, a Spruce organization) they count what clients sharing the work
//! must never cause: 429s from the account's own quota, and refresh tokens presented again
//! after they were rotated away.

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::platform::Platform;

/// How a request authenticated itself (from the `Authorization` header's scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAuth {
    /// No `Authorization` header.
    None,
    /// `Authorization: Bearer …`.
    Bearer,
    /// `Authorization: Basic …`.
    Basic,
    /// Any other scheme.
    Other,
}

impl RequestAuth {
    /// Classify a request by its headers.
    pub(crate) fn of(headers: &HeaderMap) -> RequestAuth {
        let Some(value) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return RequestAuth::None;
        };
        let scheme = value.split_whitespace().next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("bearer") {
            RequestAuth::Bearer
        } else if scheme.eq_ignore_ascii_case("basic") {
            RequestAuth::Basic
        } else {
            RequestAuth::Other
        }
    }
}

/// One counter row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Which simulated provider answered.
    pub provider: Platform,
    /// Method and route template, e.g. `GET /v1/conversations`; `unmatched` for 404s
    /// on unknown paths.
    pub endpoint: String,
    /// HTTP status sent; `None` when the connection was dropped (reset fault).
    pub status: Option<u16>,
    /// Authentication scheme the request used.
    pub auth: RequestAuth,
    /// Number of such requests since start or the last reset.
    pub count: u64,
}

/// How often a provider saw one request detail (see `RequestCounters::saw`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    /// Which simulated provider saw it.
    pub provider: Platform,
    /// The detail, e.g. `auth headers: x-ms-channel-id` or `Version: 2021-07-28`.
    pub detail: String,
    /// Number of requests that carried it since start or the last reset.
    pub count: u64,
}

/// How often something happened to one account (a rate-limit scope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeCount {
    /// Which simulated provider counted it.
    pub provider: Platform,
    /// The account as the provider names it (HighLevel location id, Spruce organization
    /// id).
    pub scope: String,
    /// Number of times since start or the last reset.
    pub count: u64,
}

/// Snapshot of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    /// Rows sorted by provider, endpoint, status, auth.
    pub entries: Vec<RequestCount>,
    /// Request details seen, sorted by provider and detail.
    #[serde(default)]
    pub sightings: Vec<Sighting>,
    /// 429s answered because one account's own quota was spent, per account.
    #[serde(default)]
    pub quota_refusals: Vec<ScopeCount>,
    /// Rotated (already spent) refresh tokens presented again, per account.
    #[serde(default)]
    pub refresh_token_reuses: Vec<ScopeCount>,
}

impl RequestCounts {
    /// Requests to `provider` whose endpoint contains `endpoint_part` (any status).
    pub fn total(&self, provider: Platform, endpoint_part: &str) -> u64 {
        self.matching(provider, endpoint_part)
            .map(|e| e.count)
            .sum()
    }

    /// Requests to `provider` whose endpoint contains `endpoint_part` and that were
    /// answered with `status` (`None` = dropped connection).
    pub fn with_status(&self, provider: Platform, endpoint_part: &str, status: Option<u16>) -> u64 {
        self.matching(provider, endpoint_part)
            .filter(|e| e.status == status)
            .map(|e| e.count)
            .sum()
    }

    /// Requests to `provider` that used `auth`, excluding its token endpoint.
    pub fn data_requests_with_auth(&self, provider: Platform, auth: RequestAuth) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.provider == provider && e.auth == auth && !e.endpoint.contains("token"))
            .map(|e| e.count)
            .sum()
    }

    /// Requests to `provider` that carried `detail` (see `RequestCounters::saw`).
    pub fn seen(&self, provider: Platform, detail: &str) -> u64 {
        self.sightings
            .iter()
            .filter(|s| s.provider == provider && s.detail == detail)
            .map(|s| s.count)
            .sum()
    }

    /// 429s from the accounts' own quotas, summed over every account.
    pub fn total_quota_refusals(&self) -> u64 {
        self.quota_refusals.iter().map(|s| s.count).sum()
    }

    /// Spent refresh tokens presented again, summed over every account.
    pub fn total_refresh_token_reuses(&self) -> u64 {
        self.refresh_token_reuses.iter().map(|s| s.count).sum()
    }

    fn matching<'a>(
        &'a self,
        provider: Platform,
        endpoint_part: &'a str,
    ) -> impl Iterator<Item = &'a RequestCount> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.provider == provider && e.endpoint.contains(endpoint_part))
    }
}

type CounterKey = (Platform, String, Option<u16>, RequestAuth);

/// Counts per (provider, scope).
#[derive(Debug, Default)]
struct ScopeCounters(Mutex<BTreeMap<(Platform, String), u64>>);

impl ScopeCounters {
    fn add(&self, provider: Platform, scope: &str) {
        let mut table = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *table.entry((provider, scope.to_owned())).or_insert(0) += 1;
    }

    fn snapshot(&self) -> Vec<ScopeCount> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((provider, scope), count)| ScopeCount {
                provider: *provider,
                scope: scope.clone(),
                count: *count,
            })
            .collect()
    }

    fn reset(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Thread-safe counter table shared by all provider listeners.
#[derive(Debug, Default)]
pub(crate) struct RequestCounters {
    table: Mutex<BTreeMap<CounterKey, u64>>,
    sightings: Mutex<BTreeMap<(Platform, String), u64>>,
    quota_refusals: ScopeCounters,
    refresh_token_reuses: ScopeCounters,
}

impl RequestCounters {
    pub(crate) fn record(
        &self,
        provider: Platform,
        endpoint: &str,
        status: Option<u16>,
        auth: RequestAuth,
    ) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        *table
            .entry((provider, endpoint.to_owned(), status, auth))
            .or_insert(0) += 1;
    }

    /// Notes that a request to `provider` carried `detail` (a header generation, a version
    /// value): what the simulator accepts leniently, tests still want to see.
    pub(crate) fn saw(&self, provider: Platform, detail: &str) {
        let mut sightings = self.sightings.lock().unwrap_or_else(|e| e.into_inner());
        *sightings.entry((provider, detail.to_owned())).or_insert(0) += 1;
    }

    /// Notes a 429 answered because `scope`'s own quota was spent.
    pub(crate) fn refused_by_quota(&self, provider: Platform, scope: &str) {
        self.quota_refusals.add(provider, scope);
    }

    /// Notes that a refresh token of `scope` was presented after it had been spent.
    pub(crate) fn reused_refresh_token(&self, provider: Platform, scope: &str) {
        self.refresh_token_reuses.add(provider, scope);
    }

    pub(crate) fn snapshot(&self) -> RequestCounts {
        let sightings = self
            .sightings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((provider, detail), count)| Sighting {
                provider: *provider,
                detail: detail.clone(),
                count: *count,
            })
            .collect();
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        RequestCounts {
            sightings,
            quota_refusals: self.quota_refusals.snapshot(),
            refresh_token_reuses: self.refresh_token_reuses.snapshot(),
            entries: table
                .iter()
                .map(|((provider, endpoint, status, auth), count)| RequestCount {
                    provider: *provider,
                    endpoint: endpoint.clone(),
                    status: *status,
                    auth: *auth,
                    count: *count,
                })
                .collect(),
        }
    }

    pub(crate) fn reset(&self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.sightings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.quota_refusals.reset();
        self.refresh_token_reuses.reset();
    }
}
