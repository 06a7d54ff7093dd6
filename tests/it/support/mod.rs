//! The test harness: a temporary mirror database and the configuration that points a
//! daemon at it (`app` builds the daemon from it), sources over the test double, readers
//! for the mirror's tables (`mirror`) and the comparison with the truth (`truth`).

pub mod app;
pub mod capture;
pub mod deploy;
pub mod double;
pub mod hostile;
pub mod mirror;
pub mod reliability;
pub mod replicas;
pub mod stores;
pub mod truth;
pub mod world;

use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use convsync::config::{
    Config, ConfiguredSource, HealthConfig, ReplicaSettings, RetentionConfig, Schedule,
    SourceSettings, expanded_name,
};
use convsync::http::{AuthScheme, HttpSettings, RetryPolicy};
use convsync::provider::{Provider, ProviderDefaults, ProviderSetup};
use convsync::store::{MassChangeGuard, Store, StoreSettings};
use convsync_testpg::TestPgDb;

/// `store.pool()`: the SQLite pool behind a test's store, for report queries against the
/// mirror. The tests' mirror is SQLite; the backend-neutral `Store` has no pool of its own.
pub trait StorePool {
    fn pool(&self) -> &sqlx::SqlitePool;
}

impl StorePool for Store {
    fn pool(&self) -> &sqlx::SqlitePool {
        self.as_sqlite()
            .expect("the tests' mirror is SQLite")
            .pool()
    }
}

/// A mirror database in a temporary directory (SQLite), or a database of the tests'
/// PostgreSQL cluster ([`TestDb::on`]); removed on drop.
pub struct TestDb {
    _dir: tempfile::TempDir,
    _postgres: Option<TestPgDb>,
    pub settings: StoreSettings,
}

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.db");
        TestDb {
            settings: StoreSettings {
                url: format!("sqlite://{}", path.display()),
                busy_timeout: Duration::from_secs(5),
                max_connections: 2,
                ..StoreSettings::default()
            },
            _dir: dir,
            _postgres: None,
        }
    }

    /// A new, empty mirror database on `backend`.
    pub async fn on(backend: stores::Backend) -> TestDb {
        match backend {
            stores::Backend::Sqlite => TestDb::new(),
            stores::Backend::Postgres => {
                let database = TestPgDb::new().await;
                let mut db = TestDb::new();
                db.settings.url = database.url.clone();
                db._postgres = Some(database);
                db
            }
        }
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.settings).await.unwrap()
    }

    /// A daemon configuration over this database: `sources` with `http`, every other
    /// section at its default.
    pub fn config(&self, http: HttpSettings, sources: Vec<SourceSettings>) -> Config {
        let configured = sources
            .iter()
            .map(|s| ConfiguredSource {
                name: s.name.clone(),
                entry: s.name.clone(),
                provider: s.setup.provider.kind().as_str().to_owned(),
                enabled: true,
                poll_interval: Some(s.schedule.poll_interval),
            })
            .collect();
        Config {
            store: self.settings.clone(),
            http,
            // A free port, so that tests may run the whole daemon side by side.
            health: HealthConfig {
                listen: "127.0.0.1:0".into(),
                ..HealthConfig::default()
            },
            retention: RetentionConfig::default().validate().unwrap(),
            replicas: ReplicaSettings::default(),
            history: Default::default(),
            webhooks: Default::default(),
            sources,
            directories: Vec::new(),
            disabled_sources: Vec::new(),
            configured,
        }
    }

    /// The configuration file at `path`, as the daemon loads it, over this database (with
    /// the test's connection settings).
    pub fn load_config(&self, path: &Path) -> Config {
        let mut config = Config::load(path).unwrap();
        config.store = self.settings.clone();
        config
    }
}

/// Fast retries so fault tests finish quickly.
pub fn quick_http() -> HttpSettings {
    HttpSettings {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            max_retries: 4,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        max_inline_pause: Duration::from_secs(30),
        max_provider_wait: Duration::from_secs(3600),
        max_response_bytes: 16 * 1024 * 1024,
    }
}

/// Schedule used by engine tests.
pub fn schedule() -> Schedule {
    Schedule {
        poll_interval: Duration::from_secs(60),
        poll_jitter: 0.0,
        lookback: Duration::from_secs(120),
        sweep_interval: Duration::from_secs(3600),
        verify_interval: None,
        max_pages_per_cycle: 10_000,
        stall_timeout: Duration::from_secs(60),
        max_clock_skew: Duration::from_secs(120),
        max_follow_ups_per_cycle: 100,
        max_raw_bytes: 1024 * 1024,
        max_empty_pages: 10,
        once_max_rate_limit_wait: Duration::from_secs(300),
        // The simulator's history spans 30 days: every open conversation's reply state is
        // read, except in the tests that study the horizon.
        reply_state_horizon: Duration::from_secs(365 * 86_400),
    }
}

/// A source over `provider`.
pub fn source(
    name: &str,
    provider: Arc<dyn Provider>,
    auth: AuthScheme,
    schedule: Schedule,
) -> SourceSettings {
    SourceSettings {
        name: name.into(),
        setup: ProviderSetup {
            provider,
            auth,
            credential_key: format!("{name}-credential"),
            budget_key: format!("{name}-budget"),
            name_suffix: None,
            defaults: ProviderDefaults {
                poll_interval: schedule.poll_interval,
                min_poll_interval: Duration::ZERO,
                min_poll_reason: "",
                lookback: schedule.lookback,
                sweep_interval: schedule.sweep_interval,
                quota: None,
            },
        },
        schedule,
        guard: GUARD,
        quota: None,
    }
}

/// The mass-change guard of the test sources: refuse to close or delete more than half.
pub const GUARD: MassChangeGuard = MassChangeGuard {
    max_share: 0.5,
    floor: 2,
};

/// The sources of a `[[sources]]` entry named `entry`, from its provider's set-up, named
/// (`entry/account` where the provider names accounts) and budgeted as the configuration
/// loader does.
pub fn entry_sources(
    entry: &str,
    setups: Vec<ProviderSetup>,
    schedule: &Schedule,
) -> Vec<SourceSettings> {
    setups
        .into_iter()
        .map(|mut setup| {
            let name = expanded_name(entry, setup.name_suffix.as_deref());
            setup.auth.name_source(&name);
            SourceSettings {
                name,
                quota: setup.defaults.quota,
                setup,
                schedule: schedule.clone(),
                guard: GUARD,
            }
        })
        .collect()
}

/// Writes `value` to the file `name` in `dir` (a secret a config refers to) and returns its
/// path.
pub fn write_file(dir: &Path, name: &str, value: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value).unwrap();
    path
}
