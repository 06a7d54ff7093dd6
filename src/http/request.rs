//! The request a provider asks for and the response it gets back, independent of reqwest so
//! that providers stay pure translation.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

/// One HTTP request built by a provider. Authentication is added by the HTTP layer.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// GET for listings.
    pub method: Method,
    /// Absolute URL including the query string.
    pub url: Url,
    /// Extra headers (e.g. D365's `channel-id`, HighLevel's `Version`).
    pub headers: Vec<(&'static str, String)>,
    /// Deliver a 404 to the provider instead of failing (follow-ups for conversations that
    /// may have been closed).
    pub allow_not_found: bool,
    /// A short label for metrics and logs (`list`, `items`, ...).
    pub endpoint: &'static str,
}

impl RequestSpec {
    /// A GET of `url`, labelled `endpoint`.
    pub fn get(url: Url, endpoint: &'static str) -> Self {
        RequestSpec {
            method: Method::GET,
            url,
            headers: Vec::new(),
            allow_not_found: false,
            endpoint,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Lets a 404 through to the provider.
    pub fn allow_not_found(mut self) -> Self {
        self.allow_not_found = true;
        self
    }
}

/// A successful (or explicitly allowed) response, fully read.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl HttpResponse {
    /// A header's value as text, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
