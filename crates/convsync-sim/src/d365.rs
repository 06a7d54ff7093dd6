//! Microsoft Dynamics 365 Contact Center messaging API (custom channel), as documented in
//! `shared/providers/d365.md`.
//!
//! * `POST /{tenant}/oauth2/v2.0/token` — Entra client-credentials token (Entra error
//!   shape: `error`, `error_description`, `error_codes`, …).
//! * `GET /{tenant}/discovery/v2.0/keys` — the tenant's signing keys (a JWK set), which
//!   verify the access tokens the 2025-09 webhook sends ([`super::entra`]).
//! * `GET /api/v1.0/consumer/conversations` — active conversations only, ascending by
//!   creation time (or shuffled), `StartTimeStamp` strictly after (or inclusive),
//!   `PageSize` 1–250, GUID `ContinuationToken` bound to the other parameters.
//! * `GET /api/v1.0/consumer/conversation/{id}/messages` — Bot-Framework activities,
//!   `PageSize` 1–100, `ContinuationToken` is a DateTimeOffset, key `continuationToken`.
//!
//! Data requests carry a bearer token and the channel/organization headers under either
//! documented name (`channel-id` or `x-ms-channel-id`; `--d365-header-names` narrows it);
//! each pair a request carried is recorded as a sighting.
//!
//! Errors are RFC 7807 problem documents; the documented 300xx code is in `errorCode`.
//! Query-parameter names match case-insensitively (ASP.NET behaviour, an ASSUMPTION).

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

use super::cursors::{Cursor, CursorRejection};
use super::fake::{self, Person};
use super::frontend::{self, Ask, FrontEnd};
use super::ids::guid;
use super::naming;
use super::options::{D365HeaderNames, D365Order};
use super::state::{PlatformState, Shared};
use super::tokens::TokenRejection;
use super::wire::{self, Params};
use super::world::{IndexKind, MessageKind};

/// Build the D365 router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    frontend::router::<D365>(
        shared,
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/{tenant}/discovery/v2.0/keys", get(signing_keys))
            .route("/api/v1.0/consumer/conversations", get(list_conversations))
            .route(
                "/api/v1.0/consumer/conversation/{id}/messages",
                get(list_messages),
            ),
    )
}

/// D365's part of the front-end skeleton: an Entra access token plus the channel and
/// organization headers; no quota headers.
struct D365;

impl FrontEnd for D365 {
    type Refusal = D365Refusal;
    type Admitted = usize;

    fn not_found() -> Response {
        problem(StatusCode::NOT_FOUND, "Resource not found", None)
    }

    fn admit(
        shared: &Shared,
        state: &mut PlatformState,
        ask: &Ask<'_>,
    ) -> Result<usize, D365Refusal> {
        authenticate(shared, state, ask.headers)
    }
}

/// RFC 7807 problem document; `code` is one of the documented 300xx error codes.
pub(crate) fn problem(status: StatusCode, detail: &str, code: Option<u32>) -> Response {
    let mut body = json!({
        "type": format!("https://httpstatuses.io/{}", status.as_u16()),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "traceId": format!("00-{:032x}-{:016x}-00", rand::random::<u128>(), rand::random::<u64>()),
    });
    if let Some(code) = code {
        body["errorCode"] = json!(code);
    }
    let mut response = wire::json(status, body);
    wire::set_header(&mut response, "content-type", "application/problem+json");
    wire::set_header(
        &mut response,
        "x-ms-correlation-id",
        &guid(rand::random::<u128>()),
    );
    response
}

/// Error renderer for the fault layer.
pub(crate) fn fault_response(status: StatusCode, detail: &str) -> Response {
    problem(status, detail, None)
}

fn unauthorized(detail: &str) -> Response {
    let mut response = problem(StatusCode::UNAUTHORIZED, detail, None);
    wire::set_header(
        &mut response,
        "www-authenticate",
        &format!("Bearer error=\"invalid_token\", error_description=\"{detail}\""),
    );
    response
}

/// Entra ID (login.microsoftonline.com) error body.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    wire::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
            "timestamp": chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": guid(rand::random::<u128>()),
            "correlation_id": guid(rand::random::<u128>()),
        }),
    )
}

/// The published key set of a known tenant (Entra answers an unknown one with AADSTS90002).
async fn signing_keys(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if !shared
        .accounts
        .d365
        .iter()
        .any(|a| a.tenant_id.eq_ignore_ascii_case(&tenant))
    {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let mut response = super::entra::TEST_JWKS.into_response();
    wire::set_header(
        &mut response,
        "content-type",
        "application/json; charset=utf-8",
    );
    response
}

async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form = Params::parse_form(&body);
    let candidates: Vec<usize> = shared
        .accounts
        .d365
        .iter()
        .enumerate()
        .filter(|(_, a)| a.tenant_id.eq_ignore_ascii_case(&tenant))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    match form.get("grant_type") {
        None => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        Some("client_credentials") => {}
        Some(other) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let client_id = form.get("client_id").unwrap_or("");
    let Some(account) = candidates.into_iter().find(|i| {
        shared.accounts.d365[*i]
            .client_id
            .eq_ignore_ascii_case(client_id)
    }) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    let credentials = &shared.accounts.d365[account];
    if form.get("client_secret") != Some(credentials.client_secret.as_str()) {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    match form.get("scope") {
        None => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            );
        }
        Some(scope) if scope == credentials.scope => {}
        Some(scope) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            );
        }
    }
    let now = shared.clock.now_us();
    let ttl = shared.token_ttl_us();
    let access_token = shared.lock().tokens.issue(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.",
        account,
        now,
        Some(ttl),
    );
    let seconds = ttl / 1_000_000;
    wire::json(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "expires_in": seconds,
            "ext_expires_in": seconds,
            "access_token": access_token,
        }),
    )
}

/// Why a data request was refused before reaching its handler's logic.
#[derive(Debug, thiserror::Error)]
enum D365Refusal {
    /// 401 with `WWW-Authenticate` (bad/expired token, channel not authorized).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
}

impl IntoResponse for D365Refusal {
    fn into_response(self) -> Response {
        match self {
            D365Refusal::Unauthorized(detail) => unauthorized(detail),
        }
    }
}

/// The two generations of the channel/organization header names: `channel-id` /
/// `organization-id` (2025-09 docs) and `x-ms-channel-id` / `x-ms-organization-id`
/// (2025-04 docs).
const HEADER_PAIRS: [(&str, &str, D365HeaderNames); 2] = [
    ("channel-id", "organization-id", D365HeaderNames::Plain),
    (
        "x-ms-channel-id",
        "x-ms-organization-id",
        D365HeaderNames::XMs,
    ),
];

/// Resolve the account of a data request: valid bearer token, and a channel/organization
/// header pair the tenant accepts (`--d365-header-names`) naming that token's channel.
/// Every pair a request carries is recorded as a sighting (`auth headers: <channel header>`).
fn authenticate(
    shared: &Shared,
    state: &PlatformState,
    headers: &HeaderMap,
) -> Result<usize, D365Refusal> {
    let Some(token) = wire::bearer(headers) else {
        return Err(D365Refusal::Unauthorized(
            "Authorization header with a Bearer token is required",
        ));
    };
    let account = state
        .tokens
        .validate(token, shared.clock.now_us())
        .map_err(|rejection| match rejection {
            TokenRejection::Expired => D365Refusal::Unauthorized("The access token has expired"),
            TokenRejection::Unknown => D365Refusal::Unauthorized("The access token is invalid"),
        })?;
    let credentials = &shared.accounts.d365[account];
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
    };
    let accepted = shared.options.d365_header_names;
    let mut authorized = false;
    for (channel_header, organization_header, generation) in HEADER_PAIRS {
        let (channel, organization) = (header(channel_header), header(organization_header));
        if channel.is_none() && organization.is_none() {
            continue;
        }
        shared
            .counters
            .saw(shared.provider, &format!("auth headers: {channel_header}"));
        let names_this_channel = channel
            .is_some_and(|c| c.eq_ignore_ascii_case(&credentials.channel_id))
            && organization.is_some_and(|o| o.eq_ignore_ascii_case(&credentials.organization_id));
        let understood = accepted == D365HeaderNames::Either || accepted == generation;
        authorized |= names_this_channel && understood;
    }
    if !authorized {
        return Err(D365Refusal::Unauthorized(
            "The channel is not authorized for this organization",
        ));
    }
    Ok(account)
}

#[derive(Serialize)]
struct ListItem {
    conversationid: String,
    timestamp: String,
}

#[derive(Serialize)]
struct ListPage {
    conversations: Vec<ListItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuationtoken: Option<String>,
}

const PHASE_DATA: u8 = 0;
const PHASE_TRAILING_EMPTY: u8 = 1;

async fn list_conversations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<D365, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |state, &account, params| list_conversations_page(&shared, state, account, params),
    )
}

fn list_conversations_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Response {
    let start = match params.get_ci("StartTimeStamp") {
        None => None,
        Some(text) => match wire::parse_instant_us(text) {
            Some(us) => Some(us),
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Invalid StartTimeStamp '{text}': expected an ISO 8601 date-time with offset"
                    ),
                    Some(30006),
                );
            }
        },
    };
    let page_size = match params.get_ci("PageSize") {
        None => 50,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=250).contains(&n) => n,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid conversation page size: PageSize must be between 1 and 250",
                    Some(30007),
                );
            }
        },
    };
    let fingerprint = wire::fingerprint(&[
        &account.to_string(),
        &start.map_or(String::new(), |s| s.to_string()),
        &page_size.to_string(),
    ]);
    let now = shared.clock.now_us();
    let mut cursor = Cursor {
        account,
        query: fingerprint,
        after: (i64::MIN, 0),
        total: None,
        phase: PHASE_DATA,
    };
    let mut resume = false;
    if let Some(token) = params.get_ci("ContinuationToken") {
        let known = super::ids::parse_guid(token)
            .ok_or(CursorRejection::Unknown)
            .and_then(|_| {
                state
                    .cursors
                    .get(token, fingerprint, now, shared.page_token_ttl_us())
            });
        match known {
            Ok(found) => {
                cursor = found;
                resume = true;
            }
            Err(rejection) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Invalid continuation token ({rejection}). Use the same token as before, with the same query parameters."
                    ),
                    Some(30009),
                );
            }
        }
    }
    if cursor.phase == PHASE_TRAILING_EMPTY {
        return wire::json(
            StatusCode::OK,
            ListPage {
                conversations: Vec::new(),
                continuationtoken: None,
            },
        );
    }
    let world = &state.accounts[account];
    let inclusive = shared.options.d365_start_inclusive;
    let matches_start = |created: i64| match start {
        None => true,
        Some(s) if inclusive => created >= s,
        Some(s) => created > s,
    };
    let mut rows: Vec<(i64, u32)> = Vec::with_capacity(page_size + 1);
    let from = if resume {
        Bound::Excluded(cursor.after)
    } else {
        Bound::Unbounded
    };
    match shared.options.d365_order {
        D365Order::Ascending => {
            let from = match (resume, start) {
                (false, Some(s)) if inclusive => Bound::Included((s, 0)),
                (false, Some(s)) => Bound::Excluded((s, u32::MAX)),
                _ => from,
            };
            rows.extend(
                world
                    .walk(IndexKind::Created, from, Bound::Unbounded, false)
                    .take(page_size + 1),
            );
        }
        D365Order::Shuffled => {
            rows.extend(
                world
                    .walk(IndexKind::Scrambled, from, Bound::Unbounded, false)
                    .filter(|(_, seq)| {
                        world
                            .visible(*seq)
                            .is_some_and(|c| matches_start(c.created_us))
                    })
                    .take(page_size + 1),
            );
        }
    }
    let has_more = rows.len() > page_size;
    rows.truncate(page_size);
    let conversations: Vec<ListItem> = rows
        .iter()
        .filter_map(|(_, seq)| {
            world.visible(*seq).map(|c| ListItem {
                conversationid: naming::conversation_id(world, *seq),
                timestamp: wire::dotnet_ticks(c.created_us),
            })
        })
        .collect();
    let next_phase = if has_more {
        Some(PHASE_DATA)
    } else if shared.options.d365_trailing_empty_page {
        Some(PHASE_TRAILING_EMPTY)
    } else {
        None
    };
    let continuationtoken = next_phase.map(|phase| {
        let token = guid((u128::from(state.random_u64()) << 64) | u128::from(state.random_u64()));
        let after = rows.last().copied().unwrap_or(cursor.after);
        state.cursors.insert(
            token.clone(),
            Cursor {
                after,
                phase,
                ..cursor.clone()
            },
            now,
        );
        token
    });
    wire::json(
        StatusCode::OK,
        ListPage {
            conversations,
            continuationtoken,
        },
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Participant {
    id: String,
    name: String,
    role: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Activity {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    message_id: String,
    timestamp: String,
    text: &'static str,
    attachments: Vec<serde_json::Value>,
    from: Participant,
    channel_data: serde_json::Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessagesPage {
    messages: Vec<Activity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
}

async fn list_messages(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<D365, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |state, &account, params| list_messages_page(&shared, state, account, &id, params),
    )
}

fn list_messages_page(
    shared: &Shared,
    state: &PlatformState,
    account: usize,
    id: &str,
    params: &Params,
) -> Response {
    let world = &state.accounts[account];
    let conversation_missing = || {
        problem(
            StatusCode::NOT_FOUND,
            &format!("Conversation {id} does not exist or is closed"),
            Some(30013),
        )
    };
    let Some(seq) = naming::parse_conversation_id(world, id) else {
        return conversation_missing();
    };
    let Some(conv) = world.visible_live(seq).filter(|c| c.is_open()) else {
        return conversation_missing();
    };
    let start = match params.get_ci("StartTimeStamp") {
        None => i64::MIN,
        Some(text) => match wire::parse_instant_us(text) {
            Some(us) => us,
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid StartTimeStamp '{text}'"),
                    Some(30006),
                );
            }
        },
    };
    let page_size = match params.get_ci("PageSize") {
        None => 50,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Invalid message page size: PageSize must be between 1 and 100",
                    Some(30008),
                );
            }
        },
    };
    let after = match params.get_ci("ContinuationToken") {
        None => i64::MIN,
        Some(text) => match wire::parse_instant_us(text) {
            Some(us) => us,
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid continuation token '{text}'"),
                    Some(30009),
                );
            }
        },
    };
    let horizon = shared.clock.now_us() - shared.faults().delay_us();
    let mut indexes = world.messages_of(conv);
    indexes.reverse();
    let (selected, has_more) = frontend::cut_page(
        indexes.into_iter().filter(|i| {
            let at = world.msgs[*i as usize].at_us;
            at > start && at > after && at <= horizon
        }),
        page_size,
    );
    let person = Person::of(world.key, conv.contact, conv.title_rev);
    let messages: Vec<Activity> = selected
        .iter()
        .map(|i| {
            let msg = &world.msgs[*i as usize];
            let (role, from_id, name) = match msg.kind() {
                MessageKind::Inbound => (
                    "user",
                    naming::contact_id(world, conv.contact),
                    person.full_name(),
                ),
                MessageKind::OutboundAutomated => (
                    "bot",
                    "bot-virtual-agent".to_owned(),
                    "Virtual Agent".to_owned(),
                ),
                MessageKind::Outbound | MessageKind::InternalNote => (
                    "agent",
                    naming::teammate_id(world, conv.assignee.max(1)).unwrap_or_default(),
                    "Agent".to_owned(),
                ),
            };
            Activity {
                kind: "message",
                id: naming::message_id(world, *i),
                message_id: wire::epoch_ms(msg.at_us).to_string(),
                timestamp: wire::dotnet_ticks(msg.at_us),
                text: fake::message_text(world.key, *i, false),
                attachments: Vec::new(),
                from: Participant {
                    id: from_id,
                    name,
                    role,
                },
                channel_data: json!({}),
            }
        })
        .collect();
    let continuation_token = has_more
        .then(|| {
            selected
                .last()
                .map(|i| wire::dotnet_ticks(world.msgs[*i as usize].at_us))
        })
        .flatten();
    wire::json(
        StatusCode::OK,
        MessagesPage {
            messages,
            continuation_token,
        },
    )
}
