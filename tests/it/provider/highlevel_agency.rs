//! HighLevel agency mode against the simulator over real HTTP: a source configured with
//! the agency's (Company) credential finds the locations where the app is installed at
//! start-up, mints each one's token with the agency's, and runs each as `hl/<locationId>`;
//! a restart runs the installed set of that moment; the agency's rotating refresh token
//! is kept in the vault; a refused location token is minted afresh. On both stores.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use convsync::sim_config::write_highlevel_public_key;
use convsync::time::Timestamp;
use convsync_sim::{WebhookFaults, WebhookOutcome};
use tokio_util::sync::CancellationToken;

use convsync::config::Config;
use convsync::sync::CycleOutcome;
use convsync_sim::{Mutation, Platform, SimHandle};

use crate::support::TestDb;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Truth, TruthSource};
use crate::support::world::start_one_provider_tuned;
use crate::webhooks::start_service;

const HL: Platform = Platform::HighLevel;
const SEARCH: &str = "GET /conversations/search";
const TOKEN: &str = "POST /oauth/token";
const MINT: &str = "POST /oauth/locationToken";
const LISTING: &str = "GET /oauth/installedLocations";

/// The simulator's agency with three locations, a mirror database, and the config file
/// a user would write for the agency.
struct AgencyBed {
    sim: SimHandle,
    db: TestDb,
    dir: tempfile::TempDir,
}

impl AgencyBed {
    async fn start(backend: Backend) -> AgencyBed {
        let sim = start_one_provider_tuned(HL, 3, 11, 24, |_| {}).await;
        AgencyBed {
            sim,
            db: TestDb::on(backend).await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn location(&self, index: usize) -> String {
        self.sim.accounts().highlevel[index].location_id.clone()
    }

    fn uninstall(&self, index: usize) {
        self.sim
            .mutate(HL, &self.location(index), Mutation::AppUninstall)
            .unwrap();
    }

    fn install(&self, index: usize) {
        self.sim
            .mutate(HL, &self.location(index), Mutation::AppInstall)
            .unwrap();
    }

    fn secret(&self, name: &str, value: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, value).unwrap();
        path
    }

    /// The documented agency configuration: company id, the agency's refresh token and the
    /// app's client, no locations.
    fn config(&self) -> Config {
        self.db.load_config(&self.config_file())
    }

    /// The agency configuration with the app's webhooks verified and received on a
    /// loopback port, polls `poll_interval` apart and the locations listed again every
    /// `relist_interval`.
    fn config_with_webhooks(&self, poll_interval: &str, relist_interval: &str) -> Config {
        let key = self.dir.path().join("highlevel-webhook-public-key.pem");
        write_highlevel_public_key(&key).unwrap();
        let agency = std::fs::read_to_string(self.config_file()).unwrap();
        let agency = agency.replace(
            "provider = \"highlevel\"\n",
            &format!("provider = \"highlevel\"\npoll_interval = \"{poll_interval}\"\n"),
        );
        let path = self.dir.path().join("convsync-webhooks.toml");
        std::fs::write(
            &path,
            format!(
                "[health]\nlisten = \"127.0.0.1:0\"\n\n[webhooks]\nlisten = \"127.0.0.1:0\"\n\n{agency}webhook_public_key = \"{}\"\nrelist_interval = \"{relist_interval}\"\n",
                key.display()
            ),
        )
        .unwrap();
        self.db.load_config(&path)
    }

    /// The file of [`AgencyBed::config`].
    fn config_file(&self) -> PathBuf {
        let agency = self.sim.accounts().highlevel_agency.clone().unwrap();
        let location = &self.sim.accounts().highlevel[0];
        let refresh = self.secret("agency.refresh", &agency.refresh_token);
        let client_secret = self.secret("client.secret", &location.client_secret);
        let path = self.dir.path().join("convsync.toml");
        std::fs::write(
            &path,
            format!(
                "[[sources]]\nname = \"hl\"\nprovider = \"highlevel\"\n\n\
                 [sources.highlevel]\nbase_url = \"{}\"\npage_size = 10\n\
                 company_id = \"{}\"\nagency_refresh_token = {{ file = \"{}\" }}\n\
                 client_id = \"{}\"\nclient_secret = {{ file = \"{}\" }}\n",
                self.sim.highlevel_base_url(),
                agency.company_id,
                refresh.display(),
                location.client_id,
                client_secret.display(),
            ),
        )
        .unwrap();
        path
    }

    /// The daemon over the agency, following the truth of the locations it runs.
    async fn app(&self) -> TestApp {
        let app = spawn_app(&self.config()).await;
        let accounts = &self.sim.accounts().highlevel;
        let truth = app
            .engine()
            .sources()
            .iter()
            .map(|source| {
                let index = accounts
                    .iter()
                    .position(|a| source.name == format!("hl/{}", a.location_id))
                    .expect("a simulated location");
                TruthSource::highlevel(&self.sim, index, &source.name)
            })
            .collect();
        app.following(Truth::simulator(&self.sim, truth))
    }

    fn count(&self, endpoint: &str, status: u16) -> u64 {
        self.sim
            .request_counts()
            .with_status(HL, endpoint, Some(status))
    }

    async fn rows(&self, app: &TestApp, index: usize) -> i64 {
        app.store()
            .sql_value(&format!(
                "SELECT COUNT(*) FROM conversations WHERE source = 'hl/{}'",
                self.location(index)
            ))
            .await
    }
}

fn names(app: &TestApp) -> Vec<String> {
    let mut names: Vec<String> = app
        .engine()
        .sources()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    names
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// An agency source runs exactly the locations where the app is installed, each with a
/// token minted from the agency's; a restart runs the installed set of that moment (an
/// uninstalled location's rows stay), with the agency's rotated refresh token from the
/// vault.
async fn an_agency_mirrors_its_installed_locations(backend: Backend) {
    let bed = AgencyBed::start(backend).await;
    let (a, b, c) = (bed.location(0), bed.location(1), bed.location(2));
    bed.uninstall(2);

    let app = bed.app().await;
    assert_eq!(
        names(&app),
        sorted(vec![format!("hl/{a}"), format!("hl/{b}")])
    );
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    assert_eq!(bed.count(LISTING, 200), 1, "one listing page");
    assert_eq!(
        bed.count(TOKEN, 200),
        1,
        "one agency refresh for both locations"
    );
    assert_eq!(bed.count(MINT, 200), 2, "one minted token per location");
    let searches = bed.sim.request_counts().total(HL, SEARCH);
    assert_eq!(bed.count(SEARCH, 200), searches, "no search refused");
    assert!(bed.rows(&app, 0).await > 0 && bed.rows(&app, 1).await > 0);
    assert_eq!(bed.rows(&app, 2).await, 0);
    app.app.close().await;

    // Reinstalled in c, removed from a: the restart runs b and c; a's rows stay.
    bed.install(2);
    bed.uninstall(0);
    let app = bed.app().await;
    assert_eq!(
        names(&app),
        sorted(vec![format!("hl/{b}"), format!("hl/{c}")])
    );
    app.sync_caught_up(Sweep::IfDue).await;
    app.assert_mirror_matches_truth().await;
    assert!(
        bed.rows(&app, 0).await > 0,
        "an uninstalled location's rows stay"
    );
    assert_eq!(
        bed.count(TOKEN, 200),
        2,
        "the rotated agency token authenticated"
    );
    assert_eq!(
        bed.sim.request_counts().total_refresh_token_reuses(),
        0,
        "a spent agency refresh token is never presented again"
    );
    let stored: Vec<String> = app
        .store()
        .sql_column("SELECT token FROM refresh_tokens")
        .await;
    let initial = bed
        .sim
        .accounts()
        .highlevel_agency
        .clone()
        .unwrap()
        .refresh_token;
    assert_eq!(stored.len(), 1, "one chain: the agency's");
    assert_ne!(stored[0], initial);
}

/// `check-config` accepts the agency file and shows its entry as the installed locations
/// listed at start (it requests nothing).
#[test]
fn check_config_shows_an_agency_entry() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bed = runtime.block_on(AgencyBed::start(Backend::Sqlite));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_convsync"))
        .arg("--config")
        .arg(bed.config_file())
        .arg("check-config")
        .env_remove("CONVSYNC_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hl/*"), "{stdout}");
    assert!(
        stdout.contains("each installed location, listed at start"),
        "{stdout}"
    );
    assert_eq!(
        bed.sim.request_counts().total(HL, LISTING),
        0,
        "nothing requested"
    );
}

/// Revoked access tokens: a location's search is refused once, its token is minted again;
/// the mint refused with the agency's revoked token renews the agency's once.
async fn refused_tokens_are_minted_again(backend: Backend) {
    let bed = AgencyBed::start(backend).await;
    let (a, b) = (bed.location(0), bed.location(1));
    bed.uninstall(2);
    let app = bed.app().await;
    app.sync_caught_up(Sweep::IfDue).await;

    bed.sim.revoke_tokens(HL);
    app.cycle_caught_up(&format!("hl/{a}"), Sweep::IfDue).await;
    app.cycle_caught_up(&format!("hl/{b}"), Sweep::IfDue).await;
    assert_eq!(bed.count(SEARCH, 401), 2, "one refusal per location");
    assert_eq!(bed.count(MINT, 401), 1, "the revoked agency token, once");
    assert_eq!(bed.count(TOKEN, 200), 2, "the agency renewed once");
    assert_eq!(bed.count(MINT, 200), 4, "each location minted twice");
    app.assert_mirror_matches_truth().await;
}

/// A location uninstalled while convsync runs: its next search is refused, no token is
/// minted for it any more, and its source stops with its credential refused (the daemon
/// sends it no further request); the other location keeps syncing and the rows stay.
async fn an_uninstalled_location_stops_and_keeps_its_rows(backend: Backend) {
    let bed = AgencyBed::start(backend).await;
    let (a, b) = (bed.location(0), bed.location(1));
    bed.uninstall(2);
    let app = bed.app().await;
    app.sync_caught_up(Sweep::IfDue).await;
    let rows = bed.rows(&app, 0).await;

    bed.uninstall(0);
    match app.cycle(&format!("hl/{a}"), Sweep::IfDue).await {
        CycleOutcome::Failed(e) => assert!(e.is_fatal(), "{e}"),
        other => panic!("expected the credential refused, got {other:?}"),
    }
    assert_eq!(bed.count(SEARCH, 401), 1, "one search refused");
    assert_eq!(bed.count(MINT, 400), 1, "one mint refused: not installed");
    app.cycle_caught_up(&format!("hl/{b}"), Sweep::IfDue).await;
    assert_eq!(
        bed.count(SEARCH, 401),
        1,
        "the other location is unaffected"
    );
    assert_eq!(bed.rows(&app, 0).await, rows, "its rows stay");
}

/// Waits until `what` holds; the test fails after a bound, never on timing alone.
async fn until(what: &str, holds: impl Fn() -> bool) {
    for _ in 0..3_000 {
        if holds() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// Runs the engine as `convsync run` does, until `stop`, and waits until each of `synced`
/// finished a cycle.
async fn run_until_synced(
    app: &TestApp,
    stop: &CancellationToken,
    synced: [&str; 2],
) -> tokio::task::JoinHandle<Result<(), convsync::sync::EngineError>> {
    let engine = app.engine().clone();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { engine.run(stop).await }
    });
    until("the locations synced", || {
        synced.iter().all(|name| cycled(app, name, None))
    })
    .await;
    running
}

/// Whether every HighLevel event the simulator generated was answered 2xx.
fn settled(sim: &SimHandle) -> bool {
    let counts = sim.webhook_counts();
    let total = |o| counts.total(HL, o);
    total(WebhookOutcome::Handled) == total(WebhookOutcome::Generated)
        && total(WebhookOutcome::Delivered) == total(WebhookOutcome::Generated)
}

/// Whether the running source `name` finished a cycle after `after` (or at all).
fn cycled(app: &TestApp, name: &str, after: Option<Timestamp>) -> bool {
    app.engine()
        .registry()
        .find(name)
        .and_then(|s| s.progress.state().last_success_at)
        .is_some_and(|at| after.is_none_or(|after| at > after))
}

/// Verified AppInstall and AppUninstall events act while convsync runs: an install starts
/// the location with a token minted from the agency's (no restart, no second listing); a
/// forged install and a repeated one start nothing; an uninstall retires the location's
/// poller at once (it sends no further request, not even the refused search the sim would
/// answer) and keeps its rows, while the other locations keep polling. On PostgreSQL the
/// new location's scope is leased like the others.
async fn app_installs_and_uninstalls_apply_while_running(backend: Backend) {
    let bed = AgencyBed::start(backend).await;
    let (a, b, c) = (bed.location(0), bed.location(1), bed.location(2));
    let (hl_a, hl_b, hl_c) = (format!("hl/{a}"), format!("hl/{b}"), format!("hl/{c}"));
    bed.uninstall(2);
    let config = bed.config_with_webhooks("10s", "1h");
    let app = spawn_app(&config).await;
    let stop = CancellationToken::new();
    let service = start_service(&config, &app, &stop).await;
    let addr = service.webhook_addr().expect("the receiver listens");
    for key in bed.sim.accounts().keys(HL) {
        let url = format!("http://{addr}/webhooks/hl").parse().unwrap();
        bed.sim.set_webhook_target(HL, &key, Some(url)).unwrap();
    }
    let running = run_until_synced(&app, &stop, [&hl_a, &hl_b]).await;
    assert_eq!(bed.count(MINT, 200), 2);

    // A forged install (signed with no key HighLevel holds): refused, nothing starts.
    let company = bed
        .sim
        .accounts()
        .highlevel_agency
        .clone()
        .unwrap()
        .company_id;
    let forged = format!(
        r#"{{"type":"INSTALL","appId":"app","locationId":"{c}","companyId":"{company}","timestamp":{}}}"#,
        Timestamp::now().epoch_millis()
    );
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/hl"))
        .header("x-wh-signature", "Zm9yZ2Vk")
        .body(forged)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert_eq!(names(&app), sorted(vec![hl_a.clone(), hl_b.clone()]));

    // A genuine install, delivered twice: c runs once, its token minted once.
    bed.sim.set_webhook_faults(
        HL,
        WebhookFaults {
            duplicate_ratio: 1.0,
            ..WebhookFaults::default()
        },
    );
    bed.install(2);
    until("the installed location synced", || {
        cycled(&app, &hl_c, None)
    })
    .await;
    assert_eq!(
        names(&app),
        sorted(vec![hl_a.clone(), hl_b.clone(), hl_c.clone()])
    );
    // Another install event for a running location starts nothing.
    bed.sim.set_webhook_faults(HL, WebhookFaults::default());
    bed.install(2);
    until("every install event answered", || settled(&bed.sim)).await;
    assert_eq!(
        bed.sim
            .webhook_counts()
            .total(HL, WebhookOutcome::Duplicated),
        1,
        "the first install was delivered twice"
    );
    assert_eq!(names(&app).len(), 3, "no location started twice");
    assert_eq!(bed.count(MINT, 200), 3, "one more minted token: c's");
    assert_eq!(bed.count(LISTING, 200), 1, "no listing besides the start's");
    assert!(bed.rows(&app, 2).await > 0, "c is mirrored");
    let held = || app.engine().replica_progress().held.load(Ordering::Relaxed);
    if backend == Backend::Postgres {
        assert_eq!(held(), 3, "c's scope is leased like a's and b's");
    }
    assert_eq!(
        app.store()
            .sql_value::<i64>(&format!(
                "SELECT COUNT(*) FROM webhook_deliveries WHERE source = '{hl_c}' AND kind = 'INSTALL'"
            ))
            .await,
        2,
        "the genuine installs recorded once each (the duplicate deduped)"
    );

    // Uninstall c: its poller stops at once, its rows stay, a and b keep polling.
    let retired = app.engine().registry().find(&hl_c).unwrap();
    let rows = bed.rows(&app, 2).await;
    bed.uninstall(2);
    until("c retired", || {
        app.engine().registry().find(&hl_c).is_none()
    })
    .await;
    let requests = retired.client.tally().by_status();
    let since = [&hl_a, &hl_b].map(|n| {
        app.engine()
            .registry()
            .find(n)
            .unwrap()
            .progress
            .state()
            .last_success_at
    });
    until("a and b polled again", || {
        cycled(&app, &hl_a, since[0]) && cycled(&app, &hl_b, since[1])
    })
    .await;
    assert_eq!(
        retired.client.tally().by_status(),
        requests,
        "no request for the retired location"
    );
    assert_eq!(bed.count(MINT, 400), 0, "no mint tried for it");
    assert_eq!(bed.rows(&app, 2).await, rows, "its rows stay");
    if backend == Backend::Postgres {
        assert_eq!(held(), 2, "c's lease released");
    }

    stop.cancel();
    running.await.unwrap().unwrap();
    service.stop().await;
}

/// Installs and uninstalls whose events were lost (here: no receiver at all) are caught by
/// the periodic re-listing: the installed location starts, the uninstalled one is retired
/// before it sends another request.
async fn the_relisting_catches_lost_installs_and_uninstalls(backend: Backend) {
    let bed = AgencyBed::start(backend).await;
    let (a, b, c) = (bed.location(0), bed.location(1), bed.location(2));
    let (hl_a, hl_b, hl_c) = (format!("hl/{a}"), format!("hl/{b}"), format!("hl/{c}"));
    bed.uninstall(2);
    let app = spawn_app(&bed.config_with_webhooks("1h", "10s")).await;
    let stop = CancellationToken::new();
    let running = run_until_synced(&app, &stop, [&hl_a, &hl_b]).await;

    bed.install(2);
    until("the re-listing started c", || cycled(&app, &hl_c, None)).await;
    assert_eq!(bed.count(MINT, 200), 3, "c's token minted once");
    assert!(bed.rows(&app, 2).await > 0, "c is mirrored");

    let retired = app.engine().registry().find(&hl_a).unwrap();
    let requests = retired.client.tally().by_status();
    let listings = bed.count(LISTING, 200);
    bed.uninstall(0);
    until("the re-listing retired a", || {
        app.engine().registry().find(&hl_a).is_none()
    })
    .await;
    assert!(bed.count(LISTING, 200) > listings);
    assert_eq!(
        names(&app),
        sorted(vec![hl_b.clone(), hl_c.clone()]),
        "b and c run on"
    );
    assert_eq!(
        retired.client.tally().by_status(),
        requests,
        "a sent nothing more"
    );
    assert_eq!(bed.count(MINT, 400), 0, "no mint tried for a");
    assert!(bed.rows(&app, 0).await > 0, "a's rows stay");

    stop.cancel();
    running.await.unwrap().unwrap();
}

on_both_stores!(
    an_agency_mirrors_its_installed_locations,
    refused_tokens_are_minted_again,
    an_uninstalled_location_stops_and_keeps_its_rows,
    app_installs_and_uninstalls_apply_while_running,
    the_relisting_catches_lost_installs_and_uninstalls,
);
