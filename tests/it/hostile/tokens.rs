//! HighLevel's single-use refresh tokens against a token endpoint that applies a refresh
//! and then loses the answer (dropped connection, truncated body, no answer until the
//! timeout): the location reports exactly what happened and how to recover, the other
//! location keeps syncing, a restart never sends the spent token again, and
//! `convsync credentials set-refresh-token` (the real binary) brings the location back.
//! Also: monthly rotation of an idle location and the warning before a token's year ends.

use std::process::Stdio;
use std::time::Duration;

use convsync::config::{Schedule, SourceSettings};
use convsync::http::AuthScheme;
use convsync::http::StoredRefreshToken;
use convsync::provider::SetupContext;
use convsync::provider::highlevel::{HighLevelConfig, LocationConfig, setup};
use convsync::secret::{Secret, SecretRef};
use convsync::sync::{CycleOutcome, OnceResult};
use convsync::time::Timestamp;
use convsync_sim::{Platform, SimHandle};

use crate::support::app::{Sweep, TestApp, spawn_app};
use crate::support::hostile::{Fault, HostileProxy};
use crate::support::world::start_one_provider;
use crate::support::{TestDb, entry_sources, quick_http, schedule, write_file};

const SOURCE: &str = "hl";

/// Two locations behind a hostile proxy: the first with OAuth (rotating refresh token), the
/// second with a Private Integration Token.
struct Bed {
    sim: SimHandle,
    proxy: HostileProxy,
    db: TestDb,
    secrets: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Bed {
        let sim = start_one_provider(Platform::HighLevel, 2, 11, 8).await;
        let proxy = HostileProxy::start(sim.highlevel_base_url()).await;
        Bed {
            sim,
            proxy,
            db: TestDb::new(),
            secrets: tempfile::tempdir().unwrap(),
        }
    }

    fn location(&self, index: usize) -> String {
        self.sim.accounts().highlevel[index].location_id.clone()
    }

    fn oauth_source(&self) -> String {
        format!("{SOURCE}/{}", self.location(0))
    }

    fn initial_refresh_token(&self) -> String {
        self.sim.accounts().highlevel[0].refresh_token.clone()
    }

    fn secret_file(&self, name: &str, value: &str) -> SecretRef {
        let file = self.secrets.path().join(name);
        std::fs::write(&file, value).unwrap();
        SecretRef::File { file }
    }

    fn config(&self) -> HighLevelConfig {
        let accounts = &self.sim.accounts().highlevel;
        HighLevelConfig {
            base_url: Some(self.proxy.base_url.to_string()),
            page_size: 5,
            api_version: None,
            location_id: None,
            locations: vec![
                LocationConfig {
                    id: accounts[0].location_id.clone(),
                    private_integration_token: None,
                    refresh_token: Some(self.secret_file("refresh", &accounts[0].refresh_token)),
                },
                LocationConfig {
                    id: accounts[1].location_id.clone(),
                    private_integration_token: Some(
                        self.secret_file("pit", &accounts[1].private_integration_token),
                    ),
                    refresh_token: None,
                },
            ],
            private_integration_token: None,
            refresh_token: None,
            client_id: Some(accounts[0].client_id.clone()),
            client_secret: Some(self.secret_file("client-secret", &accounts[0].client_secret)),
            webhook_public_key: None,
            company_id: None,
            agency_refresh_token: None,
            app_id: None,
            relist_interval: None,
        }
    }

    fn sources(&self, schedule: &Schedule) -> Vec<SourceSettings> {
        let key = format!("sources[{SOURCE}]");
        let setups =
            setup(&self.config(), &SetupContext { key: &key }).expect("valid highlevel config");
        entry_sources(SOURCE, setups, schedule)
    }

    /// The daemon over both locations as configured.
    async fn app(&self) -> TestApp {
        self.app_over(self.sources(&schedule())).await
    }

    async fn app_over(&self, sources: Vec<SourceSettings>) -> TestApp {
        spawn_app(&self.db.config(quick_http(), sources)).await
    }

    /// The vault key of the OAuth location.
    fn vault_key(&self) -> String {
        match &self.sources(&schedule())[0].setup.auth {
            AuthScheme::RotatingRefresh(rr) => rr.vault_key.clone(),
            other => panic!("expected a rotating refresh token, got {other:?}"),
        }
    }
}

/// The OAuth location's vault entry.
async fn stored(bed: &Bed, app: &TestApp) -> StoredRefreshToken {
    app.store()
        .load_refresh_token(&bed.vault_key())
        .await
        .unwrap()
        .expect("the token is in the vault once a refresh was tried")
}

fn outcome<'a>(results: &'a [OnceResult], source: &str) -> &'a CycleOutcome {
    &results
        .iter()
        .find(|r| r.source == source)
        .unwrap_or_else(|| panic!("no result for {source}"))
        .outcome
}

/// A daemon over `sources` fails the OAuth location's cycle (fatally or not, as `fatal`
/// says) while the stored refresh token records neither a send nor a refusal; the daemon
/// is closed before the test goes on.
async fn assert_refresh_fails_unspent(bed: &Bed, sources: &[SourceSettings], fatal: bool) {
    let app = bed.app_over(sources.to_vec()).await;
    let results = app.sync_all(Sweep::IfDue).await;
    match outcome(&results, &bed.oauth_source()) {
        CycleOutcome::Failed(e) => assert_eq!(e.is_fatal(), fatal, "{e}"),
        other => panic!("expected a failure (fatal: {fatal}), got {other:?}"),
    }
    let stored = stored(bed, &app).await;
    assert!(stored.sent_at.is_none() && stored.refused.is_none());
    app.app.close().await;
}

/// Runs one `sync --once` and checks the lost-answer outcome: the OAuth location fails
/// fatally with the recovery command, the PIT location catches up.
async fn assert_reported_and_other_location_syncs(bed: &Bed, app: &TestApp) {
    let results = app.sync_all(Sweep::IfDue).await;
    match outcome(&results, &bed.oauth_source()) {
        CycleOutcome::Failed(e) => {
            assert!(e.is_fatal(), "{e}");
            let message = convsync::error_text::error_chain(e);
            assert!(
                message.contains("was lost")
                    && message.contains(&format!(
                        "convsync credentials set-refresh-token --source {}",
                        bed.oauth_source()
                    )),
                "{message}"
            );
            assert!(!message.contains(&bed.initial_refresh_token()), "{message}");
        }
        other => panic!("expected a fatal failure, got {other:?}"),
    }
    let other = format!("{SOURCE}/{}", bed.location(1));
    assert!(
        matches!(outcome(&results, &other), CycleOutcome::CaughtUp),
        "{:?}",
        outcome(&results, &other)
    );
}

/// The refresh is applied upstream and its answer lost in `fault`'s way: the retry re-reads
/// the vault and sends the possibly spent token once, learns it is spent, says so with the
/// recovery command; a restart sends nothing at all.
async fn lost_answer_is_reported_and_never_resent_after_restart(fault: Fault) {
    let bed = Bed::start().await;
    let initial = bed.initial_refresh_token();
    bed.proxy.push("oauth/token", fault);

    {
        let app = bed.app().await;
        assert_reported_and_other_location_syncs(&bed, &app).await;
        app.app.close().await;
    }
    assert_eq!(
        bed.proxy.refresh_tokens_sent(),
        vec![initial.clone(), initial.clone()],
        "the applied refresh, then one re-read attempt with the possibly spent token"
    );

    // A restart: the vault remembers the refusal, nothing is sent again.
    let app = bed.app().await;
    assert_reported_and_other_location_syncs(&bed, &app).await;
    assert_eq!(
        bed.proxy.refresh_tokens_sent().len(),
        2,
        "a restart never sends a refused refresh token"
    );
    let stored = stored(&bed, &app).await;
    let refusal = stored.refused.expect("the refusal is recorded");
    assert!(refusal.after_lost_answer);
}

/// The connection closes after the refresh was applied, before any answer.
#[tokio::test]
async fn refresh_answer_dropped_after_apply() {
    lost_answer_is_reported_and_never_resent_after_restart(Fault::DropAfterApply).await;
}

/// The answer's body is cut in half after the refresh was applied.
#[tokio::test]
async fn refresh_answer_truncated_after_apply() {
    lost_answer_is_reported_and_never_resent_after_restart(Fault::TruncateAfterApply).await;
}

/// No answer arrives until the client's timeout, after the refresh was applied.
#[tokio::test]
async fn refresh_answer_timed_out_after_apply() {
    lost_answer_is_reported_and_never_resent_after_restart(Fault::StallAfterApply).await;
}

/// A refresh request that never reached the endpoint (refused connection) spent nothing:
/// the next attempt sends the same token and succeeds, with no refusal recorded.
#[tokio::test]
async fn a_refresh_that_never_left_is_retried_with_the_same_token() {
    let bed = Bed::start().await;
    let mut config_sources = bed.sources(&schedule());
    // The token URL points at a closed port for the first engine.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    if let AuthScheme::RotatingRefresh(rr) = &mut config_sources[0].setup.auth {
        rr.token_url.set_port(Some(closed_port)).unwrap();
    }
    assert_refresh_fails_unspent(&bed, &config_sources[..1], false).await;

    let app = bed.app().await;
    app.sync_caught_up(Sweep::IfDue).await;
    assert_eq!(
        bed.proxy.refresh_tokens_sent(),
        vec![bed.initial_refresh_token()]
    );
    // `/metrics` reads when the rotated token would die unused: a year from now.
    let oauth = app.engine().registry().find(&bed.oauth_source()).unwrap();
    let expires = oauth
        .client
        .refresh_token_expires_at()
        .expect("known after a refresh");
    assert!(expires > Timestamp::now().saturating_add(Duration::from_secs(364 * 24 * 3600)));
}

/// A wrong app secret is refused as the app's credentials, not the refresh token's: the
/// token is not condemned, and once the secret is fixed the same token works.
#[tokio::test]
async fn a_refused_client_secret_does_not_condemn_the_refresh_token() {
    let bed = Bed::start().await;
    let mut sources = bed.sources(&schedule());
    if let AuthScheme::RotatingRefresh(rr) = &mut sources[0].setup.auth {
        rr.client_secret = Secret::new("not-the-app-secret".into());
    }
    assert_refresh_fails_unspent(&bed, &sources[..1], true).await;
    let app = bed.app().await;
    app.sync_caught_up(Sweep::IfDue).await;
    let initial = bed.initial_refresh_token();
    assert_eq!(
        bed.proxy.refresh_tokens_sent(),
        vec![initial.clone(), initial]
    );
}

/// Writes the configuration a user would for the bed, with the mirror in `db`.
fn write_config(bed: &Bed, dir: &std::path::Path) -> std::path::PathBuf {
    let accounts = &bed.sim.accounts().highlevel;
    let file = |name: &str, value: &str| write_file(dir, name, value).display().to_string();
    let text = format!(
        r#"
[database]
url = "sqlite://{db}"

[health]
enabled = false

[[sources]]
name = "{SOURCE}"
provider = "highlevel"
[sources.highlevel]
base_url = "{base}"
page_size = 5
client_id = "{client_id}"
client_secret = {{ file = "{secret}" }}

[[sources.highlevel.locations]]
id = "{a}"
refresh_token = {{ file = "{refresh}" }}

[[sources.highlevel.locations]]
id = "{b}"
private_integration_token = {{ file = "{pit}" }}
"#,
        db = dir.join("mirror.db").display(),
        base = bed.proxy.base_url,
        client_id = accounts[0].client_id,
        secret = file("client-secret", &accounts[0].client_secret),
        a = accounts[0].location_id,
        refresh = file("refresh", &accounts[0].refresh_token),
        b = accounts[1].location_id,
        pit = file("pit", &accounts[1].private_integration_token),
    );
    let path = dir.join("convsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn convsync(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_convsync"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        let text = text.to_owned();
        tokio::io::AsyncWriteExt::write_all(&mut input, text.as_bytes())
            .await
            .unwrap();
    }
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("convsync ends")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// As a user would: `sync --once` loses the refresh answer and stops the OAuth location
/// (exit 1, the other location synced), `status` says so, `credentials set-refresh-token`
/// with the re-authorised token on stdin stores it, and the next `sync --once` succeeds.
#[tokio::test]
async fn set_refresh_token_command_makes_a_stopped_location_sync_again() {
    let bed = Bed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&bed, dir.path());
    let source = bed.oauth_source();
    bed.proxy.push("oauth/token", Fault::DropAfterApply);

    let (ok, text) = convsync(&config, &["sync", "--once"], None).await;
    assert!(!ok, "{text}");
    assert!(text.contains("set-refresh-token"), "{text}");

    let (ok, text) = convsync(&config, &["status"], None).await;
    assert!(ok, "{text}");
    assert!(text.contains("REFUSED"), "{text}");

    // Re-authorisation: the token the lost answer carried stands for the new installation's.
    let new_token = bed
        .proxy
        .refresh_tokens_issued()
        .pop()
        .expect("the applied refresh issued a token");
    let (ok, text) = convsync(
        &config,
        &["credentials", "set-refresh-token", "--source", &source],
        Some(&format!("{new_token}\n")),
    )
    .await;
    assert!(ok, "{text}");
    assert!(
        !text.contains(&new_token),
        "the token is never printed: {text}"
    );

    let (ok, text) = convsync(&config, &["sync", "--once"], None).await;
    assert!(ok, "{text}");
    assert_eq!(
        bed.proxy.refresh_tokens_sent().last(),
        Some(&new_token),
        "the stored token was used"
    );
    let (ok, text) = convsync(&config, &["status"], None).await;
    assert!(ok && !text.contains("REFUSED"), "{text}");

    // Never from argv: a token given as an argument is refused by the parser.
    let (ok, _) = convsync(
        &config,
        &[
            "credentials",
            "set-refresh-token",
            "--source",
            &source,
            "hl_rt_x",
        ],
        None,
    )
    .await;
    assert!(!ok);
}

/// `status` (the real binary) warns in a refresh token's last 30 days of its year, and a
/// sync, which rotates it, renews the year and ends the warning.
#[tokio::test]
async fn status_warns_before_a_refresh_tokens_year_ends_and_a_sync_renews_it() {
    let bed = Bed::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&bed, dir.path());
    let store = convsync::store::Store::open(&convsync::store::StoreSettings {
        url: format!("sqlite://{}", dir.path().join("mirror.db").display()),
        busy_timeout: Duration::from_secs(5),
        max_connections: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    // The configured token, issued 340 days ago and unused since.
    let issued = Timestamp::now().saturating_sub(Duration::from_secs(340 * 24 * 3600));
    store
        .save_refresh_token_issued_at(
            &bed.vault_key(),
            &Secret::new(bed.initial_refresh_token()),
            issued,
        )
        .await
        .unwrap();
    store.close().await;

    let (ok, text) = convsync(&config, &["status"], None).await;
    assert!(ok, "{text}");
    assert!(text.contains("WARNING: it expires in 24 days"), "{text}");

    let (ok, text) = convsync(&config, &["sync", "--once"], None).await;
    assert!(ok, "{text}");
    assert_eq!(
        bed.proxy.refresh_tokens_sent(),
        vec![bed.initial_refresh_token()]
    );
    let (ok, text) = convsync(&config, &["status"], None).await;
    assert!(ok && !text.contains("WARNING"), "{text}");
}
