//! convsync under systemd-like conditions: a notify socket owned by the test stands in for
//! systemd's. `READY=1` must follow configuration validation and migrations, `WATCHDOG=1`
//! must keep coming while the sources are serviced and stop when one is wedged, and
//! SIGTERM must bring `STOPPING=1` and a clean exit.

use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use convsync::config::HealthConfig;
use convsync::health::{Notifier, NotifyAddress, Service};
use convsync::http::{AuthScheme, HttpResponse, RequestSpec};
use convsync::provider::{Page, ProviderError, Walk, WalkContext, WalkSpec};
use tokio_util::sync::CancellationToken;

use crate::support::app::spawn_app;
use crate::support::deploy::{NotifySocket, PATIENCE, SpruceSite, position};
use crate::support::double::{Double, DoubleProvider};
use crate::support::{TestDb, quick_http, schedule, source};

fn count(messages: &[String], from: usize, needle: &str) -> usize {
    messages
        .iter()
        .skip(from)
        .filter(|m| m.contains(needle))
        .count()
}

/// Migrations known to this build, read from the repository.
fn migration_count() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64
}

async fn applied_migrations(db: &std::path::Path) -> i64 {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let applied = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    applied
}

/// The real `convsync run` sends READY=1 only once the database is migrated, pings the
/// watchdog while it runs, and answers SIGTERM with STOPPING=1 and exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_notifies_ready_after_migrations_pings_and_stops_cleanly() {
    let site = SpruceSite::start(20).await;
    let config = site.write_local_config("127.0.0.1:0");
    let notify = NotifySocket::bind();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let messages = notify
        .wait_for("READY=1", |m| position(m, 0, "READY=1").is_some())
        .await;
    assert_eq!(
        applied_migrations(&site.database_path()).await,
        migration_count(),
        "READY=1 arrived before the schema was migrated: {messages:?}"
    );
    let ready = position(&messages, 0, "READY=1").unwrap();
    assert_eq!(
        count(&messages[..ready], 0, "WATCHDOG=1"),
        0,
        "no watchdog ping before READY=1: {messages:?}"
    );

    notify
        .wait_for("watchdog pings after READY=1", |m| {
            count(m, ready, "WATCHDOG=1") >= 3
        })
        .await;

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{stderr}");
    let messages = notify
        .wait_for("STOPPING=1", |m| position(m, ready, "STOPPING=1").is_some())
        .await;
    assert!(position(&messages, 0, "STOPPING=1").unwrap() > ready);
}

/// A configuration that fails validation ends the process without READY=1, so systemd
/// reports a failed start instead of a running service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_never_reports_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("convsync.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n\n[[sources]]\nname = \"x\"\nprovider = \"fax\"\n",
            dir.path().join("mirror.db").display()
        ),
    )
    .unwrap();
    let notify = NotifySocket::bind();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(".provider") && stderr.contains("fax"),
        "{stderr}"
    );
    let messages = notify.drain().await;
    assert!(
        messages.iter().all(|m| !m.contains("READY=1")),
        "{messages:?}"
    );
}

/// A gate a provider call can be made to block in, like a synchronous call that never
/// returns; released on drop so the runtime can always shut down.
#[derive(Clone, Default)]
struct Wedge {
    state: Arc<(Mutex<WedgeState>, Condvar)>,
}

#[derive(Default)]
struct WedgeState {
    armed: bool,
    entered: bool,
}

impl Wedge {
    fn arm(&self) {
        self.state.0.lock().unwrap().armed = true;
    }

    fn entered(&self) -> bool {
        self.state.0.lock().unwrap().entered
    }

    fn release(&self) {
        self.state.0.lock().unwrap().armed = false;
        self.state.1.notify_all();
    }

    /// Blocks the calling thread while armed.
    fn pass(&self) {
        let (lock, released) = &*self.state;
        let mut state = lock.lock().unwrap();
        if state.armed {
            state.entered = true;
            let _unused = released.wait_while(state, |s| s.armed).unwrap();
        }
    }
}

struct WedgeOnRelease(Wedge);

impl Drop for WedgeOnRelease {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A walk of the double that waits at the wedge before building a request.
struct WedgeableWalk {
    inner: Arc<dyn Walk>,
    wedge: Wedge,
}

impl Walk for WedgeableWalk {
    fn spec(&self) -> WalkSpec {
        self.inner.spec()
    }

    fn build_request(&self, ctx: &WalkContext<'_>) -> Result<RequestSpec, ProviderError> {
        self.wedge.pass();
        self.inner.build_request(ctx)
    }

    fn parse_page(
        &self,
        ctx: &WalkContext<'_>,
        response: &HttpResponse,
    ) -> Result<Page, ProviderError> {
        self.inner.parse_page(ctx, response)
    }
}

/// A source task blocked in a synchronous call stops the watchdog pings (with a status
/// line naming it, and `/healthz` failing) while the rest of the runtime keeps running;
/// the pings resume once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wedged_source_stops_the_watchdog_pings() {
    let double = Double::start().await;
    let wedge = Wedge::default();
    let _release = WedgeOnRelease(wedge.clone());
    // The double's walks, blocking their thread in `build_request` while the wedge is armed.
    let provider = Arc::new(
        DoubleProvider::new(double.base_url.clone(), 10, false).map_walks(|inner| {
            Arc::new(WedgeableWalk {
                inner,
                wedge: wedge.clone(),
            })
        }),
    );
    let mut fast = schedule();
    fast.poll_interval = Duration::from_millis(100);
    let db = TestDb::new();
    let wedgeable = source("wedgeable", provider, AuthScheme::None, fast);
    let app = spawn_app(&db.config(quick_http(), vec![wedgeable])).await;
    let engine = app.engine();
    let notify = NotifySocket::bind();
    let notifier = Notifier::new(
        NotifyAddress::Path(notify.path.clone()),
        Some(Duration::from_secs(1)),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let health = HealthConfig {
        listen: "127.0.0.1:0".into(),
        ..HealthConfig::default()
    };
    // The health service is started here rather than by `run_until_stopped`, so that it
    // notifies the socket this test owns.
    let service = Service::start(&health, engine, notifier, shutdown.clone())
        .await
        .unwrap();
    let healthz = format!("http://{}/healthz", service.local_addr().unwrap());
    let running = tokio::spawn({
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        async move { engine.run(shutdown).await }
    });

    let messages = notify
        .wait_for("READY=1 then pings", |m| {
            position(m, 0, "READY=1").is_some_and(|ready| count(m, ready, "WATCHDOG=1") >= 2)
        })
        .await;
    let healthy_until = messages.len();

    wedge.arm();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !wedge.entered() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the source never reached the wedge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let messages = notify
        .wait_for("the watchdog being withheld", |m| {
            position(m, healthy_until, "STATUS=watchdog withheld").is_some()
        })
        .await;
    let withheld = position(&messages, healthy_until, "STATUS=watchdog withheld").unwrap();
    assert!(
        messages[withheld].contains("wedgeable"),
        "{}",
        messages[withheld]
    );
    let response = reqwest::get(&healthz).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["unserviced"][0]["source"], "wedgeable", "{body}");

    // Several supervisor ticks (every 0.5 s here) pass while the source stays wedged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let messages = notify.messages();
    assert_eq!(
        count(&messages, withheld, "WATCHDOG=1"),
        0,
        "pinged while wedged: {messages:#?}"
    );

    wedge.release();
    let messages = notify
        .wait_for("pings to resume", |m| {
            position(m, withheld, "every source serviced again")
                .is_some_and(|back| count(m, back, "WATCHDOG=1") >= 1)
        })
        .await;
    assert!(position(&messages, withheld, "STOPPING=1").is_none());

    shutdown.cancel();
    running.await.unwrap().unwrap();
    service.stop().await;
    notify
        .wait_for("STOPPING=1", |m| {
            position(m, withheld, "STOPPING=1").is_some()
        })
        .await;
}
