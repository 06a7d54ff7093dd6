//! Replay after downtime (docs/webhooks.md, "Replay after downtime"): the daemon reads
//! Spruce's delivery log from the simulator at start-up, and the events the simulator
//! dropped while the receiver was down reach the mirror; a replay over events already
//! recorded writes nothing. On both stores, through a real configuration file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use convsync::config::Config;
use convsync::health::webhooks::replay::{MAX_REPLAY_PAGES, ReplayReport, replay_source};
use convsync::sync::Source;
use convsync_sim::{MessageKind, Platform, SimHandle, WebhookFaults, WebhookOutcome};
use tokio_util::sync::CancellationToken;

use crate::support::TestDb;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::deploy::SpruceSite;
use crate::support::stores::{Backend, MirrorSql, on_both_stores};

use super::start_service;

/// Waits (bounded) until every Spruce event the simulator generated was delivered or
/// dropped; returns how many were generated.
async fn settled(sim: &SimHandle) -> u64 {
    for _ in 0..400 {
        let counts = sim.webhook_counts();
        let generated = counts.total(Platform::Spruce, WebhookOutcome::Generated);
        let done = counts.total(Platform::Spruce, WebhookOutcome::Delivered)
            + counts.total(Platform::Spruce, WebhookOutcome::Dropped);
        let handled = counts.total(Platform::Spruce, WebhookOutcome::Handled);
        if generated > 0 && done == generated && handled == generated {
            return generated;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("Spruce webhooks did not settle: {:?}", sim.webhook_counts());
}

async fn deliveries(app: &TestApp) -> i64 {
    app.store()
        .sql_value("SELECT COUNT(*) FROM webhook_deliveries WHERE source = 'clinic'")
        .await
}

async fn activity(app: &TestApp, id: &str) -> String {
    app.store()
        .sql_value(&format!(
            "SELECT CAST(last_activity_at AS TEXT) FROM conversations WHERE conversation_id = '{id}'"
        ))
        .await
}

fn requests(source: &Source) -> u64 {
    source.client.tally().requests.load(Ordering::Relaxed)
}

async fn events_missed_while_down_are_replayed(backend: Backend) {
    let db = TestDb::on(backend).await;
    let site = SpruceSite::start(3).await;
    let account = site.sim.accounts().spruce[0].clone();
    let secret_file = site.dir.path().join("spruce-webhook.secret");
    std::fs::write(&secret_file, &account.webhook_signing_secret).unwrap();
    let mut text = site.config_text(&db.settings.url, "127.0.0.1:0", &site.token_file());
    // The text ends in `[sources.spruce]`: the keys join it; then the receiver's section.
    text.push_str(&format!(
        "webhook_secret = {{ file = \"{}\" }}\nwebhook_endpoint_id = \"{}\"\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n",
        secret_file.display(),
        account.webhook_endpoint_id,
    ));
    let path = site.dir.path().join("convsync.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let app = spawn_app(&config).await;
    app.sync_caught_up(Sweep::IfDue).await;
    let source: Arc<Source> = app.engine().sources()[0].clone();
    let ids: Vec<String> = app
        .store()
        .sql_column("SELECT conversation_id FROM conversations ORDER BY conversation_id")
        .await;
    assert_eq!(ids.len(), 3);
    // Nothing recorded yet: no position, no replay, no request.
    let before = requests(&source);
    let never = CancellationToken::new();
    let none = replay_source(&source, app.store(), MAX_REPLAY_PAGES, &never).await;
    assert_eq!(none.unwrap(), None);
    assert_eq!(requests(&source), before);

    // Up: a message's events are delivered and recorded.
    let stop = CancellationToken::new();
    let service = start_service(&config, &app, &stop).await;
    let receiver = format!("http://{}/webhooks/clinic", service.webhook_addr().unwrap());
    site.sim
        .set_webhook_target(
            Platform::Spruce,
            &site.account,
            Some(receiver.parse().unwrap()),
        )
        .unwrap();
    site.sim
        .add_message(
            Platform::Spruce,
            &site.account,
            &ids[0],
            MessageKind::Inbound,
        )
        .unwrap();
    let delivered = settled(&site.sim).await;
    assert_eq!(deliveries(&app).await, i64::try_from(delivered).unwrap());
    stop.cancel();
    service.stop().await;

    // Down: the simulator drops every event (its delivery log lists them as failed).
    site.sim.set_webhook_faults(
        Platform::Spruce,
        WebhookFaults {
            drop_ratio: 1.0,
            ..WebhookFaults::default()
        },
    );
    let stale = activity(&app, &ids[1]).await;
    site.sim
        .add_message(
            Platform::Spruce,
            &site.account,
            &ids[1],
            MessageKind::Inbound,
        )
        .unwrap();
    site.sim
        .add_message(
            Platform::Spruce,
            &site.account,
            &ids[2],
            MessageKind::Outbound,
        )
        .unwrap();
    let generated = settled(&site.sim).await;
    let dropped = site
        .sim
        .webhook_counts()
        .total(Platform::Spruce, WebhookOutcome::Dropped);
    assert_eq!(dropped, generated - delivered);
    assert!(dropped >= 2, "{dropped}");
    assert_eq!(activity(&app, &ids[1]).await, stale, "no poll ran");

    // Up again: the start-up replay reads the log (one page: fewer than 20 events) and
    // records every dropped event; the receiver's own deliveries are duplicates.
    site.sim
        .set_webhook_faults(Platform::Spruce, WebhookFaults::default());
    let before = requests(&source);
    let stop = CancellationToken::new();
    let service = start_service(&config, &app, &stop).await;
    let expected = i64::try_from(generated).unwrap();
    for _ in 0..400 {
        if deliveries(&app).await == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(deliveries(&app).await, expected);
    assert_eq!(
        requests(&source) - before,
        1,
        "one page of the delivery log"
    );
    assert!(
        activity(&app, &ids[1]).await > stale,
        "the replayed message moved the row"
    );
    stop.cancel();
    service.stop().await;

    // A replay over events all recorded writes nothing and costs one page.
    let before = requests(&source);
    let report = replay_source(&source, app.store(), MAX_REPLAY_PAGES, &never)
        .await
        .unwrap();
    assert_eq!(
        report,
        Some(ReplayReport {
            pages: 1,
            listed: generated,
            recorded: 0,
            duplicates: generated,
            unreadable: 0,
        })
    );
    assert_eq!(requests(&source) - before, 1);
    assert_eq!(deliveries(&app).await, expected);

    // A page cap below the log's length stops the replay with an error (polling covers).
    assert!(
        replay_source(&source, app.store(), 0, &never)
            .await
            .is_err()
    );
    drop(site);
}

on_both_stores!(multi_thread: events_missed_while_down_are_replayed);
