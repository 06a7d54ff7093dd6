//! A provider's log of the webhook events it sent (Spruce's delivery log,
//! `ListWebhookEndpointEvents`): read after downtime to replay what the receiver missed.
//!
//! Like the rest of a provider this is pure translation: the request for one page of the log
//! from an instant on, and the page read into the delivered bodies, which the replay feeds
//! through [`super::Webhooks::parse`] exactly as the receiver would (the log is read over the
//! provider's authenticated API, so there is no signature to check). The replay driver owns
//! the position, the page cap, the budget and the write.

use crate::http::{HttpResponse, RequestSpec};
use crate::provider::ProviderError;
use crate::time::Timestamp;

/// One logged event: the body the provider delivered (or tried to).
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// The provider's event id (the receiver's dedupe key).
    pub id: String,
    /// When the provider says the event happened.
    pub event_time: Timestamp,
    /// The delivered body, as the receiver would have read it.
    pub body: Vec<u8>,
}

/// One page of the log.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// The page's events, oldest first.
    pub events: Vec<LoggedEvent>,
    /// The token of the next page; `None` on the last one.
    pub next: Option<String>,
}

/// A provider's event log.
pub trait EventLog: Send + Sync {
    /// The request for the events logged in `[start, end]`; `token` names a page after the
    /// first (the same `start` and `end` are sent with it).
    fn request(
        &self,
        start: Timestamp,
        end: Timestamp,
        token: Option<&str>,
    ) -> Result<RequestSpec, ProviderError>;

    /// Reads one page.
    fn parse_page(&self, response: &HttpResponse) -> Result<LogPage, ProviderError>;

    /// How far back the provider keeps its log (Spruce: 30 days).
    fn retention(&self) -> std::time::Duration;
}
