//! Spruce Health public API v1, as in `shared/providers/spruce.md` and the official
//! OpenAPI document beside it.
//!
//! * `GET /v1/conversations` — `orderBy` (required) `created|last_message`, ascending;
//!   `startFrom` inclusive (≥); `paginationToken` exclusive with `startFrom`; `pageSize`
//!   1–200; `totalCount` computed at the first page and at most every 60 s after.
//! * `GET /v1/conversations/{id}` and `GET /v1/conversations/{id}/items`.
//! * `GET /v1/webhooks/endpoints/{endpointId}/events` — the organization's webhook
//!   delivery log (`webhooks::log`).
//!
//! Auth is a static bearer token per organization; a wrong token is a 403. Every
//! authenticated response carries `s-ratelimit-limit`, `s-ratelimit-remaining`,
//! `s-request-id` (plus the daily pair when a daily quota is configured); exhaustion is a
//! 429 (an ASSUMPTION: the docs name no status). Errors are `{statusCode, type, message}`.

use std::ops::Bound;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;

use super::cursors::Cursor;
use super::fake::{self, Person};
use super::frontend::{self, Ask, FrontEnd};
use super::ids::crockford;
use super::naming;
use super::options::MessagelessOrder;
use super::quota::{Quota, QuotaStatus};
use super::state::{PlatformState, Shared};
use super::wire::{self, Params};
use super::world::{AccountWorld, Conv, IndexKind, MessageKind, NO_TS};

/// Build the Spruce router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    frontend::router::<Spruce>(
        shared,
        Router::new()
            .route("/v1/conversations", get(list_conversations))
            .route("/v1/conversations/{id}", get(get_conversation))
            .route("/v1/conversations/{id}/items", get(list_items))
            .route(
                "/v1/webhooks/endpoints/{endpoint_id}/events",
                get(list_endpoint_events),
            ),
    )
}

/// Spruce's part of the front-end skeleton: a static token per organization, a
/// per-organization quota, and the rate-limit headers on every answer.
struct Spruce;

impl FrontEnd for Spruce {
    type Refusal = SpruceError;
    type Admitted = (usize, QuotaStatus);

    fn not_found() -> Response {
        error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found").into_response()
    }

    fn admit(
        shared: &Shared,
        state: &mut PlatformState,
        ask: &Ask<'_>,
    ) -> Result<Self::Admitted, SpruceError> {
        admit(shared, state, ask.headers)
    }

    fn decorate(response: &mut Response, (_, quota): &Self::Admitted) {
        decorate(response, quota);
    }
}

/// A refusal in Spruce's error shape `{statusCode, type, message}`.
#[derive(Debug, thiserror::Error)]
#[error("{status} {kind}: {message}")]
pub(crate) struct SpruceError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Rate-limit headers to attach (a 429 still reports the quota).
    quota: Option<QuotaStatus>,
}

impl IntoResponse for SpruceError {
    fn into_response(self) -> Response {
        let mut response = wire::json(
            self.status,
            json!({ "statusCode": self.status.as_u16(), "type": self.kind, "message": self.message }),
        );
        if let Some(quota) = &self.quota {
            decorate(&mut response, quota);
        }
        response
    }
}

fn error(status: StatusCode, kind: &'static str, message: &str) -> SpruceError {
    SpruceError {
        status,
        kind,
        message: message.to_owned(),
        quota: None,
    }
}

/// Error renderer for the fault layer.
pub(crate) fn fault_response(status: StatusCode, message: &str) -> Response {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "RATE_LIMITED"
    } else {
        "INTERNAL"
    };
    error(status, kind, message).into_response()
}

fn bad_parameter(message: &str) -> SpruceError {
    error(StatusCode::BAD_REQUEST, "BAD_PARAMETER", message)
}

/// Authenticate, count the request against the organization's quota, and return the
/// account plus the rate-limit headers every response must carry.
fn admit(
    shared: &Shared,
    state: &mut PlatformState,
    headers: &HeaderMap,
) -> Result<(usize, QuotaStatus), SpruceError> {
    let token = wire::bearer(headers).unwrap_or("");
    let Some(account) = shared
        .accounts
        .spruce
        .iter()
        .position(|a| !token.is_empty() && a.api_token == token)
    else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "The API token is invalid or has been disabled",
        ));
    };
    let options = &shared.options;
    let quota = state.quotas.entry(account).or_insert_with(|| {
        Quota::new(
            options.spruce_rate_limit,
            60_000_000,
            options.spruce_daily_limit,
        )
    });
    let status = quota.hit(shared.clock.now_us());
    if !status.allowed {
        let organization = &shared.accounts.spruce[account].organization_id;
        shared
            .counters
            .refused_by_quota(shared.provider, organization);
        return Err(SpruceError {
            quota: Some(status),
            ..error(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "Rate limit exceeded for this organization",
            )
        });
    }
    Ok((account, status))
}

/// Add the rate-limit and request-id headers.
fn decorate(response: &mut Response, quota: &QuotaStatus) {
    wire::set_header(response, "s-ratelimit-limit", &quota.limit.to_string());
    wire::set_header(
        response,
        "s-ratelimit-remaining",
        &quota.remaining.to_string(),
    );
    if let (Some(limit), Some(remaining)) = (quota.daily_limit, quota.daily_remaining) {
        wire::set_header(response, "s-ratelimit-daily-limit", &limit.to_string());
        wire::set_header(
            response,
            "s-ratelimit-daily-remaining",
            &remaining.to_string(),
        );
    }
    wire::set_header(
        response,
        "s-request-id",
        &crockford(rand::random::<u128>(), 26),
    );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    id: String,
    channel: &'static str,
    display_value: String,
    raw_value: String,
    is_internal: bool,
    object: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalParticipant {
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<String>,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<Endpoint>,
}

#[derive(Serialize)]
struct Tag {
    id: String,
    value: &'static str,
    object: &'static str,
}

/// The `conversation` schema of the Spruce OpenAPI document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Conversation {
    id: String,
    object: &'static str,
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtitle: Option<&'static str>,
    #[serde(rename = "type")]
    kind: &'static str,
    archived: bool,
    is_read_only: bool,
    created_at: String,
    #[serde(skip_serializing_if = "LastMessageAt::is_omitted")]
    last_message_at: LastMessageAt,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_to_member_id: Option<String>,
    associated_contact_ids: Vec<String>,
    internal_member_ids: Vec<String>,
    external_participants: Vec<ExternalParticipant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    internal_endpoint: Option<Endpoint>,
    tags: Vec<Tag>,
    #[serde(rename = "apiURL")]
    api_url: String,
    #[serde(rename = "appURL")]
    app_url: String,
}

/// `lastMessageAt`: a value, omitted, or an explicit `null` (selectable).
enum LastMessageAt {
    At(String),
    Omitted,
    Null,
}

impl LastMessageAt {
    fn is_omitted(&self) -> bool {
        matches!(self, LastMessageAt::Omitted)
    }
}

impl Serialize for LastMessageAt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LastMessageAt::At(text) => serializer.serialize_str(text),
            LastMessageAt::Omitted | LastMessageAt::Null => serializer.serialize_none(),
        }
    }
}

/// One conversation as the `conversation` schema (list, get and webhook).
pub(crate) fn render(
    shared: &Shared,
    account: usize,
    world: &AccountWorld,
    seq: u32,
    conv: &Conv,
) -> Conversation {
    let id = naming::conversation_id(world, seq);
    let person = Person::of(world.key, conv.contact, conv.title_rev);
    let contact = naming::contact_id(world, conv.contact);
    let org = &shared.accounts.spruce[account].organization_id;
    let kind = fake::channel_name(world.provider, conv.channel);
    let phone = fake::phone_e164(world.key, conv.contact);
    let endpoint = match kind {
        "phone" | "fax" => Some(Endpoint {
            id: phone.trim_start_matches('+').to_owned(),
            channel: if kind == "fax" { "fax" } else { "phone" },
            display_value: fake::phone_display(&phone),
            raw_value: phone.clone(),
            is_internal: false,
            object: "endpoint",
        }),
        "email" => {
            let email = fake::email(&person, conv.contact);
            Some(Endpoint {
                id: email.clone(),
                channel: "email",
                display_value: email.clone(),
                raw_value: email,
                is_internal: false,
                object: "endpoint",
            })
        }
        _ => None,
    };
    let internal_endpoint = endpoint.as_ref().map(|e| Endpoint {
        id: "15555550100".to_owned(),
        channel: e.channel,
        display_value: "(555) 555-0100".to_owned(),
        raw_value: "+15555550100".to_owned(),
        is_internal: true,
        object: "endpoint",
    });
    let external_participants = if matches!(kind, "team" | "note") {
        Vec::new()
    } else {
        vec![ExternalParticipant {
            contact: Some(contact.clone()),
            display_name: person.full_name(),
            endpoint,
        }]
    };
    let last_message_at = match conv.last_activity() {
        Some(us) => LastMessageAt::At(wire::rfc3339_ms(us)),
        None if shared.options.spruce_null_last_message_at => LastMessageAt::Null,
        None => LastMessageAt::Omitted,
    };
    let tags = if conv.starred {
        vec![Tag {
            id: format!("tag_{}", crockford(u128::from(world.key & 0xFFFF_FFFF), 13)),
            value: "priority",
            object: "conversation_tag",
        }]
    } else {
        Vec::new()
    };
    Conversation {
        api_url: format!("{}v1/conversations/{id}", shared.base_url),
        app_url: format!("https://app.sprucehealth.com/org/{org}/thread/{id}"),
        id,
        object: "conversation",
        title: person.full_name(),
        subtitle: (conv.msg_count > 2).then_some("Follow-up"),
        kind,
        archived: !conv.is_open(),
        is_read_only: false,
        created_at: wire::rfc3339_ms(conv.created_us),
        last_message_at,
        assigned_to_member_id: naming::teammate_id(world, conv.assignee),
        associated_contact_ids: vec![contact],
        internal_member_ids: vec![org.clone()],
        external_participants,
        internal_endpoint,
        tags,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConversationsPage {
    conversations: Vec<Conversation>,
    has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pagination_token: Option<String>,
    total_count: u64,
}

fn page_size(params: &Params, default: u32) -> Result<usize, SpruceError> {
    match params.get("pageSize") {
        None => Ok(default.clamp(1, 200) as usize),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if (1..=200).contains(&n) => Ok(n as usize),
            _ => Err(bad_parameter(
                "pageSize must be an integer between 1 and 200",
            )),
        },
    }
}

const TOTAL_REFRESH_US: i64 = 60_000_000;

async fn list_conversations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Spruce, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |state, &(account, _), params| list_conversations_page(&shared, state, account, params),
    )
}

fn list_conversations_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Result<Response, SpruceError> {
    let index = match params.get("orderBy") {
        Some("created") => IndexKind::Created,
        Some("last_message") => IndexKind::Activity,
        Some(other) => {
            return Err(bad_parameter(&format!(
                "orderBy must be one of created, last_message (got {other:?})"
            )));
        }
        None => return Err(bad_parameter("orderBy is required")),
    };
    let size = page_size(params, shared.options.spruce_default_page_size)?;
    let token = params.get("paginationToken").filter(|t| !t.is_empty());
    let start_from = params.get("startFrom").filter(|t| !t.is_empty());
    if token.is_some() && start_from.is_some() {
        return Err(bad_parameter(
            "Only one of startFrom or paginationToken can be provided",
        ));
    }
    let start = match start_from {
        None => None,
        Some(text) => match wire::parse_instant_us(text) {
            Some(us) => Some(us),
            None => {
                return Err(bad_parameter(&format!(
                    "startFrom must be an RFC 3339 date-time with a time zone (got {text:?})"
                )));
            }
        },
    };
    let fingerprint = wire::fingerprint(&[&account.to_string(), &format!("{index:?}")]);
    let now = shared.clock.now_us();
    let excluded_messageless = index == IndexKind::Activity
        && shared.options.spruce_messageless_order == MessagelessOrder::Excluded;
    let mut cursor = match token {
        Some(token) => match state
            .cursors
            .get(token, fingerprint, now, shared.page_token_ttl_us())
        {
            Ok(cursor) => cursor,
            Err(rejection) => {
                return Err(bad_parameter(&format!(
                    "Invalid paginationToken: {rejection}"
                )));
            }
        },
        None => Cursor {
            account,
            query: fingerprint,
            // `startFrom` is inclusive; without it message-less rows (key NO_TS) lead.
            after: match start {
                Some(s) => (s, 0),
                None if excluded_messageless => (NO_TS + 1, 0),
                None => (i64::MIN, 0),
            },
            total: None,
            phase: 0,
        },
    };
    let from = if token.is_some() {
        Bound::Excluded(cursor.after)
    } else {
        Bound::Included(cursor.after)
    };
    let world = &state.accounts[account];
    let (rows, has_more) =
        frontend::cut_page(world.walk(index, from, Bound::Unbounded, false), size);
    let total = match cursor.total {
        Some((count, at)) if now - at < TOTAL_REFRESH_US => count,
        _ => {
            let count = if start.is_none() && token.is_none() && !excluded_messageless {
                world.index_len(index) as u64
            } else {
                let floor = start.unwrap_or(if excluded_messageless {
                    NO_TS + 1
                } else {
                    i64::MIN
                });
                world
                    .walk(index, Bound::Included((floor, 0)), Bound::Unbounded, false)
                    .count() as u64
            };
            cursor.total = Some((count, now));
            count
        }
    };
    let conversations: Vec<Conversation> = rows
        .iter()
        .filter_map(|(_, seq)| {
            world
                .visible(*seq)
                .map(|c| render(shared, account, world, *seq, c))
        })
        .collect();
    let pagination_token = has_more.then(|| {
        let token = format!(
            "{}{}",
            super::ids::base62(state.random_u64(), 11),
            super::ids::base62(state.random_u64(), 11)
        );
        let after = rows.last().copied().unwrap_or(cursor.after);
        state.cursors.insert(
            token.clone(),
            Cursor {
                after,
                ..cursor.clone()
            },
            now,
        );
        token
    });
    Ok(wire::json(
        StatusCode::OK,
        ConversationsPage {
            conversations,
            has_more,
            pagination_token,
            total_count: total,
        },
    ))
}

async fn get_conversation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    frontend::answer::<Spruce, _>(&shared, &headers, None, None, |state, &(account, _), _| {
        let world = &state.accounts[account];
        match naming::parse_conversation_id(world, &id)
            .and_then(|seq| world.visible_live(seq).map(|c| (seq, c)))
        {
            Some((seq, conv)) => Ok(wire::json(
                StatusCode::OK,
                json!({ "conversation": render(&shared, account, world, seq, conv) }),
            )),
            None => Err(error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("Conversation {id} not found"),
            )),
        }
    })
}

/// `ListWebhookEndpointEvents`: the endpoint's delivery log (see `webhooks::log`).
async fn list_endpoint_events(
    State(shared): State<Arc<Shared>>,
    Path(endpoint_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Spruce, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |_, &(account, _), params| {
            if shared.accounts.spruce[account].webhook_endpoint_id != endpoint_id {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("Webhook endpoint {endpoint_id} not found"),
                ));
            }
            let instant = |name: &str| match params.get(name).filter(|t| !t.is_empty()) {
                None => Ok(None),
                Some(text) => wire::parse_instant_us(text).map(Some).ok_or_else(|| {
                    bad_parameter(&format!(
                        "{name} must be an RFC 3339 date-time (got {text:?})"
                    ))
                }),
            };
            let (start, end) = (instant("startTime")?, instant("endTime")?);
            let token = params.get("paginationToken").filter(|t| !t.is_empty());
            let (events, has_more, token) = shared
                .webhooks
                .log
                .page(account, start, end, token, shared.clock.now_us())
                .map_err(|e| bad_parameter(&e.to_string()))?;
            let mut body = json!({ "events": events, "hasMore": has_more });
            if let Some(token) = token {
                body["paginationToken"] = json!(token);
            }
            Ok(wire::json(StatusCode::OK, body))
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Author {
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// The `conversationItem` schema of the Spruce OpenAPI document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConversationItem {
    id: String,
    object: &'static str,
    conversation_id: String,
    attachments: Vec<serde_json::Value>,
    author: Author,
    direction: &'static str,
    is_internal_note: bool,
    #[serde(rename = "appURL")]
    app_url: String,
    #[serde(rename = "apiURL")]
    api_url: String,
    text: &'static str,
    pages: Vec<serde_json::Value>,
    buttons: Vec<serde_json::Value>,
    modified_at: String,
    created_at: String,
    request_id: String,
    can_delete: bool,
}

/// One message of conversation `seq` as the `conversationItem` schema (list and webhook).
pub(crate) fn render_item(
    shared: &Shared,
    world: &AccountWorld,
    seq: u32,
    conv: &Conv,
    index: u32,
) -> ConversationItem {
    let person = Person::of(world.key, conv.contact, conv.title_rev);
    let conversation_id = naming::conversation_id(world, seq);
    let message = world.msgs[index as usize];
    let (at, kind) = (message.at_us, message.kind());
    let item_id = naming::message_id(world, index);
    let (direction, author) = match kind {
        MessageKind::Inbound => (
            "inbound",
            Author {
                display_name: person.full_name(),
                id: None,
            },
        ),
        MessageKind::Outbound | MessageKind::OutboundAutomated => (
            "outbound",
            Author {
                display_name: "Care Team".to_owned(),
                id: naming::teammate_id(world, conv.assignee.max(1)),
            },
        ),
        MessageKind::InternalNote => (
            "none",
            Author {
                display_name: "Care Team".to_owned(),
                id: naming::teammate_id(world, conv.assignee.max(1)),
            },
        ),
    };
    ConversationItem {
        api_url: format!("{}v1/conversationItems/{item_id}", shared.base_url),
        app_url: format!("https://app.sprucehealth.com/thread/{conversation_id}/message/{item_id}"),
        id: item_id,
        object: "conversationItem",
        conversation_id,
        attachments: Vec::new(),
        author,
        direction,
        is_internal_note: kind == MessageKind::InternalNote,
        text: fake::message_text(world.key, index, kind == MessageKind::InternalNote),
        pages: Vec::new(),
        buttons: Vec::new(),
        modified_at: wire::rfc3339_ms(at),
        created_at: wire::rfc3339_ms(at),
        request_id: format!("asyncRequest_{}", crockford(u128::from(index), 13)),
        can_delete: kind == MessageKind::InternalNote,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemsPage {
    conversation_items: Vec<ConversationItem>,
    has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pagination_token: Option<String>,
    total_count: u64,
}

async fn list_items(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Spruce, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |state, &(account, _), params| list_items_page(&shared, state, account, &id, params),
    )
}

fn list_items_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    id: &str,
    params: &Params,
) -> Result<Response, SpruceError> {
    let size = page_size(params, shared.options.spruce_default_page_size)?;
    let newest_first = match params.get("order") {
        None | Some("newest_first") => true,
        Some("oldest_first") => false,
        Some(other) => {
            return Err(bad_parameter(&format!(
                "order must be one of newest_first, oldest_first (got {other:?})"
            )));
        }
    };
    let start = match params.get("startFrom").filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => match wire::parse_instant_us(text) {
            Some(us) => Some(us),
            None => {
                return Err(bad_parameter(&format!(
                    "startFrom must be an RFC 3339 date-time (got {text:?})"
                )));
            }
        },
    };
    let now = shared.clock.now_us();
    let world = &state.accounts[account];
    let Some((seq, conv)) = naming::parse_conversation_id(world, id)
        .and_then(|seq| world.visible_live(seq).map(|c| (seq, *c)))
    else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Conversation {id} not found"),
        ));
    };
    let fingerprint = wire::fingerprint(&[
        &account.to_string(),
        id,
        if newest_first { "n" } else { "o" },
    ]);
    let after = match params.get("paginationToken").filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => match state
            .cursors
            .get(token, fingerprint, now, shared.page_token_ttl_us())
        {
            Ok(cursor) => Some(cursor.after),
            Err(rejection) => {
                return Err(bad_parameter(&format!(
                    "Invalid paginationToken: {rejection}"
                )));
            }
        },
    };
    let horizon = now - shared.faults().delay_us();
    let exclusive = shared.options.spruce_items_start_exclusive;
    // Keys are (time, arena index); newest_first walks them in reverse.
    let mut keys: Vec<(i64, u32)> = world
        .messages_of(&conv)
        .into_iter()
        .map(|i| (world.msgs[i as usize].at_us, i))
        .filter(|(at, _)| *at <= horizon)
        .filter(|(at, _)| match start {
            None => true,
            Some(s) if exclusive => *at > s,
            Some(s) => *at >= s,
        })
        .collect();
    let total = keys.len() as u64;
    if !newest_first {
        keys.reverse();
    }
    let (keys, has_more) = frontend::cut_page(
        keys.into_iter().filter(|k| match after {
            None => true,
            Some(a) if newest_first => *k < a,
            Some(a) => *k > a,
        }),
        size,
    );
    let items: Vec<ConversationItem> = keys
        .iter()
        .map(|(_, i)| render_item(shared, world, seq, &conv, *i))
        .collect();
    let pagination_token = has_more.then(|| {
        let token = super::ids::base62(state.random_u64(), 11);
        let last = keys.last().copied().unwrap_or((i64::MIN, 0));
        state.cursors.insert(
            token.clone(),
            Cursor {
                account,
                query: fingerprint,
                after: last,
                total: None,
                phase: 0,
            },
            now,
        );
        token
    });
    Ok(wire::json(
        StatusCode::OK,
        ItemsPage {
            conversation_items: items,
            has_more,
            pagination_token,
            total_count: total,
        },
    ))
}
