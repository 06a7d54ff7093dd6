//! Serving the endpoint to a hostile host. The health port is often reachable by more
//! than its prober, and every open socket is a file descriptor the providers' connections
//! need too: a client that connects and sends nothing must not hold a socket for long, and
//! the endpoint never holds more than `[health] max_connections` of them. Clients beyond
//! that wait in the kernel's listen queue, which costs the process no descriptor.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The most time one connection is served, however busy its client keeps it; then it is
/// asked to close after its request in flight.
const MAX_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Pause after a failed `accept` (out of file descriptors, say) before the next one.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// How the endpoint bounds its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that has not sent a request's headers within this time (idle or
    /// trickling) is closed.
    pub read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled, then lets
/// requests in flight finish.
pub async fn serve_bounded(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A slot first, then accept: beyond the limit clients queue in the kernel.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "the health endpoint could not accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let finished = tokio::select! {
                _ = connection.as_mut() => true,
                () = tokio::time::sleep(MAX_CONNECTION_LIFETIME) => false,
                () = stop.cancelled() => false,
            };
            if !finished {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.read_timeout, connection).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
