//! Reaching Docker from the container tests.
//!
//! testcontainers talks to the engine with the API version its `bollard` was built for
//! (`bollard::API_DEFAULT_VERSION`) and never negotiates; an older engine (Debian 12's
//! docker.io 20.10 speaks API 1.41) refuses every such request. When the engine is older,
//! the container test runs itself again in a child process whose `DOCKER_HOST` is a small
//! proxy that rewrites the version in each request path down to the engine's. The child
//! gets the variable through its own environment, so no environment is mutated here.

use std::path::PathBuf;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use testcontainers::bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use tokio::net::{UnixListener, UnixStream};

/// Set in the child process: the engine's API version the proxy speaks.
pub const SHIMMED_ENV: &str = "CONVSYNC_TEST_DOCKER_API_SHIM";

/// The engine, as the test's own (negotiating) client sees it.
pub struct Engine {
    /// A client speaking the engine's version, for inspection calls.
    pub docker: Docker,
    /// The engine's API version.
    pub version: ClientVersion,
}

impl Engine {
    /// Whether testcontainers can talk to this engine directly.
    pub fn speaks_testcontainers_version(&self) -> bool {
        self.version >= *API_DEFAULT_VERSION
    }
}

/// Connects to the engine (honouring `DOCKER_HOST`), or says why not.
pub async fn connect() -> Result<Engine, String> {
    let docker = Docker::connect_with_defaults().map_err(|e| e.to_string())?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| format!("no Docker engine answers: {e}"))?;
    docker
        .ping()
        .await
        .map_err(|e| format!("the Docker engine does not answer ping: {e}"))?;
    let version = docker.client_version();
    Ok(Engine { docker, version })
}

/// The engine's Unix socket, from `DOCKER_HOST` or the default.
fn engine_socket() -> PathBuf {
    match std::env::var("DOCKER_HOST") {
        Ok(host) => PathBuf::from(host.strip_prefix("unix://").unwrap_or(&host)),
        Err(_) => PathBuf::from("/var/run/docker.sock"),
    }
}

/// A proxy on a Unix socket that forwards every request to the engine with the API
/// version in its path replaced by the engine's.
pub struct VersionProxy {
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl VersionProxy {
    /// Starts the proxy speaking `engine` to the real engine.
    pub fn start(engine: ClientVersion) -> VersionProxy {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("docker.sock")).unwrap();
        let upstream = engine_socket();
        let from = format!(
            "/v{}.{}/",
            API_DEFAULT_VERSION.major_version, API_DEFAULT_VERSION.minor_version
        );
        let to = format!("/v{}.{}/", engine.major_version, engine.minor_version);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (upstream, from, to) = (upstream.clone(), from.clone(), to.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        forward(request, upstream.clone(), from.clone(), to.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        VersionProxy { dir, task }
    }

    /// `DOCKER_HOST` for clients of the proxy.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }
}

impl Drop for VersionProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    mut request: Request<Incoming>,
    upstream: PathBuf,
    from: String,
    to: String,
) -> Result<Response<Incoming>, std::io::Error> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let rewritten = match path_and_query.strip_prefix(from.trim_end_matches('/')) {
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", to.trim_end_matches('/')),
        _ => path_and_query.to_owned(),
    };
    *request.uri_mut() = rewritten.parse().map_err(std::io::Error::other)?;
    let stream = UnixStream::connect(&upstream).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)
}
