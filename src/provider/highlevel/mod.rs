//! HighLevel (LeadConnector) API v2: mirrors the conversations of one location
//! (sub-account) through `GET /conversations/search`.
//!
//! The search has one useful order, `sortBy=last_message_date` newest first, one cursor,
//! `startAfterDate` (the sort value to continue after, epoch ms: each row's `sort[0]`,
//! or its `lastMessageDate` where `sort` is missing or not sane), and no "updated since"
//! filter. Two walks share it:
//!
//! - **delta**, every cycle: newest first down to `watermark − lookback`, where the
//!   watermark is the greatest `lastMessageDate` of a completed walk. It sees every new
//!   message, because a message moves its conversation to the top.
//! - **sweep**, every `sweep_interval`: the whole listing, then a second look at the top
//!   (see `keyset`). Read/unread, starring, reassignment and contact edits do not move
//!   `lastMessageDate`, so only the sweep refreshes them; conversations it does not list
//!   are marked deleted, behind the engine's mass-change guard.
//!
//! How ties on `lastMessageDate` across page boundaries are kept is described in
//! `keyset`. Every request carries the `Version` header (`2021-04-15` unless configured);
//! authentication (a Private
//! Integration Token or OAuth with rotating refresh tokens) is configured in `config`.

mod agency;
mod config;
pub(crate) use config::{account_suffixes, defaults};
mod conversation;
mod errors;
mod keyset;
mod limits;
mod webhook;

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

pub use agency::MAX_LOCATIONS;
pub use config::{DEFAULT_BASE_URL, HighLevelConfig, LocationConfig, directory, setup};
pub use webhook::{HighLevelWebhooks, PUBLISHED_PUBLIC_KEY_PEM, WebhookKeyError};

use self::conversation::DateField;
use self::keyset::{PageShape, Position, Role};
use crate::http::{HttpResponse, Pause, RequestSpec, ResponsePolicy};
use crate::provider::{
    Absence, InitialSweep, Page, Provider, ProviderError, ProviderKind, Walk, WalkContext,
    WalkKind, WalkSpec, WatermarkAdvance, Webhooks,
};
use crate::time::Timestamp;

/// The API version requests name unless `api_version` says otherwise: the only value the
/// spec's enum allows (the server does not enforce the enum; `2021-07-28` works too).
pub const API_VERSION: &str = "2021-04-15";

/// The delta, every cycle. Its name keys its cursor in the database: never rename it.
/// Newest first: everything below the page's oldest row is unseen until the walk ends, so
/// the watermark moves only then.
const DELTA: WalkSpec = WalkSpec::delta("delta", WatermarkAdvance::AtWalkEnd);
/// The sweep, when it is due. The first delta, without a watermark, already lists
/// everything.
const SWEEP: WalkSpec = WalkSpec::sweep("sweep", Absence::Deleted, InitialSweep::AfterInterval);

/// The adapter for one location.
#[derive(Debug)]
pub struct HighLevel {
    location_id: String,
    /// The location's burst window, read from its responses' rate-limit headers.
    burst: limits::BurstWindow,
    /// The delta first (cheap, every cycle), then the sweep when it is due.
    walks: [Arc<dyn Walk>; 2],
    /// Its webhooks' check and reading (set up for every configured source).
    webhooks: Option<Arc<HighLevelWebhooks>>,
}

impl HighLevel {
    /// An adapter reading `location_id` through `search_url` (`…/conversations/search`),
    /// `page_size` conversations per request, naming `api_version` in every request.
    pub fn new(location_id: String, search_url: Url, page_size: u32, api_version: String) -> Self {
        let search = Arc::new(Search {
            location_id: location_id.clone(),
            search_url,
            page_size,
            api_version,
        });
        let walk = |spec| -> Arc<dyn Walk> {
            Arc::new(SearchWalk {
                spec,
                search: search.clone(),
            })
        };
        HighLevel {
            location_id,
            burst: limits::BurstWindow::default(),
            walks: [walk(DELTA), walk(SWEEP)],
            webhooks: None,
        }
    }

    /// The same adapter, accepting the webhooks `webhooks` verifies.
    pub fn with_webhooks(mut self, webhooks: Option<Arc<HighLevelWebhooks>>) -> Self {
        self.webhooks = webhooks;
        self
    }
}

/// The search both walks read: one location's conversations, newest message first.
#[derive(Debug)]
struct Search {
    location_id: String,
    search_url: Url,
    page_size: u32,
    /// The `Version` header value.
    api_version: String,
}

/// `SendConversationResponseDto`: the items are kept raw so each record holds its JSON as
/// received.
#[derive(Deserialize)]
struct SearchResponse<'a> {
    #[serde(borrow)]
    conversations: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    total: Option<Value>,
}

impl Provider for HighLevel {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Highlevel
    }

    fn account(&self) -> &str {
        &self.location_id
    }

    fn walks(&self) -> &[Arc<dyn Walk>] {
        &self.walks
    }

    fn webhooks(&self) -> Option<&dyn Webhooks> {
        self.webhooks.as_deref().map(|w| w as &dyn Webhooks)
    }
}

impl ResponsePolicy for HighLevel {
    fn describe_error(&self, status: StatusCode, body: &[u8]) -> String {
        errors::describe(status, body, &self.location_id)
    }

    fn pacing(&self, headers: &HeaderMap) -> Option<Pause> {
        self.burst.pacing(headers)
    }

    fn remaining_requests(&self, headers: &HeaderMap) -> Option<u64> {
        limits::remaining_requests(headers)
    }
}

/// The delta or the sweep over the search; they differ in where they stop (see `keyset`).
#[derive(Debug)]
struct SearchWalk {
    spec: WalkSpec,
    search: Arc<Search>,
}

impl SearchWalk {
    fn role(&self, at: &WalkContext<'_>) -> Role {
        match self.spec.kind {
            WalkKind::Delta(_) => Role::Delta {
                since_ms: at.since.map(Timestamp::epoch_millis),
            },
            WalkKind::Sweep { .. } => Role::Sweep,
        }
    }

    /// Adds the next position (and the keyset's notes) to a parsed page.
    fn finish(
        &self,
        at: &WalkContext<'_>,
        position: &Position,
        mut page: Page,
        shape: PageShape,
    ) -> Result<Page, ProviderError> {
        let step = keyset::step(self.role(at), position, self.search.page_size, &shape)?;
        page.next = step.next.map(|p| p.to_value());
        page.notes.extend(
            step.notes
                .into_iter()
                .map(|n| format!("{}: {n}", self.spec.name)),
        );
        Ok(page)
    }
}

impl Walk for SearchWalk {
    fn spec(&self) -> WalkSpec {
        self.spec
    }

    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let position = Position::from_cursor(at.position)?;
        let search = &*self.search;
        let mut url = search.search_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("locationId", &search.location_id)
                .append_pair("sortBy", "last_message_date")
                .append_pair("sort", "desc")
                .append_pair("status", "all")
                .append_pair("limit", &search.page_size.to_string());
            if let Some(after) = position.after {
                query.append_pair("startAfterDate", &after.to_string());
            }
        }
        Ok(RequestSpec::get(url, "search")
            .header("Version", search.api_version.clone())
            .header("Accept", "application/json"))
    }

    fn parse_page(
        &self,
        at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let position = Position::from_cursor(at.position)?;
        let body: SearchResponse<'_> = serde_json::from_slice(&response.body)
            .map_err(|e| ProviderError::Malformed(format!("search response: {e}")))?;
        let Some(items) = body.conversations else {
            // `null` is read as empty; a missing key is not a search response at all.
            let has_key = serde_json::from_slice::<serde_json::Map<String, Value>>(&response.body)
                .is_ok_and(|m| m.contains_key("conversations"));
            if has_key {
                return self.finish(at, &position, Page::default(), PageShape::default());
            }
            return Err(ProviderError::Malformed(
                "search response without a `conversations` array".into(),
            ));
        };
        let mut page = Page::default();
        let mut shape = PageShape {
            rows: items.len(),
            dates: Vec::with_capacity(items.len()),
            total: crate::provider::lenient_count(body.total.as_ref()),
        };
        let mut unreadable_dates = 0usize;
        for item in items {
            match conversation::read(item) {
                Ok(result) => {
                    shape.dates.extend(result.sort_key);
                    if result.last_message == DateField::Unreadable {
                        unreadable_dates += 1;
                    }
                    if let Some(record) = result.record {
                        page.records.push(record);
                    }
                }
                Err(rejected) => page.rejected.push(rejected),
            }
        }
        if unreadable_dates > 0 {
            page.notes.push(format!(
                "{}: {unreadable_dates} conversation(s) with an unreadable lastMessageDate were \
                 stored without an activity time",
                self.spec.name
            ));
        }
        page.high_water = page.records.iter().filter_map(|r| r.last_activity_at).max();
        // `total` counts the whole listing: what a sweep, or a delta without a watermark
        // yet, reads; a delta stops at its watermark long before.
        let whole_listing = matches!(self.spec.kind, WalkKind::Sweep { .. }) || at.since.is_none();
        page.total_hint = shape.total.filter(|_| whole_listing);
        self.finish(at, &position, page, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn adapter(page_size: u32) -> HighLevel {
        HighLevel::new(
            "ve9EPM428kjkvShlRW1KT".into(),
            Url::parse("https://services.leadconnectorhq.com/conversations/search").unwrap(),
            page_size,
            API_VERSION.to_owned(),
        )
    }

    fn ok(body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn ctx(since: Option<Timestamp>, position: Option<&Value>) -> WalkContext<'_> {
        WalkContext { since, position }
    }

    fn delta(hl: &HighLevel) -> &dyn Walk {
        hl.walks()[0].as_ref()
    }

    fn sweep(hl: &HighLevel) -> &dyn Walk {
        hl.walks()[1].as_ref()
    }

    fn item(id: &str, last: i64) -> String {
        format!(
            r#"{{"id":"{id}","type":"TYPE_PHONE","unreadCount":0,"lastMessageDate":{last},"dateAdded":1770000000000}}"#
        )
    }

    fn body(items: &[String], total: u64) -> String {
        format!(
            r#"{{"conversations":[{}],"total":{total},"traceId":"t-1"}}"#,
            items.join(",")
        )
    }

    /// `total` counts the whole listing: the walk's total for a sweep or a first delta,
    /// none for a delta that stops at its watermark.
    #[test]
    fn total_is_a_walk_total_only_where_the_walk_reads_the_whole_listing() {
        let hl = adapter(100);
        let json = body(&[item("a", 1772443200123)], 14021);
        let hint = |walk: &dyn Walk, since| {
            walk.parse_page(&ctx(since, None), &ok(&json))
                .unwrap()
                .total_hint
        };
        let since = Some(Timestamp::from_epoch_millis(1772000000000).unwrap());
        assert_eq!(hint(delta(&hl), None), Some(14021));
        assert_eq!(hint(sweep(&hl), None), Some(14021));
        assert_eq!(hint(delta(&hl), since), None);
    }

    /// Walk names key the cursors in existing databases: they, their order and their
    /// roles never change.
    #[test]
    fn walks_keep_their_stable_names() {
        assert_eq!(
            crate::provider::walk::walk_table(&adapter(100)),
            [
                "delta: Delta(AtWalkEnd)",
                "sweep: Sweep { absence: Deleted, initial: AfterInterval }",
            ]
        );
    }

    /// The first page asks for the newest conversations of the location with the version
    /// header; later pages continue with `startAfterDate`.
    #[test]
    fn requests_name_location_order_version_and_cursor() {
        let hl = adapter(100);
        let first = delta(&hl).build_request(&ctx(None, None)).unwrap();
        assert_eq!(
            first.url.as_str(),
            "https://services.leadconnectorhq.com/conversations/search?locationId=ve9EPM428kjkvShlRW1KT&sortBy=last_message_date&sort=desc&status=all&limit=100"
        );
        assert!(
            first
                .headers
                .contains(&("Version", "2021-04-15".to_owned()))
        );
        assert_eq!(first.method, reqwest::Method::GET);
        let position = serde_json::json!({"after": 1772443200124_i64, "page_size": 100});
        let next = delta(&hl)
            .build_request(&ctx(None, Some(&position)))
            .unwrap();
        assert!(
            next.url
                .as_str()
                .ends_with("&limit=100&startAfterDate=1772443200124"),
            "{}",
            next.url
        );
    }

    /// The reference's example response: one record, the watermark at its
    /// `lastMessageDate`, and a short page that completes the walk.
    #[test]
    fn reference_example_response() {
        let json = r#"{"conversations":[{"id":"tDtDnQdgm2LXpyiqYvZ6","locationId":"ve9EPM428kjkvShlRW1KT","contactId":"9VEmS0si86GW6gXWU89b","type":"TYPE_PHONE","lastMessageType":"TYPE_SMS","lastMessageBody":"See you at 3pm","lastMessageDirection":"inbound","lastMessageDate":1772443200123,"dateAdded":1770000000000,"dateUpdated":1772443200456,"unreadCount":1,"fullName":"John Doe","contactName":"John Doe","email":"john@example.com","phone":"+15550001234","assignedTo":"ABCHkzuJQ8ZMd4Te84GK","starred":false,"inbox":true}],"total":1}"#;
        let page = delta(&adapter(100))
            .parse_page(&ctx(None, None), &ok(json))
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.high_water.unwrap().epoch_millis(), 1_772_443_200_123);
        assert!(page.next.is_none());
        assert!(page.rejected.is_empty() && page.notes.is_empty());
    }

    /// Across a page boundary inside a tie cluster, the next request starts one millisecond
    /// above the shared date, so the cluster's remaining rows are listed.
    #[test]
    fn tie_cluster_at_a_page_boundary_is_listed_again() {
        let hl = adapter(3);
        let page = delta(&hl)
            .parse_page(
                &ctx(None, None),
                &ok(&body(&[item("a", 900), item("b", 800), item("c", 800)], 10)),
            )
            .unwrap();
        let next = page.next.unwrap();
        let request = delta(&hl).build_request(&ctx(None, Some(&next))).unwrap();
        assert!(
            request.url.as_str().ends_with("startAfterDate=801"),
            "{}",
            request.url
        );
    }

    /// A delta with a watermark stops at the first page that reaches below it.
    #[test]
    fn delta_stops_at_its_lower_bound() {
        let since = Timestamp::from_epoch_millis(850).unwrap();
        let page = delta(&adapter(3))
            .parse_page(
                &ctx(Some(since), None),
                &ok(&body(&[item("a", 900), item("b", 860), item("c", 800)], 10)),
            )
            .unwrap();
        assert!(page.next.is_none());
        assert_eq!(page.records.len(), 3);
    }

    /// A sweep of several pages is not complete after its last listing page: it catches
    /// up on the top first.
    #[test]
    fn sweep_ends_with_a_catch_up_phase() {
        let hl = adapter(2);
        let first = sweep(&hl)
            .parse_page(
                &ctx(None, None),
                &ok(&body(&[item("a", 900), item("b", 800)], 3)),
            )
            .unwrap();
        let second_at = first.next.unwrap();
        let last = sweep(&hl)
            .parse_page(
                &ctx(None, Some(&second_at)),
                &ok(&body(&[item("c", 700)], 3)),
            )
            .unwrap();
        let catch_up = last.next.expect("a catch-up phase");
        let request = sweep(&hl)
            .build_request(&ctx(None, Some(&catch_up)))
            .unwrap();
        assert!(
            !request.url.as_str().contains("startAfterDate"),
            "{}",
            request.url
        );
    }

    /// Items without an id are rejected while the rest of the page is kept.
    #[test]
    fn rejected_items_do_not_stop_the_page() {
        let page = delta(&adapter(100))
            .parse_page(
                &ctx(None, None),
                &ok(&body(
                    &[item("a", 900), r#"{"contactId":"x"}"#.to_owned()],
                    2,
                )),
            )
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.rejected.len(), 1);
    }

    /// Bodies that are not a search response are malformed; `null` conversations are an
    /// empty page; an unreadable stored position is a cursor error.
    #[test]
    fn malformed_bodies_and_cursors() {
        let hl = adapter(100);
        let walk = delta(&hl);
        for bad in [
            r#"{"conversations":[{"id":"a""#,
            r#"{"statusCode":200}"#,
            "[]",
            "",
        ] {
            assert!(
                matches!(
                    walk.parse_page(&ctx(None, None), &ok(bad)),
                    Err(ProviderError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let empty = walk
            .parse_page(&ctx(None, None), &ok(r#"{"conversations":null,"total":0}"#))
            .unwrap();
        assert!(empty.records.is_empty() && empty.next.is_none());
        let garbage = serde_json::json!("page-2");
        assert!(matches!(
            walk.build_request(&ctx(None, Some(&garbage))),
            Err(ProviderError::BadCursor(_))
        ));
    }

    /// Unreadable dates are stored without an activity time and reported.
    #[test]
    fn unreadable_dates_are_noted() {
        let json = r#"{"conversations":[{"id":"a","lastMessageDate":"soon"}],"total":1}"#;
        let page = delta(&adapter(100))
            .parse_page(&ctx(None, None), &ok(json))
            .unwrap();
        assert_eq!(page.records[0].last_activity_at, None);
        assert_eq!(page.notes.len(), 1);
        assert!(page.high_water.is_none());
    }

    fn sorted_item(id: &str, last: i64, sort: &str) -> String {
        format!(r#"{{"id":"{id}","lastMessageDate":{last},"sort":{sort}}}"#)
    }

    fn next_start_after(hl: &HighLevel, page: &Page) -> Option<String> {
        let next = page.next.as_ref()?;
        let request = delta(hl).build_request(&ctx(None, Some(next))).unwrap();
        request
            .url
            .query_pairs()
            .find(|(k, _)| k == "startAfterDate")
            .map(|(_, v)| v.into_owned())
    }

    /// The next page continues after the rows' own `sort` values, which are what the API
    /// expects back as `startAfterDate`, even where they differ from `lastMessageDate`.
    #[test]
    fn start_after_date_comes_from_the_sort_array() {
        let hl = adapter(3);
        let page = delta(&hl)
            .parse_page(
                &ctx(None, None),
                &ok(&body(
                    &[
                        sorted_item("a", 900, "[1772443200900]"),
                        sorted_item("b", 800, "[1772443200800]"),
                        sorted_item("c", 700, "[1772443200700]"),
                    ],
                    10,
                )),
            )
            .unwrap();
        assert_eq!(
            next_start_after(&hl, &page).as_deref(),
            Some("1772443200701")
        );
        // The record still reports the conversation's own activity time.
        assert_eq!(page.high_water.unwrap().epoch_millis(), 900);
    }

    /// Without `sort`, and where a row's `sort` is not a sane epoch-ms number, the walk
    /// pages by `lastMessageDate`: no panic, and the cursor still moves down.
    #[test]
    fn start_after_date_falls_back_to_last_message_date() {
        let hl = adapter(3);
        for items in [
            [
                item("a", 1_772_443_200_900),
                item("b", 1_772_443_200_800),
                item("c", 1_772_443_200_700),
            ],
            [
                sorted_item("a", 1_772_443_200_900, "[-9223372036854775808]"),
                sorted_item("b", 1_772_443_200_800, "[\"later\"]"),
                sorted_item("c", 1_772_443_200_700, "[9223372036854775807]"),
            ],
        ] {
            let page = delta(&hl)
                .parse_page(&ctx(None, None), &ok(&body(&items, 10)))
                .unwrap();
            assert_eq!(
                next_start_after(&hl, &page).as_deref(),
                Some("1772443200701"),
                "{items:?}"
            );
        }
    }
}
