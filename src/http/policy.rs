//! How a response is read for what the HTTP client must act on: the text of an error
//! answer, the headers worth quoting with it, and what rate-limit headers say. Each
//! provider implements [`ResponsePolicy`] and the client is given it with every request,
//! so that the client does not depend on the providers.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// A pause the provider's rate-limit headers ask for before the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// How long to wait.
    pub wait: Duration,
    /// Which budget ran out, for logs and metrics.
    pub reason: &'static str,
}

/// What a provider's answers mean to the client. Every method has a neutral default.
pub trait ResponsePolicy: Send + Sync {
    /// A one-line human description of an error body (RFC 7807, Google-RPC, ...). The
    /// default shows the body as text.
    fn describe_error(&self, status: StatusCode, body: &[u8]) -> String {
        let _ = status;
        String::from_utf8_lossy(body).chars().take(2000).collect()
    }

    /// Header names worth logging with an error (request or correlation ids).
    fn correlation_headers(&self) -> &[&'static str] {
        &[]
    }

    /// A pause requested by rate-limit headers on a successful response.
    fn pacing(&self, headers: &HeaderMap) -> Option<Pause> {
        let _ = headers;
        None
    }

    /// How many requests the rate-limit headers of a response say are left in the
    /// provider's tightest window (`None`: not said). Requests sent concurrently spend this
    /// count, so that they stop at zero instead of overrunning the window.
    fn remaining_requests(&self, headers: &HeaderMap) -> Option<u64> {
        let _ = headers;
        None
    }
}
