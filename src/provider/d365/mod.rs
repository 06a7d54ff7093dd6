//! Dynamics 365 Contact Center, custom-channel Messaging API.
//!
//! The list endpoint shows only the *active* conversations of one custom channel, each as an
//! id and a creation time; closed and wrapped-up conversations vanish from it. So:
//! - **delta** (every cycle): conversations created after `watermark − lookback`
//!   (`StartTimeStamp`, sent one tick early because the filter is exclusive), 250 per page,
//!   following `continuationtoken` with identical parameters. The order of the listing is
//!   not documented, so the watermark (the highest creation time) moves only when the walk
//!   completes.
//! - **sweep** (every `sweep_interval`): the whole listing; active rows a *complete* sweep
//!   did not return are marked closed by the engine, behind its mass-change guard. A row
//!   listed again is reopened.
//! - **messages** (optional follow-up): `/conversation/{id}/messages` fills last activity
//!   and who spoke last; a 404 there is a second closure signal.
//!
//! Microsoft asks integrators not to poll these endpoints hard (updates are meant to reach
//! the channel's webhook), hence the sparse defaults in `config`.

mod config;
pub(crate) use config::{account_suffixes, defaults};
mod json;
mod listing;
mod messages;
mod problem;
mod webhook;

use std::sync::Arc;

use reqwest::StatusCode;

pub use config::{D365Config, setup};
pub use webhook::D365Webhooks;

use crate::http::{HttpResponse, RequestSpec, ResponsePolicy};
use crate::provider::{
    Absence, DetailPage, DetailRequest, FollowUp, FollowUpKind, FollowUps, InitialSweep, Page,
    Provider, ProviderError, ProviderKind, Walk, WalkContext, WalkKind, WalkSpec, WatermarkAdvance,
    Webhooks,
};
use config::Settings;
use listing::ListPosition;
use messages::MessagesPosition;
use problem::Problem;

/// The follow-ups D365 queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum D365FollowUp {
    /// A conversation's messages (see `messages`).
    Messages,
}

impl FollowUpKind for D365FollowUp {
    const ALL: &'static [Self] = &[D365FollowUp::Messages];

    fn as_str(self) -> &'static str {
        match self {
            D365FollowUp::Messages => "messages",
        }
    }
}

/// A delta by creation time every cycle. Its name keys its cursor in the database: never
/// rename it.
const DELTA: WalkSpec = WalkSpec::delta("delta", WatermarkAdvance::AtWalkEnd);
/// A full sweep for closures. The first delta (no watermark yet) lists everything, so the
/// first sweep waits an interval.
const SWEEP: WalkSpec = WalkSpec::sweep("sweep", Absence::Closed, InitialSweep::AfterInterval);

/// Headers that identify a failed request to Microsoft support; the documented one is
/// `x-ms-correlation-id`, the others are common across Microsoft services.
const CORRELATION_HEADERS: &[&str] = &[
    "x-ms-correlation-id",
    "x-ms-correlation-request-id",
    "x-ms-request-id",
    "x-ms-client-request-id",
    "x-ms-service-request-id",
    "x-correlation-id",
    "request-id",
    "ms-cv",
];

/// The adapter for one custom messaging channel.
#[derive(Debug)]
pub struct D365 {
    settings: Arc<Settings>,
    /// The delta, then the sweep (when due).
    walks: [Arc<dyn Walk>; 2],
    /// Its webhook's check and reading, when `webhook_token` is configured.
    webhooks: Option<D365Webhooks>,
}

impl D365 {
    fn new(settings: Settings) -> Self {
        let settings = Arc::new(settings);
        let walk = |spec| -> Arc<dyn Walk> {
            Arc::new(ListingWalk {
                spec,
                settings: settings.clone(),
            })
        };
        D365 {
            walks: [walk(DELTA), walk(SWEEP)],
            settings,
            webhooks: None,
        }
    }

    /// The same adapter, accepting the webhook requests `webhooks` checks.
    fn with_webhooks(mut self, webhooks: Option<D365Webhooks>) -> Self {
        self.webhooks = webhooks;
        self
    }
}

/// Adds the channel and organization headers every Messaging API call carries besides
/// `Authorization`, under each configured generation of their names (see `config`).
fn with_channel_headers(settings: &Settings, spec: RequestSpec) -> RequestSpec {
    settings
        .header_names
        .pairs()
        .iter()
        .fold(spec, |spec, &(channel, organization)| {
            spec.header(channel, settings.channel_id.clone())
                .header(organization, settings.organization_id.clone())
        })
}

impl Provider for D365 {
    fn kind(&self) -> ProviderKind {
        ProviderKind::D365
    }

    fn account(&self) -> &str {
        &self.settings.channel_id
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

    fn is_position_rejected(&self, status: StatusCode, body: &[u8]) -> bool {
        if status != StatusCode::BAD_REQUEST {
            return false;
        }
        let problem = Problem::parse(body);
        match problem.code {
            Some(code) => code == problem::BAD_CONTINUATION_TOKEN,
            // No code: recognise the documented message ("continuation token is invalid").
            None => [&problem.title, &problem.detail, &problem.text]
                .into_iter()
                .flatten()
                .any(|t| t.to_ascii_lowercase().contains("continuation")),
        }
    }
}

impl ResponsePolicy for D365 {
    fn describe_error(&self, status: StatusCode, body: &[u8]) -> String {
        Problem::parse(body).describe(status)
    }

    fn correlation_headers(&self) -> &[&'static str] {
        CORRELATION_HEADERS
    }
}

/// The delta or the sweep: both read the channel's list of active conversations; the
/// delta from `since`, the sweep all of it.
#[derive(Debug)]
struct ListingWalk {
    spec: WalkSpec,
    settings: Arc<Settings>,
}

impl ListingWalk {
    /// The `StartTimeStamp` this walk's requests carry: on a continued walk, exactly the
    /// text its first page sent (a token used with other parameters is refused, error
    /// 30009); on a first delta page, one tick before `since`; never on a sweep.
    fn start(&self, at: &WalkContext<'_>) -> Result<Option<String>, ProviderError> {
        Ok(match at.position {
            Some(value) => ListPosition::from_value(value)?.starttimestamp,
            None => match self.spec.kind {
                WalkKind::Delta(_) => at.since.map(json::tick_before),
                WalkKind::Sweep { .. } => None,
            },
        })
    }
}

impl Walk for ListingWalk {
    fn spec(&self) -> WalkSpec {
        self.spec
    }

    fn build_request(&self, at: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        let token = match at.position {
            Some(value) => Some(ListPosition::from_value(value)?.continuationtoken),
            None => None,
        };
        let url = listing::list_url(
            &self.settings.base_url,
            self.start(at)?.as_deref(),
            self.settings.page_size,
            token.as_deref(),
        )?;
        Ok(with_channel_headers(
            &self.settings,
            RequestSpec::get(url, "conversations"),
        ))
    }

    fn parse_page(
        &self,
        at: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        // The StartTimeStamp this request carried, to be repeated on the next page.
        let start = self.start(at)?;
        let mut page =
            listing::parse_list(&response.body, start.as_deref(), self.settings.messages)?;
        if self.settings.messages && matches!(self.spec.kind, WalkKind::Sweep { .. }) {
            // The listing cannot tell which conversations saw new messages: a sweep re-reads
            // every active one, within the follow-up budget.
            page.follow_ups = page
                .records
                .iter()
                .map(|r| DetailRequest {
                    conversation_id: r.id.clone(),
                    kind: D365FollowUp::Messages.as_str().to_owned(),
                    since: None,
                    position: None,
                })
                .collect();
        }
        Ok(page)
    }
}

impl FollowUps for D365 {
    fn read_queued<'a>(
        &'a self,
        queued: &'a DetailRequest,
    ) -> Result<Box<dyn FollowUp + 'a>, ProviderError> {
        match D365FollowUp::parse(&queued.kind)? {
            D365FollowUp::Messages => Ok(Box::new(MessagesFollowUp {
                settings: &self.settings,
                queued,
            })),
        }
    }

    fn budget_share(&self) -> f64 {
        self.settings.messages_share
    }
}

/// A queued `messages` follow-up: a conversation's messages since its known activity,
/// paged.
struct MessagesFollowUp<'a> {
    settings: &'a Settings,
    queued: &'a DetailRequest,
}

impl FollowUp for MessagesFollowUp<'_> {
    fn build_request(&self) -> Result<RequestSpec, ProviderError> {
        let (start, token) = match &self.queued.position {
            Some(value) => {
                let position = MessagesPosition::from_value(value)?;
                (position.starttimestamp, Some(position.continuationtoken))
            }
            None => (self.queued.since.map(json::tick_before), None),
        };
        let url = messages::messages_url(
            &self.settings.base_url,
            &self.queued.conversation_id,
            start.as_deref(),
            token.as_deref(),
        )?;
        Ok(
            with_channel_headers(self.settings, RequestSpec::get(url, "messages"))
                .allow_not_found(),
        )
    }

    fn parse_response(&self, response: &HttpResponse) -> Result<DetailPage, ProviderError> {
        let (position, start) = match &self.queued.position {
            Some(value) => {
                let position = MessagesPosition::from_value(value)?;
                let start = position.starttimestamp.clone();
                (position, start)
            }
            None => (
                MessagesPosition::default(),
                self.queued.since.map(json::tick_before),
            ),
        };
        messages::parse_messages(response.status, &response.body, &position, start.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use bytes::Bytes;
    use config::HeaderNames;
    use reqwest::header::HeaderMap;
    use serde_json::json;

    fn adapter(messages: bool) -> D365 {
        adapter_with(messages, HeaderNames::Both)
    }

    fn adapter_with(messages: bool, header_names: HeaderNames) -> D365 {
        D365::new(Settings {
            base_url: url::Url::parse("https://m-org.us.omnichannelengagementhub.com/").unwrap(),
            organization_id: "0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44".into(),
            channel_id: "6f0e7d12-8a4b-4b3e-b0c9-2d5e9a7c3f10".into(),
            header_names,
            page_size: 250,
            messages,
            messages_share: 0.1,
        })
    }

    fn delta(d: &D365) -> &dyn Walk {
        d.walks()[0].as_ref()
    }

    fn sweep(d: &D365) -> &dyn Walk {
        d.walks()[1].as_ref()
    }

    fn detail_request(d: &D365, queued: &DetailRequest) -> Result<RequestSpec, ProviderError> {
        d.follow_ups().read_queued(queued)?.build_request()
    }

    fn ok(body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_owned()),
        }
    }

    fn header<'a>(spec: &'a RequestSpec, name: &str) -> Option<&'a str> {
        spec.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first delta page asks from one tick before `since`, with the channel headers.
    #[test]
    fn delta_starts_one_tick_before_since() {
        let d = adapter(false);
        let since = Timestamp::parse_rfc3339("2026-03-02T09:10:03.1234567Z").unwrap();
        let ctx = WalkContext {
            since: Some(since),
            position: None,
        };
        let spec = delta(&d).build_request(&ctx).unwrap();
        assert_eq!(
            spec.url.as_str(),
            "https://m-org.us.omnichannelengagementhub.com/api/v1.0/consumer/conversations?StartTimeStamp=2026-03-02T09%3A10%3A03.1234566Z&PageSize=250"
        );
        assert_eq!(
            header(&spec, "channel-id"),
            Some("6f0e7d12-8a4b-4b3e-b0c9-2d5e9a7c3f10")
        );
        assert_eq!(
            header(&spec, "organization-id"),
            Some("0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44")
        );
        assert!(!spec.allow_not_found);
    }

    /// A continued walk repeats the first page's `StartTimeStamp` and page size exactly and
    /// adds the token.
    #[test]
    fn next_pages_repeat_the_parameters() {
        let d = adapter(false);
        let since = Timestamp::parse_rfc3339("2026-03-02T09:10:03.1234567Z").unwrap();
        let first = WalkContext {
            since: Some(since),
            position: None,
        };
        let page = delta(&d)
            .parse_page(
                &first,
                &ok(r#"{"conversations":[],"continuationtoken":"tok-1"}"#),
            )
            .unwrap();
        let next = page.next.unwrap();
        let ctx = WalkContext {
            // Even if the engine's bound moved, the walk keeps its own.
            since: Some(Timestamp::now()),
            position: Some(&next),
        };
        let spec = delta(&d).build_request(&ctx).unwrap();
        assert_eq!(
            spec.url.query(),
            Some(
                "StartTimeStamp=2026-03-02T09%3A10%3A03.1234566Z&PageSize=250&ContinuationToken=tok-1"
            )
        );
        let again = delta(&d)
            .parse_page(
                &ctx,
                &ok(r#"{"conversations":[],"continuationtoken":"tok-2"}"#),
            )
            .unwrap();
        assert_eq!(
            again.next,
            Some(
                json!({"continuationtoken": "tok-2", "starttimestamp": "2026-03-02T09:10:03.1234566Z"})
            )
        );
    }

    /// Sweeps and first deltas list everything: no `StartTimeStamp`.
    #[test]
    fn sweeps_list_everything() {
        let d = adapter(false);
        for (walk, since) in [(sweep(&d), Some(Timestamp::now())), (delta(&d), None)] {
            let ctx = WalkContext {
                since,
                position: None,
            };
            assert_eq!(
                walk.build_request(&ctx).unwrap().url.query(),
                Some("PageSize=250")
            );
        }
    }

    /// With messages on, new rows ask for a follow-up and sweeps re-read every active one.
    #[test]
    fn messages_follow_ups_are_queued() {
        let body = r#"{"conversations":[{"conversationid":"a","timestamp":"2026-03-02T09:15:03.1234567Z"}]}"#;
        let sweep_ctx = WalkContext {
            since: None,
            position: None,
        };
        let delta_ctx = WalkContext {
            since: None,
            position: None,
        };
        let on = adapter(true);
        let page = sweep(&on).parse_page(&sweep_ctx, &ok(body)).unwrap();
        assert_eq!(page.follow_ups.len(), 1);
        assert_eq!(page.follow_ups[0].kind, "messages");
        assert_eq!(page.records[0].detail_on_activity, Some("messages"));
        assert!(
            delta(&on)
                .parse_page(&delta_ctx, &ok(body))
                .unwrap()
                .follow_ups
                .is_empty()
        );
        let off = adapter(false);
        let page = sweep(&off).parse_page(&sweep_ctx, &ok(body)).unwrap();
        assert!(page.follow_ups.is_empty() && page.records[0].detail_on_activity.is_none());
    }

    /// The messages request starts one tick before the known activity and lets 404 through.
    #[test]
    fn messages_request_uses_since_and_allows_404() {
        let d = adapter(true);
        let detail = DetailRequest {
            conversation_id: "0b9a3c2e".into(),
            kind: "messages".into(),
            since: Some(Timestamp::parse_rfc3339("2025-04-15T12:38:00Z").unwrap()),
            position: None,
        };
        let spec = detail_request(&d, &detail).unwrap();
        assert_eq!(
            spec.url.path(),
            "/api/v1.0/consumer/conversation/0b9a3c2e/messages"
        );
        assert_eq!(
            spec.url.query(),
            Some("StartTimeStamp=2025-04-15T12%3A37%3A59.9999999Z&PageSize=100")
        );
        assert!(spec.allow_not_found);
        assert_eq!(
            header(&spec, "channel-id"),
            Some("6f0e7d12-8a4b-4b3e-b0c9-2d5e9a7c3f10")
        );
        let other = DetailRequest {
            kind: "items".into(),
            ..detail
        };
        let error = d.follow_ups().read_queued(&other).err().unwrap();
        assert!(
            matches!(&error, ProviderError::UnknownFollowUpKind { kind, .. } if kind == "items"),
            "{error:?}"
        );
    }

    /// Walk names key the cursors in existing databases and follow-up kinds are stored as
    /// text: both never change. Message follow-ups keep to their share of the budget.
    #[test]
    fn walks_and_follow_ups_keep_their_stable_names() {
        let d = adapter(true);
        assert_eq!(
            crate::provider::walk::walk_table(&d),
            [
                "delta: Delta(AtWalkEnd)",
                "sweep: Sweep { absence: Closed, initial: AfterInterval }",
            ]
        );
        assert_eq!(D365FollowUp::Messages.as_str(), "messages");
        assert_eq!(d.follow_ups().budget_share(), 0.1);
    }

    /// Only a 400 about the continuation token restarts the walk.
    #[test]
    fn position_rejection_is_error_30009() {
        let d = adapter(false);
        assert!(d.is_position_rejected(
            StatusCode::BAD_REQUEST,
            br#"{"title":"Bad Request","errorCode":30009}"#
        ));
        assert!(d.is_position_rejected(
            StatusCode::BAD_REQUEST,
            br#"{"title":"Bad Request","detail":"The provided continuation token is invalid."}"#
        ));
        assert!(!d.is_position_rejected(StatusCode::BAD_REQUEST, br#"{"errorCode":30006}"#));
        assert!(!d.is_position_rejected(StatusCode::NOT_FOUND, br#"{"errorCode":30009}"#));
    }

    /// Error descriptions read problem details and name the documented code.
    #[test]
    fn errors_are_described_from_problem_details() {
        let d = adapter(false);
        let line = d.describe_error(
            StatusCode::BAD_REQUEST,
            br#"{"title":"Bad Request","status":400,"detail":"PageSize must be between 1 and 250","errorCode":30007}"#,
        );
        assert_eq!(
            line,
            "Bad Request: PageSize must be between 1 and 250: error 30007: the conversation page size must be null or between 1 and 250"
        );
        assert!(d.correlation_headers().contains(&"x-ms-correlation-id"));
    }

    /// Error 30016 (a message activity without text or attachments, Microsoft's 2025-09
    /// error list) is named with its meaning.
    #[test]
    fn error_30016_is_explained() {
        let line = adapter(false).describe_error(
            StatusCode::BAD_REQUEST,
            br#"{"title":"Bad Request","status":400,"errorCode":30016}"#,
        );
        assert_eq!(
            line,
            "Bad Request: error 30016: the message activity has no text or attachments"
        );
    }

    /// Both generations of the header names are sent by default, so that tenants on the
    /// older (`x-ms-*`, 2025-04 docs) and newer (2025-09 docs) builds both accept the
    /// request; `header_names` narrows it to one pair.
    #[test]
    fn channel_headers_follow_header_names() {
        const NAMES: [&str; 4] = [
            "channel-id",
            "organization-id",
            "x-ms-channel-id",
            "x-ms-organization-id",
        ];
        let ctx = WalkContext {
            since: None,
            position: None,
        };
        for (names, expected) in [
            (HeaderNames::Both, &NAMES[..]),
            (HeaderNames::Plain, &NAMES[..2]),
            (HeaderNames::XMs, &NAMES[2..]),
        ] {
            let d = adapter_with(true, names);
            let detail = DetailRequest {
                conversation_id: "a".into(),
                kind: "messages".into(),
                since: None,
                position: None,
            };
            for spec in [
                sweep(&d).build_request(&ctx).unwrap(),
                detail_request(&d, &detail).unwrap(),
            ] {
                let sent: Vec<&str> = spec.headers.iter().map(|(n, _)| *n).collect();
                assert_eq!(sent, expected, "{names:?}");
                for name in expected {
                    let value = header(&spec, name).unwrap();
                    assert_eq!(
                        value,
                        if name.ends_with("channel-id") {
                            &d.settings.channel_id
                        } else {
                            &d.settings.organization_id
                        }
                    );
                }
            }
        }
    }
}
