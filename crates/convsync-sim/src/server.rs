//! HTTP serving with fault injection.
//!
//! axum's own `serve` cannot close a connection without answering, so each listener runs
//! its own accept loop on hyper's HTTP/1 connection driver. The fault layer (an axum
//! middleware, so it sees the matched route) marks a response with [`DropConnection`];
//! the connection service then fails the request, which makes hyper close the socket
//! with nothing written — what a client sees when a proxy resets the connection.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::counters::RequestAuth;
use super::faults::{FaultDecision, RetryAfter};
use super::state::Shared;

/// Response marker: close the connection instead of sending this response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

/// Error returned to hyper to make it abandon a connection.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the simulator's reset fault")]
struct ConnectionDropped;

/// Serve `router` on `listener` until `cancel` fires.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let mut router = router.clone();
                async move {
                    let response = match router.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    if response.extensions().get::<DropConnection>().is_some() {
                        Err(ConnectionDropped)
                    } else {
                        Ok(response)
                    }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "simulator connection ended");
                    }
                }
                _ = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
                }
            }
        });
    }
}

/// Middleware applying the provider's faults and counting every request.
pub(crate) async fn fault_gate(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let auth = RequestAuth::of(request.headers());
    let decision = {
        let mut faults = shared.fault_state();
        if endpoint.ends_with("token") && !faults.faults.include_token_endpoints {
            FaultDecision::default()
        } else {
            let now = shared.clock.now_us();
            faults.decide(now)
        }
    };
    if let Some(latency) = decision.latency {
        tokio::time::sleep(latency).await;
    }
    let provider = shared.provider;
    if decision.reset {
        shared.counters.record(provider, &endpoint, None, auth);
        let mut response = Response::new(Body::empty());
        response.extensions_mut().insert(DropConnection);
        return response;
    }
    let response = if let Some((seconds, style)) = decision.rate_limited {
        let mut response = (shared.render_error)(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests: rate limit exceeded",
        );
        let value = match style {
            RetryAfter::None => None,
            RetryAfter::Seconds => Some(seconds.to_string()),
            RetryAfter::HttpDate => Some(httpdate::fmt_http_date(
                SystemTime::now() + Duration::from_secs(seconds),
            )),
        };
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    } else if let Some(status) = decision.server_error {
        let message = if status == StatusCode::SERVICE_UNAVAILABLE {
            "The service is temporarily unavailable"
        } else {
            "There was an internal server error."
        };
        (shared.render_error)(status, message)
    } else {
        let response = next.run(request).await;
        if decision.malformed && response.status() == StatusCode::OK {
            truncate_body(response).await
        } else {
            response
        }
    };
    shared
        .counters
        .record(provider, &endpoint, Some(response.status().as_u16()), auth);
    response
}

/// Cut a response body in half (a broken JSON document with status 200).
async fn truncate_body(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// Bind a listener, falling back to any free port when `port` is 0.
pub(crate) async fn bind(ip: std::net::IpAddr, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((ip, port)).await
}
