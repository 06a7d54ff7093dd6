//! Outgoing webhooks, received by a tiny loopback receiver: each provider's signature
//! verifies with its documented scheme, each fault happens at its rate (the same seed
//! repeating it), retries stop where each provider's policy says, non-loopback targets
//! are refused, and Spruce's delivery log pages by twenty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine as _;
use convsync_sim::{
    EditField, HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM, MessageKind, Mutation, Platform, SimHandle,
    WebhookCounts, WebhookFaults, WebhookOutcome,
};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::support::{self, http, read};

/// One request as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    /// Serve on an ephemeral loopback port, answering `status`; returns the base URL.
    async fn start(status: u16) -> (Receiver, url::Url) {
        let receiver = Receiver::default();
        receiver.status.store(status, Ordering::Relaxed);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let address = listener.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .fallback(record)
            .with_state(receiver.clone())
            .layer(axum::extract::DefaultBodyLimit::disable());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{address}/webhooks/").parse().expect("url");
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("receiver lock").clone()
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    receiver.got.lock().expect("receiver lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    StatusCode::from_u16(receiver.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK)
}

/// Wait (bounded) until every generated event of `provider` is handled (every copy
/// sent) and settled (delivered, failed, dropped or lost to a full outbox).
async fn settled(sim: &SimHandle, provider: Platform) -> WebhookCounts {
    for _ in 0..1200 {
        let counts = sim.webhook_counts();
        let generated = counts.total(provider, WebhookOutcome::Generated);
        let settled = [
            WebhookOutcome::Delivered,
            WebhookOutcome::Failed,
            WebhookOutcome::Dropped,
            WebhookOutcome::Overflowed,
        ]
        .iter()
        .map(|o| counts.total(provider, *o))
        .sum::<u64>();
        let handled = counts.total(provider, WebhookOutcome::Handled);
        if generated > 0 && settled == generated && handled == generated {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "webhooks of {provider} did not settle: {:?}",
        sim.webhook_counts()
    );
}

fn hmac_base64(key: &str, parts: &[&[u8]]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).expect("any key");
    for part in parts {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn spruce_valid(secret: &str, got: &Received) -> bool {
    got.header("x-spruce-signature") == hmac_base64(secret, &[&got.body])
}

fn sinch_valid(sim: &SimHandle, got: &Received) -> bool {
    let secret = &sim.accounts().sinch[0].webhook_secret;
    let nonce = got.header("x-sinch-webhook-signature-nonce");
    let timestamp = got.header("x-sinch-webhook-signature-timestamp");
    let expected = hmac_base64(
        secret,
        &[
            &got.body,
            b".",
            nonce.as_bytes(),
            b".",
            timestamp.as_bytes(),
        ],
    );
    got.header("x-sinch-webhook-signature-algorithm") == "HmacSHA256"
        && got.header("x-sinch-webhook-signature") == expected
}

fn highlevel_valid(got: &Received) -> bool {
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect::<String>(),
        )
        .expect("PEM body is base64");
    let Ok(signature) =
        base64::engine::general_purpose::STANDARD.decode(got.header("x-wh-signature"))
    else {
        return false;
    };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
        .verify(&got.body, &signature)
        .is_ok()
}

/// Ids of the open, undeleted conversations of account 0.
async fn open_ids(sim: &SimHandle, provider: Platform) -> Vec<String> {
    let key = first_key(sim, provider);
    sim.truth(provider, &key)
        .await
        .expect("truth")
        .into_iter()
        .filter(|c| !c.deleted && c.state == convsync_sim::ConversationState::Active)
        .map(|c| c.id)
        .collect()
}

/// The key of `provider`'s first account.
fn first_key(sim: &SimHandle, provider: Platform) -> String {
    sim.accounts().keys(provider)[0].clone()
}

#[tokio::test]
async fn every_providers_events_verify_with_its_documented_scheme() {
    let sim = support::start(|_| {}).await;
    let (receiver, base) = Receiver::start(200).await;
    for provider in Platform::ALL {
        let key = first_key(&sim, provider);
        let url = base.join(&format!("{provider}")).expect("url");
        sim.set_webhook_target(provider, &key, Some(url))
            .expect("loopback target");
    }
    let spruce = first_key(&sim, Platform::Spruce);
    sim.create_conversations(Platform::Spruce, &spruce, 1)
        .expect("spruce create");
    let sinch = first_key(&sim, Platform::Sinch);
    let created = sim
        .create_conversations(Platform::Sinch, &sinch, 1)
        .expect("sinch create");
    sim.close(Platform::Sinch, &sinch, &created[0])
        .expect("sinch close");
    let location = first_key(&sim, Platform::HighLevel);
    let created = sim
        .create_conversations(Platform::HighLevel, &location, 1)
        .expect("highlevel create");
    sim.edit(
        Platform::HighLevel,
        &location,
        &created[0],
        EditField::Starred,
    )
    .expect("highlevel starred");
    sim.mutate(Platform::HighLevel, &location, Mutation::AppInstall)
        .expect("install");
    let d365 = first_key(&sim, Platform::D365);
    let open = open_ids(&sim, Platform::D365).await;
    sim.add_message(Platform::D365, &d365, &open[0], MessageKind::Outbound)
        .expect("d365 message");
    sim.close(Platform::D365, &d365, &open[0])
        .expect("d365 close");
    for provider in Platform::ALL {
        settled(&sim, provider).await;
    }

    let got = receiver.got();
    let of = |name: &str| -> Vec<&Received> {
        got.iter()
            .filter(|r| r.path.starts_with(&format!("/webhooks/{name}")))
            .collect()
    };
    // Spruce: conversation.created, then the first item.
    let spruce_got = of("spruce");
    let types: Vec<Value> = spruce_got
        .iter()
        .map(|r| r.json()["type"].clone())
        .collect();
    assert_eq!(types, ["conversation.created", "conversationItem.created"]);
    for r in &spruce_got {
        assert!(
            spruce_valid(&sim.accounts().spruce[0].webhook_signing_secret, r),
            "Spruce signature"
        );
        let body = r.json();
        assert_eq!(body["object"], "event");
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with("wev_")));
        assert!(body["eventTime"].is_string());
        assert!(body["data"]["object"]["object"].is_string());
    }
    // Sinch: start, inbound message, stop.
    let sinch_got = of("sinch");
    let fields: Vec<bool> = sinch_got
        .iter()
        .map(|r| {
            let b = r.json();
            assert_eq!(b["app_id"], sim.accounts().sinch[0].app_id);
            b.get("conversation_start_notification").is_some()
                || b.get("message").is_some()
                || b.get("conversation_stop_notification").is_some()
        })
        .collect();
    assert_eq!(fields, [true, true, true]);
    assert_eq!(
        sinch_got[2].json()["conversation_stop_notification"]["conversation"]["active"],
        false
    );
    assert!(
        sinch_got.iter().all(|r| sinch_valid(&sim, r)),
        "Sinch signature"
    );
    // HighLevel: inbound message, unread update (starred), install.
    let highlevel_got = of("highlevel");
    let types: Vec<Value> = highlevel_got
        .iter()
        .map(|r| r.json()["type"].clone())
        .collect();
    assert_eq!(
        types,
        ["InboundMessage", "ConversationUnreadUpdate", "INSTALL"]
    );
    for r in &highlevel_got {
        assert!(highlevel_valid(r), "HighLevel signature");
        let body = r.json();
        assert_eq!(body["locationId"], location);
        assert!(body["webhookId"].is_string() && body["timestamp"].is_string());
    }
    // D365: the agent's message and the closure, on the activities path, with the token.
    let d365_got = of("d365");
    assert_eq!(d365_got.len(), 2);
    for r in &d365_got {
        assert_eq!(
            r.path,
            format!("/webhooks/d365/v3/conversations/{}/activities", open[0])
        );
        assert_eq!(r.header("x-ms-token"), sim.accounts().d365[0].webhook_token);
        assert_eq!(r.json()["conversation"]["id"], open[0].as_str());
    }
    assert_eq!(d365_got[1].json()["name"], "ConversationClosed");
    sim.shutdown().await;
}

/// What one faulty run leaves: the counters, what the receiver got, the delivery log's
/// ids and the signing secret.
struct FaultyRun {
    counts: WebhookCounts,
    got: Vec<Received>,
    log: Vec<Value>,
    secret: String,
}

/// 400 Spruce events under every fault at once (retries immediate).
async fn faulty_run() -> FaultyRun {
    let sim = support::start(|o| o.webhook_retry_scale = 0.0).await;
    let (receiver, base) = Receiver::start(200).await;
    let spruce = first_key(&sim, Platform::Spruce);
    sim.set_webhook_target(
        Platform::Spruce,
        &spruce,
        Some(base.join("spruce-0").expect("url")),
    )
    .expect("target");
    sim.set_webhook_faults(
        Platform::Spruce,
        WebhookFaults {
            drop_ratio: 0.1,
            duplicate_ratio: 0.1,
            delay_ratio: 0.05,
            delay_ms: 20,
            reorder_ratio: 0.05,
            forge_ratio: 0.1,
            replay_ratio: 0.1,
            replay_age_ms: 600_000,
            oversize_ratio: 0.05,
            oversize_bytes: 100_000,
        },
    );
    let (counts, log) = spruce_messages(&sim, 400, MessageKind::Outbound).await;
    let secret = sim.accounts().spruce[0].webhook_signing_secret.clone();
    sim.shutdown().await;
    FaultyRun {
        counts,
        got: receiver.got(),
        log,
        secret,
    }
}

/// `n` messages of `kind` spread over Spruce account 0's open conversations; once their
/// events settled, the counters and the whole delivery log.
async fn spruce_messages(
    sim: &SimHandle,
    n: usize,
    kind: MessageKind,
) -> (WebhookCounts, Vec<Value>) {
    let spruce = first_key(sim, Platform::Spruce);
    let open = open_ids(sim, Platform::Spruce).await;
    for i in 0..n {
        sim.add_message(Platform::Spruce, &spruce, &open[i % open.len()], kind)
            .expect("message");
    }
    let counts = settled(sim, Platform::Spruce).await;
    (counts, delivery_log(sim, None).await)
}

/// Every event of account 0's delivery log, page by page (pages of 20, the last short).
async fn delivery_log(sim: &SimHandle, end: Option<&str>) -> Vec<Value> {
    let account = &sim.accounts().spruce[0];
    let url = sim
        .spruce_base_url()
        .join(&format!(
            "v1/webhooks/endpoints/{}/events",
            account.webhook_endpoint_id
        ))
        .expect("url");
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = http().get(url.clone()).bearer_auth(&account.api_token);
        if let Some(t) = &token {
            request = request.query(&[("paginationToken", t)]);
        }
        if let Some(end) = end {
            request = request.query(&[("endTime", end)]);
        }
        let (status, body) = read(request.send().await.expect("log page")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["events"].as_array().expect("events").clone();
        if body["hasMore"] != true {
            assert!(page.len() <= 20);
            assert!(body.get("paginationToken").is_none());
            events.extend(page);
            return events;
        }
        assert_eq!(page.len(), 20);
        events.extend(page);
        token = body["paginationToken"].as_str().map(str::to_owned);
    }
}

#[tokio::test]
async fn each_fault_happens_at_its_rate_and_the_same_seed_repeats_it() {
    let run = faulty_run().await;
    let counts = &run.counts;
    let n = counts.total(Platform::Spruce, WebhookOutcome::Generated);
    assert_eq!(n, 400);
    let near = |outcome: WebhookOutcome, rate: f64| {
        let count = counts.total(Platform::Spruce, outcome);
        let expected = rate * n as f64;
        // Five standard deviations of a binomial draw.
        let slack = 5.0 * (n as f64 * rate * (1.0 - rate)).sqrt();
        assert!(
            (count as f64 - expected).abs() <= slack,
            "{outcome:?}: {count} events, expected about {expected}"
        );
        usize::try_from(count).expect("small")
    };
    let dropped = near(WebhookOutcome::Dropped, 0.1);
    let sent = 400 - dropped;
    // Every draw is taken for every event, but a dropped event shows no other fault.
    let duplicated = near(WebhookOutcome::Duplicated, 0.1 * 0.9);
    let forged = near(WebhookOutcome::Forged, 0.1 * 0.9);
    let replayed = near(WebhookOutcome::Replayed, 0.1 * 0.9);
    let oversized = near(WebhookOutcome::Oversized, 0.05 * 0.9);
    let delayed = near(WebhookOutcome::Delayed, 0.05 * 0.9);
    let reordered = counts.total(Platform::Spruce, WebhookOutcome::Reordered);
    assert!(delayed + usize::try_from(reordered).expect("small") > 0);
    assert_eq!(
        counts.total(Platform::Spruce, WebhookOutcome::Delivered),
        sent as u64
    );

    // The receiver saw exactly what the counters say.
    let got = &run.got;
    assert_eq!(
        got.len() as u64,
        counts.total(Platform::Spruce, WebhookOutcome::Attempt)
    );
    assert_eq!(got.len(), sent + duplicated + forged + replayed);
    let forgeries = got.iter().filter(|r| !spruce_valid(&run.secret, r)).count();
    assert_eq!(forgeries, forged);
    // Only a 401 counts a forged copy as refused; this receiver answered every copy 200.
    assert_eq!(
        counts.total(Platform::Spruce, WebhookOutcome::ForgedRefused),
        0
    );
    let now = "2026-03-01T12:00:00.000Z";
    let stale = got
        .iter()
        .filter(|r| spruce_valid(&run.secret, r) && r.json()["eventTime"] != now)
        .count();
    assert_eq!(stale, replayed);
    let big: std::collections::HashSet<String> = got
        .iter()
        .filter(|r| r.body.len() >= 100_000)
        .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(big.len(), oversized);
    // Genuine events: each delivered once or twice (duplicates), in an order that is not
    // the order of the changes (delays and reorders).
    let genuine: Vec<String> = got
        .iter()
        .filter(|r| spruce_valid(&run.secret, r) && r.json()["eventTime"] == now)
        .map(|r| r.json()["id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(genuine.len(), sent + duplicated);
    let mut first_seen: Vec<&String> = Vec::new();
    for id in &genuine {
        if !first_seen.contains(&id) {
            first_seen.push(id);
        }
    }
    let delivered_in_log: Vec<&str> = run
        .log
        .iter()
        .filter(|e| e["delivery"]["status"] == "delivered")
        .map(|e| e["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(first_seen.len(), delivered_in_log.len());
    assert_ne!(
        first_seen.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        delivered_in_log,
        "delays and reorders change the arrival order"
    );
    // The log lists every event, the dropped ones as failed.
    assert_eq!(run.log.len(), 400);
    assert_eq!(
        run.log
            .iter()
            .filter(|e| e["delivery"]["status"] == "failed")
            .count(),
        dropped
    );

    let again = faulty_run().await;
    assert_eq!(again.counts, run.counts, "same seed, same faults");
}

/// Attempts the receiver sees for one event of `provider` answered with `status`.
async fn attempts_for(provider: Platform, status: u16) -> (usize, WebhookCounts) {
    let sim = support::start(|o| o.webhook_retry_scale = 0.0001).await;
    let (receiver, base) = Receiver::start(status).await;
    let key = first_key(&sim, provider);
    sim.set_webhook_target(provider, &key, Some(base.join("x").expect("url")))
        .expect("target");
    let open = open_ids(&sim, provider).await;
    let kind = if provider == Platform::D365 {
        MessageKind::Outbound
    } else {
        MessageKind::Inbound
    };
    if provider == Platform::HighLevel {
        // One event only: a new conversation is an InboundMessage alone.
        sim.create_conversations(provider, &key, 1).expect("create");
    } else {
        sim.add_message(provider, &key, &open[0], kind)
            .expect("message");
    }
    let counts = settled(&sim, provider).await;
    let seen = receiver.got().len();
    sim.shutdown().await;
    (seen, counts)
}

#[tokio::test]
async fn retries_stop_where_each_providers_policy_says() {
    // Spruce: any failure, every 2 minutes, 10 attempts in all.
    let (seen, counts) = attempts_for(Platform::Spruce, 500).await;
    assert_eq!(seen, 10);
    assert_eq!(counts.total(Platform::Spruce, WebhookOutcome::Retried), 9);
    assert_eq!(counts.total(Platform::Spruce, WebhookOutcome::Failed), 1);
    // HighLevel: a 500 is final; a 429 is retried 6 times.
    let (seen, counts) = attempts_for(Platform::HighLevel, 500).await;
    assert_eq!(seen, 1);
    assert_eq!(counts.total(Platform::HighLevel, WebhookOutcome::Failed), 1);
    let (seen, _) = attempts_for(Platform::HighLevel, 429).await;
    assert_eq!(seen, 7);
    // D365: 3 retries. Sinch: 5 retries (the schedule is unpublished).
    let (seen, _) = attempts_for(Platform::D365, 503).await;
    assert_eq!(seen, 4);
    let (seen, _) = attempts_for(Platform::Sinch, 500).await;
    assert_eq!(seen, 6);
    // A success ends it at once.
    let (seen, counts) = attempts_for(Platform::Spruce, 204).await;
    assert_eq!(seen, 1);
    assert_eq!(counts.total(Platform::Spruce, WebhookOutcome::Delivered), 1);
}

#[tokio::test]
async fn only_loopback_targets_are_accepted() {
    let sim = support::start(|_| {}).await;
    let key = first_key(&sim, Platform::Spruce);
    for url in [
        "http://10.0.0.1/webhooks/x",
        "http://example.com/webhooks/x",
        "http://localhost/webhooks/x",
        "https://127.0.0.1/webhooks/x",
        "http://[2001:db8::1]/webhooks/x",
    ] {
        let refused =
            sim.set_webhook_target(Platform::Spruce, &key, Some(url.parse().expect("url")));
        assert!(refused.is_err(), "{url} must be refused");
    }
    assert_eq!(sim.webhook_counts().refused_targets, 5);
    for url in [
        "http://127.0.0.1:9/x",
        "http://127.8.9.10:9/x",
        "http://[::1]:9/x",
    ] {
        sim.set_webhook_target(Platform::Spruce, &key, Some(url.parse().expect("url")))
            .expect("loopback is fine");
    }
    // Over the control API too, and at start.
    let client = sim.client();
    assert!(
        client
            .set_webhook_target(
                Platform::Spruce,
                &key,
                Some("http://192.0.2.1/".parse().expect("url"))
            )
            .await
            .is_err()
    );
    sim.shutdown().await;
    let started = convsync_sim::Simulator::start(convsync_sim::SimOptions {
        webhook_base: Some("http://192.0.2.1/webhooks/".parse().expect("url")),
        activity_rate: 0.0,
        conversations: 5,
        ..convsync_sim::SimOptions::default()
    })
    .await;
    assert!(started.is_err(), "--webhook-base must be loopback");
}

#[tokio::test]
async fn the_delivery_log_pages_by_twenty_behind_spruce_auth() {
    let sim = support::start(|_| {}).await;
    let (_receiver, base) = Receiver::start(200).await;
    let spruce = first_key(&sim, Platform::Spruce);
    sim.set_webhook_target(
        Platform::Spruce,
        &spruce,
        Some(base.join("s").expect("url")),
    )
    .expect("target");
    sim.set_webhook_faults(
        Platform::Spruce,
        WebhookFaults {
            drop_ratio: 0.25,
            ..WebhookFaults::default()
        },
    );
    let (counts, log) = spruce_messages(&sim, 45, MessageKind::Inbound).await;
    assert_eq!(log.len(), 45, "three pages: 20, 20, 5");
    let failed = log
        .iter()
        .filter(|e| e["delivery"]["status"] == "failed")
        .count() as u64;
    assert_eq!(
        failed,
        counts.total(Platform::Spruce, WebhookOutcome::Dropped)
    );
    assert!(failed > 0);
    for event in &log {
        let delivery = &event["delivery"];
        assert_eq!(delivery["attemptLimit"], 10);
        let data: Value = serde_json::from_str(event["data"].as_str().expect("data is a string"))
            .expect("data holds the envelope");
        assert_eq!(data["id"], event["id"]);
        assert_eq!(data["eventTime"], event["eventTime"]);
        if delivery["status"] == "delivered" {
            assert_eq!(delivery["attempts"], 1);
            assert!(delivery["deliveryTime"].is_string());
        }
    }
    // The time window filters; the simulated clock is frozen at noon.
    assert!(
        delivery_log(&sim, Some("2026-03-01T11:00:00Z"))
            .await
            .is_empty()
    );
    // Spruce's auth and errors apply.
    let account = &sim.accounts().spruce[0];
    let url = |endpoint: &str| {
        sim.spruce_base_url()
            .join(&format!("v1/webhooks/endpoints/{endpoint}/events"))
            .expect("url")
    };
    let (status, _) = read(
        http()
            .get(url(&account.webhook_endpoint_id))
            .send()
            .await
            .expect("no token"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = read(
        http()
            .get(url("wde_OTHER"))
            .bearer_auth(&account.api_token)
            .send()
            .await
            .expect("other endpoint"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = read(
        http()
            .get(url(&account.webhook_endpoint_id))
            .query(&[("paginationToken", "nonsense")])
            .bearer_auth(&account.api_token)
            .send()
            .await
            .expect("bad token"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_drives_webhooks_and_d365_can_send_a_bearer_token() {
    let sim =
        support::start(|o| o.d365_header_names = convsync_sim::options::D365HeaderNames::Plain)
            .await;
    let (receiver, base) = Receiver::start(200).await;
    let client = sim.client();
    let d365 = first_key(&sim, Platform::D365);
    client
        .set_webhook_target(
            Platform::D365,
            &d365,
            Some(base.join("d365-0").expect("url")),
        )
        .await
        .expect("target over the control API");
    let faults = WebhookFaults {
        duplicate_ratio: 1.0,
        ..WebhookFaults::default()
    };
    client
        .set_webhook_faults(Platform::D365, &faults)
        .await
        .expect("faults over the control API");
    assert_eq!(sim.webhook_faults(Platform::D365), faults);
    let open = open_ids(&sim, Platform::D365).await;
    sim.close(Platform::D365, &d365, &open[0]).expect("close");
    settled(&sim, Platform::D365).await;
    let counts = client.webhook_counts().await.expect("counts");
    assert_eq!(counts, sim.webhook_counts());
    assert_eq!(
        counts.of(Platform::D365, &d365, WebhookOutcome::Delivered),
        1
    );
    assert_eq!(
        counts.of(Platform::D365, &d365, WebhookOutcome::Duplicated),
        1
    );
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body, "a duplicate is byte for byte");
    // A 2025-09 tenant sends an Entra access token (a JWT) that its published keys verify.
    let authorization = got[0].header("authorization");
    let token = authorization
        .strip_prefix("Bearer ")
        .expect("a bearer token");
    assert_eq!(token.split('.').count(), 3, "{token}");
    assert_eq!(got[0].header("x-ms-token"), "");
    let d365_account = &sim.accounts().d365[0];
    let keys = http()
        .get(
            sim.urls()
                .d365
                .join(&format!("{}/discovery/v2.0/keys", d365_account.tenant_id))
                .expect("url"),
        )
        .send()
        .await
        .expect("signing keys")
        .text()
        .await
        .expect("text");
    assert_eq!(keys, convsync_sim::entra::TEST_JWKS);
    let pem = http()
        .get(
            sim.control_url()
                .join("webhooks/highlevel-public-key")
                .expect("url"),
        )
        .send()
        .await
        .expect("public key")
        .text()
        .await
        .expect("text");
    assert_eq!(pem, HIGHLEVEL_WEBHOOK_PUBLIC_KEY_PEM);
    client.reset_webhook_counts().await.expect("reset");
    assert!(sim.webhook_counts().entries.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn several_lanes_deliver_every_event_once() {
    let sim = support::start(|o| o.webhook_concurrency = 8).await;
    let (receiver, base) = Receiver::start(200).await;
    let sinch = first_key(&sim, Platform::Sinch);
    sim.set_webhook_target(
        Platform::Sinch,
        &sinch,
        Some(base.join("sinch-0").expect("url")),
    )
    .expect("target");
    let open = open_ids(&sim, Platform::Sinch).await;
    for i in 0..200 {
        sim.add_message(
            Platform::Sinch,
            &sinch,
            &open[i % open.len()],
            MessageKind::Inbound,
        )
        .expect("message");
    }
    let counts = settled(&sim, Platform::Sinch).await;
    assert_eq!(
        counts.total(Platform::Sinch, WebhookOutcome::Delivered),
        200
    );
    let ids: std::collections::HashSet<Value> = receiver
        .got()
        .iter()
        .filter(|r| sinch_valid(&sim, r))
        .map(|r| r.json()["message"]["id"].clone())
        .collect();
    assert_eq!(ids.len(), 200);
    assert_eq!(receiver.got().len(), 200);
    sim.shutdown().await;
}
