//! Replicas on one PostgreSQL share its token vault: two processes' worth of convsync (two
//! store handles with pools of their own, two authenticators) that use one HighLevel
//! credential refresh it at the same moment, again and again. The simulator's token
//! endpoint spends a refresh token on first use and refuses it after, so one token sent
//! twice would be a refusal: each refresh must run under the vault key's lock and spend the
//! token the previous one stored.

use std::sync::Arc;

use convsync::http::{AuthError, AuthScheme, Authenticator, HttpSettings, build_client};
use convsync::provider::SetupContext;
use convsync::provider::highlevel::{HighLevelConfig, LocationConfig, setup};
use convsync::retry::Transient;
use convsync::secret::SecretRef;
use convsync::store::{Store, StoreSettings};
use convsync_sim::{Platform, SimHandle};
use convsync_testpg::TestPgDb;

use crate::support::world::start_one_provider;
use crate::support::write_file;

/// Rounds of two simultaneous refreshes.
const ROUNDS: u64 = 5;

/// The OAuth (rotating refresh token) scheme of the simulator's first location.
fn rotating_scheme(sim: &SimHandle, secrets: &std::path::Path) -> AuthScheme {
    let account = &sim.accounts().highlevel[0];
    let file = |name: &str, value: &str| SecretRef::File {
        file: write_file(secrets, name, value),
    };
    let config = HighLevelConfig {
        base_url: Some(sim.highlevel_base_url().to_string()),
        page_size: 5,
        api_version: None,
        location_id: None,
        locations: vec![LocationConfig {
            id: account.location_id.clone(),
            private_integration_token: None,
            refresh_token: Some(file("refresh", &account.refresh_token)),
        }],
        private_integration_token: None,
        refresh_token: None,
        client_id: Some(account.client_id.clone()),
        client_secret: Some(file("client-secret", &account.client_secret)),
        webhook_public_key: None,
        company_id: None,
        agency_refresh_token: None,
        app_id: None,
        relist_interval: None,
    };
    let key = "sources[hl]";
    let setups = setup(&config, &SetupContext { key }).expect("valid highlevel config");
    setups.into_iter().next().unwrap().auth
}

/// Whether the simulator takes `authorization` for the location's conversations.
async fn works(sim: &SimHandle, client: &reqwest::Client, authorization: &str) -> bool {
    let location = &sim.accounts().highlevel[0].location_id;
    let url = sim
        .highlevel_base_url()
        .join(&format!("conversations/search?locationId={location}"))
        .unwrap();
    client
        .get(url)
        .header("Authorization", authorization)
        .header("Version", "2021-07-28")
        .send()
        .await
        .unwrap()
        .status()
        .is_success()
}

/// Two replicas refreshing one credential at the same moment take turns: every refresh
/// succeeds, none is refused (no refresh token was sent twice), each round costs exactly
/// two token requests, and both replicas end with access tokens the provider accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_spend_one_refresh_token_twice() {
    let sim = start_one_provider(Platform::HighLevel, 1, 23, 3).await;
    let secrets = tempfile::tempdir().unwrap();
    let scheme = rotating_scheme(&sim, secrets.path());
    let db = TestPgDb::new().await;
    let settings = StoreSettings {
        url: db.url.clone(),
        max_connections: 2,
        ..StoreSettings::default()
    };
    let first = Store::open(&settings).await.unwrap();
    let second = Store::open(&settings).await.unwrap();
    let replicas = [
        Authenticator::new(scheme.clone(), Some(Arc::new(first.clone()))),
        Authenticator::new(scheme, Some(Arc::new(second.clone()))),
    ];
    let client = build_client(&HttpSettings::default()).unwrap();
    sim.reset_counts();

    let mut headers = Vec::new();
    for round in 0..ROUNDS {
        let (a, b) = tokio::join!(
            replicas[0].authorization(&client),
            replicas[1].authorization(&client)
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        assert_ne!(
            a.expose(),
            b.expose(),
            "round {round}: each refreshed itself"
        );
        headers = vec![a, b];
        for replica in &replicas {
            assert!(replica.invalidate().await);
        }
    }

    let counts = sim.request_counts();
    assert_eq!(
        counts.with_status(Platform::HighLevel, "token", Some(200)),
        2 * ROUNDS
    );
    assert_eq!(counts.total(Platform::HighLevel, "token"), 2 * ROUNDS);
    for header in &headers {
        assert!(works(&sim, &client, header.expose()).await);
    }
    let stored = first
        .load_refresh_token(&vault_key(&sim, secrets.path()))
        .await
        .unwrap()
        .unwrap();
    assert!(stored.refused.is_none() && stored.sent_at.is_none());
    first.close().await;
    second.close().await;
}

/// A replica that finds the credential's lock held for longer than `busy_timeout` (another
/// replica stuck mid-refresh) sends nothing and says it will try again; once the holder is
/// gone (its session ends, even without an orderly release) the refresh goes through.
#[tokio::test]
async fn a_refresh_that_waits_out_the_busy_timeout_sends_nothing() {
    let sim = start_one_provider(Platform::HighLevel, 1, 29, 3).await;
    let secrets = tempfile::tempdir().unwrap();
    let scheme = rotating_scheme(&sim, secrets.path());
    let db = TestPgDb::new().await;
    let settings = StoreSettings {
        url: db.url.clone(),
        busy_timeout: std::time::Duration::from_millis(300),
        max_connections: 2,
        ..StoreSettings::default()
    };
    let holder = Store::open(&settings).await.unwrap();
    let replica = Store::open(&settings).await.unwrap();
    let authenticator = Authenticator::new(scheme, Some(Arc::new(replica.clone())));
    let client = build_client(&HttpSettings::default()).unwrap();
    sim.reset_counts();

    let held = holder
        .lock_refresh_token(&vault_key(&sim, secrets.path()))
        .await
        .unwrap();
    let error = authenticator.authorization(&client).await.unwrap_err();
    assert!(
        matches!(error, AuthError::RefreshLocked(_)) && error.is_transient(),
        "{error}"
    );
    assert_eq!(sim.request_counts().total(Platform::HighLevel, "token"), 0);

    drop(held);
    let mut attempts = 0;
    let header = loop {
        attempts += 1;
        match authenticator.authorization(&client).await {
            Ok(header) => break header.unwrap(),
            Err(AuthError::RefreshLocked(_)) if attempts < 50 => {
                // The dropped session ends as soon as the server reads its closed socket.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert!(works(&sim, &client, header.expose()).await);
    assert_eq!(sim.request_counts().total(Platform::HighLevel, "token"), 1);
    holder.close().await;
    replica.close().await;
}

fn vault_key(sim: &SimHandle, secrets: &std::path::Path) -> String {
    match rotating_scheme(sim, secrets) {
        AuthScheme::RotatingRefresh(rr) => rr.vault_key,
        other => panic!("expected a rotating refresh token, got {other:?}"),
    }
}
