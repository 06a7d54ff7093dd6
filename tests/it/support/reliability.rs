//! Helpers for the reliability suite (`reliability::*`): a simulator site with a generated
//! configuration for the real `convsync` binary, child processes whose every log line is
//! kept, a [`TruthCheck`] comparing the mirror with the simulator's truth for every
//! provider, watermark history, and a scan for secrets in everything convsync produced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use convsync::sim_config::{SecretPlacement, SourceTuning, convsync_sources};
use convsync::store::Store;
use convsync::sync::WalkCursor;
use convsync::time::Timestamp;
use convsync_sim::{
    ConversationState, MessageDirection, Platform, SimHandle, SimOptions, Simulator,
    TruthConversation,
};
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::support::StorePool;

/// Hang guard for waits: generous, never a performance threshold.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// The convsync binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_convsync");

/// A simulator with every provider, small worlds and no background activity unless asked.
pub fn sim_options(seed: u64, conversations: u32) -> SimOptions {
    SimOptions {
        seed,
        conversations,
        activity_rate: 0.0,
        d365_accounts: 1,
        spruce_accounts: 1,
        sinch_accounts: 1,
        highlevel_locations: 2,
        ..SimOptions::default()
    }
}

/// How a site's configuration is generated.
#[derive(Clone)]
pub struct SiteOptions {
    /// Secrets as files (default) or environment variables.
    pub env_secrets: bool,
    /// HighLevel via OAuth refresh tokens instead of private integration tokens.
    pub highlevel_oauth: bool,
    /// `sweep_interval` of every source.
    pub sweep_interval: &'static str,
    /// Page size of the providers that take one (D365, Spruce, HighLevel).
    pub page_size: u32,
    /// `[database] busy_timeout`.
    pub busy_timeout: &'static str,
    /// `[http] timeout`.
    pub http_timeout: &'static str,
    /// Extra lines for every `[[sources]]` table.
    pub source_extra: &'static str,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions {
            env_secrets: false,
            highlevel_oauth: false,
            sweep_interval: "1h",
            page_size: 20,
            busy_timeout: "5s",
            http_timeout: "3s",
            source_extra: "",
        }
    }
}

/// A simulator, a directory with the convsync configuration, its secrets and the mirror,
/// and everything the binary printed so far.
pub struct Site {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub health: String,
    /// (name, value) of every configured secret; env-placed ones go into the child's
    /// environment.
    pub secrets: Vec<(String, String)>,
    env_secrets: bool,
    runs: std::sync::atomic::AtomicU32,
}

impl Site {
    /// Starts the simulator and writes the configuration.
    pub async fn start(options: SimOptions, site: SiteOptions) -> Site {
        let sim = Simulator::start(options).await.expect("simulator starts");
        let dir = tempfile::tempdir().unwrap();
        let placement = if site.env_secrets {
            SecretPlacement::Env
        } else {
            SecretPlacement::Files(dir.path().join("secrets"))
        };
        let generated = convsync_sources(
            &sim,
            &placement,
            &SourceTuning {
                poll_interval: Some("10s".into()),
                sweep_interval: Some(site.sweep_interval.into()),
                highlevel_oauth: site.highlevel_oauth,
            },
        );
        generated.write_secret_files().unwrap();
        let mut sources = generated.toml.clone();
        for table in [
            "[sources.d365]\n",
            "[sources.spruce]\n",
            "[sources.highlevel]\n",
        ] {
            sources = sources.replace(table, &format!("{table}page_size = {}\n", site.page_size));
        }
        if !site.source_extra.is_empty() {
            sources = sources.replace(
                "[[sources]]\n",
                &format!("[[sources]]\n{}\n", site.source_extra),
            );
        }
        let health = free_loopback_address();
        let db = dir.path().join("mirror.db");
        let text = format!(
            "[database]\nurl = \"sqlite://{db}\"\nbusy_timeout = \"{busy}\"\n\n\
             [http]\ntimeout = \"{timeout}\"\nconnect_timeout = \"2s\"\nmax_retries = 5\n\
             min_backoff = \"20ms\"\nmax_backoff = \"300ms\"\nmax_inline_pause = \"30s\"\n\n\
             [health]\nlisten = \"{health}\"\n\n{sources}",
            db = db.display(),
            busy = site.busy_timeout,
            timeout = site.http_timeout,
        );
        let config = dir.path().join("convsync.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        Site {
            sim,
            dir,
            config,
            health,
            secrets: generated.secrets.clone(),
            env_secrets: site.env_secrets,
            runs: Default::default(),
        }
    }

    /// The mirror's file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("mirror.db")
    }

    fn next_log(&self, what: &str) -> PathBuf {
        let n = self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir
            .path()
            .join("logs")
            .join(format!("{n:04}-{what}.log"))
    }

    /// `convsync ARGS --config <site>` with `RUST_LOG=trace` and the secrets' environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "trace")
            .env_remove("CONVSYNC_CONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.env_secrets {
            for (name, value) in &self.secrets {
                command.env(name, value);
            }
        }
        command
    }

    /// Runs `convsync ARGS` to completion; its stdout and stderr are kept with the site's
    /// logs and returned.
    pub async fn run(&self, args: &[&str]) -> Finished {
        let output = tokio::time::timeout(PATIENCE, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("convsync {args:?} did not finish"))
            .expect("convsync starts");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let log = self.next_log(args.first().copied().unwrap_or("run"));
        std::fs::write(&log, format!("{stdout}\n{stderr}")).unwrap();
        Finished {
            status: output.status,
            stdout,
            stderr,
        }
    }

    /// `sync --once --full`, which must succeed.
    pub async fn sync_full(&self) -> Finished {
        let done = self.run(&["sync", "--once", "--full"]).await;
        assert!(
            done.status.success(),
            "sync --once --full failed: {}\n{}",
            done.status,
            done.tail()
        );
        done
    }

    /// Starts `convsync run`; its output goes to a log file of the site.
    pub fn spawn_daemon(&self) -> Daemon {
        let log = self.next_log("daemon");
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(&["run"])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("convsync run starts");
        Daemon { child, log }
    }

    /// Starts `convsync run` and returns once it has committed a page, so that whatever
    /// the test does next lands during an active sync.
    pub async fn spawn_daemon_mid_sync(&self) -> Daemon {
        let mut daemon = self.spawn_daemon();
        let pool = self.pool().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversations")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            if rows > 0 {
                break;
            }
            assert!(daemon.is_running(), "daemon died:\n{}", daemon.output());
            assert!(
                tokio::time::Instant::now() < deadline,
                "no page was ever written"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pool.close().await;
        daemon
    }

    /// Everything every convsync process of this site printed.
    pub fn logs(&self) -> String {
        let mut paths: Vec<_> = std::fs::read_dir(self.dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A read-write pool on the mirror (another process, as far as SQLite is concerned).
    pub async fn pool(&self) -> SqlitePool {
        pool(&self.db_path()).await
    }

    /// The `/metrics` text of a running daemon, once it answers.
    pub async fn scrape_metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.health);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return r.text().await.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Compares the mirror with the truth of every account (see [`TruthCheck`]).
    pub async fn assert_mirror_equals_truth(&self) {
        let pool = self.pool().await;
        let problems = TruthCheck::new(&self.sim).differences(&pool).await;
        if !problems.is_empty() {
            let reports = run_reports(&pool).await;
            let reports: Vec<&str> = reports.lines().collect();
            let logs = self.logs();
            let notable: Vec<&str> = logs
                .lines()
                .filter(|l| {
                    l.contains("WARN") || l.contains("ERROR") || l.contains("cycle finished")
                })
                .collect();
            panic!(
                "{} difference(s) between mirror and truth:\n{}\n--- last sync_runs ---\n{}\n--- last notable log lines ---\n{}",
                problems.len(),
                problems
                    .iter()
                    .take(15)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                reports[reports.len().saturating_sub(25)..].join("\n"),
                notable[notable.len().saturating_sub(40)..].join("\n"),
            );
        }
        pool.close().await;
    }

    /// `PRAGMA integrity_check` is `ok`.
    pub async fn assert_integrity(&self) {
        let pool = self.pool().await;
        let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(verdict, "ok", "integrity_check");
        pool.close().await;
    }

    /// Asserts that no configured secret and no access or refresh token the simulator
    /// issued appears in `texts`, in any log of the site, or in any table of the mirror
    /// but the refresh-token vault. Returns how many bytes were scanned.
    pub async fn assert_no_secrets(&self, texts: &[&str]) -> usize {
        let mut haystacks: Vec<(String, String)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("text #{i}"), (*t).to_owned()))
            .collect();
        haystacks.push(("logs".into(), self.logs()));
        let pool = self.pool().await;
        for (table, text) in dump_tables(&pool).await {
            haystacks.push((format!("table {table}"), text));
        }
        pool.close().await;
        let mut scanned = 0;
        for (name, text) in &haystacks {
            scanned += text.len();
            for (secret, value) in &self.secrets {
                assert!(
                    !text.contains(value.as_str()),
                    "secret {secret} appears in {name}"
                );
            }
            for prefix in TOKEN_PREFIXES {
                if let Some(at) = find_token(text, prefix) {
                    panic!(
                        "an issued token ({prefix}…) appears in {name}: …{}…",
                        &text[at.saturating_sub(80)..at]
                    );
                }
            }
        }
        scanned
    }
}

/// Prefixes of the tokens the simulator issues (D365 JWT-like, Sinch, HighLevel access and
/// rotated refresh tokens), each followed by 33 base-62 characters.
const TOKEN_PREFIXES: [&str; 4] = [
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.",
    "sinch.",
    "hl_at_",
    "hl_rt_",
];

fn find_token(text: &str, prefix: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(prefix) {
        let start = from + found;
        let rest = &text.as_bytes()[start + prefix.len()..];
        if rest.len() >= 33 && rest[..33].iter().all(u8::is_ascii_alphanumeric) {
            return Some(start);
        }
        from = start + prefix.len();
    }
    None
}

/// Every table but the refresh-token vault (whose purpose is to hold HighLevel's rotated
/// refresh token) as text.
async fn dump_tables(pool: &SqlitePool) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         AND name <> 'refresh_tokens'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM \"{table}\"")))
            .fetch_all(pool)
            .await
            .unwrap();
        let mut text = String::new();
        for row in rows {
            for i in 0..row.len() {
                if let Ok(Some(v)) = row.try_get::<Option<String>, _>(i) {
                    text.push_str(&v);
                    text.push('\t');
                }
            }
            text.push('\n');
        }
        out.push((table, text));
    }
    out
}

/// What a finished convsync process printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The last lines of the output, for failure messages.
    pub fn tail(&self) -> String {
        let all = format!("{}\n{}", self.stdout, self.stderr);
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// A running `convsync run`.
pub struct Daemon {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Kills it with SIGKILL and reaps it.
    pub async fn sigkill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn sigterm(mut self) -> ExitStatus {
        let pid = self.child.id().expect("daemon still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the daemon stops after SIGTERM")
            .unwrap()
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id().expect("daemon still running")
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its output so far.
    /// The file its stdout and stderr go to.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.log.clone()
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap()).into_owned()
    }
}

/// The site's store on one connection whose database may grow by only `spare_pages`
/// pages (SQLite's page limit): a full disk that is real to SQLite.
pub async fn nearly_full_store(config: &mut convsync::config::Config, spare_pages: i64) -> Store {
    // One connection, so the page limit set below applies to every write.
    config.store.max_connections = 1;
    let store = Store::open(&config.store).await.unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {}",
        pages + spare_pages
    )))
    .execute(store.pool())
    .await
    .unwrap();
    store
}

/// A free TCP port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_loopback_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A pool on the database file at `path`, once convsync has created it.
pub async fn pool(path: &Path) -> SqlitePool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap()
}

/// A pool on a new SQLite file at `path` (for files convsync did not create).
pub async fn create_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

/// Delta watermarks by (source, walk), as stored.
pub async fn watermarks(pool: &SqlitePool) -> BTreeMap<(String, String), Timestamp> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT source, walk, state FROM cursors")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    rows.into_iter()
        .filter_map(|(source, walk, state)| {
            let cursor: WalkCursor = serde_json::from_str(&state).unwrap();
            cursor.watermark.map(|w| ((source, walk), w))
        })
        .collect()
}

/// Records every watermark seen and fails if one ever moves backwards.
#[derive(Default)]
pub struct WatermarkHistory {
    highest: BTreeMap<(String, String), Timestamp>,
    pub observations: usize,
}

impl WatermarkHistory {
    /// Reads the current watermarks and checks them against the highest seen so far.
    pub async fn observe(&mut self, pool: &SqlitePool) {
        for (key, now) in watermarks(pool).await {
            self.observations += 1;
            if let Some(before) = self.highest.get(&key) {
                assert!(
                    now >= *before,
                    "watermark {key:?} moved backwards: {before} → {now}"
                );
            }
            self.highest.insert(key, now);
        }
    }

    /// Walks with a watermark.
    pub fn walks(&self) -> usize {
        self.highest.len()
    }
}

/// `(outcome, count)` of every `sync_runs` outcome.
pub async fn run_outcomes(pool: &SqlitePool) -> BTreeMap<String, i64> {
    sqlx::query_as("SELECT outcome, COUNT(*) FROM sync_runs GROUP BY outcome")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Every `sync_runs` error and note, one per line.
pub async fn run_reports(pool: &SqlitePool) -> String {
    let rows: Vec<(String, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT source, outcome, error, notes FROM sync_runs ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(s, o, e, n)| {
            format!(
                "{s} {o} {} {}",
                e.unwrap_or_default(),
                n.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The mirror columns a comparison reads, as text (`1`/`0` for booleans, NULL as `None`).
const COLUMNS: [&str; 19] = [
    "provider",
    "account",
    "created_at",
    "last_activity_at",
    "active",
    "status",
    "channel",
    "contact_id",
    "contact_name",
    "title",
    "assignee",
    "unread_count",
    "last_message_direction",
    "last_inbound_at",
    "last_outbound_at",
    "awaiting_reply",
    "closed",
    "deleted",
    "raw",
];

type MirrorRow = BTreeMap<&'static str, Option<String>>;

/// One configured source of a generated site: its name, provider and account.
#[derive(Debug, Clone)]
pub struct SiteSource {
    pub name: String,
    pub provider: Platform,
    /// The simulator's account key (for `truth`).
    pub account: String,
    /// The mirror's `account` column.
    pub mirror_account: String,
}

/// Compares a mirror with the simulator's truth for every source of a generated site, by
/// each provider's rules (the same as the `provider::*` tests):
/// - D365 lists only active conversations: exactly the active ones are active in the
///   mirror, a mirrored row that left the list is closed, and nothing else is filled in
///   (the messages follow-up is off);
/// - Spruce, Sinch and HighLevel: every live conversation is mirrored with the columns the
///   API reports; a deleted one is absent or marked deleted;
/// - no source holds a row the simulator does not know.
pub struct TruthCheck {
    sim: SimHandle,
    pub sources: Vec<SiteSource>,
}

impl TruthCheck {
    /// The sources `convsync_sources` generates for `sim`.
    pub fn new(sim: &SimHandle) -> TruthCheck {
        let a = sim.accounts();
        let mut sources = Vec::new();
        for (i, x) in a.d365.iter().enumerate() {
            sources.push(SiteSource {
                name: format!("d365-{i}"),
                provider: Platform::D365,
                account: x.account.clone(),
                mirror_account: x.channel_id.clone(),
            });
        }
        for (i, x) in a.spruce.iter().enumerate() {
            sources.push(SiteSource {
                name: format!("spruce-{i}"),
                provider: Platform::Spruce,
                account: x.account.clone(),
                mirror_account: x.organization_id.clone(),
            });
        }
        for (i, x) in a.sinch.iter().enumerate() {
            sources.push(SiteSource {
                name: format!("sinch-{i}/{}", x.app_id),
                provider: Platform::Sinch,
                account: x.account.clone(),
                mirror_account: x.app_id.clone(),
            });
        }
        for x in &a.highlevel {
            sources.push(SiteSource {
                name: format!("highlevel/{}", x.location_id),
                provider: Platform::HighLevel,
                account: x.account.clone(),
                mirror_account: x.location_id.clone(),
            });
        }
        TruthCheck {
            sim: sim.clone(),
            sources,
        }
    }

    /// Every difference between the mirror and the truth, one line each.
    pub async fn differences(&self, pool: &SqlitePool) -> Vec<String> {
        let mut problems = Vec::new();
        let mut compared = 0;
        for source in &self.sources {
            let truth = self
                .sim
                .truth(source.provider, &source.account)
                .await
                .unwrap();
            let mirror = mirror_rows(pool, &source.name).await;
            for t in &truth {
                let row = mirror.get(&t.id);
                if let Some(problem) = compare(source, t, row) {
                    problems.push(format!("{} {}: {problem}", source.name, t.id));
                }
                compared += 1;
            }
            let known: std::collections::HashSet<&str> =
                truth.iter().map(|t| t.id.as_str()).collect();
            for id in mirror.keys().filter(|id| !known.contains(id.as_str())) {
                problems.push(format!(
                    "{} {id}: in the mirror but unknown to the provider",
                    source.name
                ));
            }
        }
        assert!(compared > 0, "the simulated world is empty");
        problems
    }
}

async fn mirror_rows(pool: &SqlitePool, source: &str) -> BTreeMap<String, MirrorRow> {
    let rows = sqlx::query(
        "SELECT conversation_id, provider, account, created_at, last_activity_at,
                CAST(active AS TEXT), status, channel, contact_id, contact_name, title, assignee,
                CAST(unread_count AS TEXT), last_message_direction, last_inbound_at,
                last_outbound_at, CAST(awaiting_reply AS TEXT),
                CASE WHEN closed_at IS NULL THEN '0' ELSE '1' END,
                CASE WHEN deleted_at IS NULL THEN '0' ELSE '1' END, raw
         FROM conversations WHERE source = ?",
    )
    .bind(source)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|row| {
            let id: String = row.get(0);
            let columns = COLUMNS
                .iter()
                .enumerate()
                .map(|(i, c)| (*c, row.get::<Option<String>, _>(i + 1)))
                .collect();
            (id, columns)
        })
        .collect()
}

fn text(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| Timestamp::from(t).to_mirror_text())
}

fn flag(b: bool) -> Option<String> {
    Some(if b { "1" } else { "0" }.to_owned())
}

fn direction(t: &TruthConversation) -> Option<Option<String>> {
    match t.last_message_direction {
        Some(MessageDirection::Inbound) => Some(Some("inbound".into())),
        Some(MessageDirection::Outbound) => Some(Some("outbound".into())),
        // The newest item is internal: the mirror keeps the newest message that counts,
        // which the truth does not name.
        Some(MessageDirection::Internal) => None,
        None => Some(None),
    }
}

/// Whether a Spruce row's reply state may differ from the truth: its items are read only
/// for open conversations active within `reply_state_horizon` (default 30 days, the
/// simulator's whole history; a day less here, so that a conversation on the edge when the
/// sync ran counts either way). An archived conversation's reply state is never read (what
/// it holds is what was read while it was open, or nothing); a dormant one's was never
/// read when all four reply columns are NULL.
fn spruce_reply_state_may_be_unknown(t: &TruthConversation, row: &MirrorRow) -> bool {
    let unread = [
        "last_message_direction",
        "last_inbound_at",
        "last_outbound_at",
        "awaiting_reply",
    ]
    .iter()
    .all(|c| row.get(c).is_none_or(Option::is_none));
    let edge = chrono::Utc::now() - chrono::Duration::days(29);
    let dormant = t.last_activity_at.unwrap_or(t.created_at) < edge;
    t.state == ConversationState::Archived || (unread && dormant)
}

/// What is wrong with `row` as the mirror of `t`, if anything.
fn compare(source: &SiteSource, t: &TruthConversation, row: Option<&MirrorRow>) -> Option<String> {
    let live = !t.deleted;
    let d365_active = t.state == ConversationState::Active && live;
    let Some(row) = row else {
        let may_be_absent = match source.provider {
            // D365 lists only active conversations: one that closed before it was ever
            // listed was never visible.
            Platform::D365 => !d365_active,
            _ => t.deleted,
        };
        return (!may_be_absent).then(|| "missing from the mirror".to_owned());
    };
    let mut want: Vec<(&str, Option<String>)> = vec![
        ("account", Some(source.mirror_account.clone())),
        ("provider", Some(provider_name(source.provider).into())),
    ];
    match source.provider {
        Platform::D365 => {
            want.extend([
                ("created_at", text(Some(t.created_at))),
                ("active", flag(d365_active)),
                ("closed", flag(!d365_active)),
                ("deleted", flag(false)),
                ("last_activity_at", None),
                ("status", None),
                ("title", None),
            ]);
        }
        Platform::Spruce | Platform::Sinch | Platform::HighLevel if t.deleted => {
            want.push(("deleted", flag(true)));
        }
        Platform::Spruce => {
            let internal_only = matches!(t.channel.as_str(), "team" | "note");
            want.extend([
                ("created_at", text(Some(t.created_at))),
                ("last_activity_at", text(t.last_activity_at)),
                ("active", flag(t.state != ConversationState::Archived)),
                ("deleted", flag(false)),
                ("channel", Some(t.channel.clone())),
                ("contact_id", Some(t.contact_id.clone())),
                (
                    "contact_name",
                    (!internal_only).then(|| t.contact_name.clone()),
                ),
                ("title", Some(t.title.clone())),
                ("assignee", t.assignee.clone()),
            ]);
            if !spruce_reply_state_may_be_unknown(t, row) {
                want.extend([
                    ("last_inbound_at", text(t.last_inbound_at)),
                    ("last_outbound_at", text(t.last_outbound_at)),
                    ("awaiting_reply", flag(t.awaiting_reply)),
                ]);
                if let Some(d) = direction(t) {
                    want.push(("last_message_direction", d));
                }
            }
        }
        Platform::Sinch => {
            let active = t.state == ConversationState::Active;
            want.extend([
                ("active", flag(active)),
                ("closed", flag(!active)),
                ("deleted", flag(false)),
                ("last_activity_at", text(t.last_activity_at)),
                ("channel", Some(t.channel.clone())),
                ("contact_id", Some(t.contact_id.clone())),
                ("last_message_direction", direction(t).unwrap_or(None)),
            ]);
        }
        Platform::HighLevel => {
            want.extend([
                ("created_at", text(Some(t.created_at))),
                ("last_activity_at", text(t.last_activity_at)),
                ("active", flag(true)),
                ("deleted", flag(false)),
                (
                    "status",
                    Some(if t.unread_count > 0 { "unread" } else { "read" }.into()),
                ),
                ("channel", Some(t.channel.clone())),
                ("contact_id", Some(t.contact_id.clone())),
                ("contact_name", Some(t.contact_name.clone())),
                ("title", None),
                ("assignee", t.assignee.clone()),
                ("unread_count", Some(t.unread_count.to_string())),
            ]);
            if let Some(d) = direction(t) {
                want.push(("last_message_direction", d));
            }
        }
    }
    let wrong: Vec<String> = want
        .into_iter()
        .filter(|(column, value)| row.get(column) != Some(value))
        .map(|(column, value)| {
            format!(
                "{column} is {:?}, truth {value:?}",
                row.get(column).cloned().flatten()
            )
        })
        .collect();
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

fn provider_name(p: Platform) -> &'static str {
    match p {
        Platform::D365 => "d365",
        Platform::Spruce => "spruce",
        Platform::Sinch => "sinch",
        Platform::HighLevel => "highlevel",
    }
}
