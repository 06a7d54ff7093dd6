//! `convsync health`: asks a running convsync whether it is ready (`/readyz`) or alive
//! (`/healthz`) and turns the answer into an exit status, so that a container
//! `HEALTHCHECK` needs nothing but the convsync binary.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::Url;

/// How long a probe waits for an answer: less than the image's `HEALTHCHECK --timeout`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// Which question to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `/readyz`: database writable and every source recent.
    Ready,
    /// `/healthz`: process and supervisor alive.
    Live,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Ready => "readyz",
            Check::Live => "healthz",
        }
    }
}

/// Why the endpoint could not be asked at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `--url` cannot have a path appended.
    #[error("{0} cannot be used as the health endpoint's base URL")]
    BadUrl(Url),
    /// Nothing answered, or the answer was cut off.
    #[error("{url}: no answer: {message}")]
    Unreachable {
        /// The URL asked.
        url: Url,
        /// The transport error and its causes.
        message: String,
    },
}

/// The endpoint's answer.
#[derive(Debug, Clone)]
pub struct ProbeAnswer {
    /// The URL asked.
    pub url: Url,
    /// True for a 2xx status.
    pub healthy: bool,
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, explaining the verdict.
    pub body: String,
}

/// The base URL to reach an endpoint listening on `listen` from the same host: an
/// unspecified address (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_base_url(listen: SocketAddr) -> Url {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let authority = SocketAddr::new(ip, listen.port());
    Url::parse(&format!("http://{authority}/")).expect("an IP and port form a valid URL")
}

/// Asks `check` of the endpoint at `base`.
pub async fn probe(base: &Url, check: Check) -> Result<ProbeAnswer, ProbeError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let url = base
        .join(check.path())
        .map_err(|_| ProbeError::BadUrl(base.clone()))?;
    let unreachable = |e: reqwest::Error| ProbeError::Unreachable {
        url: url.clone(),
        message: crate::error_text::error_chain(&e),
    };
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(unreachable)?;
    let response = client.get(url.clone()).send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    Ok(ProbeAnswer {
        url,
        healthy: status.is_success(),
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_probed_on_loopback() {
        assert_eq!(
            local_base_url("0.0.0.0:9477".parse().unwrap()).as_str(),
            "http://127.0.0.1:9477/"
        );
        assert_eq!(
            local_base_url("[::]:9477".parse().unwrap()).as_str(),
            "http://[::1]:9477/"
        );
        assert_eq!(
            local_base_url("10.1.2.3:8080".parse().unwrap()).as_str(),
            "http://10.1.2.3:8080/"
        );
    }
}
