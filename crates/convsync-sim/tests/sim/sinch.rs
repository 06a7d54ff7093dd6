//! The Sinch simulator answers like the documented Conversation API v1.

use std::collections::HashSet;
use std::time::Duration;

use convsync_sim::{
    ConversationState, Faults, MessageKind, Platform, RateLimitFault, RequestAuth, RetryAfter,
    SimHandle,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{http, read, sinch_token, start};

fn project_url(sim: &SimHandle, path: &str) -> reqwest::Url {
    let project = &sim.accounts().sinch[0].project_id;
    sim.sinch_base_url()
        .join(&format!("v1/projects/{project}/{path}"))
        .expect("url")
}

async fn list(sim: &SimHandle, token: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    read(
        http()
            .get(project_url(sim, "conversations"))
            .bearer_auth(token)
            .query(query)
            .send()
            .await
            .expect("request"),
    )
    .await
}

fn assert_runtime_error(body: &Value, code: u16, status: &str) {
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["message"].is_string() && body["details"].is_array(),
        "{body}"
    );
}

/// Walk with `page_token` until `next_page_token` is empty.
async fn walk(sim: &SimHandle, token: &str, only_active: Option<&str>) -> Vec<Value> {
    let app = sim.accounts().sinch[0].app_id.clone();
    let mut rows = Vec::new();
    let mut page_token = String::new();
    for _ in 0..1000 {
        let mut query = vec![("app_id", app.as_str()), ("page_size", "20")];
        if let Some(v) = only_active {
            query.push(("only_active", v));
        }
        if !page_token.is_empty() {
            query.push(("page_token", page_token.as_str()));
        }
        let (status, body) = list(sim, token, &query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        rows.extend(
            body["conversations"]
                .as_array()
                .expect("array")
                .iter()
                .cloned(),
        );
        page_token = body["next_page_token"].as_str().unwrap_or("").to_owned();
        if page_token.is_empty() {
            return rows;
        }
    }
    panic!("walk did not terminate");
}

/// The token endpoint needs HTTP Basic key id/secret and `grant_type=client_credentials`,
/// and answers `{access_token, token_type: "bearer", expires_in}`.
#[tokio::test]
async fn token_endpoint_validates() {
    let sim = start(|_| {}).await;
    let account = sim.accounts().sinch[0].clone();
    let (status, body) = read(
        http()
            .post(sim.sinch_token_url())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    let (status, body) = read(
        http()
            .post(sim.sinch_token_url())
            .basic_auth(&account.key_id, Some(&account.key_secret))
            .form(&[("grant_type", "password")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "unsupported_grant_type");
    let (status, body) = read(
        http()
            .post(sim.sinch_token_url())
            .basic_auth(&account.key_id, Some(&account.key_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].is_u64() && body["access_token"].is_string());
}

/// A bad bearer token is a 401 UNAUTHENTICATED with `WWW-Authenticate`.
#[tokio::test]
async fn bad_token_is_401_with_www_authenticate() {
    let sim = start(|_| {}).await;
    let response = http()
        .get(project_url(&sim, "conversations"))
        .bearer_auth("nope")
        .query(&[("app_id", sim.accounts().sinch[0].app_id.as_str())])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let (_, body) = read(response).await;
    assert_runtime_error(&body, 401, "UNAUTHENTICATED");
}

/// One of `app_id`/`contact_id` is required; `page_size` is at most 20; an unknown
/// project is a 404; a bad `page_token` is a 400 INVALID_ARGUMENT.
#[tokio::test]
async fn list_parameters_are_validated() {
    let sim = start(|_| {}).await;
    let token = sinch_token(&sim, 0).await;
    let app = sim.accounts().sinch[0].app_id.clone();
    let (status, body) = list(&sim, &token, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_runtime_error(&body, 400, "INVALID_ARGUMENT");
    let (status, body) = list(&sim, &token, &[("app_id", &app), ("page_size", "21")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_runtime_error(&body, 400, "INVALID_ARGUMENT");
    let (status, body) = list(
        &sim,
        &token,
        &[("app_id", &app), ("page_token", "Q2hvd01V")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_runtime_error(&body, 400, "INVALID_ARGUMENT");
    let (status, body) = read(
        http()
            .get(
                sim.sinch_base_url()
                    .join("v1/projects/unknown/conversations")
                    .expect("url"),
            )
            .bearer_auth(&token)
            .query(&[("app_id", app.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_runtime_error(&body, 404, "NOT_FOUND");
}

/// Page tokens expire (400 INVALID_ARGUMENT once older than the TTL).
#[tokio::test]
async fn page_tokens_expire() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Sinch,
        Faults {
            page_token_ttl_ms: Some(10_000),
            ..Faults::default()
        },
    );
    let token = sinch_token(&sim, 0).await;
    let app = sim.accounts().sinch[0].app_id.clone();
    let (_, first) = list(&sim, &token, &[("app_id", &app)]).await;
    let next = first["next_page_token"].as_str().expect("token").to_owned();
    sim.advance_clock(Duration::from_secs(11));
    let (status, body) = list(&sim, &token, &[("app_id", &app), ("page_token", &next)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_runtime_error(&body, 400, "INVALID_ARGUMENT");
}

/// `only_active=true` lists active, `false` inactive only, omitted both; each walk is
/// exact and complete, and `total_size` is only reported on the first page.
#[tokio::test]
async fn only_active_partitions_and_walks_are_exact() {
    let sim = start(|o| o.tie_cluster_size = 4).await;
    let token = sinch_token(&sim, 0).await;
    let account = sim.accounts().sinch[0].account.clone();
    let truth = sim.truth(Platform::Sinch, &account).await.expect("truth");
    let ids = |rows: &[Value]| -> HashSet<String> {
        rows.iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let active = walk(&sim, &token, Some("true")).await;
    let inactive = walk(&sim, &token, Some("false")).await;
    let both = walk(&sim, &token, None).await;
    assert_eq!(ids(&active).len(), active.len());
    assert_eq!(ids(&both).len(), both.len());
    let expect = |state: Option<ConversationState>| -> HashSet<String> {
        truth
            .iter()
            .filter(|c| !c.deleted && state.is_none_or(|s| c.state == s))
            .map(|c| c.id.clone())
            .collect()
    };
    assert_eq!(ids(&active), expect(Some(ConversationState::Active)));
    assert_eq!(ids(&inactive), expect(Some(ConversationState::Inactive)));
    assert_eq!(ids(&both), expect(None));
    assert!(both.iter().all(|c| {
        c["last_received"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    }));
    let app = sim.accounts().sinch[0].app_id.clone();
    let (_, first) = list(&sim, &token, &[("app_id", &app)]).await;
    assert_eq!(first["total_size"], both.len() as u64);
    let next = first["next_page_token"].as_str().expect("token").to_owned();
    let (_, second) = list(&sim, &token, &[("app_id", &app), ("page_token", &next)]).await;
    assert_eq!(second["total_size"], 0);
}

/// A conversation without messages shows `last_received` 1970-01-01T00:00:00Z.
#[tokio::test]
async fn empty_conversation_shows_epoch_last_received() {
    let sim = start(|o| o.conversations = 200).await;
    let token = sinch_token(&sim, 0).await;
    let account = sim.accounts().sinch[0].account.clone();
    let empty = sim
        .truth(Platform::Sinch, &account)
        .await
        .expect("truth")
        .into_iter()
        .find(|c| c.last_activity_at.is_none())
        .expect("a message-less conversation");
    let (status, body) = read(
        http()
            .get(project_url(&sim, &format!("conversations/{}", empty.id)))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["last_received"]
            .as_str()
            .is_some_and(|t| t.starts_with("1970-01-01T00:00:00"))
    );
}

/// Basic auth works on data calls but is visible in the counters (so tests can assert
/// the daemon never used it).
#[tokio::test]
async fn basic_auth_is_counted_separately() {
    let sim = start(|_| {}).await;
    let account = sim.accounts().sinch[0].clone();
    let (status, _) = read(
        http()
            .get(project_url(&sim, "conversations"))
            .basic_auth(&account.key_id, Some(&account.key_secret))
            .query(&[("app_id", account.app_id.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let counts = sim.request_counts();
    assert_eq!(
        counts.data_requests_with_auth(Platform::Sinch, RequestAuth::Basic),
        1
    );
    assert_eq!(
        counts.data_requests_with_auth(Platform::Sinch, RequestAuth::Bearer),
        0
    );
}

/// Messages come newest first, `start_time` is exclusive, and direction is TO_APP for
/// inbound messages.
#[tokio::test]
async fn messages_are_newest_first_and_start_time_exclusive() {
    let sim = start(|_| {}).await;
    let token = sinch_token(&sim, 0).await;
    let account = sim.accounts().sinch[0].clone();
    let open = sim
        .truth(Platform::Sinch, &account.account)
        .await
        .expect("truth")
        .into_iter()
        .find(|c| c.state == ConversationState::Active)
        .expect("active");
    let before = sim.now();
    sim.advance_clock(Duration::from_secs(5));
    sim.add_message(
        Platform::Sinch,
        &account.account,
        &open.id,
        MessageKind::Inbound,
    )
    .expect("message");
    sim.advance_clock(Duration::from_secs(5));
    sim.add_message(
        Platform::Sinch,
        &account.account,
        &open.id,
        MessageKind::Outbound,
    )
    .expect("message");
    let start = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, body) = read(
        http()
            .get(project_url(&sim, "messages"))
            .bearer_auth(&token)
            .query(&[
                ("app_id", account.app_id.as_str()),
                ("start_time", start.as_str()),
            ])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let messages = body["messages"].as_array().expect("messages");
    let directions: Vec<&str> = messages
        .iter()
        .map(|m| m["direction"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(directions, ["TO_CONTACT", "TO_APP"]);
    assert!(
        messages
            .iter()
            .all(|m| m["conversation_id"] == open.id.as_str())
    );
    let newest = messages[0]["accept_time"]
        .as_str()
        .expect("time")
        .to_owned();
    let (_, body) = read(
        http()
            .get(project_url(&sim, "messages"))
            .bearer_auth(&token)
            .query(&[
                ("app_id", account.app_id.as_str()),
                ("start_time", newest.as_str()),
            ])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(0));
}

/// The rate-limit fault answers 429 in the runtimeError shape, with or without
/// `Retry-After` as configured.
#[tokio::test]
async fn rate_limit_fault_with_and_without_retry_after() {
    let sim = start(|_| {}).await;
    let token = sinch_token(&sim, 0).await;
    let app = sim.accounts().sinch[0].app_id.clone();
    for style in [RetryAfter::None, RetryAfter::Seconds, RetryAfter::HttpDate] {
        sim.set_faults(
            Platform::Sinch,
            Faults {
                rate_limit: Some(RateLimitFault {
                    max_requests: 1,
                    window_ms: 60_000,
                    retry_after: style,
                }),
                ..Faults::default()
            },
        );
        let query = [("app_id", app.as_str())];
        let ok = http()
            .get(project_url(&sim, "conversations"))
            .bearer_auth(&token)
            .query(&query)
            .send()
            .await
            .expect("request");
        assert_eq!(ok.status(), StatusCode::OK);
        let limited = http()
            .get(project_url(&sim, "conversations"))
            .bearer_auth(&token)
            .query(&query)
            .send()
            .await
            .expect("request");
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited.headers().contains_key("retry-after"),
            style != RetryAfter::None
        );
        if style == RetryAfter::Seconds {
            let secs: u64 = limited.headers()["retry-after"]
                .to_str()
                .unwrap_or("")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&secs));
        }
        let (_, body) = read(limited).await;
        assert_runtime_error(&body, 429, "RESOURCE_EXHAUSTED");
    }
}

/// A DISPATCH-mode app lists no conversations.
#[tokio::test]
async fn dispatch_app_is_empty() {
    let sim = start(|o| o.sinch_dispatch_app = true).await;
    let token = sinch_token(&sim, 0).await;
    let dispatch = sim.accounts().sinch[0]
        .dispatch_app_id
        .clone()
        .expect("dispatch app");
    let (status, body) = list(&sim, &token, &[("app_id", &dispatch)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["conversations"].as_array().map(Vec::len), Some(0));
}

/// `conversations:recent` lists conversations newest message first, each with its last
/// message, and pages with `page_size` ≤ 50.
#[tokio::test]
async fn recent_conversations_are_newest_first() {
    let sim = start(|_| {}).await;
    let token = sinch_token(&sim, 0).await;
    let app = sim.accounts().sinch[0].app_id.clone();
    let recent = |query: Vec<(&'static str, String)>| {
        http()
            .get(project_url(&sim, "conversations:recent"))
            .bearer_auth(&token)
            .query(&query)
            .send()
    };
    let (status, body) = read(
        recent(vec![
            ("app_id", app.clone()),
            ("page_size", "51".to_owned()),
        ])
        .await
        .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_runtime_error(&body, 400, "INVALID_ARGUMENT");
    let mut times = Vec::new();
    let mut page_token = String::new();
    loop {
        let mut query = vec![("app_id", app.clone()), ("page_size", "25".to_owned())];
        if !page_token.is_empty() {
            query.push(("page_token", page_token.clone()));
        }
        let (status, body) = read(recent(query).await.expect("request")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for item in body["conversations"].as_array().expect("array") {
            times.push(
                item["conversation"]["last_received"]
                    .as_str()
                    .expect("time")
                    .to_owned(),
            );
        }
        page_token = body["next_page_token"].as_str().unwrap_or("").to_owned();
        if page_token.is_empty() {
            break;
        }
    }
    assert_eq!(times.len(), 60);
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");
}
