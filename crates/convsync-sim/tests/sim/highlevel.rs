//! The HighLevel simulator answers like the documented API v2.

use std::collections::HashSet;
use std::time::Duration;

use convsync_sim::options::StartAfter;
use convsync_sim::{Platform, SimHandle};
use reqwest::StatusCode;

use crate::support::{highlevel_refresh, http, read, start};

fn search(sim: &SimHandle, token: &str) -> reqwest::RequestBuilder {
    http()
        .get(
            sim.highlevel_base_url()
                .join("conversations/search")
                .expect("url"),
        )
        .bearer_auth(token)
        .header("Version", "2021-04-15")
}

fn pit(sim: &SimHandle, index: usize) -> String {
    sim.accounts().highlevel[index]
        .private_integration_token
        .clone()
}

fn location(sim: &SimHandle, index: usize) -> String {
    sim.accounts().highlevel[index].location_id.clone()
}

/// Walk newest first with `startAfterDate = lastMessageDate of the last row`, stopping
/// on a short page or when a page brings nothing new.
async fn walk(sim: &SimHandle, limit: usize) -> Vec<String> {
    let token = pit(sim, 0);
    let loc = location(sim, 0);
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..1000 {
        let mut request = search(sim, &token).query(&[
            ("locationId", loc.as_str()),
            ("sortBy", "last_message_date"),
            ("sort", "desc"),
            ("limit", &limit.to_string()),
        ]);
        if let Some(a) = after {
            request = request.query(&[("startAfterDate", a)]);
        }
        let (status, body) = read(request.send().await.expect("request")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["conversations"].as_array().expect("array").clone();
        let before = seen.len();
        for row in &rows {
            let id = row["id"].as_str().expect("id").to_owned();
            if !seen.contains(&id) {
                seen.push(id);
            }
        }
        if rows.len() < limit || seen.len() == before {
            return seen;
        }
        after = rows.last().and_then(|r| r["lastMessageDate"].as_i64());
    }
    panic!("walk did not terminate");
}

async fn all_ids(sim: &SimHandle) -> HashSet<String> {
    sim.truth(Platform::HighLevel, &location(sim, 0))
        .await
        .expect("truth")
        .into_iter()
        .filter(|c| !c.deleted)
        .map(|c| c.id)
        .collect()
}

/// No or a bad bearer token is a 401 `UnauthorizedDTO`.
#[tokio::test]
async fn bad_token_is_401() {
    let sim = start(|_| {}).await;
    let (status, body) = read(
        search(&sim, "nope")
            .query(&[("locationId", location(&sim, 0))])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["statusCode"], 401);
    assert_eq!(body["error"], "Unauthorized");
    assert!(body["message"].is_string());
}

/// The `Version` header is required (400 `BadRequestDTO`).
#[tokio::test]
async fn version_header_is_required() {
    let sim = start(|_| {}).await;
    let (status, body) = read(
        http()
            .get(
                sim.highlevel_base_url()
                    .join("conversations/search")
                    .expect("url"),
            )
            .bearer_auth(pit(&sim, 0))
            .query(&[("locationId", location(&sim, 0))])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["statusCode"], 400);
    assert!(body["message"].is_string());
}

/// A missing `locationId` is a 422 whose `message` is an array; a token of another
/// location is refused.
#[tokio::test]
async fn location_is_required_and_checked() {
    let sim = start(|_| {}).await;
    let (status, body) = read(search(&sim, &pit(&sim, 0)).send().await.expect("request")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["statusCode"], 422);
    assert!(body["message"].is_array());
    assert_eq!(body["error"], "Unprocessable Entity");
    let (status, _) = read(
        search(&sim, &pit(&sim, 0))
            .query(&[("locationId", location(&sim, 1))])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Invalid enum values and non-numeric numbers are 422s.
#[tokio::test]
async fn invalid_parameters_are_422() {
    let sim = start(|_| {}).await;
    let loc = location(&sim, 0);
    for (name, value) in [
        ("sort", "sideways"),
        ("sortBy", "name"),
        ("limit", "many"),
        ("startAfterDate", "yesterday"),
    ] {
        let (status, body) = read(
            search(&sim, &pit(&sim, 0))
                .query(&[("locationId", loc.as_str()), (name, value)])
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}={value}");
        assert!(body["message"].is_array());
    }
}

/// A refresh returns a new access token and a new refresh token; the old refresh token
/// is refused afterwards (single use), and its reuse is counted for its location.
#[tokio::test]
async fn refresh_tokens_rotate_and_are_single_use() {
    let sim = start(|_| {}).await;
    let initial = sim.accounts().highlevel[0].refresh_token.clone();
    let (status, body) = highlevel_refresh(&sim, 0, &initial).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("access").to_owned();
    let next = body["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(next, initial);
    assert_eq!(body["locationId"], location(&sim, 0));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(sim.request_counts().total_refresh_token_reuses(), 0);
    let (status, body) = highlevel_refresh(&sim, 0, &initial).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let reuses = sim.request_counts().refresh_token_reuses;
    assert_eq!(reuses.len(), 1, "{reuses:?}");
    assert_eq!(
        (reuses[0].scope.as_str(), reuses[0].count),
        (location(&sim, 0).as_str(), 1)
    );
    let (status, _) = highlevel_refresh(&sim, 0, "rt_never_issued").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        sim.request_counts().total_refresh_token_reuses(),
        1,
        "a token never issued is no reuse"
    );
    let (status, _) = read(
        search(&sim, &access)
            .query(&[("locationId", location(&sim, 0))])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = highlevel_refresh(&sim, 0, &next).await;
    assert_eq!(status, StatusCode::OK);
}

/// Access tokens expire; revocation kills issued tokens but not the static PIT.
#[tokio::test]
async fn access_tokens_expire_and_can_be_revoked() {
    let sim = start(|o| o.token_ttl = Duration::from_secs(100)).await;
    let initial = sim.accounts().highlevel[0].refresh_token.clone();
    let (_, body) = highlevel_refresh(&sim, 0, &initial).await;
    let access = body["access_token"].as_str().expect("access").to_owned();
    let loc = location(&sim, 0);
    sim.advance_clock(Duration::from_secs(101));
    let (status, _) = read(
        search(&sim, &access)
            .query(&[("locationId", loc.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, body) =
        highlevel_refresh(&sim, 0, body["refresh_token"].as_str().expect("refresh")).await;
    let access = body["access_token"].as_str().expect("access").to_owned();
    sim.revoke_tokens(Platform::HighLevel);
    let (status, _) = read(
        search(&sim, &access)
            .query(&[("locationId", loc.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = read(
        search(&sim, &pit(&sim, 0))
            .query(&[("locationId", loc.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Every search answer carries the five rate-limit headers; the burst quota gives 429
/// until the window passes, counted for its location.
#[tokio::test]
async fn rate_limit_headers_and_burst_429() {
    let sim = start(|o| {
        o.highlevel_burst_limit = 2;
        o.highlevel_daily_limit = 50;
    })
    .await;
    let loc = location(&sim, 0);
    let go = || {
        search(&sim, &pit(&sim, 0))
            .query(&[("locationId", loc.as_str())])
            .send()
    };
    let first = go().await.expect("request");
    assert_eq!(first.status(), StatusCode::OK);
    let h = first.headers();
    assert_eq!(h["x-ratelimit-max"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "1");
    assert_eq!(h["x-ratelimit-interval-milliseconds"], "10000");
    assert_eq!(h["x-ratelimit-limit-daily"], "50");
    assert_eq!(h["x-ratelimit-daily-remaining"], "49");
    assert_eq!(go().await.expect("request").status(), StatusCode::OK);
    let limited = go().await.expect("request");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    let refusals = sim.request_counts().quota_refusals;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(
        (refusals[0].scope.as_str(), refusals[0].count),
        (loc.as_str(), 1)
    );
    sim.advance_clock(Duration::from_secs(10));
    assert_eq!(go().await.expect("request").status(), StatusCode::OK);
}

/// The response has `conversations`, `total`, `traceId`, epoch-ms dates; `limit`
/// defaults to 20 and is clamped at 100.
#[tokio::test]
async fn response_shape_and_limit_clamp() {
    let sim = start(|o| o.conversations = 150).await;
    let loc = location(&sim, 0);
    let (_, body) = read(
        search(&sim, &pit(&sim, 0))
            .query(&[("locationId", loc.as_str())])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(body["conversations"].as_array().map(Vec::len), Some(20));
    assert_eq!(body["total"], 150);
    assert!(body["traceId"].is_string());
    let row = &body["conversations"][0];
    for field in [
        "id",
        "contactId",
        "locationId",
        "lastMessageBody",
        "lastMessageType",
        "type",
        "unreadCount",
        "fullName",
        "contactName",
        "email",
        "phone",
    ] {
        assert!(row.get(field).is_some(), "missing {field}");
    }
    assert!(
        row["lastMessageDate"].is_i64() && row["dateAdded"].is_i64() && row["dateUpdated"].is_i64()
    );
    let (_, body) = read(
        search(&sim, &pit(&sim, 0))
            .query(&[("locationId", loc.as_str()), ("limit", "500")])
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_eq!(body["conversations"].as_array().map(Vec::len), Some(100));
}

/// Without ties, the keyset walk (strict `startAfterDate`) sees every conversation once.
#[tokio::test]
async fn walk_without_ties_is_complete() {
    let sim = start(|_| {}).await;
    let seen = walk(&sim, 20).await;
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        all_ids(&sim).await
    );
}

/// With tie clusters at page boundaries, the strict comparator skips tied rows (the
/// real API's reported behaviour); the inclusive variant lets a deduplicating walk see
/// every row.
#[tokio::test]
async fn ties_at_page_boundaries_are_skipped_unless_inclusive() {
    let strict = start(|o| o.tie_cluster_size = 6).await;
    let seen = walk(&strict, 20).await;
    let all = all_ids(&strict).await;
    assert!(
        seen.len() < all.len(),
        "strict startAfterDate should skip tied rows"
    );
    let inclusive = start(|o| {
        o.tie_cluster_size = 6;
        o.highlevel_start_after = StartAfter::Inclusive;
    })
    .await;
    let seen = walk(&inclusive, 20).await;
    assert_eq!(
        seen.iter().cloned().collect::<HashSet<_>>(),
        all_ids(&inclusive).await
    );
}

/// `Version: 2021-07-28`, which clients in the field send, is accepted beside the spec's
/// `2021-04-15`; an unknown version is a 400; every value sent is recorded.
#[tokio::test]
async fn field_version_is_accepted_and_recorded() {
    let sim = start(|_| {}).await;
    let url = sim
        .highlevel_base_url()
        .join("conversations/search")
        .expect("url");
    for (version, expected) in [
        ("2021-04-15", StatusCode::OK),
        ("2021-07-28", StatusCode::OK),
        ("2020-01-01", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = read(
            http()
                .get(url.clone())
                .bearer_auth(pit(&sim, 0))
                .header("Version", version)
                .query(&[("locationId", location(&sim, 0))])
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, expected, "{version}: {body}");
        assert_eq!(
            sim.request_counts()
                .seen(Platform::HighLevel, &format!("Version: {version}")),
            1
        );
    }
}

/// Each result carries `sort: [<lastMessageDate>]`; the two knobs drop one or the other.
#[tokio::test]
async fn results_carry_their_sort_value() {
    for (no_sort, no_date) in [(false, false), (true, false), (false, true)] {
        let sim = start(|o| {
            o.highlevel_no_sort_array = no_sort;
            o.highlevel_no_last_message_date = no_date;
        })
        .await;
        let (status, body) = read(
            search(&sim, &pit(&sim, 0))
                .query(&[
                    ("locationId", location(&sim, 0).as_str()),
                    ("sortBy", "last_message_date"),
                    ("sort", "desc"),
                    ("limit", "5"),
                ])
                .send()
                .await
                .expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["conversations"].as_array().expect("array");
        assert_eq!(rows.len(), 5);
        let truth = sim
            .truth(Platform::HighLevel, &location(&sim, 0))
            .await
            .expect("truth");
        for row in rows {
            let id = row["id"].as_str().expect("id");
            let last = truth
                .iter()
                .find(|t| t.id == id)
                .and_then(|t| t.last_activity_at)
                .expect("a dated conversation")
                .timestamp_millis();
            let sort = row.get("sort").map(|s| s[0].as_i64().expect("number"));
            assert_eq!(sort, (!no_sort).then_some(last), "{row}");
            let date = row.get("lastMessageDate").map(|d| d.as_i64().expect("ms"));
            assert_eq!(date, (!no_date).then_some(last), "{row}");
        }
        sim.shutdown().await;
    }
}
