//! The Spruce simulator answers like the documented public API v1.

use std::collections::HashSet;
use std::time::Duration;

use convsync_sim::{Faults, MessageKind, Platform, SimHandle};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{http, read, start};

fn get(sim: &SimHandle, path: &str) -> reqwest::RequestBuilder {
    let token = &sim.accounts().spruce[0].api_token;
    http()
        .get(sim.spruce_base_url().join(path).expect("url"))
        .bearer_auth(token)
}

async fn list(sim: &SimHandle, query: &[(&str, &str)]) -> (StatusCode, Value) {
    read(
        get(sim, "v1/conversations")
            .query(query)
            .send()
            .await
            .expect("request"),
    )
    .await
}

fn assert_error(body: &Value, status: u16) {
    assert_eq!(body["statusCode"], status, "{body}");
    assert!(
        body["type"].is_string() && body["message"].is_string(),
        "{body}"
    );
}

/// Walk with `paginationToken` until `hasMore` is false.
async fn walk(
    sim: &SimHandle,
    order_by: &str,
    page_size: &str,
    start_from: Option<&str>,
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..1000 {
        let mut query = vec![("orderBy", order_by), ("pageSize", page_size)];
        match (&token, start_from) {
            (Some(t), _) => query.push(("paginationToken", t.as_str())),
            (None, Some(s)) => query.push(("startFrom", s)),
            (None, None) => {}
        }
        let (status, body) = list(sim, &query).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["totalCount"].is_u64());
        rows.extend(
            body["conversations"]
                .as_array()
                .expect("array")
                .iter()
                .cloned(),
        );
        if body["hasMore"] != true {
            return rows;
        }
        token = Some(body["paginationToken"].as_str().expect("token").to_owned());
    }
    panic!("walk did not terminate");
}

/// A wrong token is a 403 (not 401) with `{statusCode, type, message}`.
#[tokio::test]
async fn bad_token_is_403() {
    let sim = start(|_| {}).await;
    let (status, body) = read(
        http()
            .get(
                sim.spruce_base_url()
                    .join("v1/conversations?orderBy=created")
                    .expect("url"),
            )
            .bearer_auth("nope")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, 403);
}

/// `orderBy` is required and must be `created` or `last_message`.
#[tokio::test]
async fn order_by_is_required() {
    let sim = start(|_| {}).await;
    for query in [vec![], vec![("orderBy", "newest")]] {
        let (status, body) = list(&sim, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&body, 400);
    }
}

/// `pageSize` must be 1–200.
#[tokio::test]
async fn page_size_out_of_range_is_400() {
    let sim = start(|_| {}).await;
    for size in ["0", "201", "x"] {
        let (status, body) = list(&sim, &[("orderBy", "created"), ("pageSize", size)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_error(&body, 400);
    }
}

/// `startFrom` and `paginationToken` are mutually exclusive; `startFrom` needs a zone.
#[tokio::test]
async fn start_from_rules_are_enforced() {
    let sim = start(|_| {}).await;
    let (_, first) = list(&sim, &[("orderBy", "created"), ("pageSize", "5")]).await;
    let token = first["paginationToken"].as_str().expect("token").to_owned();
    let (status, body) = list(
        &sim,
        &[
            ("orderBy", "created"),
            ("paginationToken", &token),
            ("startFrom", "2026-01-01T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, 400);
    let (status, body) = list(
        &sim,
        &[("orderBy", "created"), ("startFrom", "2026-01-01T00:00:00")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, 400);
}

/// A walk ordered by `created` returns every non-deleted conversation exactly once, in
/// ascending order, also with tie clusters at page boundaries.
#[tokio::test]
async fn created_walk_is_complete_with_ties() {
    let sim = start(|o| o.tie_cluster_size = 5).await;
    let account = sim.accounts().spruce[0].account.clone();
    let victim = sim.truth(Platform::Spruce, &account).await.expect("truth")[3]
        .id
        .clone();
    sim.delete(Platform::Spruce, &account, &victim)
        .expect("delete");
    let rows = walk(&sim, "created", "10", None).await;
    let ids: Vec<String> = rows
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len());
    let expected: HashSet<String> = sim
        .truth(Platform::Spruce, &account)
        .await
        .expect("truth")
        .into_iter()
        .filter(|c| !c.deleted)
        .map(|c| c.id)
        .collect();
    assert_eq!(unique, expected);
    let created: Vec<&str> = rows
        .iter()
        .map(|c| c["createdAt"].as_str().expect("createdAt"))
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]));
    for c in &rows {
        for field in [
            "id",
            "object",
            "title",
            "type",
            "archived",
            "isReadOnly",
            "createdAt",
            "tags",
            "apiURL",
            "appURL",
        ] {
            assert!(c.get(field).is_some(), "missing {field} in {c}");
        }
    }
}

/// `startFrom` with `orderBy=last_message` is inclusive: the boundary row comes back,
/// and conversations without messages are excluded from such deltas.
#[tokio::test]
async fn last_message_start_from_is_inclusive() {
    let sim = start(|_| {}).await;
    let rows = walk(&sim, "last_message", "200", None).await;
    let pivot = rows
        .iter()
        .filter(|c| c.get("lastMessageAt").is_some())
        .nth(10)
        .expect("row with messages")
        .clone();
    let at = pivot["lastMessageAt"].as_str().expect("time");
    let delta = walk(&sim, "last_message", "200", Some(at)).await;
    assert!(delta.iter().any(|c| c["id"] == pivot["id"]));
    assert!(
        delta
            .iter()
            .all(|c| c["lastMessageAt"].as_str().is_some_and(|t| t >= at))
    );
}

/// `lastMessageAt` is omitted for message-less conversations by default, `null` on request.
#[tokio::test]
async fn last_message_at_omitted_or_null() {
    for null in [false, true] {
        let sim = start(|o| {
            o.spruce_null_last_message_at = null;
            o.conversations = 200;
        })
        .await;
        let account = sim.accounts().spruce[0].account.clone();
        let rows = walk(&sim, "created", "200", None).await;
        let empty = sim
            .truth(Platform::Spruce, &account)
            .await
            .expect("truth")
            .into_iter()
            .find(|c| c.last_activity_at.is_none() && !c.deleted)
            .expect("a message-less conversation in the seeded world");
        let row = rows.iter().find(|c| c["id"] == empty.id).expect("listed");
        assert_eq!(row.get("lastMessageAt").is_some(), null, "{row}");
        if null {
            assert!(row["lastMessageAt"].is_null());
        }
    }
}

/// Every response carries the rate-limit and request-id headers; exhaustion is a 429,
/// counted for the organization.
#[tokio::test]
async fn rate_limit_headers_and_429() {
    let sim = start(|o| o.spruce_rate_limit = 3).await;
    for expected_remaining in ["2", "1", "0"] {
        let response = get(&sim, "v1/conversations?orderBy=created")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["s-ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["s-ratelimit-remaining"],
            expected_remaining
        );
        assert!(response.headers().contains_key("s-request-id"));
    }
    let (status, body) = read(
        get(&sim, "v1/conversations?orderBy=created")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_error(&body, 429);
    let organization = &sim.accounts().spruce[0].organization_id;
    let refusals = sim.request_counts().quota_refusals;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(&refusals[0].scope, organization);
    assert_eq!(refusals[0].count, 1);
    sim.advance_clock(Duration::from_secs(60));
    let (status, _) = read(
        get(&sim, "v1/conversations?orderBy=created")
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Items carry `direction` inbound/outbound/none and `isInternalNote`; order and
/// pagination follow the parameters.
#[tokio::test]
async fn items_show_direction_and_notes() {
    let sim = start(|_| {}).await;
    let account = sim.accounts().spruce[0].account.clone();
    let conversation = sim.truth(Platform::Spruce, &account).await.expect("truth")[0]
        .id
        .clone();
    for kind in [
        MessageKind::Inbound,
        MessageKind::InternalNote,
        MessageKind::Outbound,
    ] {
        sim.advance_clock(Duration::from_secs(1));
        sim.add_message(Platform::Spruce, &account, &conversation, kind)
            .expect("message");
    }
    let path = format!("v1/conversations/{conversation}/items");
    let (status, body) = read(
        get(&sim, &path)
            .query(&[("pageSize", "3")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["conversationItems"].as_array().expect("items");
    let directions: Vec<&str> = items
        .iter()
        .map(|i| i["direction"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(directions, ["outbound", "none", "inbound"]);
    assert_eq!(items[1]["isInternalNote"], true);
    let (_, oldest) = read(
        get(&sim, &path)
            .query(&[("order", "oldest_first"), ("pageSize", "1")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(
        oldest["conversationItems"].as_array().map(Vec::len),
        Some(1)
    );
    let (status, body) = read(
        get(&sim, &path)
            .query(&[("order", "sideways")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, 400);
    let truth = sim.truth(Platform::Spruce, &account).await.expect("truth");
    let row = truth.iter().find(|c| c.id == conversation).expect("row");
    assert!(!row.awaiting_reply, "outbound after inbound: no reply owed");
}

/// Under a consistency delay a new conversation is in the truth at once but in the list
/// only after the delay.
#[tokio::test]
async fn consistency_delay_hides_fresh_changes() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Spruce,
        Faults {
            consistency_delay_ms: 30_000,
            ..Faults::default()
        },
    );
    let account = sim.accounts().spruce[0].account.clone();
    let id = sim
        .create_conversations(Platform::Spruce, &account, 1)
        .expect("create")[0]
        .clone();
    let truth = sim.truth(Platform::Spruce, &account).await.expect("truth");
    let row = truth.iter().find(|c| c.id == id).expect("in truth");
    assert_eq!(
        row.visible_at - row.changed_at,
        chrono::Duration::seconds(30)
    );
    let listed = |rows: &[Value]| rows.iter().any(|c| c["id"] == id.as_str());
    assert!(!listed(&walk(&sim, "created", "200", None).await));
    sim.advance_clock(Duration::from_secs(30));
    assert!(listed(&walk(&sim, "created", "200", None).await));
}
