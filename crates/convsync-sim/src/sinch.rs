//! Sinch Conversation API v1, as in `shared/providers/sinch.md` and the (older) official
//! spec copy beside it.
//!
//! * `POST /oauth2/token` — HTTP Basic `key_id:key_secret`, form
//!   `grant_type=client_credentials` (OAuth error shape `{error, error_description}`).
//! * `GET /v1/projects/{project}/conversations` — `app_id`/`contact_id` (one required),
//!   `only_active` (true = active only, false = inactive only, omitted = both by default),
//!   `page_size` ≤ 20 (default 10), expiring `page_token`; stable order unrelated to time
//!   (by id); `total_size` on the first page only (0 afterwards, like the SDK fixture).
//! * `GET …/conversations/{id}`, `GET …/conversations:recent` (latest message first by
//!   default, `page_size` ≤ 50), `GET …/messages` (by `accept_time` descending,
//!   `start_time` exclusive, `page_size` ≤ 1000).
//!
//! Errors use the spec's `runtimeError` shape, unwrapped:
//! `{code, message, status, details: []}`; a 401 also carries `WWW-Authenticate`.
//! Basic auth is accepted on data calls (the real API does; the counters show it) unless
//! `--sinch-reject-basic-auth`.

use std::ops::Bound;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use super::cursors::Cursor;
use super::fake;
use super::frontend::{self, Ask, FrontEnd};
use super::ids::{base64, hash_all};
use super::naming;
use super::options::OnlyActiveOmitted;
use super::state::{PlatformState, Shared};
use super::tokens::TokenRejection;
use super::wire::{self, Params};
use super::world::{AccountWorld, Conv, IndexKind, MessageKind, Msg};

/// Build the Sinch router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    frontend::router::<Sinch>(
        shared,
        Router::new()
            .route("/oauth2/token", post(token))
            .route(
                "/v1/projects/{project}/conversations",
                get(list_conversations),
            )
            .route(
                "/v1/projects/{project}/conversations:recent",
                get(list_recent),
            )
            .route(
                "/v1/projects/{project}/conversations/{id}",
                get(get_conversation),
            )
            .route("/v1/projects/{project}/messages", get(list_messages)),
    )
}

/// Sinch's part of the front-end skeleton: an OAuth token or the access key (Basic) of
/// the project the path names; no quota headers.
struct Sinch;

impl FrontEnd for Sinch {
    type Refusal = SinchError;
    type Admitted = usize;

    fn not_found() -> Response {
        error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found").into_response()
    }

    fn admit(
        shared: &Shared,
        state: &mut PlatformState,
        ask: &Ask<'_>,
    ) -> Result<usize, SinchError> {
        authenticate(shared, state, ask.headers, ask.scope.unwrap_or(""))
    }
}

/// A refusal in the spec's `runtimeError` shape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SinchError {
    /// `{code, message, status, details: []}`.
    #[error("{status} {grpc}: {message}")]
    Runtime {
        status: StatusCode,
        grpc: &'static str,
        message: String,
    },
    /// 401 UNAUTHENTICATED, with the reason in `WWW-Authenticate`.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
}

impl IntoResponse for SinchError {
    fn into_response(self) -> Response {
        match self {
            SinchError::Runtime {
                status,
                grpc,
                message,
            } => wire::json(
                status,
                json!({
                    "code": status.as_u16(),
                    "message": message,
                    "status": grpc,
                    "details": [],
                }),
            ),
            SinchError::Unauthenticated(description) => unauthenticated(description),
        }
    }
}

fn error(status: StatusCode, grpc: &'static str, message: &str) -> SinchError {
    SinchError::Runtime {
        status,
        grpc,
        message: message.to_owned(),
    }
}

/// Error renderer for the fault layer.
pub(crate) fn fault_response(status: StatusCode, message: &str) -> Response {
    let grpc = match status {
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INTERNAL_ERROR",
    };
    error(status, grpc, message).into_response()
}

fn invalid_argument(message: &str) -> SinchError {
    error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn unauthenticated(description: &str) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "Request had invalid credentials.",
    )
    .into_response();
    wire::set_header(
        &mut response,
        "www-authenticate",
        &format!(
            "Bearer realm=\"sinch\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    );
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = wire::json(
        status,
        json!({ "error": error, "error_description": description }),
    );
    if status == StatusCode::UNAUTHORIZED {
        wire::set_header(&mut response, "www-authenticate", "Basic realm=\"sinch\"");
    }
    response
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((key_id, key_secret)) = wire::basic(&headers) else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed: HTTP Basic credentials are required",
        );
    };
    let Some(account) = shared
        .accounts
        .sinch
        .iter()
        .position(|a| a.key_id == key_id && a.key_secret == key_secret)
    else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    };
    let form = Params::parse_form(&body);
    match form.get("grant_type") {
        Some("client_credentials") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing grant_type parameter",
            );
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("Unsupported grant type: {other}"),
            );
        }
    }
    let now = shared.clock.now_us();
    let ttl = shared.token_ttl_us();
    let access_token = shared
        .lock()
        .tokens
        .issue("sinch.", account, now, Some(ttl));
    wire::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "expires_in": ttl / 1_000_000,
            "scope": "",
            "token_type": "bearer",
        }),
    )
}

/// Resolve the project account of a data call (Bearer, or Basic unless refused).
fn authenticate(
    shared: &Shared,
    state: &PlatformState,
    headers: &HeaderMap,
    project: &str,
) -> Result<usize, SinchError> {
    let account = if let Some(token) = wire::bearer(headers) {
        state
            .tokens
            .validate(token, shared.clock.now_us())
            .map_err(|rejection| match rejection {
                TokenRejection::Expired => SinchError::Unauthenticated("The access token expired"),
                TokenRejection::Unknown => {
                    SinchError::Unauthenticated("The access token is invalid")
                }
            })?
    } else if let Some((key_id, key_secret)) = wire::basic(headers) {
        if shared.options.sinch_reject_basic_auth {
            return Err(SinchError::Unauthenticated(
                "Basic authentication is disabled for this project",
            ));
        }
        shared
            .accounts
            .sinch
            .iter()
            .position(|a| a.key_id == key_id && a.key_secret == key_secret)
            .ok_or(SinchError::Unauthenticated("Invalid access key"))?
    } else {
        return Err(SinchError::Unauthenticated("Missing credentials"));
    };
    let Some(target) = shared
        .accounts
        .sinch
        .iter()
        .position(|a| a.project_id == project)
    else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Project {project} not found"),
        ));
    };
    if target != account {
        return Err(error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "You do not have access to the requested resource.",
        ));
    }
    Ok(account)
}

/// Which app of the project a request designates.
enum AppRef {
    /// The conversation-mode app.
    Conversations,
    /// The DISPATCH-mode app: it has no conversations at all.
    Dispatch,
}

fn resolve_app(shared: &Shared, account: usize, app_id: &str) -> Result<AppRef, SinchError> {
    let credentials = &shared.accounts.sinch[account];
    if credentials.app_id == app_id {
        Ok(AppRef::Conversations)
    } else if credentials.dispatch_app_id.as_deref() == Some(app_id) {
        Ok(AppRef::Dispatch)
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("App {app_id} not found in this project/region"),
        ))
    }
}

#[derive(Serialize)]
pub(crate) struct Conversation {
    id: String,
    app_id: String,
    contact_id: String,
    active: bool,
    active_channel: &'static str,
    last_received: String,
    metadata: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata_json: Option<serde_json::Value>,
    correlation_id: String,
}

/// One conversation as the list shows it (list and webhook).
pub(crate) fn render(
    shared: &Shared,
    account: usize,
    world: &AccountWorld,
    seq: u32,
    conv: &Conv,
) -> Conversation {
    let with_metadata = hash_all(&[world.key, u64::from(seq), 0x3E7A]).is_multiple_of(4);
    Conversation {
        id: naming::conversation_id(world, seq),
        app_id: shared.accounts.sinch[account].app_id.clone(),
        contact_id: naming::contact_id(world, conv.contact),
        active: conv.is_open(),
        active_channel: fake::channel_name(world.provider, conv.channel),
        last_received: wire::rfc3339_ms(conv.last_activity().unwrap_or(0)),
        metadata: String::new(),
        metadata_json: with_metadata.then(|| json!({ "ticket": format!("T-{seq}") })),
        correlation_id: if with_metadata {
            format!("crm-{seq}")
        } else {
            String::new()
        },
    }
}

#[derive(Serialize)]
struct Text {
    text: &'static str,
}

#[derive(Serialize)]
struct TextMessage {
    text_message: Text,
}

#[derive(Serialize)]
struct ChannelIdentity {
    channel: &'static str,
    identity: String,
    app_id: String,
}

#[derive(Serialize)]
pub(crate) struct Message {
    id: String,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_message: Option<TextMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_message: Option<TextMessage>,
    channel_identity: ChannelIdentity,
    conversation_id: String,
    contact_id: String,
    metadata: String,
    accept_time: String,
    sender_id: String,
    processing_mode: &'static str,
    injected: bool,
}

/// One message as the messages list shows it (list and webhook).
pub(crate) fn render_message(world: &AccountWorld, index: u32, msg: &Msg) -> Message {
    let conv = &world.convs[msg.conv as usize];
    let inbound = msg.kind() == MessageKind::Inbound;
    let text = || TextMessage {
        text_message: Text {
            text: fake::message_text(world.key, index, false),
        },
    };
    Message {
        id: naming::message_id(world, index),
        direction: if inbound { "TO_APP" } else { "TO_CONTACT" },
        contact_message: inbound.then(text),
        app_message: (!inbound).then(text),
        channel_identity: ChannelIdentity {
            channel: fake::channel_name(world.provider, conv.channel),
            identity: fake::phone_e164(world.key, conv.contact)
                .trim_start_matches('+')
                .to_owned(),
            app_id: String::new(),
        },
        conversation_id: naming::conversation_id(world, msg.conv),
        contact_id: naming::contact_id(world, conv.contact),
        metadata: String::new(),
        accept_time: wire::rfc3339_ms(msg.at_us),
        sender_id: String::new(),
        processing_mode: "CONVERSATION",
        injected: false,
    }
}

fn page_size(params: &Params, default: usize, max: usize) -> Result<usize, SinchError> {
    match params.get("page_size") {
        None => Ok(default),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(0) => Ok(default),
            Ok(n) if n > 0 && n as usize <= max => Ok(n as usize),
            _ => Err(invalid_argument(&format!(
                "page_size must be between 1 and {max}"
            ))),
        },
    }
}

fn parse_bool(params: &Params, name: &str) -> Result<Option<bool>, SinchError> {
    match params.get(name) {
        None => Ok(None),
        Some(text) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(invalid_argument(&format!(
                "Invalid value for {name}: {text:?}"
            ))),
        },
    }
}

fn new_token(state: &mut PlatformState) -> String {
    let mut bytes = Vec::with_capacity(42);
    for _ in 0..5 {
        bytes.extend_from_slice(&state.random_u64().to_le_bytes());
    }
    base64(&bytes[..40])
}

/// Resolve `page_token` for a walk, or start a new one.
fn resume(
    shared: &Shared,
    state: &PlatformState,
    params: &Params,
    fresh: Cursor,
) -> Result<(Cursor, bool), SinchError> {
    match params.get("page_token").filter(|t| !t.is_empty()) {
        None => Ok((fresh, false)),
        Some(token) => state
            .cursors
            .get(
                token,
                fresh.query,
                shared.clock.now_us(),
                shared.page_token_ttl_us(),
            )
            .map(|cursor| (cursor, true))
            .map_err(|rejection| invalid_argument(&format!("Invalid page_token: {rejection}"))),
    }
}

fn store(state: &mut PlatformState, cursor: Cursor, now: i64) -> String {
    let token = new_token(state);
    state.cursors.insert(token.clone(), cursor, now);
    token
}

#[derive(Serialize)]
struct ConversationsPage {
    conversations: Vec<Conversation>,
    next_page_token: String,
    total_size: u64,
}

async fn list_conversations(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Sinch, _>(
        &shared,
        &headers,
        query.as_deref(),
        Some(&project),
        |state, &account, params| list_conversations_page(&shared, state, account, params),
    )
}

fn list_conversations_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Result<Response, SinchError> {
    let app_id = params.get("app_id").filter(|v| !v.is_empty());
    let contact_id = params.get("contact_id").filter(|v| !v.is_empty());
    if app_id.is_none() && contact_id.is_none() {
        return Err(invalid_argument(
            "At least one of 'app_id' or 'contact_id' must be present.",
        ));
    }
    let app = app_id
        .map(|a| resolve_app(shared, account, a))
        .transpose()?;
    let only_active = match parse_bool(params, "only_active") {
        Ok(Some(v)) => Some(v),
        Ok(None) => match shared.options.sinch_only_active_omitted {
            OnlyActiveOmitted::Both => None,
            OnlyActiveOmitted::Reject => {
                return Err(invalid_argument("Missing required parameter only_active"));
            }
        },
        Err(refusal) => return Err(refusal),
    };
    let size = page_size(params, 10, 20)?;
    let world = &state.accounts[account];
    let contact = match contact_id {
        None => None,
        Some(text) => match naming::parse_contact_id(world, text) {
            Some(c) => Some(c),
            None => {
                return Ok(wire::json(
                    StatusCode::OK,
                    ConversationsPage {
                        conversations: Vec::new(),
                        next_page_token: String::new(),
                        total_size: 0,
                    },
                ));
            }
        },
    };
    let fingerprint = wire::fingerprint(&[
        &account.to_string(),
        app_id.unwrap_or(""),
        contact_id.unwrap_or(""),
        &format!("{only_active:?}"),
    ]);
    let fresh = Cursor {
        account,
        query: fingerprint,
        after: (i64::MIN, 0),
        total: None,
        phase: 0,
    };
    let (cursor, resumed) = resume(shared, state, params, fresh)?;
    if matches!(app, Some(AppRef::Dispatch)) {
        return Ok(wire::json(
            StatusCode::OK,
            ConversationsPage {
                conversations: Vec::new(),
                next_page_token: String::new(),
                total_size: 0,
            },
        ));
    }
    let keep = |c: &Conv| {
        only_active.is_none_or(|active| c.is_open() == active)
            && contact.is_none_or(|k| c.contact == k)
    };
    let from = if resumed {
        Bound::Excluded(cursor.after)
    } else {
        Bound::Unbounded
    };
    let (rows, has_more) = frontend::cut_page(
        world
            .walk(IndexKind::Scrambled, from, Bound::Unbounded, false)
            .filter(|(_, seq)| world.visible(*seq).is_some_and(keep)),
        size,
    );
    let total_size = if resumed {
        0
    } else if only_active.is_none() && contact.is_none() {
        world.index_len(IndexKind::Scrambled) as u64
    } else {
        world
            .walk(
                IndexKind::Scrambled,
                Bound::Unbounded,
                Bound::Unbounded,
                false,
            )
            .filter(|(_, seq)| world.visible(*seq).is_some_and(keep))
            .count() as u64
    };
    let conversations = rows
        .iter()
        .filter_map(|(_, seq)| {
            world
                .visible(*seq)
                .map(|c| render(shared, account, world, *seq, c))
        })
        .collect();
    let now = shared.clock.now_us();
    let next_page_token = match (has_more, rows.last()) {
        (true, Some(last)) => store(
            state,
            Cursor {
                after: *last,
                ..cursor
            },
            now,
        ),
        _ => String::new(),
    };
    Ok(wire::json(
        StatusCode::OK,
        ConversationsPage {
            conversations,
            next_page_token,
            total_size,
        },
    ))
}

async fn get_conversation(
    State(shared): State<Arc<Shared>>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    frontend::answer::<Sinch, _>(
        &shared,
        &headers,
        None,
        Some(&project),
        |state, &account, _| conversation(&shared, state, account, &id),
    )
}

fn conversation(
    shared: &Shared,
    state: &PlatformState,
    account: usize,
    id: &str,
) -> Result<Response, SinchError> {
    let world = &state.accounts[account];
    match naming::parse_conversation_id(world, id)
        .and_then(|seq| world.visible_live(seq).map(|c| (seq, c)))
    {
        Some((seq, conv)) => Ok(wire::json(
            StatusCode::OK,
            render(shared, account, world, seq, conv),
        )),
        None => Err(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Conversation {id} not found"),
        )),
    }
}

#[derive(Serialize)]
struct RecentItem {
    conversation: Conversation,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_message: Option<Message>,
}

#[derive(Serialize)]
struct RecentPage {
    conversations: Vec<RecentItem>,
    next_page_token: String,
    total_size: u64,
}

async fn list_recent(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Sinch, _>(
        &shared,
        &headers,
        query.as_deref(),
        Some(&project),
        |state, &account, params| list_recent_page(&shared, state, account, params),
    )
}

fn list_recent_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Result<Response, SinchError> {
    let Some(app_id) = params.get("app_id").filter(|v| !v.is_empty()) else {
        return Err(invalid_argument("app_id is required"));
    };
    let app = resolve_app(shared, account, app_id)?;
    let only_active = match parse_bool(params, "only_active") {
        Ok(v) => v.unwrap_or(false),
        Err(refusal) => return Err(refusal),
    };
    let descending = match params.get("order").map(str::to_ascii_uppercase).as_deref() {
        None | Some("DESC") => true,
        Some("ASC") => false,
        Some(other) => return Err(invalid_argument(&format!("Invalid order: {other:?}"))),
    };
    let size = page_size(params, 10, 50)?;
    let fingerprint = wire::fingerprint(&[
        &account.to_string(),
        app_id,
        &only_active.to_string(),
        &descending.to_string(),
    ]);
    let fresh = Cursor {
        account,
        query: fingerprint,
        after: (i64::MIN, 0),
        total: None,
        phase: 0,
    };
    let (cursor, resumed) = resume(shared, state, params, fresh)?;
    if matches!(app, AppRef::Dispatch) {
        return Ok(wire::json(
            StatusCode::OK,
            RecentPage {
                conversations: Vec::new(),
                next_page_token: String::new(),
                total_size: 0,
            },
        ));
    }
    let world = &state.accounts[account];
    let (from, to) = match (resumed, descending) {
        (false, _) => (Bound::Unbounded, Bound::Unbounded),
        (true, true) => (Bound::Unbounded, Bound::Excluded(cursor.after)),
        (true, false) => (Bound::Excluded(cursor.after), Bound::Unbounded),
    };
    let (rows, has_more) = frontend::cut_page(
        world
            .walk(IndexKind::Activity, from, to, descending)
            .filter(|(_, seq)| {
                world
                    .visible(*seq)
                    .is_some_and(|c| !only_active || c.is_open())
            }),
        size,
    );
    let horizon = shared.clock.now_us() - shared.faults().delay_us();
    let conversations = rows
        .iter()
        .filter_map(|(_, seq)| {
            let conv = world.visible(*seq)?;
            let last_message = world
                .messages_of(conv)
                .into_iter()
                .find(|i| world.msgs[*i as usize].at_us <= horizon)
                .map(|i| render_message(world, i, &world.msgs[i as usize]));
            Some(RecentItem {
                conversation: render(shared, account, world, *seq, conv),
                last_message,
            })
        })
        .collect();
    let total_size = if resumed {
        0
    } else {
        world.index_len(IndexKind::Activity) as u64
    };
    let now = shared.clock.now_us();
    let next_page_token = match (has_more, rows.last()) {
        (true, Some(last)) => store(
            state,
            Cursor {
                after: *last,
                ..cursor
            },
            now,
        ),
        _ => String::new(),
    };
    Ok(wire::json(
        StatusCode::OK,
        RecentPage {
            conversations,
            next_page_token,
            total_size,
        },
    ))
}

#[derive(Serialize)]
struct MessagesPage {
    messages: Vec<Message>,
    next_page_token: String,
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<Sinch, _>(
        &shared,
        &headers,
        query.as_deref(),
        Some(&project),
        |state, &account, params| list_messages_page(&shared, state, account, params),
    )
}

fn list_messages_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Result<Response, SinchError> {
    let app_id = params.get("app_id").filter(|v| !v.is_empty());
    let conversation_id = params.get("conversation_id").filter(|v| !v.is_empty());
    let contact_id = params.get("contact_id").filter(|v| !v.is_empty());
    if app_id.is_none() && conversation_id.is_none() && contact_id.is_none() {
        return Err(invalid_argument(
            "One of 'app_id', 'conversation_id' or 'contact_id' must be present.",
        ));
    }
    let app = app_id
        .map(|a| resolve_app(shared, account, a))
        .transpose()?;
    let time = |name: &str| -> Result<Option<i64>, SinchError> {
        match params.get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(text) => wire::parse_instant_us(text)
                .map(Some)
                .ok_or_else(|| invalid_argument(&format!("Invalid {name}: {text:?}"))),
        }
    };
    let (start, end) = match (time("start_time"), time("end_time")) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(refusal), _) | (_, Err(refusal)) => return Err(refusal),
    };
    let size = page_size(params, 10, 1000)?;
    let fingerprint = wire::fingerprint(&[
        &account.to_string(),
        app_id.unwrap_or(""),
        conversation_id.unwrap_or(""),
        contact_id.unwrap_or(""),
        &format!("{start:?}{end:?}"),
    ]);
    let fresh = Cursor {
        account,
        query: fingerprint,
        after: (i64::MAX, u32::MAX),
        total: None,
        phase: 0,
    };
    let (cursor, _) = resume(shared, state, params, fresh)?;
    let empty = || {
        wire::json(
            StatusCode::OK,
            MessagesPage {
                messages: Vec::new(),
                next_page_token: String::new(),
            },
        )
    };
    if matches!(app, Some(AppRef::Dispatch)) {
        return Ok(empty());
    }
    let world = &state.accounts[account];
    let conversation = match conversation_id {
        None => None,
        Some(text) => match naming::parse_conversation_id(world, text) {
            Some(seq) => Some(seq),
            None => return Ok(empty()),
        },
    };
    let contact = match contact_id {
        None => None,
        Some(text) => match naming::parse_contact_id(world, text) {
            Some(c) => Some(c),
            None => return Ok(empty()),
        },
    };
    let horizon = shared.clock.now_us() - shared.faults().delay_us();
    let upper = end.map_or(horizon, |e| e.saturating_sub(1).min(horizon));
    let top = world.messages_until(upper).min(cursor.after.1 as usize);
    let keep = |m: &Msg| {
        start.is_none_or(|s| m.at_us > s)
            && conversation.is_none_or(|c| m.conv == c)
            && contact.is_none_or(|k| world.convs[m.conv as usize].contact == k)
            && world.visible_live(m.conv).is_some()
    };
    let mut selected: Vec<u32> = Vec::with_capacity(size + 1);
    for index in (0..top).rev() {
        let msg = &world.msgs[index];
        if start.is_some_and(|s| msg.at_us <= s) {
            break;
        }
        if keep(msg) {
            selected.push(index as u32);
            if selected.len() > size {
                break;
            }
        }
    }
    let has_more = selected.len() > size;
    selected.truncate(size);
    let messages = selected
        .iter()
        .map(|i| render_message(world, *i, &world.msgs[*i as usize]))
        .collect();
    let now = shared.clock.now_us();
    let next_page_token = match (has_more, selected.last()) {
        (true, Some(last)) => store(
            state,
            Cursor {
                after: (0, *last),
                ..cursor
            },
            now,
        ),
        _ => String::new(),
    };
    Ok(wire::json(
        StatusCode::OK,
        MessagesPage {
            messages,
            next_page_token,
        },
    ))
}
