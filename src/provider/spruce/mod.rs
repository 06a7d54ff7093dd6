//! Spruce Health public API v1: conversations of one organization, and who spoke last.
//!
//! Three walks over `GET /v1/conversations` (`orderBy` is always sent: the spec requires
//! it), each a `startFrom` or no bound on the first page and then `paginationToken` alone
//! (never both) while `hasMore`:
//!
//! - `created` (delta): `orderBy=created&startFrom=<watermark − lookback>`; catches new
//!   conversations without messages, which have no `lastMessageAt` and may be left out of
//!   the `last_message` order. Its first, unbounded listing is the first sync: it lists
//!   every conversation with its `lastMessageAt`.
//! - `activity` (delta): `orderBy=last_message&startFrom=<watermark − lookback>`; its
//!   watermark is the greatest `lastMessageAt` committed. It never lists everything: it
//!   starts from when the first `created` listing began, so that messages sent while that
//!   listing ran are still caught.
//! - `sweep`: every conversation by `created`, every `sweep_interval`, so that archive,
//!   assignment, tag and title changes (which do not move `lastMessageAt`) are refreshed;
//!   conversations a complete sweep did not list are marked deleted (Spruce publishes no
//!   tombstones), behind the engine's mass-change guard.
//!
//! The listing's order is documented only indirectly (ascending is implied), so the deltas'
//! watermarks move only when a walk completes, using the greatest value seen rather than
//! the last row: correct in either order.
//!
//! Who spoke last: every conversation that is new or whose `lastMessageAt` moved queues an
//! `items` follow-up (see `items`), one request each, run by the engine after the walks so
//! that it never starves the deltas.

mod config;
pub(crate) use config::{account_suffixes, defaults};
mod conversation;
mod items;
mod limits;
mod replay;
mod webhook;

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use url::Url;

pub use config::{SpruceConfig, setup};
pub use webhook::SpruceWebhooks;

use crate::http::{HttpResponse, Pause, RequestSpec, ResponsePolicy};
use crate::provider::webhook::Webhooks;
use crate::provider::{
    Absence, DetailPage, DetailRequest, FollowUp, FollowUpKind, FollowUps, InitialSweep, Page,
    Provider, ProviderError, ProviderKind, Walk, WalkContext, WalkKind, WalkSpec, WatermarkAdvance,
};
use crate::secret::Secret;
use crate::time::Timestamp;

/// Walk names key the cursors in the database: never rename them.
const ACTIVITY_WALK: &str = "activity";
const CREATED_WALK: &str = "created";
const SWEEP_WALK: &str = "sweep";

/// Runs first: its first listing is the first sync, and `activity` starts from where it
/// began (see [`Walk::first_listing_covers`]).
const CREATED: WalkSpec = WalkSpec::delta(CREATED_WALK, WatermarkAdvance::AtWalkEnd);
const ACTIVITY: WalkSpec = WalkSpec::delta(ACTIVITY_WALK, WatermarkAdvance::AtWalkEnd);
/// The first deltas (without a watermark) already list everything: the first sweep waits.
const SWEEP: WalkSpec = WalkSpec::sweep(SWEEP_WALK, Absence::Deleted, InitialSweep::AfterInterval);

/// The listing order a walk asks for (`orderBy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrderBy {
    /// `created`: by creation time; every conversation has one.
    Created,
    /// `last_message`: by `lastMessageAt`.
    LastMessage,
}

impl OrderBy {
    fn as_param(self) -> &'static str {
        match self {
            OrderBy::Created => "created",
            OrderBy::LastMessage => "last_message",
        }
    }
}

/// The follow-ups Spruce queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpruceFollowUp {
    /// A conversation's newest items, to learn who spoke last (see `items`).
    Items,
}

impl FollowUpKind for SpruceFollowUp {
    const ALL: &'static [Self] = &[SpruceFollowUp::Items];

    fn as_str(self) -> &'static str {
        match self {
            SpruceFollowUp::Items => "items",
        }
    }
}

/// A walk's position between pages: the page token Spruce handed out.
#[derive(Debug, Serialize, Deserialize)]
struct ListPosition {
    #[serde(rename = "paginationToken")]
    pagination_token: String,
}

/// Where one organization's API is and how much a request reads: shared by its walks and
/// its follow-ups.
#[derive(Debug)]
struct Api {
    /// The URL `v1/…` is appended to.
    api_root: Url,
    /// `pageSize` of every request (1–200).
    page_size: u32,
}

impl Api {
    /// `api_root` + `v1/<segments…>`, each segment percent-encoded (ids cannot alter the
    /// path).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, ProviderError> {
        let mut url = self.api_root.clone();
        url.path_segments_mut()
            .map_err(|()| {
                ProviderError::BadCursor(format!("{} cannot take a path", self.api_root))
            })?
            .pop_if_empty()
            .push("v1")
            .extend(segments);
        Ok(url)
    }
}

/// The adapter for one Spruce organization.
#[derive(Debug)]
pub struct SpruceProvider {
    /// Organization entity id, for the mirror's `account` column.
    organization_id: String,
    api: Arc<Api>,
    /// `created`, `activity`, `sweep`, in this order.
    walks: [Arc<dyn Walk>; 3],
    /// Its webhooks, when the source configures their signing secret.
    webhooks: Option<SpruceWebhooks>,
    /// The endpoint's delivery log, when the source names the endpoint.
    event_log: Option<replay::SpruceEventLog>,
    /// Conversations whose activity moved queue an `items` follow-up.
    track_reply_state: bool,
}

impl SpruceProvider {
    /// An adapter reading `organization_id` through `api_root` (already validated);
    /// with `track_reply_state`, conversations whose activity moved queue an `items`
    /// follow-up.
    pub fn new(
        organization_id: String,
        api_root: Url,
        page_size: u32,
        track_reply_state: bool,
    ) -> Self {
        let api = Arc::new(Api {
            api_root,
            page_size,
        });
        let walk = |spec, order, covers| -> Arc<dyn Walk> {
            Arc::new(ConversationsWalk {
                spec,
                order,
                covers,
                api: api.clone(),
                track_reply_state,
            })
        };
        let walks = [
            // The first `created` listing holds every conversation with its
            // `lastMessageAt`: the `activity` delta need not list them all again.
            walk(CREATED, OrderBy::Created, &[ACTIVITY_WALK]),
            walk(ACTIVITY, OrderBy::LastMessage, &[]),
            walk(SWEEP, OrderBy::Created, &[]),
        ];
        SpruceProvider {
            organization_id,
            api,
            walks,
            webhooks: None,
            event_log: None,
            track_reply_state,
        }
    }

    /// The adapter with webhooks signed with `secret` (`webhook_secret`).
    pub fn with_webhooks(mut self, secret: Secret) -> Self {
        self.webhooks =
            Some(SpruceWebhooks::new(secret).tracking_reply_state(self.track_reply_state));
        self
    }

    /// The adapter reading the delivery log of webhook endpoint `endpoint_id`
    /// (`webhook_endpoint_id`) to replay what the receiver missed.
    pub fn with_event_log(mut self, endpoint_id: String) -> Self {
        self.event_log = Some(replay::SpruceEventLog {
            api: self.api.clone(),
            endpoint_id,
        });
        self
    }
}

/// `startFrom` as Spruce writes timestamps: milliseconds and `Z`. Truncating to the
/// millisecond can only move the bound earlier, and `startFrom` is inclusive.
fn start_from(t: Timestamp) -> String {
    t.as_datetime()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Provider for SpruceProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Spruce
    }

    fn account(&self) -> &str {
        &self.organization_id
    }

    fn walks(&self) -> &[Arc<dyn Walk>] {
        &self.walks
    }

    fn follow_ups(&self) -> &dyn FollowUps {
        self
    }

    fn webhooks(&self) -> Option<&dyn Webhooks> {
        self.webhooks.as_ref().map(|w| w as &dyn Webhooks)
    }

    fn event_log(&self) -> Option<&dyn crate::provider::webhook::replay::EventLog> {
        self.event_log
            .as_ref()
            .map(|l| l as &dyn crate::provider::webhook::replay::EventLog)
    }

    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        limits::is_position_rejected(status, body)
    }
}

/// One of the walks over `GET /v1/conversations`: they differ in order and role only.
#[derive(Debug)]
struct ConversationsWalk {
    spec: WalkSpec,
    order: OrderBy,
    /// The walks its first listing covers.
    covers: &'static [&'static str],
    api: Arc<Api>,
    /// Whether conversations whose activity moved queue an `items` follow-up.
    track_reply_state: bool,
}

impl Walk for ConversationsWalk {
    fn spec(&self) -> WalkSpec {
        self.spec
    }

    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let mut url = self.api.endpoint(&["conversations"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("orderBy", self.order.as_param())
                .append_pair("pageSize", &self.api.page_size.to_string());
            match at.position {
                // The token encodes the start point: `startFrom` must not come with it.
                Some(position) => {
                    let position: ListPosition =
                        serde_json::from_value(position.clone()).map_err(|e| {
                            ProviderError::BadCursor(format!("spruce page position: {e}"))
                        })?;
                    query.append_pair("paginationToken", &position.pagination_token);
                }
                None => {
                    let bounded = matches!(self.spec.kind, WalkKind::Delta(_));
                    if let Some(since) = at.since.filter(|_| bounded) {
                        query.append_pair("startFrom", &start_from(since));
                    }
                }
            }
        }
        Ok(RequestSpec::get(url, "conversations"))
    }

    fn parse_page(
        &self,
        _at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        let follow_up = self
            .track_reply_state
            .then(|| SpruceFollowUp::Items.as_str());
        let list = conversation::parse_list_page(&response.body, follow_up)?;
        let high_water = match (self.spec.kind, self.order) {
            (WalkKind::Sweep { .. }, _) => None,
            (WalkKind::Delta(_), OrderBy::LastMessage) => {
                list.records.iter().filter_map(|r| r.last_activity_at).max()
            }
            (WalkKind::Delta(_), OrderBy::Created) => {
                list.records.iter().filter_map(|r| r.created_at).max()
            }
        };
        let next = list
            .next_token
            .map(|pagination_token| {
                serde_json::to_value(ListPosition { pagination_token })
                    .map_err(|e| ProviderError::Malformed(format!("page token: {e}")))
            })
            .transpose()?;
        Ok(Page {
            records: list.records,
            rejected: list.rejected,
            follow_ups: Vec::new(),
            high_water,
            next,
            notes: list.notes,
            // The query (its `startFrom` included) is what the count covers: every walk.
            total_hint: list.total_count,
        })
    }

    fn first_listing_covers(&self) -> &'static [&'static str] {
        self.covers
    }
}

impl FollowUps for SpruceProvider {
    fn read_queued<'a>(
        &'a self,
        queued: &'a DetailRequest,
    ) -> Result<Box<dyn FollowUp + 'a>, ProviderError> {
        match SpruceFollowUp::parse(&queued.kind)? {
            SpruceFollowUp::Items => Ok(Box::new(ItemsFollowUp {
                api: &self.api,
                queued,
            })),
        }
    }
}

/// A queued `items` follow-up: the conversation's newest items since its previous
/// activity, one request.
struct ItemsFollowUp<'a> {
    api: &'a Api,
    queued: &'a DetailRequest,
}

impl FollowUp for ItemsFollowUp<'_> {
    fn build_request(&self) -> Result<RequestSpec, ProviderError> {
        let mut url =
            self.api
                .endpoint(&["conversations", &self.queued.conversation_id, "items"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("order", "newest_first")
                .append_pair("pageSize", &self.api.page_size.to_string());
            if let Some(since) = self.queued.since {
                query.append_pair("startFrom", &start_from(since));
            }
        }
        // A deleted conversation answers 404: that is news, not a failure.
        Ok(RequestSpec::get(url, "items").allow_not_found())
    }

    fn parse_response(&self, response: &HttpResponse) -> Result<DetailPage, ProviderError> {
        if response.status == StatusCode::NOT_FOUND {
            // Only Spruce's own error body proves the conversation is gone; a 404 page from a
            // proxy or a wrong base URL must not delete rows.
            if limits::is_spruce_error(&response.body) {
                return Ok(DetailPage {
                    gone: Some(Absence::Deleted),
                    ..DetailPage::default()
                });
            }
            return Err(ProviderError::Malformed(
                "404 without a Spruce error body; not treating the conversation as deleted".into(),
            ));
        }
        let patch = items::parse_items_page(&response.body, self.queued.since)?;
        Ok(DetailPage {
            patch: Some(patch),
            ..DetailPage::default()
        })
    }
}

impl ResponsePolicy for SpruceProvider {
    fn describe_error(&self, status: StatusCode, body: &[u8]) -> String {
        limits::describe_error(status, body)
    }

    fn correlation_headers(&self) -> &[&'static str] {
        &[limits::REQUEST_ID]
    }

    fn pacing(&self, headers: &HeaderMap) -> Option<Pause> {
        limits::pacing(headers)
    }

    fn remaining_requests(&self, headers: &HeaderMap) -> Option<u64> {
        limits::remaining_requests(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn provider(track_reply_state: bool) -> SpruceProvider {
        SpruceProvider::new(
            "entity_ORG".into(),
            Url::parse("https://api.sprucehealth.com").unwrap(),
            200,
            track_reply_state,
        )
    }

    fn walk<'p>(p: &'p SpruceProvider, name: &str) -> &'p dyn Walk {
        p.walks()
            .iter()
            .find(|w| w.spec().name == name)
            .unwrap()
            .as_ref()
    }

    fn detail_request(
        p: &SpruceProvider,
        queued: &DetailRequest,
    ) -> Result<RequestSpec, ProviderError> {
        p.follow_ups().read_queued(queued)?.build_request()
    }

    fn parse_detail(
        p: &SpruceProvider,
        queued: &DetailRequest,
        response: &HttpResponse,
    ) -> Result<DetailPage, ProviderError> {
        p.follow_ups().read_queued(queued)?.parse_response(response)
    }

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn response(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn query(spec: &RequestSpec) -> Vec<(String, String)> {
        spec.url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The activity delta's first page: `orderBy=last_message`, page size, `startFrom`.
    #[test]
    fn activity_delta_starts_from_the_bound() {
        let p = provider(true);
        let since = ts("2026-03-01T08:39:52.123456Z");
        let spec = walk(&p, ACTIVITY_WALK)
            .build_request(&WalkContext {
                since: Some(since),
                position: None,
            })
            .unwrap();
        assert_eq!(spec.url.path(), "/v1/conversations");
        assert_eq!(
            query(&spec),
            [
                ("orderBy".to_owned(), "last_message".to_owned()),
                ("pageSize".to_owned(), "200".to_owned()),
                (
                    "startFrom".to_owned(),
                    "2026-03-01T08:39:52.123Z".to_owned()
                ),
            ]
        );
    }

    /// Later pages carry the token alone: never together with `startFrom`.
    #[test]
    fn later_pages_send_the_token_without_start_from() {
        let p = provider(true);
        let position = json!({ "paginationToken": "a+b/c=" });
        let spec = walk(&p, CREATED_WALK)
            .build_request(&WalkContext {
                since: Some(ts("2026-03-01T00:00:00Z")),
                position: Some(&position),
            })
            .unwrap();
        let q = query(&spec);
        assert!(q.contains(&("orderBy".into(), "created".into())));
        assert!(q.contains(&("paginationToken".into(), "a+b/c=".into())));
        assert!(!q.iter().any(|(k, _)| k == "startFrom"));
        // `+` is encoded, not sent as a space.
        assert!(spec.url.as_str().contains("a%2Bb%2Fc%3D"), "{}", spec.url);
    }

    /// The sweep lists everything by creation time, unbounded.
    #[test]
    fn the_sweep_is_unbounded_and_ordered_by_creation() {
        let p = provider(true);
        let spec = walk(&p, SWEEP_WALK)
            .build_request(&WalkContext {
                since: Some(ts("2026-03-01T00:00:00Z")),
                position: None,
            })
            .unwrap();
        assert_eq!(
            query(&spec),
            [
                ("orderBy".to_owned(), "created".to_owned()),
                ("pageSize".to_owned(), "200".to_owned())
            ]
        );
    }

    /// A first run without a watermark lists from the beginning.
    #[test]
    fn a_delta_without_watermark_lists_everything() {
        let spec = walk(&provider(true), ACTIVITY_WALK)
            .build_request(&WalkContext {
                since: None,
                position: None,
            })
            .unwrap();
        assert!(!query(&spec).iter().any(|(k, _)| k == "startFrom"));
    }

    /// A position that is not ours is a cursor error, not a panic.
    #[test]
    fn a_foreign_position_is_a_bad_cursor() {
        let position = json!({ "page": 3 });
        let err = walk(&provider(true), ACTIVITY_WALK)
            .build_request(&WalkContext {
                since: None,
                position: Some(&position),
            })
            .unwrap_err();
        assert!(matches!(err, ProviderError::BadCursor(_)));
    }

    /// Each delta's watermark is its own field's maximum, whatever the order on the page.
    #[test]
    fn high_water_is_the_maximum_of_the_walks_field() {
        let body = r#"{"conversations":[
            {"id":"t_2","createdAt":"2026-01-05T00:00:00Z","lastMessageAt":"2026-03-01T00:00:00Z"},
            {"id":"t_1","createdAt":"2026-01-09T00:00:00Z","lastMessageAt":"2026-02-01T00:00:00Z"},
            {"id":"t_3","createdAt":"2026-01-01T00:00:00Z"}
        ],"hasMore":true,"paginationToken":"next","totalCount":3}"#;
        let p = provider(true);
        let parse = |name| {
            walk(&p, name)
                .parse_page(
                    &WalkContext {
                        since: None,
                        position: None,
                    },
                    &response(200, body),
                )
                .unwrap()
        };
        let activity = parse(ACTIVITY_WALK);
        assert_eq!(activity.high_water, Some(ts("2026-03-01T00:00:00Z")));
        assert_eq!(activity.next, Some(json!({ "paginationToken": "next" })));
        assert_eq!(activity.records.len(), 3);
        assert!(
            activity
                .records
                .iter()
                .all(|r| r.detail_on_activity == Some("items"))
        );
        assert_eq!(
            parse(CREATED_WALK).high_water,
            Some(ts("2026-01-09T00:00:00Z"))
        );
        assert_eq!(parse(SWEEP_WALK).high_water, None);
    }

    /// `totalCount` is every walk's total (the query it answers is the walk's); a value
    /// that is not a count is no total, and the page is read all the same.
    #[test]
    fn total_count_is_the_walks_total_hint() {
        let p = provider(true);
        let hint = |total: &str| {
            let body = format!(
                r#"{{"conversations":[{{"id":"t_1"}}],"hasMore":false,"totalCount":{total}}}"#
            );
            let page = walk(&p, ACTIVITY_WALK)
                .parse_page(
                    &WalkContext {
                        since: Some(ts("2026-01-01T00:00:00Z")),
                        position: None,
                    },
                    &response(200, &body),
                )
                .unwrap();
            assert_eq!(page.records.len(), 1);
            page.total_hint
        };
        assert_eq!(hint("750"), Some(750));
        assert_eq!(hint("-1"), None);
        assert_eq!(hint("1e300"), None);
        assert_eq!(hint(r#""many""#), None);
        assert_eq!(hint("null"), None);
    }

    /// With reply state off, no follow-ups are queued.
    #[test]
    fn reply_state_off_queues_no_follow_ups() {
        let body = r#"{"conversations":[{"id":"t_1","lastMessageAt":"2026-03-01T00:00:00Z"}],"hasMore":false,"totalCount":1}"#;
        let page = walk(&provider(false), ACTIVITY_WALK)
            .parse_page(
                &WalkContext {
                    since: None,
                    position: None,
                },
                &response(200, body),
            )
            .unwrap();
        assert_eq!(page.records[0].detail_on_activity, None);
        assert_eq!(page.next, None);
    }

    /// Items are read newest first from the previous activity time, 404 allowed.
    #[test]
    fn items_follow_up_reads_newest_first_since_the_previous_activity() {
        let detail = DetailRequest {
            conversation_id: "t_0E5/QDGJC03000".into(),
            kind: "items".into(),
            since: Some(ts("2026-03-01T08:44:52Z")),
            position: None,
        };
        let spec = detail_request(&provider(true), &detail).unwrap();
        // The id is one path segment even with a slash in it.
        assert_eq!(
            spec.url.path(),
            "/v1/conversations/t_0E5%2FQDGJC03000/items"
        );
        assert_eq!(
            query(&spec),
            [
                ("order".to_owned(), "newest_first".to_owned()),
                ("pageSize".to_owned(), "200".to_owned()),
                (
                    "startFrom".to_owned(),
                    "2026-03-01T08:44:52.000Z".to_owned()
                ),
            ]
        );
        assert!(spec.allow_not_found);
        let first = DetailRequest {
            since: None,
            ..detail
        };
        let spec = detail_request(&provider(true), &first).unwrap();
        assert!(!query(&spec).iter().any(|(k, _)| k == "startFrom"));
    }

    /// An items page becomes a reply-state patch in one request (no continuation).
    #[test]
    fn items_page_becomes_a_patch() {
        let detail = DetailRequest {
            conversation_id: "t_1".into(),
            kind: "items".into(),
            since: None,
            position: None,
        };
        let body = r#"{"conversationItems":[
            {"id":"ti_1","createdAt":"2026-03-01T00:00:00Z","direction":"inbound","isInternalNote":false}
        ],"hasMore":false,"totalCount":1}"#;
        let page = parse_detail(&provider(true), &detail, &response(200, body)).unwrap();
        let patch = page.patch.unwrap();
        assert_eq!(patch.awaiting_reply, Some(true));
        assert_eq!(page.next, None);
        assert_eq!(page.gone, None);
    }

    /// Spruce's 404 marks the conversation deleted; a foreign 404 does not.
    #[test]
    fn only_a_spruce_404_means_deleted() {
        let detail = DetailRequest {
            conversation_id: "t_1".into(),
            kind: "items".into(),
            since: None,
            position: None,
        };
        let p = provider(true);
        let gone = parse_detail(
            &p,
            &detail,
            &response(
                404,
                r#"{"statusCode":404,"type":"NOT_FOUND","message":"Conversation t_1 not found"}"#,
            ),
        )
        .unwrap();
        assert_eq!(gone.gone, Some(Absence::Deleted));
        assert!(parse_detail(&p, &detail, &response(404, "<html>nginx</html>")).is_err());
    }

    /// A stored follow-up kind other than `items` (another provider's, another version's)
    /// is a typed error when the queue is read, before any request is built.
    #[test]
    fn an_unknown_stored_follow_up_kind_is_refused() {
        let detail = DetailRequest {
            conversation_id: "t_1".into(),
            kind: "messages".into(),
            since: None,
            position: None,
        };
        let p = provider(true);
        let error = p.follow_ups().read_queued(&detail).err().unwrap();
        assert!(
            matches!(&error, ProviderError::UnknownFollowUpKind { kind, .. } if kind == "messages"),
            "{error:?}"
        );
        assert!(error.to_string().contains(r#"queues "items""#), "{error}");
    }

    /// The queue's text for each follow-up kind, and the budget share: stored follow-ups
    /// must keep reading back after an upgrade.
    #[test]
    fn follow_up_kinds_keep_their_stored_text() {
        assert_eq!(SpruceFollowUp::Items.as_str(), "items");
        assert_eq!(
            SpruceFollowUp::parse("items").unwrap(),
            SpruceFollowUp::Items
        );
        assert_eq!(provider(true).follow_ups().budget_share(), 1.0);
    }

    /// Walk names key the cursors in existing databases: they, their order and their roles
    /// never change, and only the `created` walk's first listing covers another walk.
    #[test]
    fn walks_keep_their_stable_names() {
        assert_eq!(
            crate::provider::walk::walk_table(&provider(true)),
            [
                r#"created: Delta(AtWalkEnd), covers ["activity"]"#,
                "activity: Delta(AtWalkEnd)",
                "sweep: Sweep { absence: Deleted, initial: AfterInterval }",
            ]
        );
    }

    /// The request id is logged with errors.
    #[test]
    fn the_request_id_is_a_correlation_header() {
        assert_eq!(provider(true).correlation_headers(), &["s-request-id"]);
    }
}
