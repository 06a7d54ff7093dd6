//! The health endpoint of a running engine against the simulator: `/metrics` parses as
//! Prometheus text and follows the provider's activity, `/readyz` says which source is
//! behind and why, `/healthz` reflects the supervisor.

use convsync::config::Config;
use convsync::health::{Notifier, Service};
use convsync::store::Store;
use convsync_sim::{MessageKind, Platform};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::deploy::{Scrape, SpruceSite};

/// An engine over the simulator with its health endpoint on a free loopback port.
pub(crate) struct Served {
    site: SpruceSite,
    app: TestApp,
    pub(crate) service: Service,
    pub(crate) base: String,
}

impl Served {
    pub(crate) async fn start() -> Served {
        let site = SpruceSite::start(30).await;
        let config = Config::load(&site.write_local_config("127.0.0.1:0")).unwrap();
        let app = spawn_app(&config).await;
        let service = Service::start(
            &config.health,
            app.engine(),
            Notifier::disabled(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        let base = format!("http://{}/", service.local_addr().unwrap());
        Served {
            site,
            app,
            service,
            base,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.app.store()
    }

    pub(crate) async fn sync(&self) {
        self.app.sync_caught_up(Sweep::IfDue).await;
    }

    /// Waits for the supervisor's first verdict (`/healthz` 200) and returns its body.
    async fn wait_alive(&self) -> Value {
        let deadline = tokio::time::Instant::now() + crate::support::deploy::PATIENCE;
        loop {
            let (status, body) = self.get("healthz").await;
            if status == 200 {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never alive: {body}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

const CLINIC: &[(&str, &str)] = &[("source", "clinic"), ("provider", "spruce")];

/// `/metrics` is valid Prometheus text whose watermark lag drops when the provider shows
/// new activity and the mirror catches up, alongside the row, request and cycle figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_the_lag_gauge_follows_provider_activity() {
    let served = Served::start().await;
    let before = Scrape::fetch(&served.base).await;
    assert_eq!(
        before.value("convsync_watermark_lag_seconds", CLINIC),
        None,
        "no watermark before the first cycle"
    );
    let build = before.sample(
        "convsync_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    assert!(build.is_some(), "build info with the version");

    served.sync().await;
    let first = Scrape::fetch(&served.base).await;
    let lag_after_backfill = first
        .value("convsync_watermark_lag_seconds", CLINIC)
        .expect("lag gauge");
    assert!(lag_after_backfill > 0.0);
    let inserted = first
        .value(
            "convsync_rows_total",
            &[("source", "clinic"), ("change", "inserted")],
        )
        .unwrap();
    assert_eq!(inserted, served.site.visible_truth().await.len() as f64);
    assert!(
        first
            .value(
                "convsync_requests_total",
                &[("source", "clinic"), ("status", "200")]
            )
            .unwrap()
            >= 1.0
    );
    assert_eq!(first.value("convsync_cycles_total", CLINIC), Some(1.0));
    assert_eq!(first.value("convsync_source_ready", CLINIC), Some(1.0));
    let histogram = first
        .sample("convsync_cycle_duration_seconds", CLINIC)
        .expect("cycle histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let total = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
            assert_eq!(total, 1.0, "one cycle observed: {buckets:?}");
        }
        other => panic!("cycle duration is not a histogram: {other:?}"),
    }

    let idle = Scrape::fetch(&served.base).await;
    let lag_idle = idle
        .value("convsync_watermark_lag_seconds", CLINIC)
        .unwrap();
    assert!(
        lag_idle >= lag_after_backfill,
        "computed at scrape time: it never shrinks without activity"
    );

    let (conversation, _) = served.site.visible_truth().await.remove(0);
    served
        .site
        .sim
        .add_message(
            Platform::Spruce,
            &served.site.account,
            &conversation,
            MessageKind::Inbound,
        )
        .unwrap();
    served.sync().await;
    let after = Scrape::fetch(&served.base).await;
    let lag_after_activity = after
        .value("convsync_watermark_lag_seconds", CLINIC)
        .unwrap();
    assert!(
        lag_after_activity < lag_after_backfill,
        "new activity mirrored: lag {lag_after_activity} s, was {lag_after_backfill} s"
    );
    assert_eq!(
        after.value(
            "convsync_rows_total",
            &[("source", "clinic"), ("change", "updated")]
        ),
        Some(1.0)
    );
    assert_eq!(after.value("convsync_cycles_total", CLINIC), Some(2.0));
    served.service.stop().await;
}

/// `/readyz` is 503 naming the late source until it completes a cycle, then 200 with the
/// database writable; `/healthz` is 200 while the supervisor runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_late_sources_until_they_complete_a_cycle() {
    let served = Served::start().await;
    let (status, body) = served.get("readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"]["writable"], true, "{body}");
    assert_eq!(body["sources"][0]["source"], "clinic");
    assert_eq!(body["sources"][0]["state"], "late");
    let reason = body["sources"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no cycle completed yet"), "{reason}");

    served.sync().await;
    let (status, body) = served.get("readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["sources"][0]["state"], "ok");
    assert!(body["sources"][0].get("reason").is_none(), "{body}");

    let body = served.wait_alive().await;
    assert_eq!(body["alive"], true);
    assert_eq!(body["unserviced"], serde_json::json!([]));
    served.service.stop().await;
}

/// `convsync health` exits 0 against a ready endpoint and 1 (printing the verdict)
/// against one that is not, without any configuration file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command_exit_status_follows_readyz() {
    let served = Served::start().await;
    served.wait_alive().await;
    let probe = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convsync"));
        command
            .args(["health", "--url", &served.base])
            .args(extra)
            .env(
                "CONVSYNC_CONFIG",
                served.site.dir.path().join("absent.toml"),
            );
        command.output().unwrap()
    };
    let not_ready = tokio::task::block_in_place(|| probe(&[]));
    assert_eq!(not_ready.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_ready.stdout).contains("no cycle completed yet"));
    let live = tokio::task::block_in_place(|| probe(&["--live"]));
    assert_eq!(
        live.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&live.stdout)
    );

    served.sync().await;
    let ready = tokio::task::block_in_place(|| probe(&[]));
    assert_eq!(
        ready.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ready.stdout)
    );
    served.service.stop().await;
}
