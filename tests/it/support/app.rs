//! The daemon as the CLI builds it (`App::build`: daemon lock, migrated store, adopted
//! source names, engine), so a test runs the same program `convsync run` runs.

use convsync::app::App;
use convsync::config::Config;
use convsync::store::Store;
use convsync::sync::{CycleOptions, Engine, OnceResult};
use tokio_util::sync::CancellationToken;

/// A built daemon over a test configuration.
pub struct TestApp {
    pub app: App,
}

/// Builds the daemon from `config` exactly as `convsync run` and `sync --once` do.
pub async fn spawn_app(config: &Config) -> TestApp {
    TestApp {
        app: App::build(config).await.expect("building the App"),
    }
}

impl TestApp {
    pub fn engine(&self) -> &Engine {
        self.app.engine()
    }

    pub fn store(&self) -> &Store {
        self.app.engine().store()
    }

    /// `sync --once` of every source, default options.
    pub async fn sync_once(&self) -> Vec<OnceResult> {
        self.app
            .sync_once(None, CycleOptions::default(), CancellationToken::new())
            .await
            .expect("sync --once")
    }
}
