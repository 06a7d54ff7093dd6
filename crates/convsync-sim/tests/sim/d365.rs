//! The D365 simulator answers like the documented Messaging API.

use std::collections::HashSet;
use std::time::Duration;

use convsync_sim::{ConversationState, Faults, MessageKind, Platform, SimHandle};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{d365_token, http, read, start};

const LIST: &str = "api/v1.0/consumer/conversations";

fn list(sim: &SimHandle, token: &str) -> reqwest::RequestBuilder {
    let account = &sim.accounts().d365[0];
    http()
        .get(sim.d365_base_url().join(LIST).expect("url"))
        .bearer_auth(token)
        .header("channel-id", &account.channel_id)
        .header("organization-id", &account.organization_id)
}

async fn list_page(sim: &SimHandle, token: &str, query: &[(&str, String)]) -> (StatusCode, Value) {
    read(list(sim, token).query(query).send().await.expect("request")).await
}

fn assert_problem(body: &Value, status: u16, code: u64) {
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

/// Walk every page with `ContinuationToken` and the same other parameters.
async fn walk(
    sim: &SimHandle,
    token: &str,
    page_size: usize,
    start: Option<&str>,
) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut continuation: Option<String> = None;
    for _ in 0..1000 {
        let mut query = vec![("PageSize", page_size.to_string())];
        if let Some(start) = start {
            query.push(("StartTimeStamp", start.to_owned()));
        }
        if let Some(c) = &continuation {
            query.push(("ContinuationToken", c.clone()));
        }
        let (status, body) = list_page(sim, token, &query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for item in body["conversations"].as_array().expect("array") {
            rows.push((
                item["conversationid"].as_str().expect("id").to_owned(),
                item["timestamp"].as_str().expect("timestamp").to_owned(),
            ));
        }
        match body["continuationtoken"].as_str() {
            Some(next) if !next.is_empty() => continuation = Some(next.to_owned()),
            _ => return rows,
        }
    }
    panic!("walk did not terminate");
}

async fn active_ids(sim: &SimHandle) -> HashSet<String> {
    let account = sim.accounts().d365[0].account.clone();
    sim.truth(Platform::D365, &account)
        .await
        .expect("truth")
        .into_iter()
        .filter(|c| c.state == ConversationState::Active && !c.deleted)
        .map(|c| c.id)
        .collect()
}

/// The Entra token endpoint refuses bad tenants, secrets, scopes and grant types with
/// Entra's error shape and issues `{token_type, expires_in, access_token}` otherwise.
#[tokio::test]
async fn token_endpoint_validates_like_entra() {
    let sim = start(|_| {}).await;
    let a = sim.accounts().d365[0].clone();
    let form = |tenant: &str, secret: &str, scope: &str, grant: &str| {
        let tenant = tenant.to_owned();
        let body = vec![
            ("grant_type".to_owned(), grant.to_owned()),
            ("client_id".to_owned(), a.client_id.clone()),
            ("client_secret".to_owned(), secret.to_owned()),
            ("scope".to_owned(), scope.to_owned()),
        ];
        (tenant, body)
    };
    let cases = [
        (
            form(
                "00000000-0000-0000-0000-000000000000",
                &a.client_secret,
                &a.scope,
                "client_credentials",
            ),
            400,
            "invalid_request",
        ),
        (
            form(&a.tenant_id, "wrong", &a.scope, "client_credentials"),
            401,
            "invalid_client",
        ),
        (
            form(
                &a.tenant_id,
                &a.client_secret,
                "https://other/.default",
                "client_credentials",
            ),
            400,
            "invalid_scope",
        ),
        (
            form(&a.tenant_id, &a.client_secret, &a.scope, "password"),
            400,
            "unsupported_grant_type",
        ),
    ];
    for ((tenant, body), status, error) in cases {
        let (got, json) = read(
            http()
                .post(sim.d365_token_url(&tenant))
                .form(&body)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(got.as_u16(), status, "{json}");
        assert_eq!(json["error"], error, "{json}");
        assert!(
            json["error_codes"].is_array()
                && json["error_description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("AADSTS"))
        );
    }
    let token = d365_token(&sim, 0).await;
    assert!(!token.is_empty());
}

/// The list needs a valid bearer token and the `channel-id`/`organization-id` of that
/// token's channel; anything else is a 401.
#[tokio::test]
async fn list_requires_token_and_matching_channel_headers() {
    let sim = start(|_| {}).await;
    let url = sim.d365_base_url().join(LIST).expect("url");
    let (status, _) = read(http().get(url.clone()).send().await.expect("request")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = d365_token(&sim, 0).await;
    let account = &sim.accounts().d365[0];
    let response = http()
        .get(url)
        .bearer_auth(&token)
        .header("channel-id", "11111111-1111-1111-1111-111111111111")
        .header("organization-id", &account.organization_id)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    let (status, body) = list_page(&sim, &token, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A `StartTimeStamp` that is not a DateTimeOffset is a 400 problem with code 30006.
#[tokio::test]
async fn bad_start_timestamp_is_30006() {
    let sim = start(|_| {}).await;
    let token = d365_token(&sim, 0).await;
    let response = list(&sim, &token)
        .query(&[("StartTimeStamp", "yesterday")])
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap_or(""),
        "application/problem+json"
    );
    let (status, body) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_problem(&body, 400, 30006);
}

/// `PageSize` outside 1–250 is a 400 problem with code 30007.
#[tokio::test]
async fn page_size_out_of_range_is_30007() {
    let sim = start(|_| {}).await;
    let token = d365_token(&sim, 0).await;
    for size in ["0", "251", "ten"] {
        let (status, body) = list_page(&sim, &token, &[("PageSize", size.to_owned())]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_problem(&body, 400, 30007);
    }
}

/// A continuation token that is unknown, reused with other parameters, or expired is a
/// 400 problem with code 30009.
#[tokio::test]
async fn bad_continuation_token_is_30009() {
    let sim = start(|_| {}).await;
    let token = d365_token(&sim, 0).await;
    let (_, first) = list_page(&sim, &token, &[("PageSize", "5".to_owned())]).await;
    let continuation = first["continuationtoken"]
        .as_str()
        .expect("token")
        .to_owned();
    let unknown = "3f2b1a90-7c6d-4e5f-8a9b-0c1d2e3f4a5b".to_owned();
    for query in [
        vec![("PageSize", "5".to_owned()), ("ContinuationToken", unknown)],
        vec![
            ("PageSize", "6".to_owned()),
            ("ContinuationToken", continuation.clone()),
        ],
    ] {
        let (status, body) = list_page(&sim, &token, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_problem(&body, 400, 30009);
    }
    sim.set_faults(
        Platform::D365,
        Faults {
            page_token_ttl_ms: Some(60_000),
            ..Faults::default()
        },
    );
    let (_, first) = list_page(&sim, &token, &[("PageSize", "5".to_owned())]).await;
    let continuation = first["continuationtoken"]
        .as_str()
        .expect("token")
        .to_owned();
    sim.advance_clock(Duration::from_secs(61));
    let (status, body) = list_page(
        &sim,
        &token,
        &[
            ("PageSize", "5".to_owned()),
            ("ContinuationToken", continuation),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_problem(&body, 400, 30009);
}

/// A walk returns every active conversation exactly once, ascending by creation
/// timestamp (7 fractional digits), also when tie clusters straddle page boundaries.
#[tokio::test]
async fn walk_returns_every_active_conversation_once_with_ties() {
    let sim = start(|o| o.tie_cluster_size = 5).await;
    let token = d365_token(&sim, 0).await;
    let rows = walk(&sim, &token, 10, None).await;
    let ids: Vec<&String> = rows.iter().map(|(id, _)| id).collect();
    let unique: HashSet<String> = ids.iter().map(|s| (*s).clone()).collect();
    assert_eq!(unique.len(), ids.len(), "duplicates in walk");
    assert_eq!(unique, active_ids(&sim).await);
    assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1), "not ascending");
    assert!(
        rows.iter()
            .all(|(_, ts)| ts.len() == "2026-03-02T09:15:03.1234567Z".len())
    );
    let timestamps: HashSet<&String> = rows.iter().map(|(_, ts)| ts).collect();
    assert!(timestamps.len() < rows.len(), "tie clusters expected");
}

/// `StartTimeStamp` means "created strictly after" and a closed conversation vanishes.
#[tokio::test]
async fn start_timestamp_is_exclusive_and_closed_conversations_vanish() {
    let sim = start(|_| {}).await;
    let token = d365_token(&sim, 0).await;
    let all = walk(&sim, &token, 250, None).await;
    let (pivot_id, pivot_ts) = all[all.len() / 2].clone();
    let after = walk(&sim, &token, 250, Some(&pivot_ts)).await;
    assert!(after.iter().all(|(_, ts)| ts > &pivot_ts));
    assert!(!after.iter().any(|(id, _)| id == &pivot_id));
    let account = sim.accounts().d365[0].account.clone();
    sim.close(Platform::D365, &account, &pivot_id)
        .expect("close");
    let now = walk(&sim, &token, 250, None).await;
    assert!(!now.iter().any(|(id, _)| id == &pivot_id));
    assert_eq!(now.len(), all.len() - 1);
}

/// The optional trailing empty page carries a token; the walk still ends.
#[tokio::test]
async fn trailing_empty_page_carries_a_token() {
    let sim = start(|o| o.d365_trailing_empty_page = true).await;
    let token = d365_token(&sim, 0).await;
    let (_, page) = list_page(&sim, &token, &[("PageSize", "250".to_owned())]).await;
    let continuation = page["continuationtoken"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, last) = list_page(
        &sim,
        &token,
        &[
            ("PageSize", "250".to_owned()),
            ("ContinuationToken", continuation),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(last["conversations"].as_array().map(Vec::len), Some(0));
    assert!(last.get("continuationtoken").is_none());
}

/// In "shuffled" order the walk is still complete and exact.
#[tokio::test]
async fn shuffled_order_walk_is_complete() {
    let sim = start(|o| o.d365_order = convsync_sim::options::D365Order::Shuffled).await;
    let token = d365_token(&sim, 0).await;
    let rows = walk(&sim, &token, 7, None).await;
    let unique: HashSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(unique.len(), rows.len());
    assert_eq!(unique, active_ids(&sim).await);
}

/// An access token stops working once expired (401).
#[tokio::test]
async fn expired_access_token_is_401() {
    let sim = start(|o| o.token_ttl = Duration::from_secs(60)).await;
    let token = d365_token(&sim, 0).await;
    assert_eq!(list_page(&sim, &token, &[]).await.0, StatusCode::OK);
    sim.advance_clock(Duration::from_secs(61));
    assert_eq!(
        list_page(&sim, &token, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Messages: 404/30013 for unknown or closed conversations, `PageSize` 1–100 (30008),
/// a DateTimeOffset `continuationToken`, and `from.role` giving the direction.
#[tokio::test]
async fn messages_endpoint_validates_and_pages() {
    let sim = start(|_| {}).await;
    let token = d365_token(&sim, 0).await;
    let account = sim.accounts().d365[0].clone();
    let truth = sim
        .truth(Platform::D365, &account.account)
        .await
        .expect("truth");
    let open = truth
        .iter()
        .find(|c| c.state == ConversationState::Active)
        .expect("an open one");
    for _ in 0..3 {
        sim.add_message(
            Platform::D365,
            &account.account,
            &open.id,
            MessageKind::Outbound,
        )
        .expect("message");
        sim.advance_clock(Duration::from_secs(1));
    }
    let messages = |id: &str| {
        http()
            .get(
                sim.d365_base_url()
                    .join(&format!("api/v1.0/consumer/conversation/{id}/messages"))
                    .expect("url"),
            )
            .bearer_auth(&token)
            .header("channel-id", &account.channel_id)
            .header("organization-id", &account.organization_id)
    };
    let (status, body) = read(
        messages("0b9a3c2e-5d1f-4c7a-9e21-7f3b8d6a1c44")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(&body, 404, 30013);
    let (status, body) = read(
        messages(&open.id)
            .query(&[("PageSize", "101")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_problem(&body, 400, 30008);
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = messages(&open.id).query(&[("PageSize", "1")]);
        if let Some(c) = &continuation {
            request = request.query(&[("ContinuationToken", c.as_str())]);
        }
        let (status, body) = read(request.send().await.expect("request")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for m in body["messages"].as_array().expect("messages") {
            assert!(["user", "agent", "bot"].contains(&m["from"]["role"].as_str().unwrap_or("")));
            assert_eq!(m["messageId"].as_str().map(str::len), Some(13));
            seen.push(m["id"].as_str().expect("id").to_owned());
        }
        match body["continuationToken"].as_str() {
            Some(c) => continuation = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len() as u32, open.message_count + 3);
    sim.close(Platform::D365, &account.account, &open.id)
        .expect("close");
    let (status, body) = read(messages(&open.id).send().await.expect("request")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(&body, 404, 30013);
}

/// Data requests authenticate with either documented pair of header names, each pair a
/// request carries is recorded, and a tenant that knows only one pair refuses the other.
#[tokio::test]
async fn either_generation_of_header_names_is_accepted_and_recorded() {
    use convsync_sim::options::D365HeaderNames;
    const PLAIN: (&str, &str) = ("channel-id", "organization-id");
    const X_MS: (&str, &str) = ("x-ms-channel-id", "x-ms-organization-id");
    for (tenant, accepted, refused) in [
        (D365HeaderNames::Either, vec![PLAIN, X_MS], vec![]),
        (D365HeaderNames::Plain, vec![PLAIN], vec![X_MS]),
        (D365HeaderNames::XMs, vec![X_MS], vec![PLAIN]),
    ] {
        let sim = start(|o| o.d365_header_names = tenant).await;
        let token = d365_token(&sim, 0).await;
        let account = sim.accounts().d365[0].clone();
        let url = sim.d365_base_url().join(LIST).expect("url");
        let send = |(channel, organization): (&str, &str)| {
            http()
                .get(url.clone())
                .bearer_auth(&token)
                .header(channel, &account.channel_id)
                .header(organization, &account.organization_id)
                .send()
        };
        for pair in &accepted {
            let (status, body) = read(send(*pair).await.expect("request")).await;
            assert_eq!(status, StatusCode::OK, "{tenant:?} {pair:?}: {body}");
        }
        for pair in &refused {
            let (status, _) = read(send(*pair).await.expect("request")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{tenant:?} {pair:?}");
        }
        // The wrong channel under an accepted name is still refused.
        let (status, _) = read(
            http()
                .get(url.clone())
                .bearer_auth(&token)
                .header(accepted[0].0, "00000000-0000-0000-0000-000000000000")
                .header(accepted[0].1, &account.organization_id)
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{tenant:?}");
        let counts = sim.request_counts();
        let sent = |name: &str| {
            let pairs = accepted.iter().chain(&refused);
            pairs.filter(|(channel, _)| *channel == name).count() as u64
                + u64::from(accepted[0].0 == name)
        };
        for name in ["channel-id", "x-ms-channel-id"] {
            assert_eq!(
                counts.seen(Platform::D365, &format!("auth headers: {name}")),
                sent(name),
                "{tenant:?} {name}"
            );
        }
        sim.shutdown().await;
    }
}
