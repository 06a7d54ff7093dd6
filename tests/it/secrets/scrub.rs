//! Provider text that echoes a secret — a 401 quoting the `Authorization` header (Bearer or
//! Basic), a 400 quoting the posted form (client secret, refresh token, URL-encoded) — is
//! scrubbed before it reaches a log line (captured at trace level), `sync_runs.error`,
//! `/readyz` or `status`; and a megabyte of provider text is cut to a few hundred bytes.

use std::sync::Arc;

use convsync::config::HealthConfig;
use convsync::health::{Notifier, Service};
use convsync::http::AuthScheme;
use convsync::http::auth::{ClientCredentials, CredentialPlacement};
use convsync::provider::SetupContext;
use convsync::provider::highlevel::{HighLevelConfig, LocationConfig, setup};
use convsync::secret::{Secret, SecretRef};
use convsync::sync::{CycleOptions, CycleOutcome};
use convsync_sim::{Platform, SimHandle};
use tokio_util::sync::CancellationToken;

use crate::support::StorePool;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::capture::{Capture, trace_capture};
use crate::support::double::{Double, DoubleProvider};
use crate::support::hostile::{Fault, HostileProxy};
use crate::support::world::start_one_provider;
use crate::support::{TestDb, entry_sources, quick_http, schedule, source};

/// Everything a failed run left where people look: the trace log, `sync_runs.error` and
/// the `/readyz` answer of a health endpoint over the same engine.
async fn everything_shown(app: &TestApp, capture: &Capture) -> String {
    let errors: Vec<Option<String>> = sqlx::query_scalar("SELECT error FROM sync_runs")
        .fetch_all(app.store().pool())
        .await
        .unwrap();
    assert!(errors.iter().any(Option::is_some), "a run failed");
    let service = Service::start(
        &HealthConfig {
            listen: "127.0.0.1:0".into(),
            ..HealthConfig::default()
        },
        app.engine(),
        Notifier::disabled(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let readyz = reqwest::get(format!("http://{}/readyz", service.local_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    service.stop().await;
    format!(
        "LOGS:\n{}\nRUNS:\n{}\nREADYZ:\n{readyz}",
        capture.text(),
        errors.into_iter().flatten().collect::<Vec<_>>().join("\n")
    )
}

fn forms_of(secret: &str) -> Vec<String> {
    vec![
        secret.to_owned(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
    ]
}

fn assert_scrubbed(shown: &str, secrets: &[String]) {
    assert!(
        shown.contains("[secret:"),
        "a fingerprint replaces it:\n{shown}"
    );
    for secret in secrets {
        for form in forms_of(secret) {
            assert!(!shown.contains(&form), "{form:?} leaked:\n{shown}");
        }
    }
}

async fn highlevel_sim() -> SimHandle {
    start_one_provider(Platform::HighLevel, 1, 5, 4).await
}

/// One HighLevel location behind `proxy`, with a refresh token or a PIT.
fn highlevel_sources(
    sim: &SimHandle,
    proxy: &HostileProxy,
    secrets: &std::path::Path,
    oauth: bool,
) -> Vec<convsync::config::SourceSettings> {
    let account = &sim.accounts().highlevel[0];
    let file = |name: &str, value: &str| {
        let path = secrets.join(name);
        std::fs::write(&path, value).unwrap();
        SecretRef::File { file: path }
    };
    let config = HighLevelConfig {
        base_url: Some(proxy.base_url.to_string()),
        page_size: 5,
        api_version: None,
        location_id: None,
        locations: vec![LocationConfig {
            id: account.location_id.clone(),
            private_integration_token: (!oauth)
                .then(|| file("pit", &account.private_integration_token)),
            refresh_token: oauth.then(|| file("refresh", &account.refresh_token)),
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
    let setups = setup(&config, &SetupContext { key: "sources[hl]" }).unwrap();
    entry_sources("hl", setups, &schedule())
}

/// One failed HighLevel cycle: a location (OAuth or PIT) behind a proxy that meets
/// `fault` on `path`. Returns the simulator and the daemon, with the trace log captured.
struct Failed {
    sim: SimHandle,
    app: TestApp,
    _db: TestDb,
    _secrets: tempfile::TempDir,
}

async fn fail_highlevel_once(
    oauth: bool,
    path: &'static str,
    faults: impl IntoIterator<Item = Fault>,
) -> Failed {
    let sim = highlevel_sim().await;
    let proxy = HostileProxy::start(sim.highlevel_base_url()).await;
    let secrets = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    for fault in faults {
        proxy.push(path, fault);
    }
    let sources = highlevel_sources(&sim, &proxy, secrets.path(), oauth);
    let app = spawn_app(&db.config(quick_http(), sources)).await;
    let outcome = app.sync_once(Sweep::IfDue).await;
    assert!(matches!(outcome, CycleOutcome::Failed(_)), "{outcome:?}");
    Failed {
        sim,
        app,
        _db: db,
        _secrets: secrets,
    }
}

/// A 401 quoting the Bearer header of a Private Integration Token.
#[tokio::test(flavor = "current_thread")]
async fn an_echoed_bearer_token_is_scrubbed_everywhere() {
    let (capture, _guard) = trace_capture();
    let failed = fail_highlevel_once(
        false,
        "conversations/search",
        [Fault::EchoAuthorization(401)],
    )
    .await;
    let shown = everything_shown(&failed.app, &capture).await;
    assert!(shown.contains("Invalid token"), "{shown}");
    let account = &failed.sim.accounts().highlevel[0];
    assert_scrubbed(
        &shown,
        std::slice::from_ref(&account.private_integration_token),
    );
}

/// A 400 from the token endpoint quoting the posted form: client secret and refresh token,
/// URL-encoded.
#[tokio::test(flavor = "current_thread")]
async fn an_echoed_refresh_form_is_scrubbed_everywhere() {
    let (capture, _guard) = trace_capture();
    let failed = fail_highlevel_once(true, "oauth/token", [Fault::EchoForm(400)]).await;
    let shown = everything_shown(&failed.app, &capture).await;
    assert!(shown.contains("grant_type=refresh_token"), "{shown}");
    let account = &failed.sim.accounts().highlevel[0];
    assert_scrubbed(
        &shown,
        &[account.client_secret.clone(), account.refresh_token.clone()],
    );
}

/// Client credentials (Entra's form fields, Sinch's Basic header) echoed by the token
/// endpoint: a secret with characters that URL-encoding and base64 change.
#[tokio::test(flavor = "current_thread")]
async fn echoed_client_credentials_are_scrubbed_in_every_form() {
    let (capture, _guard) = trace_capture();
    let double = Double::start().await;
    super::credentials::seed(&double);
    let proxy = HostileProxy::start(double.base_url.clone()).await;
    let client_secret = "Zq8~s3cr3t+/=&value.Xy".to_owned();
    let scheme = |placement| {
        AuthScheme::ClientCredentials(ClientCredentials {
            token_url: proxy.base_url.join("token").unwrap(),
            client_id: "client-1".into(),
            client_secret: Secret::configured(client_secret.clone()),
            scope: Some("https://example.invalid/.default".into()),
            placement,
        })
    };
    let db = TestDb::new();
    let provider = Arc::new(DoubleProvider::new(double.base_url.clone(), 50, false));
    let app = spawn_app(&db.config(
        quick_http(),
        vec![
            source(
                "entra",
                provider.clone(),
                scheme(CredentialPlacement::FormFields),
                schedule(),
            ),
            source(
                "sinch",
                provider,
                scheme(CredentialPlacement::BasicHeader),
                schedule(),
            ),
        ],
    ))
    .await;
    // One source at a time, so each meets its own fault.
    for (name, fault) in [
        ("entra", Fault::EchoForm(400)),
        ("sinch", Fault::EchoAuthorization(401)),
    ] {
        proxy.push("token", fault);
        let results = app
            .app
            .sync_once(
                Some(name),
                CycleOptions::default(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(
            matches!(results[0].outcome, CycleOutcome::Failed(_)),
            "{results:?}"
        );
    }
    let shown = everything_shown(&app, &capture).await;
    assert!(
        shown.contains("Basic "),
        "the echo reached the error: {shown}"
    );
    let basic = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("client-1:{client_secret}"))
    };
    assert!(!shown.contains(&basic), "Basic header leaked:\n{shown}");
    assert_scrubbed(&shown, &[client_secret]);
}

/// A megabyte of provider text in an error answer is cut to a few hundred bytes with a
/// marker, in the stored error and every log line.
#[tokio::test(flavor = "current_thread")]
async fn a_megabyte_of_provider_text_is_cut() {
    let (capture, _guard) = trace_capture();
    let huge = "x".repeat(1_000_000);
    let body = format!("{{\"statusCode\":422,\"message\":\"bad id {huge}\"}}");
    let failed =
        fail_highlevel_once(false, "conversations/search", [Fault::Status(422, body)]).await;
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM sync_runs WHERE error IS NOT NULL")
            .fetch_all(failed.app.store().pool())
            .await
            .unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].len() < 1000, "{} bytes", errors[0].len());
    assert!(errors[0].contains("more bytes cut]"), "{}", errors[0]);
    let logs = capture.text();
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4000, "a log line of {longest} bytes");
}

/// A page whose JSON quotes a megabyte of text where a list belongs: the parse error that
/// quotes it is cut before the "malformed page" warnings, the stored error and the final
/// log line.
#[tokio::test(flavor = "current_thread")]
async fn a_megabyte_in_a_malformed_page_is_cut_in_every_log_line() {
    let (capture, _guard) = trace_capture();
    let huge = "y".repeat(1_000_000);
    let body = format!("{{\"conversations\":\"{huge}\",\"total\":1}}");
    // Every fetch of the page, including the engine's re-fetches of a malformed one.
    let failed = fail_highlevel_once(
        false,
        "conversations/search",
        (0..10).map(|_| Fault::Status(200, body.clone())),
    )
    .await;
    let logs = capture.text();
    assert!(logs.contains("malformed page"), "the page was refused");
    let longest = logs.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4000, "a log line of {longest} bytes");
    let errors: Vec<String> =
        sqlx::query_scalar("SELECT error FROM sync_runs WHERE error IS NOT NULL")
            .fetch_all(failed.app.store().pool())
            .await
            .unwrap();
    assert!(errors[0].len() < 1000, "{} bytes", errors[0].len());
}
