//! The receiver as `convsync run` assembles it: `[webhooks] listen` and the source's
//! `webhook_secret` read from a real configuration file, the engine synced against the
//! simulator, a signed event posted to the receiver's own port, and both paths of
//! `changes_first_seen` on the health endpoint's `/metrics`.

use std::time::Duration;

use base64::Engine as _;
use convsync::config::Config;
use convsync::provider::webhook::signature::hmac_sha256_tag;
use convsync::time::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::support::app::{Sweep, spawn_app};
use crate::support::deploy::{Scrape, SpruceSite};
use crate::support::stores::MirrorSql;

const SECRET: &str = "whsec-daemon-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_takes_signed_events_beside_its_polls() {
    let site = SpruceSite::start(5).await;
    let path = site.write_local_config("127.0.0.1:0");
    let secret_file = path.with_file_name("spruce-webhook.secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    // The file ends in `[sources.spruce]`: the key joins it; then the receiver's section.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "webhook_secret = {{ file = \"{}\" }}\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n",
        secret_file.display()
    ));
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    let app = spawn_app(&config).await;
    let stop = CancellationToken::new();
    let service = super::start_service(&config, &app, &stop).await;
    let health = format!("http://{}/", service.local_addr().unwrap());
    let receiver = format!("http://{}/webhooks/clinic", service.webhook_addr().unwrap());

    // The poll finds the conversations first.
    app.sync_caught_up(Sweep::IfDue).await;
    let id: String = app
        .store()
        .sql_value("SELECT MIN(conversation_id) FROM conversations")
        .await;

    // An event with newer activity and a new title changes the row at once.
    let now = Timestamp::now();
    let body = serde_json::json!({
        "object": "event",
        "id": "wev_daemon_1",
        "type": "conversation.updated",
        "eventTime": now.to_mirror_text(),
        "data": { "object": {
            "object": "conversation",
            "id": id,
            "title": "Renamed by an event",
            "createdAt": "2026-01-01T00:00:00Z",
            "lastMessageAt": now.saturating_sub(Duration::from_secs(1)).to_mirror_text(),
            "archived": false,
        }},
    })
    .to_string();
    let signature = base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256_tag(SECRET.as_bytes(), &[body.as_bytes()]));
    let status = reqwest::Client::new()
        .post(&receiver)
        .header("X-Spruce-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let title: String = app
        .store()
        .sql_value(&format!(
            "SELECT title FROM conversations WHERE conversation_id = '{id}'"
        ))
        .await;
    assert_eq!(title, "Renamed by an event");

    let scrape = Scrape::fetch(&health).await;
    let accepted = [
        ("source", "clinic"),
        ("outcome", "accepted"),
        ("reason", "applied"),
    ];
    assert_eq!(
        scrape.value("convsync_webhook_events_total", &accepted),
        Some(1.0)
    );
    let by = |path| [("source", "clinic"), ("path", path)];
    assert_eq!(
        scrape.value("convsync_changes_first_seen_total", &by("event")),
        Some(1.0)
    );
    // Every row the backfill inserted was a change no event had brought.
    let by_poll = scrape
        .value("convsync_changes_first_seen_total", &by("poll"))
        .unwrap();
    assert!(by_poll >= 5.0, "{by_poll}");
    stop.cancel();
    service.stop().await;
    drop(site);
}
