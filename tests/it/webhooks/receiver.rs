//! The receiver over loopback, with Spruce's real signature scheme (the signature module
//! signs in the test), on both stores: a signed event changes the mirror; forged, unsigned,
//! replayed and oversized requests are refused and write nothing; a retry is written once;
//! the figures show on the metrics text, which a Prometheus parser reads.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use convsync::config::WebhookSettings;
use convsync::health::webhooks::{Receiver, WebhookMetrics, WebhookTarget, serve};
use convsync::provider::spruce::SpruceProvider;
use convsync::provider::webhook::signature::hmac_sha256_tag;
use convsync::secret::Secret;
use convsync::store::Store;
use convsync::time::Timestamp;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::TestDb;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

const SECRET: &str = "whsec-test-spruce-endpoint";

/// A Spruce envelope (docs/webhooks.md, Spruce) about conversation `c1`, titled `title`.
fn conversation_event(id: &str, sent: Timestamp, title: &str) -> String {
    let conversation = serde_json::json!({
        "object": "conversation",
        "id": "entity_c1",
        "title": title,
        "createdAt": "2026-12-01T10:00:00Z",
        "lastMessageAt": sent.saturating_sub(Duration::from_secs(1)).to_mirror_text(),
        "archived": false,
    });
    serde_json::json!({
        "object": "event",
        "id": id,
        "type": "conversation.updated",
        "eventTime": sent.to_mirror_text(),
        "data": { "object": conversation },
    })
    .to_string()
}

fn signature(body: &str, key: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256_tag(key.as_bytes(), &[body.as_bytes()]))
}

struct Running {
    url: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    client: reqwest::Client,
}

impl Running {
    async fn start(store: &Store, metrics: Arc<WebhookMetrics>) -> Running {
        let provider = SpruceProvider::new(
            "entity_org".into(),
            url::Url::parse("http://127.0.0.1:9/").unwrap(),
            200,
            true,
        )
        .with_webhooks(Secret::new(SECRET.into()));
        let settings = WebhookSettings {
            max_body_bytes: 16 * 1024,
            ..WebhookSettings::default()
        };
        let receiver = Arc::new(Receiver::new(
            vec![WebhookTarget {
                entry: "clinic".into(),
                source: "clinic".into(),
                provider: Arc::new(provider),
            }],
            store.clone(),
            settings,
            metrics,
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, receiver, stop.clone()));
        Running {
            url: format!("http://{addr}/webhooks/clinic"),
            stop,
            server,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, url: &str, body: &str, signature: Option<&str>) -> u16 {
        let mut request = self.client.post(url).body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("X-Spruce-Signature", signature);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// POSTs `body` signed with `key`.
    async fn signed(&self, url: &str, body: &str, key: &str) -> u16 {
        self.post(url, body, Some(&signature(body, key))).await
    }

    async fn stop(self) {
        self.stop.cancel();
        self.server.await.unwrap();
    }
}

/// Everything the receiver could have written: the mirror's rows and the deliveries.
async fn written(store: &Store) -> (Vec<String>, i64) {
    let rows = store
        .sql_column(
            "SELECT conversation_id || ':' || COALESCE(title, '') FROM conversations ORDER BY 1",
        )
        .await;
    let deliveries = store
        .sql_value("SELECT COUNT(*) FROM webhook_deliveries")
        .await;
    (rows, deliveries)
}

async fn signed_events_change_the_mirror_and_refused_ones_nothing(backend: Backend) {
    let db = TestDb::on(backend).await;
    let store = db.open().await;
    let metrics = Arc::new(WebhookMetrics::default());
    let running = Running::start(&store, metrics.clone()).await;
    let url = running.url.clone();
    let body = conversation_event("wev_1", Timestamp::now(), "Ann");

    // Forged, unsigned, tampered: 401, nothing written.
    assert_eq!(running.signed(&url, &body, "another key").await, 401);
    assert_eq!(running.post(&url, &body, None).await, 401);
    let tampered = body.replace("Ann", "Eve");
    assert_eq!(
        running
            .post(&url, &tampered, Some(&signature(&body, SECRET)))
            .await,
        401
    );
    assert_eq!(written(&store).await, (vec![], 0));

    // Replayed: signed, but sent an hour ago (beyond the window and Spruce's retry
    // horizon): refused, nothing written.
    let old = conversation_event(
        "wev_0",
        Timestamp::now().saturating_sub(Duration::from_secs(3600)),
        "Old",
    );
    assert_eq!(running.signed(&url, &old, SECRET).await, 400);
    // Oversized: 413 before anything is checked.
    let huge = conversation_event("wev_big", Timestamp::now(), &"x".repeat(20 * 1024));
    assert_eq!(running.signed(&url, &huge, SECRET).await, 413);
    // Signed but not an envelope: 400.
    let junk = "{\"object\":\"event\"}";
    assert_eq!(
        running
            .post(&url, junk, Some(&signature(junk, SECRET)))
            .await,
        400
    );
    // Another entry's path: 404.
    let elsewhere = url.replace("/clinic", "/other");
    assert_eq!(running.signed(&elsewhere, &body, SECRET).await, 404);
    assert_eq!(written(&store).await, (vec![], 0));

    // Signed and fresh: 200 and the mirror has it; the retry is written once.
    assert_eq!(running.signed(&url, &body, SECRET).await, 200);
    assert_eq!(written(&store).await, (vec!["entity_c1:Ann".to_owned()], 1));
    assert_eq!(running.signed(&url, &body, SECRET).await, 200);
    assert_eq!(written(&store).await, (vec!["entity_c1:Ann".to_owned()], 1));
    let next = conversation_event("wev_2", Timestamp::now(), "Ann B.");
    assert_eq!(running.signed(&url, &next, SECRET).await, 200);
    assert_eq!(
        written(&store).await,
        (vec!["entity_c1:Ann B.".to_owned()], 2)
    );
    // Spruce's own late retry (its retries keep `eventTime`, up to 20 minutes): past the
    // 5-minute replay window, inside it widened by Spruce's retry horizon, so accepted and
    // recorded; being older than the state applied, it leaves the row alone.
    let late_retry = conversation_event(
        "wev_late",
        Timestamp::now().saturating_sub(Duration::from_secs(15 * 60)),
        "Late",
    );
    assert_eq!(running.signed(&url, &late_retry, SECRET).await, 200);
    assert_eq!(
        written(&store).await,
        (vec!["entity_c1:Ann B.".to_owned()], 3)
    );
    running.stop().await;

    // The figures, as /metrics shows them.
    let mut registry = Registry::default();
    metrics.register(
        registry.sub_registry_with_prefix("convsync"),
        convsync::sync::SourceRegistry::default(),
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for (line, count) in [
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="rejected",reason="bad_signature"}"#,
            2,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="rejected",reason="missing_signature"}"#,
            1,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="rejected",reason="stale"}"#,
            1,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="rejected",reason="too_large"}"#,
            1,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="rejected",reason="malformed"}"#,
            1,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="accepted",reason="applied"}"#,
            2,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="duplicate",reason="duplicate"}"#,
            1,
        ),
        (
            r#"convsync_webhook_events_total{source="clinic",outcome="accepted",reason="stale"}"#,
            1,
        ),
        (
            r#"convsync_changes_first_seen_total{source="clinic",path="event"}"#,
            2,
        ),
        (
            r#"convsync_changes_first_seen_total{source="clinic",path="poll"}"#,
            0,
        ),
        (
            r#"convsync_webhook_receive_to_commit_seconds_count{source="clinic"}"#,
            4,
        ),
        (
            r#"convsync_webhook_event_to_commit_seconds_count{source="clinic"}"#,
            4,
        ),
    ] {
        assert!(
            text.lines().any(|l| l == format!("{line} {count}")),
            "{line} {count} missing from:\n{text}"
        );
    }
    parses_as_prometheus(&text);
    store.close().await;
}

/// A Prometheus parser (the one the health endpoint's tests scrape with) reads the text
/// and finds each family with its type.
fn parses_as_prometheus(text: &str) {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the metrics text parses");
    for (name, histogram) in [
        ("convsync_webhook_events_total", false),
        ("convsync_changes_first_seen_total", false),
        ("convsync_webhook_event_to_commit_seconds", true),
        ("convsync_webhook_receive_to_commit_seconds", true),
    ] {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("{name} not parsed from:\n{text}"));
        assert_eq!(
            matches!(sample.value, prometheus_parse::Value::Histogram(_)),
            histogram,
            "{name}: {:?}",
            sample.value
        );
    }
}

on_both_stores!(signed_events_change_the_mirror_and_refused_ones_nothing);
