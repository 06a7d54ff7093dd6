//! HighLevel agency mode against the simulator over real HTTP: a source configured with
//! the agency's (Company) credential finds the locations where the app is installed at
//! start-up, mints each one's token with the agency's, and runs each as `hl/<locationId>`;
//! a restart runs the installed set of that moment; the agency's rotating refresh token
//! is kept in the vault; a refused location token is minted afresh. On both stores.

use std::path::PathBuf;

use convsync::config::Config;
use convsync::sync::CycleOutcome;
use convsync_sim::{Mutation, Platform, SimHandle};

use crate::support::TestDb;
use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::stores::{Backend, MirrorSql, on_both_stores};
use crate::support::truth::{Truth, TruthSource};
use crate::support::world::start_one_provider_tuned;

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

on_both_stores!(
    an_agency_mirrors_its_installed_locations,
    refused_tokens_are_minted_again,
    an_uninstalled_location_stops_and_keeps_its_rows,
);
