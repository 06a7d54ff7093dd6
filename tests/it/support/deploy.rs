//! Helpers for the deployment tests: a Spruce account on the simulator with a
//! configuration file pointing at it, a systemd-style notify socket the test owns, and a
//! Prometheus scrape parsed by a real parser.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use convsync_sim::{Platform, SimHandle, SimOptions, Simulator};

/// Hang guard for waits in these tests: generous, never a performance threshold.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A simulator serving one Spruce organization, and the files a convsync configuration
/// for it needs.
pub struct SpruceSite {
    pub sim: SimHandle,
    pub account: String,
    pub dir: tempfile::TempDir,
}

impl SpruceSite {
    /// Starts the simulator on the real clock (so watermark lag is real) with no
    /// background activity: the mirror changes only when a test says so.
    pub async fn start(conversations: u32) -> SpruceSite {
        SpruceSite::start_on(conversations, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Like [`SpruceSite::start`], binding the simulator to `bind`.
    pub async fn start_on(conversations: u32, bind: std::net::IpAddr) -> SpruceSite {
        SpruceSite::start_organizations(conversations, 1, bind).await
    }

    /// Like [`SpruceSite::start_on`] with `organizations` Spruce organizations (each a
    /// rate-limit scope of its own, with its own token); the first is [`SpruceSite::account`].
    /// The same world as `convsync simulate --seed 8 --spruce-accounts N --conversations C
    /// --activity-rate 0` with no other provider, so a simulator started in a container
    /// serves what this one holds.
    pub async fn start_organizations(
        conversations: u32,
        organizations: u32,
        bind: std::net::IpAddr,
    ) -> SpruceSite {
        let sim = Simulator::start(SimOptions {
            seed: 8,
            bind,
            conversations,
            frozen_clock: false,
            ..super::world::one_provider(Platform::Spruce, organizations)
        })
        .await
        .expect("simulator starts");
        let account = sim.accounts().spruce[0].account.clone();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("spruce-token"),
            &sim.accounts().spruce[0].api_token,
        )
        .unwrap();
        SpruceSite { sim, account, dir }
    }

    /// The token file on the host.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("spruce-token")
    }

    /// A configuration for source `clinic` reading this organization, with the database
    /// at `database_url`, the health endpoint on `listen` and the token read from
    /// `token_file` (paths as the convsync process will see them).
    pub fn config_text(&self, database_url: &str, listen: &str, token_file: &Path) -> String {
        let organization = &self.sim.accounts().spruce[0].organization_id;
        format!(
            r#"[database]
url = "{database_url}"

[health]
listen = "{listen}"
ready_after_intervals = 3.0

[[sources]]
name = "clinic"
provider = "spruce"
poll_interval = "10s"

[sources.spruce]
base_url = "{base}"
organization_id = "{organization}"
api_token = {{ file = "{token}" }}
track_reply_state = false
"#,
            base = self.sim.spruce_base_url(),
            token = token_file.display(),
        )
    }

    /// Writes [`SpruceSite::config_text`] for a process on this host, with the database
    /// in this site's directory, and returns the file's path.
    pub fn write_local_config(&self, listen: &str) -> PathBuf {
        let db = self.database_path();
        let text = self.config_text(
            &format!("sqlite://{}", db.display()),
            listen,
            &self.token_file(),
        );
        let path = self.dir.path().join("convsync.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The database a local configuration uses.
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("mirror.db")
    }

    /// One `[[sources]]` per organization, `clinic-0`, `clinic-1`, …, served at
    /// `base_url`, organization `i` reading its token through the secret reference
    /// `token(i)` (TOML, e.g. `{ file = "/run/secrets/x" }`), at the default schedule but a
    /// 10 s poll interval.
    pub fn sources_text(&self, base_url: &str, token: impl Fn(usize) -> String) -> String {
        let mut text = String::new();
        for (i, account) in self.sim.accounts().spruce.iter().enumerate() {
            text.push_str(&format!(
                "[[sources]]\nname = \"clinic-{i}\"\nprovider = \"spruce\"\npoll_interval = \"10s\"\n\n\
                 [sources.spruce]\nbase_url = \"{base_url}\"\norganization_id = \"{}\"\n\
                 api_token = {}\ntrack_reply_state = false\n\n",
                account.organization_id,
                token(i),
            ));
        }
        text
    }

    /// The token of organization `i`.
    pub fn token(&self, i: usize) -> String {
        self.sim.accounts().spruce[i].api_token.clone()
    }

    /// The ids of the visible conversations of every organization, sorted.
    pub async fn visible_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for account in &self.sim.accounts().spruce {
            let truth = self
                .sim
                .truth(Platform::Spruce, &account.account)
                .await
                .unwrap();
            ids.extend(truth.into_iter().filter(|c| !c.deleted).map(|c| c.id));
        }
        ids.sort();
        ids
    }

    /// Visible conversations of the organization as (id, last activity in mirror text).
    pub async fn visible_truth(&self) -> Vec<(String, Option<String>)> {
        let mut rows: Vec<(String, Option<String>)> = self
            .sim
            .truth(Platform::Spruce, &self.account)
            .await
            .unwrap()
            .into_iter()
            .filter(|c| !c.deleted)
            .map(|c| {
                (
                    c.id,
                    c.last_activity_at
                        .map(|t| convsync::time::Timestamp::from(t).to_mirror_text()),
                )
            })
            .collect();
        rows.sort();
        rows
    }
}

/// Live conversations of source `clinic` in the mirror at `path`, as (id, last activity).
pub async fn mirrored(path: &Path) -> Vec<(String, Option<String>)> {
    use sqlx::sqlite::SqliteConnectOptions;
    let options = SqliteConnectOptions::new().filename(path).read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT conversation_id, last_activity_at FROM conversations
         WHERE source = 'clinic' AND deleted_at IS NULL ORDER BY conversation_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// A notify socket like systemd's: every datagram received, in order, collected by a
/// thread of its own so that a wedged runtime cannot delay the reading.
pub struct NotifySocket {
    pub path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket {
            path,
            messages,
            _dir: dir,
        }
    }

    /// Every message sent before this call, once the reader has caught up with them:
    /// a marker datagram queues behind them and is waited for.
    pub async fn drain(&self) -> Vec<String> {
        let marker = format!("X_TEST_MARKER={}", self.messages().len());
        UnixDatagram::unbound()
            .unwrap()
            .send_to(marker.as_bytes(), &self.path)
            .unwrap();
        let mut messages = self.wait_for("the marker", |m| m.contains(&marker)).await;
        messages.retain(|m| !m.starts_with("X_TEST_MARKER="));
        messages
    }

    /// Every message so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the messages so far; returns them.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let messages = self.messages();
            if done(&messages) {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what}; notifications so far: {messages:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Position of the first message at or after `from` that contains `needle`.
pub fn position(messages: &[String], from: usize, needle: &str) -> Option<usize> {
    messages
        .iter()
        .skip(from)
        .position(|m| m.contains(needle))
        .map(|i| i + from)
}

/// One scrape of `/metrics`, parsed.
pub struct Scrape {
    pub samples: Vec<prometheus_parse::Sample>,
}

impl Scrape {
    /// Fetches and parses `base/metrics`, failing on any line the parser does not
    /// recognise (besides OpenMetrics' `# EOF` and `# UNIT`).
    pub async fn fetch(base: &str) -> Scrape {
        let response = reqwest::get(format!("{base}metrics")).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let body = response.text().await.unwrap();
        for line in body.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            assert_ne!(
                prometheus_parse::LineInfo::parse(line),
                prometheus_parse::LineInfo::Ignored,
                "not Prometheus text: {line:?}"
            );
        }
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        Scrape {
            samples: scrape.samples,
        }
    }

    /// The sample of `metric` whose labels include all of `labels`.
    pub fn sample(
        &self,
        metric: &str,
        labels: &[(&str, &str)],
    ) -> Option<&prometheus_parse::Sample> {
        self.samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// The plain value (gauge, counter or untyped) of `metric` with `labels`.
    pub fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        use prometheus_parse::Value;
        match &self.sample(metric, labels)?.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        }
    }
}

/// The commands of the section of docs/deploy.md marked `name` (from `<!-- name:` or
/// `<!-- name -->` to `<!-- end name -->`): every line of its `sh` blocks, comments and
/// blank lines left out, `\` continuations joined. Tests run these as the docs write them.
pub fn documented_steps(name: &str) -> Vec<String> {
    documented_steps_in("docs/deploy.md", name)
}

/// [`documented_steps`] of the document at `path` (relative to the checkout).
pub fn documented_steps_in(path: &str, name: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let start = [format!("<!-- {name}:"), format!("<!-- {name} -->")]
        .iter()
        .find_map(|begin| doc.find(begin.as_str()))
        .unwrap_or_else(|| panic!("{path} has no section marked {name}"));
    let end = doc[start..]
        .find(&format!("<!-- end {name} -->"))
        .unwrap_or_else(|| panic!("the section {name} of {path} has no end marker"))
        + start;
    let mut steps = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in doc[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            _ if !in_block => {}
            l if l.is_empty() || l.starts_with('#') => {}
            l => match l.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(l);
                    steps.push(std::mem::take(&mut pending));
                }
            },
        }
    }
    assert!(!steps.is_empty(), "no documented steps in {name}");
    steps
}

/// The files of this checkout, relative to its root, as a fresh clone with local edits
/// would have them: tracked and new files that exist, not the ignored ones (`target/`).
pub fn checkout_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("git")
        .current_dir(root)
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git ls-files in {}",
        root.display()
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        // A deleted file is still listed until the deletion is committed.
        .filter(|f| root.join(f).exists())
        .map(str::to_owned)
        .collect()
}

/// Skips (or fails under `CI`) with `why`.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {test} cannot run: {why}"
    );
    eprintln!("SKIPPED {test}: {why}; set CI=1 to make this a failure");
}

/// Stdout and stderr of a finished command, for messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Waits until `done` holds, polling every half second; panics after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Builds (or takes from the cache) the static release binary with
/// deploy/build-static.sh and returns its path: `&["--without-sim"]` for the image's,
/// `&[]` for the one with the simulator.
pub fn static_binary(args: &[&str]) -> String {
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/build-static.sh"
    ))
    .args(args)
    .output()
    .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    String::from_utf8(built.stdout).unwrap().trim().to_owned()
}

/// A lease event a replica logged (`lease claimed; running its sources`, `lease released`):
/// its epoch and when it was logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseEvent {
    pub epoch: i64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Every event of `message` about `scope` in a replica's JSON log lines (other lines, and
/// anything before the JSON object on a line, such as a journal prefix, are skipped).
pub fn lease_events(logs: &str, message: &str, scope: &str) -> Vec<LeaseEvent> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line[line.find('{')?..]).ok())
        .filter(|event| event["fields"]["message"] == message && event["fields"]["scope"] == scope)
        .map(|event| LeaseEvent {
            epoch: event["fields"]["epoch"].as_i64().expect("an epoch"),
            at: event["timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("a timestamp"),
        })
        .collect()
}

/// The arguments after a simulator binary that serve the world of
/// [`SpruceSite::start_organizations`]`(40, organizations, …)`: Spruce alone on
/// `spruce_port`, seed 8, no activity, listening on `bind`.
pub fn simulate_args(spruce_port: u16, organizations: u32, bind: &str) -> Vec<String> {
    [
        "simulate",
        "--bind",
        bind,
        "--seed",
        "8",
        "--spruce-port",
        &spruce_port.to_string(),
        "--spruce-accounts",
        &organizations.to_string(),
        "--conversations",
        "40",
        "--activity-rate",
        "0",
        "--d365-accounts",
        "0",
        "--sinch-accounts",
        "0",
        "--highlevel-locations",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// psql's arguments for one `query` on the replicas' mirror (role `convsync`, database
/// `mirror`) over the server's own socket, printing unaligned rows.
pub fn psql_args(query: &str) -> [&str; 11] {
    [
        "psql",
        "--no-psqlrc",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "convsync",
        "-d",
        "mirror",
        "-At",
        "-c",
        query,
    ]
}

/// The rows psql printed with [`psql_args`], as fields.
pub fn psql_rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// Each scope's lease holder (empty when unowned), from the replicas' `leases` table.
pub const LEASE_OWNERS: &str = "SELECT scope, coalesce(owner, '') FROM leases ORDER BY scope";

/// [`LEASE_OWNERS`]' rows as scope → owner.
pub fn lease_owners(rows: Vec<Vec<String>>) -> std::collections::BTreeMap<String, String> {
    rows.into_iter()
        .map(|mut row| (row.remove(0), row.remove(0)))
        .collect()
}
