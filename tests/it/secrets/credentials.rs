//! Credentials stay out of logs, and access tokens are fetched, cached and refreshed on 401.

use std::sync::Arc;
use std::time::Duration;

use convsync::http::AuthScheme;
use convsync::http::auth::{ClientCredentials, CredentialPlacement};
use convsync::secret::Secret;
use convsync::time::Timestamp;

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::capture::trace_capture;
use crate::support::double::{Conv, Double, DoubleProvider, Fault};
use crate::support::{TestDb, quick_http, schedule, source};

/// The daemon over the double as source `double`, with an OAuth client-credentials grant.
async fn app_with_client_credentials(double: &Double, db: &TestDb) -> TestApp {
    let provider = Arc::new(DoubleProvider::new(double.base_url.clone(), 50, false));
    let auth = AuthScheme::ClientCredentials(ClientCredentials {
        token_url: double.base_url.join("token").unwrap(),
        client_id: "client-1".into(),
        client_secret: Secret::new(double.client_secret()),
        scope: Some("https://example.invalid/.default".into()),
        placement: CredentialPlacement::FormFields,
    });
    let source = source("double", provider, auth, schedule());
    spawn_app(&db.config(quick_http(), vec![source])).await
}

/// A seeded double and the daemon over it; the database is returned so that it outlives
/// the app.
async fn seeded_app() -> (Double, TestDb, TestApp) {
    let double = Double::start().await;
    seed(&double);
    let db = TestDb::new();
    let app = app_with_client_credentials(&double, &db).await;
    (double, db, app)
}

pub(crate) fn seed(double: &Double) {
    let at = Timestamp::now().saturating_sub(Duration::from_secs(600));
    double.upsert((0..5).map(|i| Conv {
        id: format!("c{i}"),
        updated_at: at,
        name: format!("n{i}"),
        hidden: false,
    }));
}

/// With RUST_LOG=trace, neither the client secret nor the access token appears in any log
/// line, even when a request is refused with 401 and the token is refreshed.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_trace_logs() {
    let (capture, _guard) = trace_capture();

    let double = Double::start().await;
    seed(&double);
    double.push_faults([Fault::Status(
        401,
        r#"{"error":"token expired"}"#.into(),
        vec![],
    )]);
    let db = TestDb::new();
    let app = app_with_client_credentials(&double, &db).await;
    app.sync_caught_up(Sweep::IfDue).await;

    let logs = capture.text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging must be active for this test to mean anything"
    );
    assert!(
        logs.len() > 1000,
        "expected plenty of log output, got {} bytes",
        logs.len()
    );
    assert!(
        !logs.contains(&double.client_secret()),
        "client secret leaked into logs"
    );
    assert!(
        !logs.contains("double-access-token"),
        "access token leaked into logs"
    );
    assert!(
        format!("{:?}", app.engine())
            .find(&double.client_secret())
            .is_none(),
        "secret in Debug output"
    );
}

/// A 401 on a data call refreshes the access token once and retries; the token is
/// otherwise cached across requests and cycles.
#[tokio::test]
async fn access_token_is_cached_and_refreshed_once_on_401() {
    let (double, _db, app) = seeded_app().await;
    app.sync_once(Sweep::IfDue).await;
    app.sync_once(Sweep::IfDue).await;
    assert_eq!(double.token_requests(), 1, "one token for two cycles");

    double.push_faults([Fault::Status(
        401,
        r#"{"error":"token expired"}"#.into(),
        vec![],
    )]);
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(double.token_requests(), 2, "refreshed once after the 401");
}

/// A second 401 after a refresh is a credential problem: the cycle fails, and the error
/// says the credentials were rejected.
#[tokio::test]
async fn persistent_401_fails_as_rejected_credentials() {
    let (double, _db, app) = seeded_app().await;
    let reject = || Fault::Status(401, r#"{"error":"channel not authorized"}"#.into(), vec![]);
    double.push_faults([reject(), reject()]);
    let e = app.sync_once_failed(Sweep::IfDue).await;
    assert!(e.is_fatal(), "{e}");
    assert!(e.to_string().contains("channel not authorized"), "{e}");
}
