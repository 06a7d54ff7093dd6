//! HighLevel (LeadConnector) API v2, as in `shared/providers/highlevel.md` and the
//! official OpenAPI documents beside it.
//!
//! * `POST /oauth/token` — `grant_type=refresh_token` returns a new access token **and a
//!   new refresh token**; the old refresh token is spent (single use). Each location also
//!   has a static Private Integration Token.
//! * `GET /conversations/search` — `Version` header required: the spec's only value
//!   `2021-04-15`, or `2021-07-28`, which clients in the field send successfully (each
//!   value seen is recorded as a sighting `Version: <value>`); `locationId`
//!   required, keyset pagination on the sort value through `startAfterDate` (strictly
//!   after by default, so rows tied at a page boundary are skipped as the real API
//!   reportedly does; `--highlevel-start-after inclusive` switches), `limit` default 20,
//!   silently clamped at 100. Timestamps are epoch-millisecond numbers. Each result
//!   carries `sort: [<lastMessageDate>]`, its keyset position
//!   (`--highlevel-no-sort-array` and `--highlevel-no-last-message-date` drop one of the
//!   two, to show which a client pages by).
//!
//! * Agency (Company) credentials: the agency's refresh token (`user_type=Company`) lists
//!   the locations where the app is installed (`GET /oauth/installedLocations`,
//!   `companyId` + `appId`, paged by `skip`/`limit`, at most 100) and mints a location's
//!   access token (`POST /oauth/locationToken`, `companyId` + `locationId`). A location
//!   the app was uninstalled from (`Mutation::AppUninstall`) is left out of the listing,
//!   gets no token, and its access tokens are refused until it is installed again.
//!
//! Every authenticated search response carries the five `X-RateLimit-*` headers of the
//! per-location burst (100 / 10 s) and daily (200,000) quotas; exhaustion is a 429.
//! Errors use the shapes of `common-schemas.json` (400 / 401 / 422 with a message array).

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use super::accounts::HighLevelAgency;
use super::fake::{self, Person};
use super::frontend::{self, Ask, FrontEnd};
use super::ids::guid;
use super::naming;
use super::options::StartAfter;
use super::quota::{Quota, QuotaStatus};
use super::state::{PlatformState, Shared};
use super::tokens::{Spend, TokenRejection};
use super::wire::{self, Params};
use super::world::{AccountWorld, Conv, IndexKind, MessageDirection, MessageKind, NO_TS};

/// The `Version` values the search endpoint accepts: the spec's enum names only the first;
/// the second is what well-kept integrations send, successfully.
const API_VERSIONS: [&str; 2] = ["2021-04-15", "2021-07-28"];

/// Longest `Version` value recorded as a sighting (the header comes from a client).
const MAX_SIGHTED_VERSION: usize = 40;

/// Build the HighLevel router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    frontend::router::<HighLevel>(
        shared,
        Router::new()
            .route("/oauth/token", post(token))
            .route("/oauth/locationToken", post(location_token))
            .route("/oauth/installedLocations", get(installed_locations))
            .route("/conversations/search", get(search)),
    )
}

/// HighLevel's part of the front-end skeleton: OAuth or private-integration tokens bound
/// to a location, a `Version` header, a burst and daily quota echoed on every answer.
struct HighLevel;

impl FrontEnd for HighLevel {
    type Refusal = Refusal;
    type Admitted = (usize, QuotaStatus);

    fn not_found() -> Response {
        wire::json(
            StatusCode::NOT_FOUND,
            json!({ "statusCode": 404, "message": "Cannot GET this route", "error": "Not Found" }),
        )
    }

    fn admit(
        shared: &Shared,
        state: &mut PlatformState,
        ask: &Ask<'_>,
    ) -> Result<Self::Admitted, Refusal> {
        admit(shared, state, ask.headers, ask.params)
    }

    fn decorate(response: &mut Response, (_, quota): &Self::Admitted) {
        rate_headers(response, quota);
    }
}

/// `BadRequestDTO`-style body (`statusCode`, `message`) for any status.
fn status_error(status: StatusCode, message: &str) -> Response {
    wire::json(
        status,
        json!({ "statusCode": status.as_u16(), "message": message }),
    )
}

/// `UnauthorizedDTO`.
fn unauthorized(message: &str) -> Response {
    wire::json(
        StatusCode::UNAUTHORIZED,
        json!({ "statusCode": 401, "message": message, "error": "Unauthorized" }),
    )
}

/// `UnprocessableDTO` (note: `message` is an array here).
fn unprocessable(messages: &[String]) -> Response {
    wire::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "statusCode": 422, "message": messages, "error": "Unprocessable Entity" }),
    )
}

/// Error renderer for the fault layer.
pub(crate) fn fault_response(status: StatusCode, message: &str) -> Response {
    status_error(status, message)
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form = Params::parse_form(&body);
    let mut problems = Vec::new();
    for field in ["client_id", "client_secret", "grant_type"] {
        if form.get(field).is_none_or(str::is_empty) {
            problems.push(format!("{field} should not be empty"));
        }
    }
    let grant_type = form.get("grant_type").unwrap_or("");
    if !grant_type.is_empty()
        && !["authorization_code", "refresh_token", "client_credentials"].contains(&grant_type)
    {
        problems.push(
            "grant_type must be one of the following values: authorization_code, refresh_token, client_credentials"
                .to_owned(),
        );
    }
    let bad_user_type = form
        .get("user_type")
        .is_some_and(|t| !["Company", "Location"].contains(&t));
    if bad_user_type {
        problems
            .push("user_type must be one of the following values: Company, Location".to_owned());
    }
    if !problems.is_empty() {
        return unprocessable(&problems);
    }
    let client_ok = shared.accounts.highlevel.first().is_some_and(|a| {
        form.get("client_id") == Some(a.client_id.as_str())
            && form.get("client_secret") == Some(a.client_secret.as_str())
    });
    if !client_ok {
        return unauthorized("Invalid client: client credentials are invalid");
    }
    if grant_type != "refresh_token" {
        return unauthorized("Invalid grant: authorization code is invalid");
    }
    let wants_company = form.get("user_type") == Some("Company");
    let Some(refresh_token) = form.get("refresh_token").filter(|t| !t.is_empty()) else {
        return unprocessable(&["refresh_token should not be empty".to_owned()]);
    };
    let now = shared.clock.now_us();
    let ttl = shared.token_ttl_us();
    let mut state = shared.lock();
    // The user type must match the installation the token belongs to; a mismatch spends
    // nothing.
    if wants_company
        != state
            .tokens
            .refresh_owner(refresh_token)
            .map_or(wants_company, |owner| owner == AGENCY)
    {
        let message = if wants_company {
            "This refresh token belongs to a Location; user_type must be Location"
        } else {
            "This refresh token belongs to a Company; user_type must be Company"
        };
        return status_error(StatusCode::BAD_REQUEST, message);
    }
    let account = match state.tokens.spend_refresh(refresh_token) {
        Spend::Spent(account) => account,
        Spend::AlreadySpent(account) => {
            shared
                .counters
                .reused_refresh_token(shared.provider, &scope_name(&shared, account));
            return unauthorized("Invalid grant: refresh token is invalid");
        }
        Spend::Unknown => return unauthorized("Invalid grant: refresh token is invalid"),
    };
    let access_token = state.tokens.issue("hl_at_", account, now, Some(ttl));
    let new_refresh = state.tokens.random_string("hl_rt_");
    state.tokens.add_refresh(new_refresh.clone(), account);
    // The installation the token belongs to: a location's, or the agency's.
    let installation = match shared.accounts.highlevel.get(account) {
        Some(location) => json!({
            "scope": "conversations.readonly conversations/message.readonly",
            "userType": "Location",
            "locationId": location.location_id,
            "companyId": location.company_id,
            "userId": location.user_id,
            "isBulkInstallation": false,
        }),
        None => json!({
            "scope": "oauth.readonly oauth.write conversations.readonly",
            "userType": "Company",
            "companyId": shared.accounts.highlevel_agency.as_ref().map(|a| &a.company_id),
            "isBulkInstallation": true,
        }),
    };
    let mut answer = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl / 1_000_000,
        "refresh_token": new_refresh,
    });
    if let (Some(answer), serde_json::Value::Object(installation)) =
        (answer.as_object_mut(), installation)
    {
        answer.extend(installation);
    }
    wire::json(StatusCode::OK, answer)
}

/// The account index of the agency's (Company) tokens: no location's.
const AGENCY: usize = usize::MAX;

/// The `Version` the OAuth endpoints' spec allows.
const OAUTH_API_VERSION: &str = "2021-07-28";

/// Most locations one listing page returns.
const MAX_INSTALLED_PAGE: usize = 100;

/// What a counter names for `account`: its location id, or `agency`.
fn scope_name(shared: &Shared, account: usize) -> String {
    shared
        .accounts
        .highlevel
        .get(account)
        .map_or_else(|| "agency".to_owned(), |l| l.location_id.clone())
}

/// Admits a request to an agency endpoint: an agency access token, the `Version` of the
/// OAuth endpoints, the `required` parameters, and the agency's own `companyId`. Returns
/// the agency, or the answer to send.
fn admit_agency<'s>(
    shared: &'s Shared,
    state: &PlatformState,
    headers: &HeaderMap,
    params: &Params,
    required: [&str; 2],
) -> Result<&'s HighLevelAgency, Box<Response>> {
    let refuse = |response: Response| Err(Box::new(response));
    let Some(token) = wire::bearer(headers) else {
        return refuse(unauthorized("Invalid token: access token is invalid"));
    };
    match state.tokens.validate(token, shared.clock.now_us()) {
        Ok(AGENCY) => {}
        Ok(_) => {
            return refuse(unauthorized(
                "This route is not yet supported by the IAM Service: it needs an agency (Company) token",
            ));
        }
        Err(TokenRejection::Expired) => {
            return refuse(unauthorized("Invalid JWT: access token has expired"));
        }
        Err(TokenRejection::Unknown) => {
            return refuse(unauthorized("Invalid token: access token is invalid"));
        }
    }
    match headers.get("version").map(|v| v.as_bytes()) {
        Some(version) if version == OAUTH_API_VERSION.as_bytes() => {}
        Some(_) => {
            return refuse(status_error(
                StatusCode::BAD_REQUEST,
                "Version header is invalid",
            ));
        }
        None => {
            return refuse(status_error(
                StatusCode::BAD_REQUEST,
                "Version header was not found",
            ));
        }
    }
    let problems: Vec<String> = required
        .iter()
        .filter(|field| params.get(field).is_none_or(str::is_empty))
        .map(|field| format!("{field} should not be empty"))
        .collect();
    if !problems.is_empty() {
        return refuse(unprocessable(&problems));
    }
    let Some(agency) = shared.accounts.highlevel_agency.as_ref() else {
        return refuse(unauthorized("Invalid token: access token is invalid"));
    };
    if params.get("companyId") != Some(agency.company_id.as_str()) {
        return refuse(status_error(
            StatusCode::FORBIDDEN,
            "The token does not have access to this company",
        ));
    }
    Ok(agency)
}

/// `POST /oauth/locationToken`: a location's access token, minted with the agency's.
async fn location_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Params::parse_form(&body);
    let now = shared.clock.now_us();
    let ttl = shared.token_ttl_us();
    let mut state = shared.lock();
    let agency = match admit_agency(
        &shared,
        &state,
        &headers,
        &form,
        ["companyId", "locationId"],
    ) {
        Ok(agency) => agency,
        Err(refused) => return *refused,
    };
    let wanted = form.get("locationId").unwrap_or_default();
    let Some(account) = shared
        .accounts
        .highlevel
        .iter()
        .position(|l| l.location_id == wanted)
    else {
        return status_error(StatusCode::BAD_REQUEST, "Location not found");
    };
    if state.uninstalled.contains(&account) {
        return status_error(
            StatusCode::BAD_REQUEST,
            "The app is not installed in this location",
        );
    }
    let access_token = state.tokens.issue("hl_lt_", account, now, Some(ttl));
    let location = &shared.accounts.highlevel[account];
    wire::json(
        StatusCode::OK,
        json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl / 1_000_000,
            "scope": "conversations.readonly conversations/message.readonly",
            "locationId": location.location_id,
            "userId": location.user_id,
            "appId": agency.app_id,
        }),
    )
}

/// `GET /oauth/installedLocations`: the agency's locations, with whether the app is
/// installed in each (`isInstalled=true`: the installed ones only).
async fn installed_locations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let state = shared.lock();
    let agency = match admit_agency(&shared, &state, &headers, &params, ["companyId", "appId"]) {
        Ok(agency) => agency,
        Err(refused) => return *refused,
    };
    let number = |name: &str, default: usize| match params.get(name) {
        None => Some(default),
        Some(text) => text.parse::<usize>().ok(),
    };
    let (Some(skip), Some(limit)) = (number("skip", 0), number("limit", 20)) else {
        return unprocessable(&["skip and limit must be numbers".to_owned()]);
    };
    let installed_only = params.get("isInstalled") == Some("true");
    let same_app = params.get("appId") == Some(agency.app_id.as_str());
    let rows: Vec<_> = shared
        .accounts
        .highlevel
        .iter()
        .enumerate()
        .map(|(account, location)| (location, same_app && !state.uninstalled.contains(&account)))
        .filter(|(_, installed)| *installed || !installed_only)
        .collect();
    let page: Vec<_> = rows
        .iter()
        .skip(skip)
        .take(limit.clamp(1, MAX_INSTALLED_PAGE))
        .map(|(location, installed)| {
            json!({
                "_id": location.location_id,
                "name": format!("Location {}", location.location_id),
                "address": "47 W 13th St, New York, NY 10011, USA",
                "isInstalled": installed,
            })
        })
        .collect();
    wire::json(
        StatusCode::OK,
        json!({
            "locations": page,
            "count": rows.len(),
            "installToFutureLocations": false,
        }),
    )
}

/// Register the initial refresh tokens and the private integration tokens.
pub(crate) fn register_credentials(shared: &Shared) {
    let mut state = shared.lock();
    if let Some(agency) = &shared.accounts.highlevel_agency {
        state
            .tokens
            .add_refresh(agency.refresh_token.clone(), AGENCY);
    }
    for (account, location) in shared.accounts.highlevel.iter().enumerate() {
        state
            .tokens
            .add_refresh(location.refresh_token.clone(), account);
        state
            .tokens
            .register_static(&location.private_integration_token, account);
    }
}

fn rate_headers(response: &mut Response, quota: &QuotaStatus) {
    wire::set_header(response, "x-ratelimit-max", &quota.limit.to_string());
    wire::set_header(
        response,
        "x-ratelimit-remaining",
        &quota.remaining.to_string(),
    );
    wire::set_header(
        response,
        "x-ratelimit-interval-milliseconds",
        &quota.window_ms.to_string(),
    );
    if let (Some(limit), Some(remaining)) = (quota.daily_limit, quota.daily_remaining) {
        wire::set_header(response, "x-ratelimit-limit-daily", &limit.to_string());
        wire::set_header(
            response,
            "x-ratelimit-daily-remaining",
            &remaining.to_string(),
        );
    }
}

/// Why a search request was refused before its parameters were looked at.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// 401 `UnauthorizedDTO`.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 400 about the `Version` header.
    #[error("bad request: {0}")]
    BadVersion(&'static str),
    /// 422: `locationId` missing.
    #[error("locationId missing")]
    MissingLocation,
    /// 403: the token belongs to another location.
    #[error("token not valid for this location")]
    WrongLocation,
    /// 429 with the quota headers.
    #[error("rate limited")]
    RateLimited(QuotaStatus),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(message) => unauthorized(message),
            Refusal::BadVersion(message) => status_error(StatusCode::BAD_REQUEST, message),
            Refusal::MissingLocation => {
                unprocessable(&["locationId should not be empty".to_owned()])
            }
            Refusal::WrongLocation => wire::json(
                StatusCode::FORBIDDEN,
                json!({
                    "statusCode": 403,
                    "message": "The token does not have access to this location.",
                    "error": "Forbidden",
                }),
            ),
            Refusal::RateLimited(quota) => {
                let mut response = status_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests, please try again later.",
                );
                rate_headers(&mut response, &quota);
                response
            }
        }
    }
}

/// Authenticate the bearer token, check it may read `locationId`, count the request
/// against that location's quota.
fn admit(
    shared: &Shared,
    state: &mut PlatformState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(usize, QuotaStatus), Refusal> {
    let Some(token) = wire::bearer(headers) else {
        return Err(Refusal::Unauthorized(
            "Invalid token: access token is invalid",
        ));
    };
    let account = state
        .tokens
        .validate(token, shared.clock.now_us())
        .map_err(|rejection| match rejection {
            TokenRejection::Expired => {
                Refusal::Unauthorized("Invalid JWT: access token has expired")
            }
            TokenRejection::Unknown => {
                Refusal::Unauthorized("Invalid token: access token is invalid")
            }
        })?;
    let Some(version) = headers.get("version") else {
        return Err(Refusal::BadVersion("Version header was not found"));
    };
    let version = String::from_utf8_lossy(version.as_bytes());
    let sighted: String = version.chars().take(MAX_SIGHTED_VERSION).collect();
    shared
        .counters
        .saw(shared.provider, &format!("Version: {sighted}"));
    if !API_VERSIONS.contains(&version.as_ref()) {
        return Err(Refusal::BadVersion("Version header is invalid"));
    }
    let Some(location) = params.get("locationId").filter(|l| !l.is_empty()) else {
        return Err(Refusal::MissingLocation);
    };
    if state.uninstalled.contains(&account) {
        return Err(Refusal::Unauthorized(
            "Invalid token: the app is not installed in this location",
        ));
    }
    // An agency token reads no location's conversations.
    if shared
        .accounts
        .highlevel
        .get(account)
        .is_none_or(|l| l.location_id != location)
    {
        return Err(Refusal::WrongLocation);
    }
    let options = &shared.options;
    let quota = state.quotas.entry(account).or_insert_with(|| {
        Quota::new(
            options.highlevel_burst_limit,
            i64::try_from(options.highlevel_burst_window.as_micros()).unwrap_or(10_000_000),
            Some(options.highlevel_daily_limit),
        )
    });
    let status = quota.hit(shared.clock.now_us());
    if !status.allowed {
        shared.counters.refused_by_quota(shared.provider, location);
        return Err(Refusal::RateLimited(status));
    }
    Ok((account, status))
}

/// `ConversationSchema` plus the fields the live API returns beyond the spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Conversation {
    id: String,
    contact_id: String,
    location_id: String,
    last_message_body: &'static str,
    last_message_type: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    unread_count: u32,
    full_name: String,
    contact_name: String,
    email: String,
    phone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_message_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_manual_message_date: Option<i64>,
    date_added: i64,
    date_updated: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_message_direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_outbound_message_action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assigned_to: Option<String>,
    starred: bool,
    inbox: bool,
    deleted: bool,
    followers: Vec<String>,
    tags: Vec<String>,
    /// The row's sort values, `[lastMessageDate]` (the index's key; a message-less
    /// conversation gets the index's "missing" marker, a huge negative number).
    #[serde(skip_serializing_if = "Option::is_none")]
    sort: Option<Vec<i64>>,
}

fn last_message_type(channel: &str) -> &'static str {
    match channel {
        "TYPE_EMAIL" => "TYPE_EMAIL",
        "TYPE_FB_MESSENGER" => "TYPE_FACEBOOK",
        "TYPE_REVIEW" => "TYPE_REVIEW",
        "TYPE_PHONE" | "TYPE_GROUP_SMS" => "TYPE_SMS",
        _ => "TYPE_LIVE_CHAT",
    }
}

/// The `messageType` a message webhook names for a conversation `type`.
pub(crate) fn message_type_name(channel: &str) -> &'static str {
    match channel {
        "TYPE_EMAIL" => "Email",
        "TYPE_FB_MESSENGER" => "FB",
        "TYPE_REVIEW" => "GMB",
        "TYPE_PHONE" | "TYPE_GROUP_SMS" => "SMS",
        _ => "Live_Chat",
    }
}

fn opt_ms(us: i64) -> Option<i64> {
    (us != NO_TS).then(|| wire::epoch_ms(us))
}

fn render(
    shared: &Shared,
    account: usize,
    world: &AccountWorld,
    seq: u32,
    conv: &Conv,
    sort_key: i64,
) -> Conversation {
    let person = Person::of(world.key, conv.contact, conv.title_rev);
    let kind = fake::channel_name(world.provider, conv.channel);
    let last = conv.last_msg;
    let body = if last == super::world::NO_MSG {
        ""
    } else {
        fake::message_text(world.key, last, false)
    };
    let outbound_action = if conv.last_outbound_us == NO_TS {
        None
    } else if conv.last_kind() == Some(MessageKind::OutboundAutomated) {
        Some("automated")
    } else {
        Some("manual")
    };
    Conversation {
        id: naming::conversation_id(world, seq),
        contact_id: naming::contact_id(world, conv.contact),
        location_id: shared.accounts.highlevel[account].location_id.clone(),
        last_message_body: body,
        last_message_type: last_message_type(kind),
        kind,
        unread_count: u32::from(conv.unread),
        full_name: person.full_name(),
        contact_name: person.full_name(),
        email: fake::email(&person, conv.contact),
        phone: fake::phone_e164(world.key, conv.contact),
        last_message_date: opt_ms(conv.last_activity_us)
            .filter(|_| !shared.options.highlevel_no_last_message_date),
        last_manual_message_date: opt_ms(conv.last_manual_us),
        date_added: wire::epoch_ms(conv.created_us),
        date_updated: wire::epoch_ms(conv.changed_us),
        last_message_direction: conv.last_kind().and_then(|k| match k.direction() {
            MessageDirection::Inbound => Some("inbound"),
            MessageDirection::Outbound => Some("outbound"),
            MessageDirection::Internal => None,
        }),
        last_outbound_message_action: outbound_action,
        assigned_to: naming::teammate_id(world, conv.assignee),
        starred: conv.starred,
        inbox: true,
        deleted: false,
        followers: Vec::new(),
        tags: Vec::new(),
        sort: (!shared.options.highlevel_no_sort_array).then(|| vec![wire::epoch_ms(sort_key)]),
    }
}

/// Filters of the search endpoint that the simulator honours.
struct Filters {
    status: Option<String>,
    assigned_to: Option<HashSet<String>>,
    contact_id: Option<String>,
    id: Option<String>,
    direction: Option<String>,
    message_type: Option<String>,
    query: Option<String>,
    start_date: Option<i64>,
    end_date: Option<i64>,
}

impl Filters {
    fn is_empty(&self) -> bool {
        self.status
            .as_deref()
            .is_none_or(|s| s == "all" || s == "recents")
            && self.assigned_to.is_none()
            && self.contact_id.is_none()
            && self.id.is_none()
            && self.direction.is_none()
            && self.message_type.is_none()
            && self.query.is_none()
            && self.start_date.is_none()
            && self.end_date.is_none()
    }

    fn keep(&self, world: &AccountWorld, seq: u32, conv: &Conv) -> bool {
        let status_ok = match self.status.as_deref() {
            Some("read") => conv.unread == 0,
            Some("unread") => conv.unread > 0,
            Some("starred") => conv.starred,
            _ => true,
        };
        let assignee_ok = self
            .assigned_to
            .as_ref()
            .is_none_or(|wanted| match naming::teammate_id(world, conv.assignee) {
                Some(id) => wanted.contains(&id),
                None => wanted.contains("unassigned"),
            });
        let contact_ok = self
            .contact_id
            .as_ref()
            .is_none_or(|c| *c == naming::contact_id(world, conv.contact));
        let id_ok = self
            .id
            .as_ref()
            .is_none_or(|i| *i == naming::conversation_id(world, seq));
        let direction_ok = self.direction.as_ref().is_none_or(|d| {
            conv.last_kind().map(MessageKind::direction)
                == Some(if d == "inbound" {
                    MessageDirection::Inbound
                } else {
                    MessageDirection::Outbound
                })
        });
        let type_ok = self.message_type.as_ref().is_none_or(|t| {
            last_message_type(fake::channel_name(world.provider, conv.channel)) == t
        });
        let added = wire::epoch_ms(conv.created_us);
        let dates_ok =
            self.start_date.is_none_or(|s| added >= s) && self.end_date.is_none_or(|e| added <= e);
        let query_ok = self.query.as_ref().is_none_or(|q| {
            let person = Person::of(world.key, conv.contact, conv.title_rev);
            let haystack = format!(
                "{} {} {}",
                person.full_name(),
                fake::email(&person, conv.contact),
                fake::phone_e164(world.key, conv.contact)
            )
            .to_lowercase();
            haystack.contains(q.as_str())
        });
        status_ok
            && assignee_ok
            && contact_ok
            && id_ok
            && direction_ok
            && type_ok
            && dates_ok
            && query_ok
    }
}

fn enum_check(params: &Params, name: &str, allowed: &[&str], problems: &mut Vec<String>) {
    if params.get(name).is_some_and(|v| !allowed.contains(&v)) {
        problems.push(format!(
            "{name} must be one of the following values: {}",
            allowed.join(", ")
        ));
    }
}

fn number(params: &Params, name: &str, problems: &mut Vec<String>) -> Option<f64> {
    let text = params.get(name)?;
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => {
            problems.push(format!(
                "{name} must be a number conforming to the specified constraints"
            ));
            None
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SearchPage {
    conversations: Vec<Conversation>,
    total: u64,
    trace_id: String,
}

async fn search(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    frontend::answer::<HighLevel, _>(
        &shared,
        &headers,
        query.as_deref(),
        None,
        |state, &(account, _), params| search_page(&shared, state, account, params),
    )
}

fn search_page(
    shared: &Shared,
    state: &mut PlatformState,
    account: usize,
    params: &Params,
) -> Response {
    let mut problems = Vec::new();
    enum_check(params, "sort", &["asc", "desc"], &mut problems);
    enum_check(
        params,
        "sortBy",
        &[
            "last_manual_message_date",
            "last_message_date",
            "score_profile",
            "overdue_at",
            "due_at",
        ],
        &mut problems,
    );
    enum_check(
        params,
        "status",
        &["all", "read", "unread", "starred", "recents"],
        &mut problems,
    );
    enum_check(
        params,
        "lastMessageDirection",
        &["inbound", "outbound"],
        &mut problems,
    );
    enum_check(
        params,
        "lastMessageAction",
        &["automated", "manual"],
        &mut problems,
    );
    let limit = number(params, "limit", &mut problems);
    let start_date = number(params, "startDate", &mut problems);
    let end_date = number(params, "endDate", &mut problems);
    let mut start_after = Vec::new();
    for value in params.all("startAfterDate") {
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() => start_after.push(v as i64),
            _ => problems.push("startAfterDate must be a number or an array of numbers".to_owned()),
        }
    }
    if limit.is_some_and(|l| l < 1.0) {
        problems.push("limit must not be less than 1".to_owned());
    }
    if !problems.is_empty() {
        return unprocessable(&problems);
    }
    let limit = limit
        .map_or(20, |l| l as usize)
        .min(shared.options.highlevel_max_limit.max(1) as usize);
    let descending = params.get("sort") != Some("asc");
    // score_profile / overdue_at / due_at are accepted but ordered like
    // last_message_date: the simulator models no scores or due dates.
    let index = match params.get("sortBy") {
        Some("last_manual_message_date") => IndexKind::Manual,
        _ => IndexKind::Activity,
    };
    let filters = Filters {
        status: params.get("status").map(str::to_owned),
        assigned_to: params
            .get("assignedTo")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect()),
        contact_id: params.get("contactId").map(str::to_owned),
        id: params.get("id").map(str::to_owned),
        direction: params.get("lastMessageDirection").map(str::to_owned),
        message_type: params.get("lastMessageType").map(str::to_owned),
        query: params
            .get("query")
            .filter(|q| !q.trim().is_empty())
            .map(|q| q.trim().to_lowercase()),
        start_date: start_date.map(|v| v as i64),
        end_date: end_date.map(|v| v as i64),
    };
    let world = &state.accounts[account];
    // The cursor is the sort value (epoch ms) of the last row; compare at ms precision.
    let bounds = match start_after.first() {
        None => (Bound::Unbounded, Bound::Unbounded),
        Some(ms) => {
            let inclusive = shared.options.highlevel_start_after == StartAfter::Inclusive;
            let lo_us = ms.saturating_mul(1000);
            let hi_us = ms.saturating_add(1).saturating_mul(1000);
            match (descending, inclusive) {
                (true, false) => (Bound::Unbounded, Bound::Excluded((lo_us, 0))),
                (true, true) => (Bound::Unbounded, Bound::Excluded((hi_us, 0))),
                (false, false) => (Bound::Included((hi_us, 0)), Bound::Unbounded),
                (false, true) => (Bound::Included((lo_us, 0)), Bound::Unbounded),
            }
        }
    };
    let rows: Vec<(i64, u32)> = world
        .walk(index, bounds.0, bounds.1, descending)
        .filter(|(_, seq)| {
            world
                .visible(*seq)
                .is_some_and(|c| filters.keep(world, *seq, c))
        })
        .take(limit)
        .collect();
    let total = if filters.is_empty() {
        world.index_len(index) as u64
    } else {
        world
            .walk(index, Bound::Unbounded, Bound::Unbounded, false)
            .filter(|(_, seq)| {
                world
                    .visible(*seq)
                    .is_some_and(|c| filters.keep(world, *seq, c))
            })
            .count() as u64
    };
    let conversations = rows
        .iter()
        .filter_map(|(key, seq)| {
            world
                .visible(*seq)
                .map(|c| render(shared, account, world, *seq, c, *key))
        })
        .collect();
    let trace_id = guid((u128::from(state.random_u64()) << 64) | u128::from(state.random_u64()));
    wire::json(
        StatusCode::OK,
        SearchPage {
            conversations,
            total,
            trace_id,
        },
    )
}
