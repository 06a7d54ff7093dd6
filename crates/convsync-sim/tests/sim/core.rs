//! Behaviour shared by every simulated provider: determinism, faults, the control API.

use std::time::Duration;

use convsync_sim::{
    ActivityCommand, EditField, Faults, LatencyFault, MessageKind, Mutation, Platform, SimError,
    TruthConversation,
};
use reqwest::StatusCode;

use crate::support::{http, read, start};

async fn all_truth(sim: &convsync_sim::SimHandle) -> Vec<TruthConversation> {
    let mut out = Vec::new();
    for provider in Platform::ALL {
        for account in sim.accounts().keys(provider) {
            out.extend(sim.truth(provider, &account).await.expect("truth"));
        }
    }
    out
}

fn spruce_list(sim: &convsync_sim::SimHandle) -> reqwest::RequestBuilder {
    http()
        .get(
            sim.spruce_base_url()
                .join("v1/conversations?orderBy=created")
                .expect("url"),
        )
        .bearer_auth(&sim.accounts().spruce[0].api_token)
}

/// The same seed gives the same accounts, world and random activity; another seed does not.
#[tokio::test]
async fn same_seed_same_world_and_activity() {
    let a = start(|_| {}).await;
    let b = start(|_| {}).await;
    let c = start(|o| o.seed = 8).await;
    assert_eq!(a.accounts(), b.accounts());
    assert_ne!(a.accounts(), c.accounts());
    assert_eq!(all_truth(&a).await, all_truth(&b).await);
    assert_ne!(all_truth(&a).await, all_truth(&c).await);
    let touched_a = a.apply_activity(200).await;
    let touched_b = b.apply_activity(200).await;
    assert_eq!(touched_a, touched_b);
    assert_eq!(all_truth(&a).await, all_truth(&b).await);
}

/// The reset fault closes the connection without any response and is counted with no
/// status.
#[tokio::test]
async fn reset_fault_drops_the_connection() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Spruce,
        Faults {
            reset_ratio: 1.0,
            ..Faults::default()
        },
    );
    let outcome = spruce_list(&sim).send().await;
    assert!(
        outcome.is_err(),
        "expected a transport error, got {outcome:?}"
    );
    let counts = sim.request_counts();
    assert_eq!(
        counts.with_status(Platform::Spruce, "/v1/conversations", None),
        1
    );
}

/// The malformed fault sends status 200 with a truncated JSON body.
#[tokio::test]
async fn malformed_fault_truncates_json() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Spruce,
        Faults {
            malformed_ratio: 1.0,
            ..Faults::default()
        },
    );
    let response = spruce_list(&sim).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
}

/// The 5xx fault answers 500 or 503 in the provider's own error shape.
#[tokio::test]
async fn server_error_fault_uses_provider_error_shape() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Spruce,
        Faults {
            error_5xx_ratio: 1.0,
            ..Faults::default()
        },
    );
    let (status, body) = read(spruce_list(&sim).send().await.expect("request")).await;
    assert!(status.is_server_error());
    assert_eq!(body["statusCode"], status.as_u16());
    assert!(body["type"].is_string());
}

/// Added latency can exceed a client's timeout.
#[tokio::test]
async fn latency_fault_can_exceed_client_timeout() {
    let sim = start(|_| {}).await;
    sim.set_faults(
        Platform::Spruce,
        Faults {
            latency: Some(LatencyFault {
                min_ms: 2_000,
                max_ms: 2_000,
            }),
            ..Faults::default()
        },
    );
    let outcome = spruce_list(&sim)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(outcome.is_err_and(|e| e.is_timeout()));
}

/// Targeted mutations validate their target and change the truth as documented.
#[tokio::test]
async fn mutations_change_truth_and_reject_bad_targets() {
    let sim = start(|_| {}).await;
    let account = sim.accounts().highlevel[0].account.clone();
    let first = sim
        .truth(Platform::HighLevel, &account)
        .await
        .expect("truth")[0]
        .clone();
    sim.edit(Platform::HighLevel, &account, &first.id, EditField::Starred)
        .expect("edit");
    sim.advance_clock(Duration::from_secs(1));
    sim.add_message(
        Platform::HighLevel,
        &account,
        &first.id,
        MessageKind::Inbound,
    )
    .expect("message");
    let after = sim
        .truth(Platform::HighLevel, &account)
        .await
        .expect("truth")[0]
        .clone();
    assert_eq!(after.starred, !first.starred);
    assert!(after.awaiting_reply);
    assert_eq!(after.last_inbound_at, Some(sim.now()));
    assert!(matches!(
        sim.close(Platform::HighLevel, &account, &first.id),
        Err(SimError::Unsupported(_))
    ));
    assert!(matches!(
        sim.delete(Platform::HighLevel, &account, "not-an-id"),
        Err(SimError::UnknownConversation { .. })
    ));
    assert!(matches!(
        sim.truth(Platform::HighLevel, "nobody").await,
        Err(SimError::UnknownAccount { .. })
    ));
    let cluster = sim
        .tie_cluster(Platform::HighLevel, &account, 4)
        .expect("cluster");
    let truth = sim
        .truth(Platform::HighLevel, &account)
        .await
        .expect("truth");
    let times: std::collections::HashSet<_> = truth
        .iter()
        .filter(|c| cluster.contains(&c.id))
        .map(|c| c.last_activity_at)
        .collect();
    assert_eq!(times.len(), 1, "a tie cluster shares one timestamp");
}

/// The control API (used by process-level tests) exposes truth, counters, faults,
/// activity and the clock.
#[tokio::test]
async fn control_api_round_trip() {
    let sim = start(|_| {}).await;
    let client = sim.client();
    client
        .wait_ready(Duration::from_secs(5))
        .await
        .expect("ready");
    assert_eq!(&client.accounts().await.expect("accounts"), sim.accounts());
    assert_eq!(client.urls().await.expect("urls"), sim.urls());
    let account = sim.accounts().spruce[0].account.clone();
    let truth = client
        .truth(Platform::Spruce, &account)
        .await
        .expect("truth");
    assert_eq!(
        truth,
        sim.truth(Platform::Spruce, &account).await.expect("truth")
    );

    let faults = Faults {
        error_5xx_ratio: 0.5,
        ..Faults::default()
    };
    client
        .set_faults(Platform::Sinch, &faults)
        .await
        .expect("set faults");
    assert_eq!(
        client.faults().await.expect("faults")[&Platform::Sinch],
        faults
    );
    assert_eq!(sim.faults(Platform::Sinch), faults);

    let _ = spruce_list(&sim).send().await.expect("request");
    assert_eq!(
        client
            .requests()
            .await
            .expect("counts")
            .total(Platform::Spruce, "/v1/conversations"),
        1
    );
    client.reset_requests().await.expect("reset");
    assert!(client.requests().await.expect("counts").entries.is_empty());

    let created = client
        .mutate(
            Platform::Spruce,
            &account,
            Mutation::CreateConversations { count: 2 },
        )
        .await
        .expect("mutate");
    assert_eq!(created.len(), 2);
    let outcome = client
        .activity(&ActivityCommand::Pause)
        .await
        .expect("pause");
    assert!(outcome.paused);
    assert_eq!(client.apply_activity(5).await.expect("apply").len(), 5);

    let before = client.clock().await.expect("clock");
    assert!(before.frozen);
    let after = client
        .advance_clock(Duration::from_secs(90))
        .await
        .expect("advance");
    assert_eq!(after.now - before.now, chrono::Duration::seconds(90));
    client
        .revoke_tokens(convsync_sim::PlatformSelector::All)
        .await
        .expect("revoke");
    assert!(client.truth(Platform::Spruce, "nobody").await.is_err());
}
