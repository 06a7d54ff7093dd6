//! Running convsync as a supervised service: the health and metrics HTTP endpoint, the
//! systemd notification protocol and the watchdog supervision loop.
//!
//! - `/healthz` — liveness: the process answers and its supervisor finds every source
//!   task being polled ([`supervisor`]).
//! - `/readyz` — readiness: the database accepts writes (its write lock can be taken and
//!   the last write of mirror data did not fail) and every enabled source has completed a
//!   cycle recently ([`readiness`]); the JSON body says which source is not and why.
//!
//! The endpoint bounds its clients (read timeout, connection cap): the port may be
//! reachable by more than its prober, and its sockets must not starve the providers'.
//! - `/metrics` — Prometheus text ([`metrics`]).
//!
//! [`Service::start`] wires it all for `convsync run`: it binds the endpoint, starts the
//! supervisor, then tells systemd `READY=1` — the caller has already validated the
//! configuration and migrated the database. `convsync health` ([`probe`]) queries the
//! endpoint so that container health checks need no curl.

pub mod metrics;
pub mod probe;
pub mod process;
pub mod readiness;
mod server;
pub mod supervisor;
pub mod systemd;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use self::server::ConnectionLimits;
pub use self::supervisor::Liveness;
pub use self::systemd::{Notifier, NotifyAddress};

use self::readiness::{DatabaseCheck, Readiness, ReadinessRule, SourceReadiness};
use crate::config::{HealthConfig, WebhookSettings};
use crate::store::Store;
use crate::sync::{Engine, SourceRegistry};
use crate::time::Timestamp;

/// Why the health endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// `[health] listen` is not `IP:PORT`.
    #[error("config key `health.listen`: {value:?} is not an address like 127.0.0.1:9477")]
    BadListen {
        /// The configured value.
        value: String,
    },
    /// The address is taken or not ours to bind.
    #[error("cannot listen on {addr} (config key `health.listen`): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The webhook receiver's address is taken or not ours to bind.
    #[error("cannot listen on {addr} (config key `webhooks.listen`): {source}")]
    BindWebhooks {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Parses `[health] listen`.
pub fn listen_address(value: &str) -> Result<SocketAddr, HealthError> {
    value.trim().parse().map_err(|_| HealthError::BadListen {
        value: value.to_owned(),
    })
}

/// Binds the endpoint's listener (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HealthError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })
}

/// What the endpoint reads: the engine's sources and store, the supervisor's verdict and
/// the metrics registry. Cheap to clone.
#[derive(Clone)]
pub struct HealthApp {
    /// The running sources, read per request.
    sources: SourceRegistry,
    store: Store,
    ready_after_intervals: f64,
    started_at: Timestamp,
    liveness: Arc<Liveness>,
    registry: Arc<Registry>,
    store_figures: Arc<metrics::StoreFigures>,
    replica: Arc<crate::sync::ReplicaProgress>,
}

impl HealthApp {
    /// An endpoint over `engine`, judging readiness with `ready_after_intervals` and
    /// liveness with the verdicts the supervisor records in `liveness`.
    pub fn new(engine: &Engine, ready_after_intervals: f64, liveness: Arc<Liveness>) -> HealthApp {
        let started_at = Timestamp::now();
        let sources = engine.registry().clone();
        let store_figures = Arc::new(metrics::StoreFigures::default());
        HealthApp {
            registry: Arc::new(metrics::registry(
                sources.clone(),
                ready_after_intervals,
                started_at,
                store_figures.clone(),
                engine.replica_progress().clone(),
            )),
            store_figures,
            replica: engine.replica_progress().clone(),
            sources,
            store: engine.store().clone(),
            ready_after_intervals,
            started_at,
            liveness,
        }
    }

    /// The endpoint with the webhook receiver's series on `/metrics` too.
    pub fn with_webhook_metrics(mut self, webhooks: &webhooks::WebhookMetrics) -> HealthApp {
        let mut registry = metrics::registry(
            self.sources.clone(),
            self.ready_after_intervals,
            self.started_at,
            self.store_figures.clone(),
            self.replica.clone(),
        );
        webhooks.register(
            registry.sub_registry_with_prefix("convsync"),
            self.sources.clone(),
        );
        self.registry = Arc::new(registry);
        self
    }

    /// The routes, for serving or for in-process requests.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(self)
    }

    /// The readiness verdict now (what `/readyz` answers).
    pub async fn readiness(&self) -> Readiness {
        let probe = match tokio::time::timeout(
            readiness::DATABASE_CHECK_TIMEOUT,
            self.store.check_writable(),
        )
        .await
        {
            Ok(Ok(())) => DatabaseCheck {
                writable: true,
                reason: None,
            },
            Ok(Err(e)) => DatabaseCheck {
                writable: false,
                reason: Some(crate::error_text::error_chain(&e)),
            },
            Err(_) => DatabaseCheck {
                writable: false,
                reason: Some(format!(
                    "no write lock within {:?}: another process holds the database",
                    readiness::DATABASE_CHECK_TIMEOUT
                )),
            },
        };
        let database = readiness::database_check(probe, self.store.last_write_failure());
        let now = Timestamp::now();
        let sources: Vec<SourceReadiness> = self
            .sources
            .snapshot()
            .iter()
            .map(|s| {
                let state = s.progress.state();
                let rule = ReadinessRule {
                    poll_interval: s.schedule.poll_interval,
                    ready_after_intervals: self.ready_after_intervals,
                    started_at: self.started_at,
                };
                let (verdict, reason) = readiness::assess(&state, rule, now);
                SourceReadiness {
                    source: s.name.clone(),
                    provider: s.provider.kind().to_string(),
                    state: verdict,
                    reason,
                    last_success_at: state.last_success_at.map(|t| t.to_rfc3339_seconds()),
                    last_error: state.last_error,
                }
            })
            .collect();
        Readiness {
            ready: database.writable && sources.iter().all(|s| s.state.is_fine()),
            database,
            sources,
        }
    }
}

/// The `/healthz` body.
#[derive(Debug, Serialize)]
struct LivenessBody {
    alive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    unserviced: Vec<UnservicedSource>,
}

#[derive(Debug, Serialize)]
struct UnservicedSource {
    source: String,
    reason: String,
}

async fn healthz(State(app): State<HealthApp>) -> Response {
    let verdict = app.liveness.verdict();
    // Three ticks of slack: a busy runtime may delay one tick, a stopped supervisor
    // misses them all.
    let reason = match verdict.last_tick {
        None => Some("the supervisor has not run yet".to_owned()),
        Some(t) if t.elapsed() > verdict.tick * 3 => Some(format!(
            "the supervisor last ran {:.1} s ago (every {:.1} s expected)",
            t.elapsed().as_secs_f64(),
            verdict.tick.as_secs_f64()
        )),
        Some(_) if !verdict.unserviced.is_empty() => {
            Some("a source task is not being serviced".to_owned())
        }
        Some(_) => None,
    };
    let body = LivenessBody {
        alive: reason.is_none(),
        reason,
        unserviced: verdict
            .unserviced
            .into_iter()
            .map(|(source, reason)| UnservicedSource { source, reason })
            .collect(),
    };
    let status = if body.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn readyz(State(app): State<HealthApp>) -> Response {
    let readiness = app.readiness().await;
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

async fn metrics_text(State(app): State<HealthApp>) -> Response {
    // Bounded like the readiness check: a scrape answers even if the database stalls.
    let _ = tokio::time::timeout(
        readiness::DATABASE_CHECK_TIMEOUT,
        app.store_figures.refresh(&app.store),
    )
    .await;
    match metrics::encode(&app.registry) {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        )
            .into_response(),
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    app: HealthApp,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    server::serve_bounded(listener, app.router(), limits, shutdown).await
}

/// The running health endpoint and watchdog supervisor of `convsync run`.
pub struct Service {
    local_addr: Option<SocketAddr>,
    webhook_addr: Option<SocketAddr>,
    /// The receiver's counters, shared with `/metrics` (`None` without a receiver).
    webhook_metrics: Option<webhooks::WebhookMetrics>,
    notifier: Arc<Notifier>,
    done: CancellationToken,
    tasks: JoinSet<()>,
}

impl Service {
    /// Binds the endpoint (when enabled), starts the supervisor and sends `READY=1`.
    /// Call it after the configuration is validated and the database migrated, and run
    /// the engine with the same `shutdown` token; `STOPPING=1` follows that token.
    pub async fn start(
        config: &HealthConfig,
        engine: &Engine,
        notifier: Notifier,
        shutdown: CancellationToken,
    ) -> Result<Service, HealthError> {
        Service::start_with_webhooks(
            config,
            &WebhookSettings::default(),
            engine,
            notifier,
            shutdown,
        )
        .await
    }

    /// [`Service::start`], plus the webhook receiver when `webhooks.listen` is set: its
    /// own listener, one path per source entry whose provider takes events, its series on
    /// the health endpoint's `/metrics`.
    pub async fn start_with_webhooks(
        config: &HealthConfig,
        webhook_settings: &WebhookSettings,
        engine: &Engine,
        notifier: Notifier,
        shutdown: CancellationToken,
    ) -> Result<Service, HealthError> {
        let webhook_metrics = webhooks::WebhookMetrics::default();
        let mut webhook_addr = None;
        let notifier = Arc::new(notifier);
        let liveness = Arc::new(Liveness::default());
        let done = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut local_addr = None;
        if let Some(wanted) = webhook_settings.listen {
            let listener =
                TcpListener::bind(wanted)
                    .await
                    .map_err(|source| HealthError::BindWebhooks {
                        addr: wanted,
                        source,
                    })?;
            let addr = listener
                .local_addr()
                .map_err(|source| HealthError::BindWebhooks {
                    addr: wanted,
                    source,
                })?;
            let entries = webhooks::targets_of(&engine.sources()).len();
            let receiver = Arc::new(webhooks::Receiver::live(
                engine.registry().clone(),
                engine.store().clone(),
                *webhook_settings,
                Arc::new(webhook_metrics.clone()),
            ));
            tasks.spawn(webhooks::serve(listener, receiver, done.clone()));
            // Once the receiver listens, what it missed while down is read from the
            // providers' event logs (dedupe absorbs any overlap with live deliveries).
            tasks.spawn(webhooks::replay::replay_all(
                engine.sources().to_vec(),
                engine.store().clone(),
                done.clone(),
            ));
            webhook_addr = Some(addr);
            tracing::info!(%addr, sources = entries, "webhook receiver listening (POST /webhooks/NAME)");
        }
        if config.enabled {
            let wanted = listen_address(&config.listen)?;
            let listener = bind(wanted).await?;
            let addr = listener.local_addr().map_err(|source| HealthError::Bind {
                addr: wanted,
                source,
            })?;
            local_addr = Some(addr);
            let mut app = HealthApp::new(engine, config.ready_after_intervals, liveness.clone());
            if webhook_addr.is_some() {
                app = app.with_webhook_metrics(&webhook_metrics);
            }
            let stop = done.clone();
            let limits = ConnectionLimits {
                read_timeout: config.read_timeout,
                max_connections: config.max_connections,
            };
            tasks.spawn(serve(listener, app, limits, stop));
            tracing::info!(%addr, "health endpoint listening (/healthz, /readyz, /metrics)");
        }
        // READY=1 before the supervisor's first WATCHDOG=1.
        notifier.ready(&format!("syncing {} source(s)", engine.sources().len()));
        if let Some(watchdog) = notifier.watchdog_timeout() {
            tracing::info!(
                ?watchdog,
                "systemd watchdog enabled; pinging while every source is serviced"
            );
        }
        tasks.spawn(supervisor::supervise(
            engine.registry().clone(),
            notifier.clone(),
            liveness,
            shutdown,
            done.clone(),
        ));
        Ok(Service {
            local_addr,
            webhook_metrics: webhook_addr.map(|_| webhook_metrics),
            webhook_addr,
            notifier,
            done,
            tasks,
        })
    }

    /// Where the endpoint listens (`None` when `[health] enabled = false`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Where the webhook receiver listens (`None` without `[webhooks] listen`).
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// The receiver's counters, the very ones `/metrics` serves (`None` without
    /// `[webhooks] listen`): what `convsync demo` shows beside polling.
    pub fn webhook_metrics(&self) -> Option<&webhooks::WebhookMetrics> {
        self.webhook_metrics.as_ref()
    }

    /// The notifier, to report status lines.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Stops the endpoint and the supervisor once the engine has returned.
    pub async fn stop(mut self) {
        self.done.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
