//! What an operator sees at the command line (issue #18): the real binary, as a user runs
//! it, against the simulator. Source names that do not change when a location is added;
//! `status`, `reset`, `state` and `sources` that read no secret and never create a
//! database; `check-config` that names every mistake; `state show` / `state set` round
//! trips; refusals that change nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convsync_sim::{Platform, SimHandle, SimOptions, Simulator};
use serde_json::Value;

use crate::support::reliability::{BINARY, free_loopback_address};
use crate::support::world::start_one_provider;

/// The simulator with two HighLevel locations (frozen clock, no activity) and a directory
/// for the configuration, its secret files and the mirror.
struct Bed {
    sim: SimHandle,
    dir: tempfile::TempDir,
}

impl Bed {
    async fn start() -> Bed {
        let sim = start_one_provider(Platform::HighLevel, 2, 18, 25).await;
        Bed {
            sim,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("mirror.db")
    }

    fn location(&self, index: usize) -> String {
        self.sim.accounts().highlevel[index].location_id.clone()
    }

    /// The source an `entry` expands to for location `index`: `entry/location`.
    fn source(&self, entry: &str, index: usize) -> String {
        format!("{entry}/{}", self.location(index))
    }

    /// [`Bed::configure`], then a first `sync --once` that must succeed.
    fn configure_and_sync(&self, entry: &str, locations: usize) -> PathBuf {
        let config = self.configure(entry, locations);
        ok(&config, &["sync", "--once"]);
        config
    }

    /// Writes `convsync.toml` with one `[[sources]]` entry named `entry` for the first
    /// `locations` locations, each with its token in a file.
    fn configure(&self, entry: &str, locations: usize) -> PathBuf {
        let mut text = format!(
            "[database]\nurl = \"sqlite://{}\"\n\n[health]\nenabled = false\n\n\
             [[sources]]\nname = \"{entry}\"\nprovider = \"highlevel\"\n\n\
             [sources.highlevel]\nbase_url = \"{}\"\n\n",
            self.db().display(),
            self.sim.highlevel_base_url()
        );
        for (i, account) in self.sim.accounts().highlevel[..locations]
            .iter()
            .enumerate()
        {
            let file = self.dir.path().join(format!("pit-{i}"));
            std::fs::write(&file, &account.private_integration_token).unwrap();
            text.push_str(&format!(
                "[[sources.highlevel.locations]]\nid = \"{}\"\nprivate_integration_token = {{ file = \"{}\" }}\n\n",
                account.location_id,
                file.display()
            ));
        }
        let path = self.dir.path().join("convsync.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Conversations of location `index` the simulator holds (not deleted).
    async fn truth(&self, index: usize) -> usize {
        let account = &self.sim.accounts().highlevel[index].account;
        let truth = self.sim.truth(Platform::HighLevel, account).await.unwrap();
        truth.iter().filter(|t| !t.deleted).count()
    }

    /// Rows per source name in the mirror.
    async fn rows(&self) -> Vec<(String, i64)> {
        query(
            &self.db(),
            "SELECT source, COUNT(*) FROM conversations GROUP BY source ORDER BY source",
        )
        .await
    }
}

/// Runs the binary with `args` and the configuration at `config`.
fn convsync(config: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CONVSYNC_CONFIG")
        .output()
        .expect("run convsync")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command that must succeed; returns its stdout.
fn ok(config: &Path, args: &[&str]) -> String {
    let output = convsync(config, args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `check-config` on the configuration `write` returns for the path of a secret file
/// (both in a fresh directory), asserts it is refused and returns everything it printed.
fn refused_config(write: impl FnOnce(&Path) -> String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("convsync.toml");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    std::fs::write(&config, write(&secret)).unwrap();
    let output = convsync(&config, &["check-config"]);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    all
}

async fn query<T>(db: &Path, sql: &'static str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
    pool.close().await;
    rows
}

/// Adding a second location to a HighLevel source keeps the first location's source name,
/// rows and cursors: after the second sync the mirror holds exactly the simulator's
/// conversations, none of them twice under an old name.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_location_keeps_the_first_sources_name_and_rows() {
    let bed = Bed::start().await;
    let first = bed.source("hl", 0);
    let second = bed.source("hl", 1);
    bed.configure_and_sync("hl", 1);
    let truth0 = bed.truth(0).await as i64;
    assert!(truth0 > 0);
    assert_eq!(bed.rows().await, [(first.clone(), truth0)]);

    let config = bed.configure("hl", 2);
    ok(&config, &["sync", "--once"]);
    let truth1 = bed.truth(1).await as i64;
    let mut expected = vec![(first, truth0), (second, truth1)];
    expected.sort();
    assert_eq!(bed.rows().await, expected);
}

/// A database written by an older convsync holds a one-location source under the bare
/// entry name: `status` shows those rows as not configured, and the next `sync` moves them
/// (rows and cursors) to `name/location` instead of fetching them again.
#[tokio::test(flavor = "multi_thread")]
async fn rows_under_the_old_bare_name_are_adopted() {
    let bed = Bed::start().await;
    let name = bed.source("hl", 0);
    let config = bed.configure_and_sync("hl", 1);
    let truth0 = bed.truth(0).await as i64;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", bed.db().display()))
        .await
        .unwrap();
    for table in ["conversations", "cursors", "sync_runs", "follow_ups"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET source = 'hl' WHERE source = ?"
        )))
        .bind(&name)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;
    let cursors_before: Vec<(String, String)> =
        query(&bed.db(), "SELECT walk, state FROM cursors ORDER BY walk").await;

    let status: Value = serde_json::from_str(&ok(&config, &["status", "--json"])).unwrap();
    let orphan = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hl")
        .unwrap_or_else(|| panic!("status does not list the old rows: {status}"));
    assert_eq!(orphan["state"], "not configured");
    assert_eq!(orphan["rows"], truth0);

    ok(&config, &["sync", "--once"]);
    assert_eq!(bed.rows().await, [(name.clone(), truth0)]);
    let cursors_after: Vec<(String, String, String)> = query(
        &bed.db(),
        "SELECT source, walk, state FROM cursors ORDER BY walk",
    )
    .await;
    assert!(
        cursors_after.iter().all(|(s, _, _)| *s == name),
        "{cursors_after:?}"
    );
    let inserted: Vec<(i64,)> = query(
        &bed.db(),
        "SELECT rows_inserted FROM sync_runs ORDER BY id DESC LIMIT 1",
    )
    .await;
    assert_eq!(inserted, [(0,)], "the adopted rows were fetched again");
    assert_eq!(cursors_before.len(), cursors_after.len());
}

/// `sources rename` keeps rows and cursors under the new name; `sources forget` without
/// `--yes` changes nothing, with it deletes the rows; `sources list` shows what is held.
#[tokio::test(flavor = "multi_thread")]
async fn sources_rename_keeps_rows_and_forget_asks_for_yes() {
    let bed = Bed::start().await;
    let old = bed.source("hl", 0);
    let new = bed.source("chat", 0);
    bed.configure_and_sync("hl", 1);
    let truth0 = bed.truth(0).await as i64;
    let state_before = ok(
        &bed.configure("hl", 1),
        &["state", "show", "--source", &old, "--json"],
    );

    // The entry is renamed in the file: the old rows are "not configured".
    let config = bed.configure("chat", 1);
    let list: Value = serde_json::from_str(&ok(&config, &["sources", "list", "--json"])).unwrap();
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (new.clone(), "enabled".to_owned()),
            (old.clone(), "not configured".to_owned())
        ]
    );

    let refused = convsync(&config, &["sources", "forget", &old]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert_eq!(bed.rows().await, [(old.clone(), truth0)]);

    ok(&config, &["sources", "rename", &old, &new]);
    assert_eq!(bed.rows().await, [(new.clone(), truth0)]);
    let state_after = ok(&config, &["state", "show", "--source", &new, "--json"]);
    let walks = |text: &str| serde_json::from_str::<Value>(text).unwrap()["walks"].clone();
    assert_eq!(walks(&state_before), walks(&state_after));

    // Forgetting a configured source is refused; an unconfigured one goes with --yes.
    let refused = convsync(&config, &["sources", "forget", &new, "--yes"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    // Every start warns about rows no configured source owns.
    let config = bed.configure("other", 1);
    let synced = convsync(&config, &["sync", "--once"]);
    assert!(synced.status.success(), "{}", text(&synced));
    let warning = String::from_utf8_lossy(&synced.stderr)
        .lines()
        .any(|l| l.contains("not configured") && l.contains(&new));
    assert!(warning, "no warning about {new}: {}", text(&synced));
    ok(&config, &["sources", "forget", &new, "--yes"]);
    assert_eq!(bed.rows().await, [(bed.source("other", 0), truth0)]);
}

/// `status`, `reset`, `state` and `sources` read no secret: they work with a
/// configuration whose secret files are missing. `status` on a missing database exits
/// non-zero and creates no file; `migrate` says what it did.
#[test]
fn database_commands_read_no_secret_and_create_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mirror.db");
    let config = dir.path().join("convsync.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}\"\n\n\
             [[sources]]\nname = \"clinic\"\nprovider = \"spruce\"\n\
             [sources.spruce]\norganization_id = \"entity_1\"\n\
             api_token = {{ file = \"{}\" }}\n\n\
             [[sources]]\nname = \"sms\"\nprovider = \"sinch\"\n\
             [sources.sinch]\nregion = \"eu\"\nproject_id = \"p1\"\napp_id = \"APP1\"\n\
             key_id = \"k1\"\nkey_secret = {{ credential = \"sinch-key\" }}\n",
            db.display(),
            dir.path().join("no-such-secret").display()
        ),
    )
    .unwrap();

    let missing = convsync(&config, &["status"]);
    assert!(!missing.status.success(), "{}", text(&missing));
    assert!(
        text(&missing).contains("does not exist"),
        "{}",
        text(&missing)
    );
    assert!(!db.exists(), "status created the database");
    let missing = convsync(&config, &["reset", "--source", "clinic"]);
    assert!(!missing.status.success(), "{}", text(&missing));
    assert!(!db.exists(), "reset created the database");

    let created = ok(&config, &["migrate"]);
    assert!(created.contains("created the schema"), "{created}");
    let again = ok(&config, &["migrate"]);
    assert!(again.contains("already up to date"), "{again}");

    let status: Value = serde_json::from_str(&ok(&config, &["status", "--json"])).unwrap();
    let names: Vec<&str> = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["clinic", "sms/APP1"]);
    assert!(ok(&config, &["status"]).contains("never synced"));
    ok(&config, &["reset", "--source", "clinic"]);
    ok(&config, &["state", "show", "--source", "sms/APP1"]);
    ok(&config, &["sources", "list"]);
}

/// `check-config` names every mistake, not only the first, and exits non-zero.
#[test]
fn check_config_names_every_mistake() {
    let all = refused_config(|token| {
        format!(
            "[http]\ntimeout = \"0s\"\n\n[health]\nlisten = \"everywhere\"\n\n\
             [[sources]]\nname = \"clinic\"\nprovider = \"spruce\"\npoll_jitter = 0.9\n\
             [sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{t}\" }}\n\n\
             [[sources]]\nname = \"front\"\nprovider = \"spruce\"\n\
             rate_limit = {{ requests = 10, per = \"10s\" }}\n\
             [sources.spruce]\norganization_id = \"entity_2\"\napi_token = {{ file = \"{t}\" }}\n\n\
             [[sources]]\nname = \"back\"\nprovider = \"spruce\"\n\
             [sources.spruce]\norganization_id = \"entity_2\"\napi_token = {{ file = \"{t}\" }}\n",
            t = token.display()
        )
    });
    for key in [
        "http.timeout",
        "health.listen",
        "sources[clinic].poll_jitter",
        "sources[back].rate_limit",
    ] {
        assert!(all.contains(key), "{key} not reported: {all}");
    }
}

/// `state show --json` round-trips through `state set`; `reset --since` in the future
/// and `reset --dry-run` change nothing; `state set` is refused while a daemon runs.
#[tokio::test(flavor = "multi_thread")]
async fn state_round_trips_and_refusals_change_nothing() {
    let bed = Bed::start().await;
    let name = bed.source("hl", 0);
    let config = bed.configure_and_sync("hl", 1);
    let show = || ok(&config, &["state", "show", "--source", &name, "--json"]);
    let saved = show();
    let walks = serde_json::from_str::<Value>(&saved).unwrap()["walks"].clone();
    assert!(
        walks
            .as_object()
            .unwrap()
            .values()
            .any(|w| w["watermark"].is_string()),
        "{saved}"
    );

    let future = convsync(
        &config,
        &[
            "reset",
            "--source",
            &name,
            "--since",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert!(!future.status.success(), "{}", text(&future));
    assert!(text(&future).contains("future"), "{}", text(&future));
    assert_eq!(show(), saved);
    ok(&config, &["reset", "--source", &name, "--dry-run"]);
    assert_eq!(show(), saved);

    ok(&config, &["reset", "--source", &name]);
    assert_ne!(show(), saved);
    let file = bed.dir.path().join("state.json");
    std::fs::write(&file, &saved).unwrap();
    let set_state = [
        "state",
        "set",
        "--source",
        &name,
        "--from",
        file.to_str().unwrap(),
    ];
    ok(&config, &set_state);
    assert_eq!(show(), saved);

    // With a daemon answering on the configured health address, `state set` is refused.
    let listen = free_loopback_address();
    let text_config = std::fs::read_to_string(&config)
        .unwrap()
        .replace("enabled = false", &format!("listen = \"{listen}\""));
    std::fs::write(&config, text_config).unwrap();
    let mut daemon = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + crate::support::reliability::PATIENCE;
    while reqwest::get(format!("http://{listen}/healthz"))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let refused = convsync(&config, &set_state);
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("daemon is running"),
        "{}",
        text(&refused)
    );
}

/// The demo's configuration polls D365 at its 60 s minimum when the demo asks for a
/// shorter interval (it used D365's 300 s default, so a one-minute demo polled it once),
/// and the other providers at the interval asked for.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_config_polls_d365_at_its_minimum() {
    use convsync::sim_config::{SecretPlacement, SourceTuning, convsync_sources};
    let sim = Simulator::start(SimOptions {
        activity_rate: 0.0,
        conversations: 5,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let generated = convsync_sources(
        &sim,
        &SecretPlacement::Files(dir.path().join("secrets")),
        &SourceTuning {
            poll_interval: Some("10s".into()),
            ..SourceTuning::default()
        },
    );
    generated.write_secret_files().unwrap();
    let path = dir.path().join("convsync.toml");
    std::fs::write(&path, &generated.toml).unwrap();
    let config = convsync::config::Config::load(&path).unwrap();
    for source in &config.sources {
        let expected = match source.setup.provider.kind() {
            convsync::provider::ProviderKind::D365 => 60,
            _ => 10,
        };
        assert_eq!(
            source.schedule.poll_interval.as_secs(),
            expected,
            "{}",
            source.name
        );
    }
    sim.shutdown().await;
}

/// An entry named like another entry's expanded source (`sms/APP1`) would share its rows:
/// `check-config` refuses it and names the source.
#[test]
fn colliding_source_names_are_refused() {
    let all = refused_config(|secret| {
        format!(
            "[[sources]]\nname = \"sms/APP1\"\nprovider = \"spruce\"\n\
             [sources.spruce]\norganization_id = \"entity_1\"\napi_token = {{ file = \"{s}\" }}\n\n\
             [[sources]]\nname = \"sms\"\nprovider = \"sinch\"\n\
             [sources.sinch]\nregion = \"eu\"\nproject_id = \"p1\"\napp_id = \"APP1\"\n\
             key_id = \"k1\"\nkey_secret = {{ file = \"{s}\" }}\n",
            s = secret.display()
        )
    });
    assert!(all.contains("sources[sms/APP1].name"), "{all}");
}
