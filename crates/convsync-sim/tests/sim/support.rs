//! Helpers shared by the simulator tests: a quiet, frozen-clock simulator and token
//! fetchers for each provider.

use convsync_sim::{SimHandle, SimOptions, Simulator};
use reqwest::StatusCode;
use serde_json::Value;

/// A simulator with a frozen clock, no background activity and a small world, so every
/// test sees exactly the state it sets up.
pub async fn start(configure: impl FnOnce(&mut SimOptions)) -> SimHandle {
    let mut options = SimOptions {
        seed: 7,
        activity_rate: 0.0,
        conversations: 60,
        frozen_clock: true,
        clock_start: Some("2026-03-01T12:00:00Z".parse().expect("valid timestamp")),
        ..SimOptions::default()
    };
    configure(&mut options);
    Simulator::start(options).await.expect("simulator starts")
}

/// A plain HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Status and JSON body of a response (`Value::Null` when the body is not JSON).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// A D365 access token for account `index`.
pub async fn d365_token(sim: &SimHandle, index: usize) -> String {
    let account = &sim.accounts().d365[index];
    let (status, body) = read(
        http()
            .post(sim.d365_token_url(&account.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", account.client_id.as_str()),
                ("client_secret", account.client_secret.as_str()),
                ("scope", account.scope.as_str()),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// A Sinch access token for account `index`.
pub async fn sinch_token(sim: &SimHandle, index: usize) -> String {
    let account = &sim.accounts().sinch[index];
    let (status, body) = read(
        http()
            .post(sim.sinch_token_url())
            .basic_auth(&account.key_id, Some(&account.key_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Refresh a HighLevel token pair: `(access_token, refresh_token)`.
pub async fn highlevel_refresh(
    sim: &SimHandle,
    index: usize,
    refresh: &str,
) -> (StatusCode, Value) {
    let location = &sim.accounts().highlevel[index];
    read(
        http()
            .post(sim.highlevel_token_url())
            .form(&[
                ("client_id", location.client_id.as_str()),
                ("client_secret", location.client_secret.as_str()),
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("user_type", "Location"),
            ])
            .send()
            .await
            .expect("token request"),
    )
    .await
}
