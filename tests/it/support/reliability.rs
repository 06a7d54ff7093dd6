//! Helpers for the reliability suite (`reliability::*`): a simulator site with a generated
//! configuration for the real `convsync` binary, child processes whose every log line is
//! kept, the sources it generates (compared with the simulator's truth by `support::truth`),
//! watermark history, and a scan for secrets in everything convsync produced.
//!
//! A site's mirror is a SQLite file in its directory ([`Site::start`]) or a database of
//! the tests' PostgreSQL cluster ([`Site::start_on`]); the test reads it back through a
//! [`MirrorPool`] of its own ([`Site::mirror`]), as another process would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::str::FromStr;
use std::time::Duration;

use convsync::sim_config::{SecretPlacement, SourceTuning, convsync_sources};
use convsync::store::Store;
use convsync::sync::WalkCursor;
use convsync::time::Timestamp;
use convsync_sim::{Faults, LatencyFault, Platform, SimAccounts, SimHandle, SimOptions, Simulator};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::mirror::{MirrorDb, MirrorPool};
use super::stores::{Backend, MirrorSql};
use super::truth::{Reach, Truth, TruthSource, first_lines};
use crate::support::StorePool;
use convsync_testpg::TestPgDb;

/// Hang guard for waits: generous, never a performance threshold.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// The convsync binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_convsync");

/// Pages of five: every walk of a small world spans several pages, so that a kill, a
/// fault or a stop lands between two of them.
pub fn small_pages() -> SiteOptions {
    SiteOptions {
        page_size: 5,
        ..SiteOptions::default()
    }
}

/// Every answer delayed by `min_ms` to `max_ms`, so that the daemon is caught mid-walk.
pub fn latency(min_ms: u64, max_ms: u64) -> Faults {
    Faults {
        latency: Some(LatencyFault { min_ms, max_ms }),
        ..Faults::default()
    }
}

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
    /// The mirror's database on the tests' cluster, when the site's store is PostgreSQL.
    postgres: Option<TestPgDb>,
}

impl Site {
    /// Starts the simulator and writes the configuration, with the mirror in a SQLite file.
    pub async fn start(options: SimOptions, site: SiteOptions) -> Site {
        Site::start_on(Backend::Sqlite, options, site).await
    }

    /// Starts the simulator and writes the configuration, with the mirror on `backend`.
    pub async fn start_on(backend: Backend, options: SimOptions, site: SiteOptions) -> Site {
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
                ..SourceTuning::default()
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
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestPgDb::new().await),
        };
        let url = match &postgres {
            None => format!("sqlite://{}", dir.path().join("mirror.db").display()),
            Some(database) => database.url.clone(),
        };
        let text = format!(
            "[database]\nurl = \"{url}\"\nbusy_timeout = \"{busy}\"\n\n\
             [http]\ntimeout = \"{timeout}\"\nconnect_timeout = \"2s\"\nmax_retries = 5\n\
             min_backoff = \"20ms\"\nmax_backoff = \"300ms\"\nmax_inline_pause = \"30s\"\n\n\
             [health]\nlisten = \"{health}\"\n\n{sources}",
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
            postgres,
        }
    }

    /// The mirror's file (a SQLite site's).
    pub fn db_path(&self) -> PathBuf {
        assert!(
            self.postgres.is_none(),
            "a PostgreSQL site has no mirror file"
        );
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
        Daemon::spawn(self.command(&["run"]), self.next_log("daemon"))
    }

    /// Starts `convsync run` and returns once it has committed a page, so that whatever
    /// the test does next lands during an active sync.
    pub async fn spawn_daemon_mid_sync(&self) -> Daemon {
        let mut daemon = self.spawn_daemon();
        let pool = self.mirror().await;
        wait_for_rows(&pool, &mut daemon).await;
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

    /// A read-write pool on a SQLite site's mirror file (another process, as far as SQLite
    /// is concerned).
    pub async fn pool(&self) -> SqlitePool {
        pool(&self.db_path()).await
    }

    /// A read-write pool on the mirror, whichever store holds it (another process, as far
    /// as the database is concerned). On SQLite it waits for convsync to create the file;
    /// a PostgreSQL database exists from the start, its tables once convsync migrated it.
    pub async fn mirror(&self) -> MirrorPool {
        match &self.postgres {
            None => MirrorPool::Sqlite(self.pool().await),
            Some(database) => postgres_mirror(&database.url).await,
        }
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

    /// Every account's truth, as the site's sources follow it.
    pub fn truth(&self) -> Truth {
        Truth::simulator(&self.sim, site_sources(&self.sim))
    }

    /// Compares the mirror with the truth of every account (see `support::truth`).
    pub async fn assert_mirror_matches_truth(&self) {
        let pool = self.mirror().await;
        let problems = self.truth().differences(&pool).await;
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
                first_lines(&problems, 15),
                reports[reports.len().saturating_sub(25)..].join("\n"),
                notable[notable.len().saturating_sub(40)..].join("\n"),
            );
        }
        pool.close().await;
    }

    /// The end state of a run that must recover: the mirror matches the truth and the
    /// database is intact.
    pub async fn assert_converged(&self) {
        self.assert_mirror_matches_truth().await;
        self.assert_integrity().await;
    }

    /// The database is intact: SQLite's `PRAGMA integrity_check` is `ok`; on PostgreSQL
    /// every index of the mirror agrees with its table (`amcheck`).
    pub async fn assert_integrity(&self) {
        let pool = self.mirror().await;
        assert_integrity(&pool).await;
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
        let pool = self.mirror().await;
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
async fn dump_tables(pool: &MirrorPool) -> Vec<(String, String)> {
    match pool {
        MirrorPool::Sqlite(pool) => dump_sqlite_tables(pool).await,
        MirrorPool::Postgres(_) => {
            let tables: Vec<String> = pool
                .sql_column(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = 'public' AND table_name <> 'refresh_tokens'",
                )
                .await;
            let mut out = Vec::new();
            for table in tables {
                // A row as text holds every column, whatever its type (jsonb, bytea, …).
                let rows: Vec<String> = pool
                    .sql_column(&format!("SELECT CAST(t AS TEXT) FROM \"{table}\" t"))
                    .await;
                out.push((table, rows.join("\n")));
            }
            out
        }
    }
}

async fn dump_sqlite_tables(pool: &SqlitePool) -> Vec<(String, String)> {
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

/// The mirror's database is intact: SQLite's `PRAGMA integrity_check` says `ok`; on
/// PostgreSQL, `amcheck` finds every B-tree index of the mirror's tables consistent, with
/// every heap tuple indexed (`heapallindexed`).
async fn assert_integrity(pool: &MirrorPool) {
    match pool {
        MirrorPool::Sqlite(_) => {
            let verdict: String = pool.sql_value("PRAGMA integrity_check").await;
            assert_eq!(verdict, "ok", "integrity_check");
        }
        MirrorPool::Postgres(_) => {
            pool.sql_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                .await;
            let indexes: Vec<String> = pool
                .sql_column(
                    "SELECT c.relname::text FROM pg_index i
                     JOIN pg_class c ON c.oid = i.indexrelid
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     JOIN pg_am a ON a.oid = c.relam
                     WHERE n.nspname = 'public' AND a.amname = 'btree'",
                )
                .await;
            assert!(!indexes.is_empty(), "the mirror has indexes");
            for index in indexes {
                // Fails (and so panics) on the first inconsistency it finds.
                pool.sql_rows::<(String,)>(&format!(
                    "SELECT CAST(bt_index_check('public.\"{index}\"'::regclass, true) AS TEXT)"
                ))
                .await;
            }
        }
    }
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
    /// Starts `command` (a `convsync run`) with its stdout and stderr going to `log`.
    pub fn spawn(mut command: tokio::process::Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("convsync run starts");
        Daemon { child, log }
    }

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

/// A pool of the test's own on the PostgreSQL mirror at `url` (another process, as far as
/// the database is concerned).
pub async fn postgres_mirror(url: &str) -> MirrorPool {
    // Instants as text in UTC, as convsync's own sessions show them.
    let options = PgConnectOptions::from_str(url)
        .unwrap()
        .options([("timezone", "UTC")]);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    MirrorPool::Postgres(pool)
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

/// Delta watermarks by (source, walk), as stored (none before convsync created the table).
pub async fn watermarks<'a>(db: impl Into<MirrorDb<'a>>) -> BTreeMap<(String, String), Timestamp> {
    const SQL: &str = "SELECT source, walk, state FROM cursors";
    let rows: Vec<(String, String, String)> = match db.into() {
        MirrorDb::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        MirrorDb::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
    }
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
    pub async fn observe<'a>(&mut self, db: impl Into<MirrorDb<'a>>) {
        for (key, now) in watermarks(db).await {
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
pub async fn run_outcomes<'a>(db: impl Into<MirrorDb<'a>>) -> BTreeMap<String, i64> {
    let db: MirrorDb = db.into();
    db.sql_rows("SELECT outcome, COUNT(*) FROM sync_runs GROUP BY outcome")
        .await
        .into_iter()
        .collect()
}

/// Every `sync_runs` error and note, one per line.
pub async fn run_reports<'a>(db: impl Into<MirrorDb<'a>>) -> String {
    let db: MirrorDb = db.into();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = db
        .sql_rows("SELECT source, outcome, error, notes FROM sync_runs ORDER BY id")
        .await;
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

/// The sources `convsync_sources` generates for `sim`, each following its account in a
/// busy world (background activity, the product's default horizon).
pub fn site_sources(sim: &SimHandle) -> Vec<TruthSource> {
    generated_sources(sim.accounts())
}

/// [`site_sources`] of a simulator's `accounts` (read over the control API of a
/// `convsync simulate` child, whose banner generated the configuration).
pub fn generated_sources(a: &SimAccounts) -> Vec<TruthSource> {
    let source = |provider, i, name: String| TruthSource::account(a, provider, i, &name);
    let d365 = (0..a.d365.len()).map(|i| source(Platform::D365, i, format!("d365-{i}")));
    let spruce = (0..a.spruce.len()).map(|i| source(Platform::Spruce, i, format!("spruce-{i}")));
    let sinch = a
        .sinch
        .iter()
        .enumerate()
        .map(|(i, x)| source(Platform::Sinch, i, format!("sinch-{i}/{}", x.app_id)));
    let highlevel = a.highlevel.iter().enumerate().map(|(i, x)| {
        source(
            Platform::HighLevel,
            i,
            format!("highlevel/{}", x.location_id),
        )
    });
    d365.chain(spruce)
        .chain(sinch)
        .chain(highlevel)
        .map(|source| source.reaching(Reach::BUSY))
        .collect()
}

/// Waits until `daemon` has committed a page to the mirror behind `db`, failing the test
/// if it dies first or takes longer than [`PATIENCE`].
pub async fn wait_for_rows<'a>(db: impl Into<MirrorDb<'a>>, daemon: &mut Daemon) {
    const SQL: &str = "SELECT COUNT(*) FROM conversations";
    let db = db.into();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // No table yet until convsync has migrated the database.
        let rows: i64 = match db {
            MirrorDb::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
            MirrorDb::Postgres(pool) => sqlx::query_scalar(SQL).fetch_one(pool).await,
        }
        .unwrap_or(0);
        if rows > 0 {
            return;
        }
        assert!(daemon.is_running(), "the daemon died:\n{}", daemon.output());
        assert!(
            tokio::time::Instant::now() < deadline,
            "no page was ever written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every source of `site` has a `caught_up` run newer than run `after` (0 for
/// any), failing the test if `daemon` dies first or it takes longer than [`PATIENCE`].
pub async fn wait_every_source_caught_up(
    site: &Site,
    pool: &MirrorPool,
    daemon: &mut Daemon,
    after: i64,
) {
    let names: Vec<String> = site_sources(&site.sim)
        .into_iter()
        .map(|s| s.name)
        .collect();
    wait_caught_up(&names, pool, daemon, after).await;
}

/// Waits until every source named in `sources` has a `caught_up` run newer than run
/// `after` (0 for any), failing the test if `daemon` dies first or it takes longer than
/// [`PATIENCE`].
pub async fn wait_caught_up(
    sources: &[String],
    pool: &MirrorPool,
    daemon: &mut Daemon,
    after: i64,
) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        // No table yet until convsync has migrated the database.
        let done: Vec<String> = pool
            .try_sql_column(&format!(
                "SELECT DISTINCT source FROM sync_runs WHERE outcome = 'caught_up' AND id > {after}"
            ))
            .await
            .unwrap_or_default();
        if sources.iter().all(|s| done.contains(s)) {
            return;
        }
        assert!(daemon.is_running(), "the daemon died:\n{}", daemon.output());
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every source caught up; runs:\n{}",
            run_reports(pool).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
