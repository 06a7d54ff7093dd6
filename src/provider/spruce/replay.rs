//! Spruce's delivery log (`ListWebhookEndpointEvents`, `GET
//! /v1/webhooks/endpoints/{endpointId}/events?startTime&endTime&paginationToken`): every
//! event Spruce attempted to publish to the endpoint, kept 30 days, 20 per page.
//!
//! Each logged event's `data` is the delivered envelope as a string (the spec types it
//! `string`); it is handed back as the body the receiver would have read. ASSUMPTIONS (the
//! spec is silent): the page is ordered by `eventTime` ascending, `startTime` and `endTime`
//! are inclusive, and a `paginationToken` is sent with the same `startTime` and `endTime`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::Api;
use crate::http::{HttpResponse, RequestSpec};
use crate::provider::ProviderError;
use crate::provider::webhook::replay::{EventLog, LogPage, LoggedEvent};
use crate::time::Timestamp;

/// How long Spruce keeps an endpoint's events ("queryable for a period of 30 days").
const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Events on a page at most: Spruce returns 20; more is not what it documents.
const MAX_EVENTS_PER_PAGE: usize = 100;

/// The longest pagination token kept (they are short opaque strings).
const MAX_TOKEN_CHARS: usize = 1024;

/// One endpoint's delivery log.
#[derive(Debug)]
pub(super) struct SpruceEventLog {
    pub(super) api: Arc<Api>,
    /// `webhook_endpoint_id`.
    pub(super) endpoint_id: String,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<Event>,
    #[serde(rename = "hasMore")]
    has_more: bool,
    #[serde(rename = "paginationToken", default)]
    pagination_token: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "eventTime")]
    event_time: String,
    data: String,
}

/// Spruce's timestamps: milliseconds and `Z`.
fn wire_time(t: Timestamp) -> String {
    t.as_datetime()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl EventLog for SpruceEventLog {
    fn request(
        &self,
        start: Timestamp,
        end: Timestamp,
        token: Option<&str>,
    ) -> Result<RequestSpec, ProviderError> {
        let mut url = self
            .api
            .endpoint(&["webhooks", "endpoints", &self.endpoint_id, "events"])?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("startTime", &wire_time(start))
                .append_pair("endTime", &wire_time(end));
            if let Some(token) = token {
                query.append_pair("paginationToken", token);
            }
        }
        Ok(RequestSpec::get(url, "webhook_events"))
    }

    fn parse_page(&self, response: &HttpResponse) -> Result<LogPage, ProviderError> {
        let malformed = |what: String| ProviderError::Malformed(what);
        let page: Page = serde_json::from_slice(&response.body)
            .map_err(|e| malformed(format!("Spruce webhook endpoint events: {e}")))?;
        if page.events.len() > MAX_EVENTS_PER_PAGE {
            return Err(malformed(format!(
                "Spruce webhook endpoint events: {} events on one page (at most {MAX_EVENTS_PER_PAGE} read)",
                page.events.len()
            )));
        }
        let next = match (page.has_more, page.pagination_token) {
            (false, _) => None,
            (true, Some(token)) if !token.is_empty() && token.len() <= MAX_TOKEN_CHARS => {
                Some(token)
            }
            (true, _) => {
                return Err(malformed(
                    "Spruce webhook endpoint events: hasMore without a usable paginationToken"
                        .to_owned(),
                ));
            }
        };
        let events = page
            .events
            .into_iter()
            .map(|event| {
                let event_time = Timestamp::parse_rfc3339(&event.event_time).map_err(|e| {
                    malformed(format!("Spruce webhook endpoint event eventTime: {e}"))
                })?;
                Ok(LoggedEvent {
                    id: event.id,
                    event_time,
                    body: event.data.into_bytes(),
                })
            })
            .collect::<Result<Vec<_>, ProviderError>>()?;
        Ok(LogPage { events, next })
    }

    fn retention(&self) -> Duration {
        RETENTION
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    use super::*;

    fn log() -> SpruceEventLog {
        SpruceEventLog {
            api: Arc::new(Api {
                api_root: "http://127.0.0.1:9/".parse().unwrap(),
                page_size: 200,
            }),
            endpoint_id: "whe_1".to_owned(),
        }
    }

    fn response(body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn the_request_names_the_endpoint_the_bounds_and_the_token() {
        let start = Timestamp::parse_rfc3339("2026-12-01T10:00:00.123456Z").unwrap();
        let end = Timestamp::parse_rfc3339("2026-12-01T11:00:00Z").unwrap();
        let spec = log().request(start, end, Some("tok/en")).unwrap();
        assert_eq!(
            spec.url.as_str(),
            "http://127.0.0.1:9/v1/webhooks/endpoints/whe_1/events?startTime=2026-12-01T10%3A00%3A00.123Z&endTime=2026-12-01T11%3A00%3A00.000Z&paginationToken=tok%2Fen"
        );
    }

    #[test]
    fn a_page_yields_the_delivered_bodies_and_the_next_token() {
        let page = log()
            .parse_page(&response(
                r#"{"events":[{"object":"webhookEndpointEvent","id":"ev_1","eventTime":"2026-12-01T10:00:00.000Z","data":"{\"id\":\"ev_1\"}","delivery":{"status":"failed"}}],"hasMore":true,"paginationToken":"next"}"#,
            ))
            .unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].id, "ev_1");
        assert_eq!(page.events[0].body, br#"{"id":"ev_1"}"#);
        assert_eq!(page.next.as_deref(), Some("next"));
        let last = log()
            .parse_page(&response(r#"{"events":[],"hasMore":false}"#))
            .unwrap();
        assert!(last.next.is_none());
    }

    #[test]
    fn more_without_a_token_or_a_bad_time_is_malformed() {
        for body in [
            r#"{"events":[],"hasMore":true}"#,
            r#"{"events":[{"id":"e","eventTime":"yesterday","data":"{}"}],"hasMore":false}"#,
        ] {
            assert!(matches!(
                log().parse_page(&response(body)),
                Err(ProviderError::Malformed(_))
            ));
        }
    }
}
