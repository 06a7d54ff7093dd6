//! The daemon assembled once: the database opened under the daemon lock, the engine built,
//! then run until stopped (`convsync run`) or synced once (`convsync sync --once`). The
//! command line and the tests both start here, so what they run is the same program.

mod adopt;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfiguredSource, HealthConfig, RetentionSettings, SourceSettings};
use crate::health::{HealthError, Notifier, Service};
use crate::store::{DaemonLock, Store, StoreError, shown_url};
use crate::sync::{CycleOptions, Engine, EngineError, OnceResult};

pub use adopt::{adopt_and_warn, unconfigured};

/// Why the daemon could not be built or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Another `run` or `sync` holds the database (or its lock file cannot be taken).
    #[error(transparent)]
    Lock(StoreError),
    /// The database cannot be opened or migrated.
    #[error("opening the mirror database {url}")]
    OpenStore {
        /// The configured database URL (holds no secret).
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The stored source names could not be checked against the configuration.
    #[error("checking the database's source names against the configuration")]
    AdoptSources(#[source] StoreError),
    /// An agency source's locations could not be listed.
    #[error("finding the accounts of a source that lists none")]
    Discovery(#[source] crate::sync::discovery::DiscoveryError),
    /// The process's HTTP client could not be built.
    #[error("building the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The health endpoint could not start.
    #[error("starting the health endpoint")]
    Health(#[source] HealthError),
    /// The engine ended on its own (every source stopped) or could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `sync --once` could not read or write the database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The built daemon: its engine over the locked database, and the settings `run` needs.
pub struct App {
    engine: Engine,
    health: HealthConfig,
    webhooks: crate::config::WebhookSettings,
    retention: RetentionSettings,
    /// One syncing process per database: a second would double every provider's request
    /// budget and race on single-use refresh tokens. Held until the App is dropped.
    _lock: DaemonLock,
}

impl App {
    /// Takes the daemon lock, opens (and migrates) the database, lists the accounts of the
    /// entries that find theirs at the provider (a HighLevel agency's installed locations:
    /// the only requests made here), adopts renamed sources' rows and builds the engine.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let lock = DaemonLock::for_database(&config.store.url).map_err(AppError::Lock)?;
        let store = Store::open(&config.store)
            .await
            .map_err(|source| AppError::OpenStore {
                url: shown_url(&config.store.url),
                source,
            })?;
        // A changed setting is a write: wait out another writer's lock like every write.
        let limit = config
            .sources
            .iter()
            .map(|s| s.schedule.stall_timeout)
            .max()
            .unwrap_or(config.store.busy_timeout);
        crate::store::while_busy(
            limit,
            &CancellationToken::new(),
            "recording the history's backfill setting",
            || store.set_backfill_events(config.history.backfill),
        )
        .await
        .map_err(|source| AppError::OpenStore {
            url: shown_url(&config.store.url),
            source,
        })?;
        let discovered = crate::sync::discovery::discover_sources(
            &config.http,
            std::sync::Arc::new(store.clone()),
            &config.directories,
        )
        .await
        .map_err(AppError::Discovery)?;
        let configured: Vec<ConfiguredSource> = config
            .configured
            .iter()
            .cloned()
            .chain(discovered.sources.iter().map(|s| ConfiguredSource {
                name: s.name.clone(),
                entry: s.name.split('/').next().unwrap_or(&s.name).to_owned(),
                provider: s.setup.provider.kind().as_str().to_owned(),
                enabled: true,
                poll_interval: Some(s.schedule.poll_interval),
            }))
            .collect();
        adopt_and_warn(&store, &configured)
            .await
            .map_err(AppError::AdoptSources)?;
        let sources: Vec<SourceSettings> = config
            .sources
            .iter()
            .cloned()
            .chain(discovered.sources)
            .collect();
        let engine = Engine::new(store, &config.http, &sources)
            .map_err(AppError::HttpClient)?
            .with_replicas(config.replicas.clone())
            .with_directories(discovered.directories);
        Ok(App {
            engine,
            health: config.health.clone(),
            webhooks: config.webhooks,
            retention: config.retention,
            _lock: lock,
        })
    }

    /// The engine, for what watches it (the progress display).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// `convsync run`: binds the health endpoint, sends READY=1, runs every source and
    /// retention until `shutdown` is cancelled, then closes the database. An error when
    /// every source stopped on its own, so that systemd's Restart=on-failure notices.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        self.start(shutdown).await?.run().await
    }

    /// The first half of [`App::run_until_stopped`]: binds the health endpoint and the
    /// webhook receiver, sends READY=1 and starts retention and verification; the sources
    /// poll once [`RunningApp::run`] is called. In between, the caller can read where the
    /// listeners are (`convsync demo` points its simulator's webhooks at the receiver).
    pub async fn start(self, shutdown: CancellationToken) -> Result<RunningApp, AppError> {
        let service = Service::start_with_webhooks(
            &self.health,
            &self.webhooks,
            &self.engine,
            Notifier::from_env(),
            shutdown.clone(),
        )
        .await
        .map_err(AppError::Health)?;
        tracing::info!(sources = self.engine.sources().len(), "convsync running");
        let retention = tokio::spawn(crate::sync::run_retention(
            self.engine.store().clone(),
            self.retention,
            shutdown.clone(),
        ));
        let mut verifications = tokio::task::JoinSet::new();
        for source in self.engine.sources() {
            if let Some(interval) = source.schedule.verify_interval {
                verifications.spawn(crate::sync::verify::run_scheduled(
                    source.clone(),
                    self.engine.store().clone(),
                    interval,
                    shutdown.clone(),
                ));
            }
        }
        Ok(RunningApp {
            app: self,
            service,
            retention,
            verifications,
            shutdown,
        })
    }

    /// `convsync sync --once`: each source (or the one named) until it is caught up or
    /// failed; one result per source. The database stays open until [`App::close`].
    pub async fn sync_once(
        &self,
        only: Option<&str>,
        options: CycleOptions,
        shutdown: CancellationToken,
    ) -> Result<Vec<OnceResult>, AppError> {
        Ok(self.engine.sync_once(only, options, shutdown).await?)
    }

    /// Closes the database (checkpointing the WAL) and releases the daemon lock.
    pub async fn close(self) {
        self.engine.store().close().await;
    }
}

/// The daemon with its listeners bound ([`App::start`]), before its sources run.
pub struct RunningApp {
    app: App,
    service: Service,
    retention: tokio::task::JoinHandle<()>,
    verifications: tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
}

impl RunningApp {
    /// The engine, for what watches it (the progress display).
    pub fn engine(&self) -> &Engine {
        &self.app.engine
    }

    /// The health endpoint and webhook receiver.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Runs every source until the shutdown token is cancelled, then stops the listeners
    /// and closes the database (see [`App::run_until_stopped`]).
    pub async fn run(self) -> Result<(), AppError> {
        let RunningApp {
            app,
            service,
            retention,
            verifications,
            shutdown,
        } = self;
        let engine = &app.engine;
        let ended = engine.run(shutdown.clone()).await;
        shutdown.cancel();
        let _ = retention.await;
        verifications.join_all().await;
        service.stop().await;
        // Checkpoints the WAL so a stopped service leaves one self-contained file.
        engine.store().close().await;
        ended?;
        tracing::info!("convsync stopped");
        Ok(())
    }
}
